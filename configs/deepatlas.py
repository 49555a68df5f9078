"""DeepAtlas (Xu & Niethammer, MICCAI 2019): joint semi-supervised registration + segmentation.

Variants (``configs/deepatlas.py:VARIANTS``, comma-separated):
  ``oneshot``  one labelled training subject (the paper's N = 1; Semi-DeepAtlas stage first)
  ``official`` the official code's registration loss: global NCC x1 + grad-L2 x0.1 +
               Dice x3, Adam 1e-3 for both networks
  ``monai``    the MONAI tutorial: LNCC kernel 3 + 7.5 (S/128)^2 bending + 2 anatomy; seg
               3 supervised (Dice, as its DiceLoss) + 2 anatomy; Adam 5e-4 (reg) / 1e-3
               (seg); 40 reg : 5 seg batches
  ``3d``       3-D synthetic data (``jrs-jax make-synthetic --3d``), batch 1
  ``smoke``    tiny networks and a few steps of every phase (tests)

Default (2-D synthetic, N = 5 labelled): LNCC (window 9) + diffusion x1 + anatomy Dice x1;
segmentation supervised (Dice + cross-entropy) x1 + anatomy Dice x1 (the paper's
λ_a = λ_sp = 1); Adam 1e-3; 300 unsupervised registration steps, 150 Semi-DeepAtlas segmentation
steps, then joint rounds of 20 reg : 1 seg steps (the paper's ratio) to ``train.steps``.

Why Dice + CE for ``L_sp`` (the segmentation baseline ``unet_seg`` uses the same): with a
soft-Dice-only supervised loss ``F_S`` can lose a whole structure for good. Once its softmax
probability is ~0 everywhere the Dice gradient vanishes (measured: all-background within
~20 steps in 3-D at batch 1; in 2-D with the 3 | 4 boundary hidden,
``make-synthetic --label-means 0.05 0.35 0.8 0.6 0.6``, N = 1, the organ (label 2) was
never predicted: Dice 0 on every held-out subject). Cross-entropy keeps a gradient.
``--set loss.supervised=dice`` restores the Dice-only loss.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"oneshot", "official", "monai", "3d", "smoke"})
    cfg = {
        "method": "deepatlas",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": 5,
            "num_classes": None,
            "batch_size": 4,
            # DeepAtlas cases: both labelled, fixed labelled, moving labelled, none labelled
            "reg_mix": [0.25, 0.25, 0.25, 0.25],
            "seg_mix": [1.0, 1.0, 1.0, 0.0],
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
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 1.0,
            "anatomy_weight": 1.0,
            "supervised_weight": 1.0,
            "supervised": "dice_ce",
        },
        "optim": {
            "reg": {"name": "adam", "learning_rate": 1e-3},
            "seg": {"name": "adam", "learning_rate": 1e-3},
        },
        "schedule": {"reg_pretrain": 300, "seg_pretrain": 150, "reg_steps": 20, "seg_steps": 1},
        "train": {"steps": 1500, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "oneshot" in flags:
        cfg["data"]["num_labelled"] = 1
    if "official" in flags:
        cfg["loss"].update(
            similarity="ncc",
            similarity_kwargs={},
            regulariser="gradient_l2",
            reg_weight=0.1,
            anatomy_weight=3.0,
        )
    if "monai" in flags:
        scale = 1.0  # (image size / 128)^2 for the 128^2 default; set for other sizes
        cfg["loss"].update(
            similarity="local_ncc",
            similarity_kwargs={"window": 3, "convention": "monai"},
            regulariser="bending_energy",
            reg_weight=7.5 * scale,
            anatomy_weight=2.0,
            supervised_weight=3.0,
            supervised="dice",
        )
        cfg["optim"]["reg"]["learning_rate"] = 5e-4
        cfg["schedule"].update(reg_steps=40, seg_steps=5)
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("reg_model", "seg_model"), steps=8, every=4)
        cfg["schedule"].update(reg_pretrain=2, seg_pretrain=2, reg_steps=2, seg_steps=1)
        if cfg["data"]["num_labelled"] > 2:
            cfg["data"]["num_labelled"] = 2
    return cfg
