"""VoxelMorph baseline (Balakrishnan et al. 2019; diffeomorphic: Dalca et al. 2019).

Variants (``configs/voxelmorph.py:VARIANTS``, comma-separated):
  ``dice``    + auxiliary Dice supervision on labelled pairs (weight 1, VoxelMorph's ``--seg``)
  ``mi``      mutual information (Parzen, 23 bins: MONAI's defaults) instead of local NCC:
              the usual loss for cross-modal pairs (``data.moving_channel`` / ``fixed_channel``)
  ``l1``      mean absolute error (mono-modal; JSSR's registration term, for its bound)
  ``diffeo``  stationary velocity, 7 squarings at half resolution (VoxelMorph-diff)
  ``3d``      3-D defaults (batch 1, 3-D synthetic data folder)
  ``smoke``   tiny network and a few steps (tests)

Defaults follow the public VoxelMorph code: U-Net encoder (16, 32, 32, 32), LeakyReLU 0.2,
flow head N(0, 1e-5), squared local NCC with a 9^D box window, diffusion regulariser
(VoxelMorph ``Grad('l2')``, forward differences), Adam. Learning rate 1e-3 (VoxelMorph's 1e-4
is tuned for hundreds of epochs; on the 2-D synthetic default 1e-3 reaches the same Dice in a
few minutes of CPU time).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"dice", "mi", "l1", "diffeo", "3d", "smoke"})
    cfg = {
        "method": "voxelmorph",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
            # cross-modal pairs: moving from this image channel, fixed from that one
            "moving_channel": None,
            "fixed_channel": None,
        },
        "model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "output": "displacement",
            "integration_steps": 7,
            "int_downsize": 1,
            "dtype": "float32",  # compute dtype; "bfloat16" keeps float32 params and heads
            "remat": False,  # rematerialise each U-Net level (less activation memory)
        },
        "loss": {
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 1.0,
            "dice_weight": 0.0,
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "dice" in flags:
        cfg["loss"]["dice_weight"] = 1.0
    if "mi" in flags:
        cfg["loss"].update(similarity="mutual_information", similarity_kwargs={})
    if "l1" in flags:
        cfg["loss"].update(similarity="l1", similarity_kwargs={})
    if "diffeo" in flags:
        cfg["model"].update(output="velocity", int_downsize=2)
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
