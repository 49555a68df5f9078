"""Hybrid U-Net: one network segments both time points and registers them (Li et al.,
MICCAI 2019).

Variants (``configs/hybrid_unet.py:VARIANTS``, comma-separated):
  ``separate``     separate networks (a segmentation U-Net on each scan, a registration
                   U-Net on the pair; same widths, same losses, same updates): the baseline
  ``no_consistency``  the hybrid without the consistency term (``loss.consistency_weight=0``)
  ``predictions``  the consistency Dice warps the predicted ``Ŝ_m`` onto ``Ŝ_f`` instead of
                   the label maps
  ``any_pairs``    train on any two labelled scans (cross-sectional data), not two scans of
                   one subject
  ``3d``           3-D synthetic data, batch 1
  ``smoke``        tiny network and a few steps (tests)

Defaults: a VoxelMorph-sized U-Net (encoder 16, 32, 32, 32; decoder 32, 32, 32, 16, 16) on
``[I_m, I_f]`` with heads ``Ŝ_m``, ``Ŝ_f`` (conv ``1^D``) and ``φ`` (conv ``3^D``,
``N(0, 1e-5^2)``). Loss ``DiceCE(Ŝ_m, S_m) + DiceCE(Ŝ_f, S_f) + NCC_9(I_m∘φ, I_f) + 1 ·
diffusion(φ) + 1 · Dice(S_m∘φ, S_f)`` (the paper gives no weights: unit weights, the NCC
regulariser weight of VoxelMorph), Adam 1e-3. Pairs: two scans of one labelled training
subject. Evaluation: within-subject pairs of the held-out subjects.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(
        arg, {"separate", "no_consistency", "predictions", "any_pairs", "3d", "smoke"}
    )
    cfg = {
        "method": "hybrid_unet",
        "seed": 0,
        "data": {
            "dataset": "jrs_longitudinal/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
            "pairs": "within_subject",  # within_subject | any
        },
        "model": {
            "arch": "hybrid",  # hybrid | separate
            "head_init_std": 1e-5,
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "seg_weight": 1.0,
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 1.0,
            "consistency_weight": 1.0,
            "consistency_on": "labels",  # labels | predictions
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": "within_subject", "labels": None},
    }
    if "separate" in flags:
        cfg["model"]["arch"] = "separate"
    if "no_consistency" in flags:
        cfg["loss"]["consistency_weight"] = 0.0
    if "predictions" in flags:
        cfg["loss"]["consistency_on"] = "predictions"
    if "any_pairs" in flags:
        cfg["data"]["pairs"] = "any"
        cfg["eval"]["mode"] = "pairs"
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
