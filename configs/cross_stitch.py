"""Cross-stitch joint registration + segmentation (Beljaards et al., MIDL 2020).

Variants (``configs/cross_stitch.py:VARIANTS``, comma-separated):
  ``level``     one cross-stitch ``α`` per level (``[2, 2]``) instead of per level and channel
  ``separate``  two independent paths, no cross-stitch units (the no-sharing ablation)
  ``shared``    one shared encoder, two decoders (``SharedEncoderMultiDecoder``; same inputs
                and loss: only the architecture differs)
  ``official``  the public PyTorch code (``moelmahdy/JRS-MTL``): ``α`` initialised 0.5
                everywhere, 3 levels (32, 64, 128), lr 5e-4, Adam β1 = 0.5 (it uses RAdam,
                which jrs_jax does not offer)
  ``3d``        3-D synthetic data (``jrs-jax make-synthetic --3d``), batch 1
  ``smoke``     tiny network and a few steps (tests)

Defaults: both paths VoxelMorph-like U-Nets (encoder 16, 32, 32, 32; decoder 32, 32, 32, 16,
16), fed ``[I_m, I_f, one-hot S_m]``; cross-stitch units after every encoder level and
decoder stage, ``α`` per channel, initialised 0.9 / 0.1. Loss ``Dice(Ŝ_f, S_f) + 0.5
bending(φ) + NCC_9(I_m∘φ, I_f) + NCC_9(S_m∘φ, S_f)`` (the public code's window 9 and
bending weight; the Dice and label-NCC weights are not given, 1 here); Adam 1e-3 (as
``configs/voxelmorph.py``). Pairs of labelled training subjects only.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"level", "separate", "shared", "official", "3d", "smoke"})
    cfg = {
        "method": "cross_stitch",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "model": {
            "arch": "cross_stitch",  # cross_stitch | separate | shared_encoder
            "stitch": "channel",  # channel | level (one α per level) | none
            "stitch_self_weight": 0.9,  # α_SS = α_RR at initialisation
            "head_init_std": 1e-5,  # displacement head kernel N(0, std^2)
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "dice_weight": 1.0,
            "seg_ce_weight": 0.0,  # optional cross-entropy on Ŝ_f (not in the paper)
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "bending_energy",
            "regulariser_kwargs": {},
            "reg_weight": 0.5,
            "label_similarity": "local_ncc",
            "label_similarity_kwargs": {"window": 9, "convention": "monai"},
            "label_weight": 1.0,
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "level" in flags:
        cfg["model"]["stitch"] = "level"
    if "separate" in flags:
        cfg["model"]["arch"] = "separate"
    if "shared" in flags:
        cfg["model"]["arch"] = "shared_encoder"
    if "official" in flags:
        cfg["model"].update(
            stitch_self_weight=0.5, features=[32, 64, 128], decoder_features=[64, 32]
        )
        cfg["optim"].update(learning_rate=5e-4, b1=0.5)
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
