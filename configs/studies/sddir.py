"""SDDIR (Chen et al., arXiv 2022): DDIR without given masks, with and without co-attention.

    jrs-jax reproduce sddir            # 3 seeds x 3 rows
    jrs-jax reproduce sddir --quick    # pipeline check: tiny nets, tiny data, a few steps

Claims (docs/methods.md §29): SDDIR, whose masks come from its own co-segmentation branch,
gets close to DDIR run with the ground-truth masks (boundary-band endpoint error and Dice),
so that no masks are needed at test time; and the co-attention block (every position of one
image attending to every position of the other at the bottleneck) improves the
segmentation, and through the masks the registration, over the same branch without it.

Rows: SDDIR without co-attention (``sddir.py:no_coatt``); SDDIR (``sddir.py``); DDIR with
the ground-truth masks of both images at training and test time (``ddir.py``, the
reference). Equal budgets: ``STEPS`` updates each, batch 4 (an SDDIR step updates its
segmentation and registration networks once, jointly); every registration network and the
segmentation U-Net have the same widths (encoder 16, 32, 32, 32; decoder 32, 32, 32, 16, 16).

Data: the ``ddir`` study's (the ``sliding`` scenario at 64 x 64, 20 subjects, 4 held out,
12 validation pairs with exact ground truth): organs turning in place against a smoothly
deformed body, textured tissue. All 16 training subjects are labelled (both methods train
with labels; only DDIR needs them at test time).

Variants (``sddir:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 10 subjects, 30 steps, one seed
"""

from jrs_jax.config import parse_flags

STEPS = 300


def get_study(arg=None):
    flags = parse_flags(arg, {"quick"})
    quick = "quick" in flags
    steps = 30 if quick else STEPS
    widths = {"features": [16, 32, 32, 32], "decoder_features": [32, 32, 32, 16, 16]}
    if quick:
        widths = {"features": [4, 8], "decoder_features": [8, 4]}
    settings = {"shape": [64, 64], "num_subjects": 20, "num_heldout": 4, "num_val_pairs": 12}
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)
    common = {
        **{f"model.{k}": v for k, v in widths.items()},
        "train.steps": steps,
        "train.log_every": 50,
        "train.ckpt_every": steps,
        "train.eval_every": steps,
        "data.batch_size": 4,
    }
    sddir = {**common, **{f"seg_model.{k}": v for k, v in widths.items()}}
    rows = [
        {
            "name": "sddir_no_coatt",
            "label": "SDDIR without co-attention",
            "config": "sddir.py:no_coatt",
            "set": sddir,
        },
        {"name": "sddir", "label": "SDDIR (co-attention)", "config": "sddir.py", "set": sddir},
        {
            "name": "ddir",
            "label": "DDIR, ground-truth masks (reference)",
            "config": "ddir.py",
            "set": common,
        },
    ]
    band = "val/epe_boundary"
    return {
        "name": "sddir",
        "method": "sddir",
        "paper": "Chen et al., Joint segmentation and discontinuity-preserving deformable "
        "registration: application to cardiac cine-MR images, arXiv 2022",
        "claim": "predicted masks get close to DDIR with ground-truth masks; co-attention "
        "improves segmentation and registration",
        "data": {
            "scenario": "sliding",
            "seed": 0,
            "settings": settings,
            "why": "the ddir study's data: sliding organs with exact ground truth, where DDIR "
            "with ground-truth masks is the reference SDDIR should approach",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "sliding", "rows": rows}],
        "columns": {
            band: "EPE boundary band",
            "val/reg_dice": "registration Dice",
            "val/seg_dice": "segmentation Dice (fixed)",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            {"row": "sddir", "baseline": "sddir_no_coatt", "metric": "val/seg_dice"},
            {"row": "sddir", "baseline": "sddir_no_coatt", "metric": band},
            {"row": "sddir", "baseline": "sddir_no_coatt", "metric": "val/reg_dice"},
            {"row": "sddir", "baseline": "ddir", "metric": band},
            {"row": "sddir", "baseline": "ddir", "metric": "val/reg_dice"},
        ],
        "budget": f"{steps} updates each, batch 4 (SDDIR: its two networks jointly); the same "
        "U-Net widths for every network",
        "field_figure": True,
    }
