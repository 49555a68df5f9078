"""Atlas-ISTN: joint segmentation, registration and atlas construction (Sinclair et al.,
MedIA 2022).

Variants (``configs/atlas_istn.py:VARIANTS``, comma-separated):
  ``atlas``      segment with the warped atlas ``y^a∘Φ`` (``model.segment_with = "atlas"``; the
                 topology-preserving output, best with test-time refinement) instead of the ITN
  ``no_affine``  an STN without its affine part (stationary velocity only)
  ``official``   the public code's remaining settings: a linear ITN head (MSE on the logits),
                 batch 10, ω faded in over the epochs (``1 / (1 + exp(-(e - E) / 25))``,
                 ``E = 25`` as its 2-D config, 200 with ``3d``), refinement on
                 ``‖ŷ − y^a∘Φ‖² + λ L_reg`` only
  ``3d``         3-D synthetic data, batch 1
  ``smoke``      tiny networks and a few steps (tests)

Defaults (``biomedia-mira/atlas-istn``, its ``config.json`` files and ``nets/stn.py``): the ITN
is the public code's U-Net (8-16-32-64 channels, here with a softmax head); the STN an affine
part plus a stationary velocity field integrated at half resolution with 6 squarings, the
inverse by integrating ``−v``; loss ``MSE(ŷ, y) + ω [a2s + s2a + 500 · grad-L2]`` with ω = 1 and
the ground-truth labels in a2s / s2a (as its ``process_batch``), the gradient-L2 of the
non-rigid field in ``grid_sample`` units (``loss.reg_units``); atlas EMA rate 0.01 after every
epoch; Adam 1e-3 for ITN and STN; test-time refinement 50 Adam steps at 1e-3 with the ITN
frozen (``eval.refine_steps = 50`` refines every evaluated image, or
:func:`jrs_jax.refinement.refine_variables`; ``jrs-jax segment`` does not refine).
``loss.structure_target = "itn"`` puts the ITN's output in a2s / s2a instead of the ground
truth.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"atlas", "no_affine", "official", "3d", "smoke"})
    cfg = {
        "method": "atlas_istn",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        # the public code's UNet2D/3D: 8 (full resolution), 16, 32, 64; decoder 32, 16, 8
        "itn_model": {
            "features": [8, 16, 32, 64],
            "decoder_features": [32, 16, 8],
            "dtype": "float32",
        },
        # the public code's STN encoder-decoder (16, 16, 32 channels, flow at half resolution)
        "stn_model": {
            "features": [16, 16, 16, 32],
            "decoder_features": [16, 16, 16, 8],
            "output": "velocity",
            "int_downsize": 2,
            "integration_steps": 6,
            "dtype": "float32",
        },
        "model": {"affine": True, "segment_with": "itn", "itn_output": "softmax"},
        "loss": {
            "seg_weight": 1.0,
            "omega": 1.0,
            "omega_fading_epoch": None,
            "omega_fading_width": 25.0,
            "reg_weight": 500.0,
            "reg_units": "normalized",
            "structure_target": "labels",
        },
        "atlas": {"rate": 0.01, "update_every": "epoch"},
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "refine": {"steps": 50, "lr": 1e-3, "s2a": True, "reg_weight": None},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # refine_steps > 0: every evaluated image is first refined on its own (refine.lr)
        "eval": {
            "max_pairs": 24,
            "batch_size": 8,
            "mode": None,
            "labels": None,
            "refine_steps": 0,
            "refine_lr": None,
        },
    }
    if "atlas" in flags:
        cfg["model"]["segment_with"] = "atlas"
    if "no_affine" in flags:
        cfg["model"]["affine"] = False
    if "official" in flags:
        cfg["model"]["itn_output"] = "linear"
        cfg["data"]["batch_size"] = 10
        cfg["loss"]["omega_fading_epoch"] = 200 if "3d" in flags else 25
        cfg["refine"]["s2a"] = False
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("itn_model", "stn_model"))
        cfg["refine"]["steps"] = 2
    return cfg
