"""DDIR: deep discontinuity-preserving registration (Chen et al., MICCAI 2021).

Variants (``configs/ddir.py:VARIANTS``, comma-separated):
  ``global``  one region covering the image: probabilistic VoxelMorph-diff with DDIR's loss
              (the controlled single-field ablation)
  ``reg``     + a diffusion regulariser on every region field inside its region (weight 1;
              the public code regularises with the KL term only)
  ``vxm_loss``  VoxelMorph-diff's loss weights instead of the public ones: NCC ×1, Dice ×1,
              diffusion ×1 on every region field inside its region, no KL (the region split
              alone against ``voxelmorph.py:diffeo,dice``)
  ``3d``      3-D synthetic data (``jrs-jax make-synthetic --scenario sliding --3d``), batch 1
  ``smoke``   tiny network and a few steps (tests)

Defaults from the public code (``ccmim/DDIR``): one probabilistic U-Net per region (encoder
16, 32, 32, 32; decoder 32, 32, 32, 16, 16), velocity integrated with 7 squarings at half
resolution; loss NCC ×20 (squared local NCC, window 9) + Dice ×200 + KL ×0.025 per region
with ``prior_lambda = 100``. ``model.regions``: label groups, one region each (``None``: one
region per class, as the public code's 4 cardiac labels). The default groups match the
``sliding`` scenario: background and body move together, the organ (label 2) and the
structure (labels 3, 4) each slide. Adam 1e-3 (the public 1e-4 is tuned for hundreds of
epochs, as in ``configs/voxelmorph.py``).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"global", "reg", "vxm_loss", "3d", "smoke"})
    cfg = {
        "method": "ddir",
        "seed": 0,
        "data": {
            "dataset": "jrs_sliding/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "model": {
            "regions": [[0, 1], [2], [3, 4]],  # label groups; None: one per class; "global"
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "integration_steps": 7,
            "int_downsize": 2,
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "sim_weight": 20.0,
            "dice_weight": 200.0,
            "kl_weight": 0.025,
            "prior_lambda": 100.0,
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 0.0,
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "global" in flags:
        cfg["model"]["regions"] = "global"
    if "reg" in flags:
        cfg["loss"]["reg_weight"] = 1.0
    if "vxm_loss" in flags:
        cfg["loss"].update(sim_weight=1.0, dice_weight=1.0, kl_weight=0.0, reg_weight=1.0)
    if "3d" in flags:
        use_3d_data(cfg)
        cfg["data"]["dataset"] = "jrs_sliding_3d/dataset.json"
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
