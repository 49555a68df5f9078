"""Segis-Net: single-step simultaneous segmentation and registration (Li et al., NeuroImage
2021).

Variants (``configs/segis_net.py:VARIANTS``, comma-separated):
  ``pipeline``  the multi-stage baseline: ``loss.com_weight = 0``, so the same updates train
                the segmentation and the registration network separately (segment, then
                register)
  ``3d``        3-D synthetic data, batch 1
  ``smoke``     tiny networks and a few steps (tests)

Defaults (the public Keras code, ``JacobDyson01/Segis-Net``): ``λ · MSE + Dice(Ŝ_s∘φ, S_t) +
Dice(Ŝ_s, S_s) + 0.01 λ · grad-L2``, ``λ`` ramped 10 -> 100 (here linearly over half the
updates, then held at 100), Adam 1e-4; a segmentation stream with one sigmoid sub-branch per
tract and a registration stream, VoxelMorph-sized U-Nets (encoder 16, 32, 32, 32). Pairs: two
labelled scans of one training subject; evaluation on the held-out subjects' scan pairs.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"pipeline", "3d", "smoke"})
    steps = 1000
    cfg = {
        "method": "segis_net",
        "seed": 0,
        "data": {
            "dataset": "jrs_tracts/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "seg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16],
            "dtype": "float32",
        },
        "reg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "head_init_std": 1e-5,
            "dtype": "float32",
        },
        "loss": {
            "lambda_start": 10.0,  # λ: the MSE weight, ramped
            "lambda_end": 100.0,
            "smooth_factor": 0.01,  # β = 0.01 λ
            "seg_weight": 1.0,
            "com_weight": 1.0,  # γ (0: the segment-then-register pipeline)
        },
        "schedule": {"ramp_steps": steps // 2},
        "optim": {"name": "adam", "learning_rate": 1e-4},
        "train": {"steps": steps, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "pipeline" in flags:
        cfg["loss"]["com_weight"] = 0.0
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("seg_model", "reg_model"))
        cfg["schedule"]["ramp_steps"] = 2
    return cfg
