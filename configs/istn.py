"""ISTN: image-and-spatial transformer networks (Lee et al., MICCAI 2019).

Variants (``configs/istn.py:VARIANTS``, comma-separated):
  ``implicit``      ISTN-i: the ITN learns through the registration (+ the public code's
                    coupling terms ‖M'∘φ − S_F‖² + ‖S_M∘φ − F'‖²)
  ``seg_only``      with ``implicit``: ‖S_M∘φ − S_F‖² alone (no coupling terms)
  ``stn_s``         STN-s: no ITN, the STN on raw images, supervised by ‖S_M∘φ − S_F‖²
  ``stn_u``         STN-u: no ITN, unsupervised ‖M∘φ − F‖²
  ``affine``        an affine STN instead of the dense one
  ``official``      the public code's optimiser settings: Adam 1e-3, batch 10, no regulariser
                    (its B-spline STN is smooth by construction; keep it with ``affine``)
  ``3d``            3-D data, batch 1
  ``smoke``         tiny networks and a few steps (tests)

Default: ISTN-e (explicit), a dense STN predicting a stationary velocity at half
resolution (7 squarings: smooth and invertible, in place of the public code's cubic
B-spline model) with a diffusion regulariser λ = 0.01 (the MSE terms of one-hot maps are
small, ~0.05 at the start), Adam 1e-3 for ITN and STN. Test-time refinement: 50 Adam steps
at 1e-3 on ‖M'∘φ − F'‖² + λ R(φ), the public code's ``refine`` and ``learning_rate``
(``jrs-jax register --refine 50`` or ``eval.refine_steps``).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(
        arg, {"implicit", "seg_only", "stn_s", "stn_u", "affine", "official", "3d", "smoke"}
    )
    cfg = {
        "method": "istn",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        # the ITN: the public code's small U-Net (2-4-8-16 channels, linear head), here the
        # jrs_jax U-Net with a 1^D head of K - 1 channels
        "itn_model": {"features": [8, 16, 16], "decoder_features": [16, 8], "dtype": "float32"},
        "model": {"transform": "dense"},
        "stn_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "output": "velocity",
            "int_downsize": 2,
            "integration_steps": 7,
            "dtype": "float32",
        },
        "loss": {
            "variant": "explicit",
            "implicit_coupling": True,
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 0.01,
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "refine": {"steps": 50, "lr": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    for name in ("implicit", "stn_s", "stn_u"):
        if name in flags:
            cfg["loss"]["variant"] = {"stn_s": "supervised", "stn_u": "unsupervised"}.get(
                name, name
            )
    if "seg_only" in flags:
        cfg["loss"]["implicit_coupling"] = False
    if "affine" in flags:
        cfg["model"]["transform"] = "affine"
    if "official" in flags:
        cfg["data"]["batch_size"] = 10
        cfg["loss"]["reg_weight"] = 0.0
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("itn_model", "stn_model"))
        cfg["refine"]["steps"] = 2
    return cfg
