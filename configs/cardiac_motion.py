"""Joint motion estimation and segmentation for cardiac MR sequences (Qin et al., MICCAI
2018).

Variants (``configs/cardiac_motion.py:VARIANTS``, comma-separated):
  ``separate``      separate motion and segmentation networks (the same architecture
                    twice, each trained on its own terms, no warped term)
  ``no_recurrent``  the joint network without the ConvGRU (a conv block of the same width)
  ``3d``            3-D sequences (``make-synthetic --scenario cardiac --3d``), batch 1
  ``smoke``         tiny network and a few steps (tests)

Defaults: a shared encoder (16, 32, 32, 32), two decoders (32, 32, 32, 16), a 16-channel
ConvGRU over the frames and a conv 3^D flow head; loss ``MSE + 0.01 Huber(∇u) + 0.01
CE(Ŝ_k∘φ_k, S_0) + 1 CE(F_t, S_t)`` on the labelled frames (the public code's 0.01 weights;
softmax once), Huber threshold 0.01; Adam 1e-4 (the public code's), batch 2 whole cycles.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"separate", "no_recurrent", "3d", "smoke"})
    cfg = {
        "method": "cardiac_motion",
        "seed": 0,
        "data": {
            "dataset": "jrs_cardiac/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 2,
            "frames": None,  # frames per training window from ED (None: the whole cycle)
        },
        "model": {
            "arch": "joint",  # joint | separate
            "recurrent": True,
            "gru_features": 16,
            "head_init_std": 1e-5,
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16],
            "dtype": "float32",
            "remat": False,
        },
        "loss": {
            "smooth_weight": 0.01,
            "warped_ce_weight": 0.01,
            "seg_ce_weight": 1.0,
            "huber_delta": 0.01,
        },
        "optim": {"name": "adam", "learning_rate": 1e-4},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None, "frames": None},
    }
    if "separate" in flags:
        cfg["model"]["arch"] = "separate"
    if "no_recurrent" in flags:
        cfg["model"]["recurrent"] = False
    if "3d" in flags:
        use_3d_data(cfg)
        cfg["data"]["dataset"] = "jrs_cardiac_3d/dataset.json"
    if "smoke" in flags:
        shrink_for_smoke(cfg)
        cfg["model"]["gru_features"] = 4
    return cfg
