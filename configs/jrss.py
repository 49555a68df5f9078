"""JRSS (BSPC 2022): joint few-shot registration and segmentation self-training.

Variants (``configs/jrss.py:VARIANTS``, comma-separated):
  ``oneshot``     one labelled training subject (N = 1)
  ``pretrain_ce`` teacher pretraining with soft Dice + cross-entropy (the paper: soft Dice)
  ``3d``          3-D synthetic data (``jrs-jax make-synthetic --3d``), batch 1
  ``smoke``       tiny networks, every phase in a few steps (tests)

No public code is recorded for the paper, so there is no official-code variant; the
defaults are the paper's procedure with its loss weights (``L_c + L_u + L_d``, weights 1)
and the choices of ``jrs_jax/methods/jrss.py`` where it is silent.

Default (2-D synthetic, N = 2 labelled): registration net = the VoxelMorph U-Net (LNCC
window 9 + diffusion x1 + (pseudo-)label Dice x1); student = U-Net segmenter with dropout
0.1, input noise sigma 0.05; teacher = EMA (0.99) of the student; pseudo-labels kept where
the round's teacher is >= 0.9 confident; Adam 1e-3 for both; 200 teacher-pretraining
steps, then rounds of 100 registration + 100 self-training steps (3 rounds in 800 steps);
validation at every round boundary (``train.eval_every`` = one round = the pretraining).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"oneshot", "pretrain_ce", "3d", "smoke"})
    cfg = {
        "method": "jrss",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": 2,
            "num_classes": None,
            "batch_size": 4,
            # probability that a self-training pair's moving (student) image is labelled
            "labelled_fraction": 0.5,
        },
        "reg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "output": "displacement",
            "dtype": "float32",
            "remat": False,
        },
        "seg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 16, 16],
            "dropout_rate": 0.1,  # the student's; teacher and pool predict without dropout
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 1.0,
            "reg_dice_weight": 1.0,
            "ce_weight": 1.0,
            "kl_weight": 1.0,
            "dice_weight": 1.0,
            "pretrain": "dice",
        },
        "self_training": {"threshold": 0.9, "ema_decay": 0.99, "noise_std": 0.05},
        "optim": {
            "reg": {"name": "adam", "learning_rate": 1e-3},
            "seg": {"name": "adam", "learning_rate": 1e-3},
        },
        "schedule": {"teacher_pretrain": 200, "reg_steps": 100, "seg_steps": 100},
        "train": {"steps": 800, "log_every": 20, "eval_every": 200, "ckpt_every": 200, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "oneshot" in flags:
        cfg["data"]["num_labelled"] = 1
    if "pretrain_ce" in flags:
        cfg["loss"]["pretrain"] = "dice_ce"
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("reg_model", "seg_model"), steps=8, every=4)
        cfg["schedule"].update(teacher_pretrain=2, reg_steps=2, seg_steps=1)
    return cfg
