"""U-Net segmentation baseline trained on the labelled subjects (Dice + cross-entropy).

Variants: ``3d`` (3-D synthetic folder, batch 1), ``smoke`` (tiny network, a few steps).
``data.num_labelled`` keeps only that many labelled training subjects (e.g. 1 or 5, the
DeepAtlas comparison); ``null`` uses every label the dataset has.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"3d", "smoke"})
    cfg = {
        "method": "unet_seg",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 16, 16],
            "dtype": "float32",
            "remat": False,
        },
        "loss": {"dice_weight": 1.0, "ce_weight": 1.0},
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
