"""Segmentation-informed registration of dynamic 2-D MR of the vocal tract (Ruthven et al.,
BSPC 2022).

Variants (``configs/seg_informed_2d.py:VARIANTS``, comma-separated):
  ``image_only``  the image-only VoxelMorph baseline: the same registration network, loss,
                  pairs and registration updates, no segmentation stage
  ``smoke``       tiny networks and a few steps (tests)

Defaults (the public code, ``matthieuruthven/Speech_MRI_Registration``): registration U-Net
encoder (16, 32, 32, 32), decoder (32, 32, 32, 32, 32, 16, 16), plain displacement
(``int_steps=0``) on ``[I, one-hot foreground of LCC(F(I))]`` per frame; loss ``MSE + 0.01 ·
grad-L2 + 1 · Dice(S_m∘φ, S_f)``; Adam 9e-4, batch 4. The segmentation network (its own
repository in the public code) is a U-Net of the same encoder widths trained with Dice +
cross-entropy for ``schedule.seg_steps`` updates first, then frozen. Pairs: two frames of one
labelled training speaker; evaluation on the held-out speakers' frame pairs, with the
tongue (4) / soft palate (2) contact of the ``speech`` scenario.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke


def get_config(arg=None):
    flags = parse_flags(arg, {"image_only", "smoke"})
    cfg = {
        "method": "seg_informed_2d",
        "seed": 0,
        "data": {
            "dataset": "jrs_speech/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        # lcc_classes: the classes post-processed to their largest component: every tissue
        # of the speech scenario (1-4); the air (5) is legitimately two pieces in contact
        # frames (the tongue on the palate cuts the oral cavity from the pharynx)
        "model": {"seg_inputs": True, "lcc_classes": [1, 2, 3, 4]},
        "seg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16],
            "dtype": "float32",
        },
        "reg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 32, 32, 16, 16],
            "head_init_std": 1e-5,
            "dtype": "float32",
        },
        "loss": {"reg_weight": 0.01, "dice_weight": 1.0},
        "schedule": {"seg_steps": 300},
        "optim": {"name": "adam", "learning_rate": 9e-4},
        "train": {"steps": 1300, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # contact: the two classes whose contact count is the task metric (tongue, soft palate)
        "eval": {"max_pairs": 48, "batch_size": 8, "mode": None, "labels": None, "contact": [4, 2]},
    }
    if "image_only" in flags:
        cfg["model"]["seg_inputs"] = False
        cfg["schedule"]["seg_steps"] = 0
        cfg["train"]["steps"] -= 300
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("seg_model", "reg_model"))
        cfg["schedule"]["seg_steps"] = 0 if "image_only" in flags else 2
    return cfg
