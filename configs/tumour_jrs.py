"""Concurrent atlas-to-patient registration and tumour segmentation (Estienne et al. 2020).

Variants (``configs/tumour_jrs.py:VARIANTS``, comma-separated):
  ``unmasked``  the similarity is not masked (w = 1): the ablation of the paper's idea
  ``hard``      the public code's mask: w = [p_tumour < 0.5] (argmax) instead of 1 − p_tumour
  ``truth``     the oracle mask 1 − T (the true tumour; a diagnostic bound)
  ``separate``  separate networks: a segmentation U-Net and a VoxelMorph U-Net, same loss
  ``ncc``       masked local NCC (window 9) instead of the weighted MSE
  ``3d``        3-D data, batch 1
  ``smoke``     tiny networks and a few steps (tests)

Defaults follow the public code where it has them: tumour-masked MSE similarity, the
tumour cross-entropy weighted 0.5, Adam; jrs_jax's: a displacement field (not the public
code's cumulative-sum of predicted gradients) with a diffusion regulariser λ = 0.1
(MSE of intensities in [0, 1] is ~0.01-0.05), learning rate 1e-3, batch 4. Data: the
``lesion`` scenario (``jrs-jax make-synthetic --scenario lesion``): subject 0 is the
lesion-free atlas.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"unmasked", "hard", "truth", "separate", "ncc", "3d", "smoke"})
    cfg = {
        "method": "tumour_jrs",
        "seed": 0,
        "data": {
            "dataset": "jrs_lesion/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "model": {
            "arch": "shared",
            "tumour_label": None,  # None: the label named "lesion" / "tumour", else the last
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "head_init_std": 1e-5,
            "dtype": "float32",
        },
        "loss": {
            "mask": "soft",
            "similarity": "mse",
            "similarity_kwargs": {},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 0.1,
            "seg_weight": 0.5,
        },
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "refine": {"steps": 50, "lr": 1e-4},
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # atlas mode: subject 0 (the atlas) onto every held-out patient; labels: the healthy
        # structures scored by the registration Dice (None: all, the lesion included)
        "eval": {
            "max_pairs": 24,
            "batch_size": 8,
            "mode": None,
            "labels": None,
            "atlas": None,
            "lesion_band": 4,
        },
    }
    for name in ("unmasked", "hard", "truth"):
        if name in flags:
            cfg["loss"]["mask"] = {"unmasked": "none"}.get(name, name)
    if "separate" in flags:
        cfg["model"]["arch"] = "separate"
    if "ncc" in flags:
        cfg["loss"].update(similarity="local_ncc", similarity_kwargs={"window": 9}, reg_weight=1.0)
    if "3d" in flags:
        use_3d_data(cfg)
        cfg["data"]["dataset"] = "jrs_lesion_3d/dataset.json"
    if "smoke" in flags:
        shrink_for_smoke(cfg)
    return cfg
