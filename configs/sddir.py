"""SDDIR: joint segmentation and discontinuity-preserving registration (Chen et al. 2022).

Variants (``configs/sddir.py:VARIANTS``, comma-separated):
  ``no_coatt``  the segmentation branch without the co-attention block (the ablation)
  ``3d``        3-D synthetic data (``jrs-jax make-synthetic --scenario sliding --3d``), batch 1
  ``smoke``     tiny networks and a few steps (tests)

The registration branch and its loss are DDIR's (``configs/ddir.py``, the public ``ccmim/DDIR``
defaults: NCC ×20, Dice ×200, KL ×0.025 per region, ``prior_lambda = 100``, 7 squarings at
half resolution); the segmentation branch is a shared U-Net on both images (encoder 16, 32,
32, 32; decoder 32, 32, 32, 16, 16) with the affinity co-attention at its bottleneck, trained
with ``CE(mov) + CE(fix)`` ×100 (no public code: the weight gives the two cross-entropies the
scale of the Dice ×200 term). ``model.regions`` as in DDIR.
"""

import os

from jrs_jax.config import load_config, parse_flags, shrink_for_smoke

#: The registration branch's config (data, model, loss, optimiser, schedule).
DDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddir.py")


def get_config(arg=None):
    flags = parse_flags(arg, {"no_coatt", "3d", "smoke"})
    cfg = load_config(DDIR + (":3d" if "3d" in flags else ""))
    cfg["method"] = "sddir"
    cfg["seg_model"] = {
        "co_attention": "no_coatt" not in flags,
        "attention_features": None,  # f, g, h1, h2 widths (None: the bottleneck's)
        "features": [16, 32, 32, 32],
        "decoder_features": [32, 32, 32, 16, 16],
        "dtype": "float32",
        "remat": False,
    }
    cfg["loss"]["seg_weight"] = 100.0
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("model", "seg_model"))
    return cfg
