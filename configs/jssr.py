"""JSSR: joint synthesis, segmentation and registration (Li et al., ECCV 2020).

Variants (``configs/jssr.py:VARIANTS``, comma-separated):
  ``separate``  the separate pipeline: synthesis (G with D) for the first half of the
                updates, then registration on the frozen G's output (``schedule.mode``)
  ``no_seg``    joint synthesis + registration without the segmentation consistency
                (``loss.seg_weight = 0``; S still trained supervised)
  ``pair``      the generator sees the pair, ``G(x, y)`` (the spec's form; it learns to copy
                ``y``, see ``jrs_jax/methods/jssr.py``)
  ``3d``        3-D data, batch 1
  ``smoke``     tiny networks, a few steps, one-modality data accepted (tests)

No public code: the defaults are jrs_jax's (``jrs_jax/methods/jssr.py``). Moving images are
channel 0 (modality X) and fixed images channel 1 (modality Y) of a two-modality dataset
(``jrs-jax make-synthetic --scenario multimodal``). Objective ``2 L1(τ(G(x, y)), y) +
λ_reg ||∇τ||² + λ_syn L_GAN + λ_seg Dice_cons + λ_sup Dice_sup`` with λ_reg = 1, λ_syn = 0.1,
λ_seg = λ_sup = 1; half the updates pretrain (S supervised, G + Φ without the consistency),
the other half train jointly; one D step per step, Adam 1e-3 (D: 2e-4, b1 0.5).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"separate", "no_seg", "pair", "3d", "smoke"})
    steps = 1000
    unet = {"features": [16, 32, 32, 32], "decoder_features": [32, 32, 32, 16], "dtype": "float32"}
    cfg = {
        "method": "jssr",
        "seed": 0,
        "data": {
            "dataset": "jrs_multimodal/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
            "moving_channel": 0,  # modality X
            "fixed_channel": 1,  # modality Y (the supervised Dice's labels)
        },
        # G(x) ("moving"); "pair": the spec's G(x, y), which copies y (see the method docstring)
        "gen_inputs": "moving",
        "gen_model": dict(unet),
        "reg_model": {**unet, "decoder_features": [32, 32, 32, 16, 16]},
        "seg_model": dict(unet),
        "disc": {"features": [16, 32, 64], "norm": "instance"},
        "loss": {
            "l1_weight": 2.0,  # 2 L1: registration L1 standing in for the synthesis L1
            "reg_weight": 1.0,  # λ_reg (gradient L2)
            "syn_weight": 0.1,  # λ_syn (GAN)
            "seg_weight": 1.0,  # λ_seg (consistency Dice)
            "sup_weight": 1.0,  # λ_sup (supervised Dice on modality Y)
            "gan": "nonsaturating",  # log D losses (losses.GAN_KINDS)
        },
        "schedule": {"mode": "joint", "pretrain_steps": steps // 2},
        "optim": {
            "gen": {"name": "adam", "learning_rate": 1e-3},
            "disc": {"name": "adam", "learning_rate": 2e-4, "b1": 0.5},
        },
        "train": {"steps": steps, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "separate" in flags:
        cfg["schedule"]["mode"] = "separate"
    if "no_seg" in flags:
        cfg["loss"]["seg_weight"] = 0.0
    if "pair" in flags:
        cfg["gen_inputs"] = "pair"
    if "3d" in flags:
        use_3d_data(cfg)
        cfg["data"]["dataset"] = "jrs_multimodal_3d/dataset.json"
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("gen_model", "reg_model", "seg_model"))
        cfg["disc"]["features"] = [4, 8]
        cfg["schedule"]["pretrain_steps"] = 2
        cfg["data"].update(moving_channel=None, fixed_channel=None)
    return cfg
