"""Registration-segmentation cascade for small organs at risk (TMI 2022; no public code).

Variants (``configs/oar_cascade.py:VARIANTS``, comma-separated):
  ``atlas``    registration only: R trained on L_reg, the warped template segments
  ``it1``      one cascade round (default 2)
  ``it3``      three cascade rounds
  ``3d``       3-D data, batch 1, 3-D crops
  ``smoke``    tiny networks and a few steps (tests)

jrs_jax's choices (the paper leaves them open): 2 rounds, 16^D crops (the small organs of
the ``small_organs`` scenario are 2-4 voxels in radius, the registration error a few
voxels), no gradient between rounds, shape correction (D) not implemented, template chosen
among the first 8 labelled training subjects by 50 steps of field optimisation per pair.
Losses as the paper: L_reg = Dice + 0.5 MSE + 0.1 CD, L_seg = Dice + 0.25 CE,
L = 0.5 L_reg + L_seg; Adam 1e-3, batch 4.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"atlas", "it1", "it3", "3d", "smoke"})
    cfg = {
        "method": "oar_cascade",
        "seed": 0,
        "data": {
            "dataset": "jrs_small_organs/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "template": {"candidates": 8, "steps": 50},
        # roi_labels: the organs segmented on crops (None: every foreground label); the other
        # labels (structures larger than a crop) keep the warped template's masks
        "model": {"segment": "cascade", "iterations": 2, "crop": [16, 16], "roi_labels": None},
        "reg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "dtype": "float32",
        },
        "seg_model": {"features": [16, 32, 32], "decoder_features": [32, 16], "dtype": "float32"},
        "loss": {"mse_weight": 0.5, "cd_weight": 0.1, "ce_weight": 0.25, "reg_weight": 0.5},
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "atlas" in flags:
        cfg["model"]["segment"] = "atlas"
    if "it1" in flags:
        cfg["model"]["iterations"] = 1
    if "it3" in flags:
        cfg["model"]["iterations"] = 3
    if "3d" in flags:
        use_3d_data(cfg)
        cfg["data"]["dataset"] = "jrs_small_organs_3d/dataset.json"
        cfg["model"]["crop"] = [16, 16, 16]
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("reg_model", "seg_model"))
        cfg["model"]["crop"] = [8] * (3 if "3d" in flags else 2)
        cfg["template"].update(candidates=2, steps=2)
    return cfg
