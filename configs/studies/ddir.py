"""DDIR (Chen et al., MICCAI 2021): one smooth field per region against one global field.

    jrs-jax reproduce ddir            # 3 seeds x 3 rows
    jrs-jax reproduce ddir --quick    # pipeline check: tiny nets, tiny data, a few steps

Claim (docs/methods.md §28; the paper's: better registration and more realistic motion at
tissue interfaces): on images whose organs slide against their surroundings, DDIR, one
probabilistic diffeomorphic field per region stitched by the (given) masks, lowers the
endpoint error in a ±2-voxel band around the sliding boundaries against a single globally
smooth field, at no loss of Dice or regularity (folding %).

Rows: VoxelMorph-diff (``voxelmorph.py:diffeo,dice``: one stationary velocity, diffusion
regulariser, + Dice supervision: the labels DDIR trains with, at the package's own weights);
DDIR with a single region (``ddir.py:global``: DDIR's network, loss and weights with one
field for the whole image, the controlled ablation); DDIR with the ground-truth masks
(three regions: background + body, the organ, the two-label structure), with the public
code's weights (NCC ×20, Dice ×200, KL ×0.025) and with VoxelMorph-diff's (NCC, Dice and a
masked diffusion term per region, ×1 each: the region split alone). Equal budgets:
``STEPS`` updates each, batch 4, the same U-Net widths for every registration network.

Data: the ``sliding`` scenario at 64 x 64, 20 subjects (4 held out, 12 validation pairs with
exact ground-truth fields): a smoothly deformed body, the organ (label 2) and the structure
(labels 3, 4) each turning in place by a rotation whose arc is 2 - 4 voxels at their
boundary (tangential sliding), tissue texture carried by each region's motion. The premise
of the claim: a motion that jumps at known boundaries and is visible inside the regions.

Variants (``ddir:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 10 subjects, 30 steps, one seed
  ``long``   diagnostic: 3x the updates (1200), seed 0, rows VoxelMorph-diff, DDIR and DDIR
             with VoxelMorph-diff's weights: is the boundary error a budget effect?
  ``gentle`` diagnostic: the same rows and budget on data whose organs turn half as far
             (arc 1 - 2 voxels per subject, so at most 4 between two subjects, inside the
             capture range of the 4-voxel tissue texture), seed 0: is the boundary error a
             data-difficulty effect?
"""

from jrs_jax.config import parse_flags

STEPS = 400


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "long", "gentle"})
    quick, gentle = "quick" in flags, "gentle" in flags
    long = "long" in flags or gentle  # the diagnostics' rows, seed and gaps
    steps = 30 if quick else 3 * STEPS if long and not gentle else STEPS
    net = {"model.features": [16, 32, 32, 32], "model.decoder_features": [32, 32, 32, 16, 16]}
    if quick:
        net = {"model.features": [4, 8], "model.decoder_features": [8, 4]}
    settings = {"shape": [64, 64], "num_subjects": 20, "num_heldout": 4, "num_val_pairs": 12}
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)
    if gentle:
        settings["shift"] = [1.0, 2.0]
    common = {
        **net,
        "train.steps": steps,
        "train.log_every": 50,
        "train.ckpt_every": steps,
        "train.eval_every": steps,
        "data.batch_size": 4,
    }
    rows = [
        {
            "name": "vxm_diff",
            "label": "VoxelMorph-diff + Dice (one global field)",
            "config": "voxelmorph.py:diffeo,dice",
            "set": common,
        },
        {
            "name": "ddir_global",
            "label": "DDIR, one region (one global field, DDIR's loss)",
            "config": "ddir.py:global",
            "set": common,
        },
        {"name": "ddir", "label": "DDIR, ground-truth masks", "config": "ddir.py", "set": common},
        {
            "name": "ddir_vxm_loss",
            "label": "DDIR, ground-truth masks, VoxelMorph-diff's loss weights",
            "config": "ddir.py:vxm_loss",
            "set": common,
        },
    ]
    if long:
        rows = [r for r in rows if r["name"] != "ddir_global"]
    band = "val/epe_boundary"
    return {
        "name": "ddir",
        "method": "ddir",
        "paper": "Chen et al., A Deep Discontinuity-Preserving Image Registration Network, "
        "MICCAI 2021",
        "claim": "region-wise fields lower the endpoint error at sliding boundaries against a "
        "global smooth field, at no loss of Dice or regularity",
        "data": {
            "scenario": "sliding",
            "seed": 0,
            "settings": settings,
            "why": "64x64 sliding organs (rotation in place, arc 2-4 voxels at the boundary), "
            "textured tissue, exact ground-truth pair fields: a motion that jumps at known "
            "boundaries, the premise of a discontinuity-preserving claim",
        },
        "seeds": [0] if quick or long else [0, 1, 2],
        "groups": [{"name": "sliding", "rows": rows}],
        "columns": {
            band: "EPE boundary band",
            "val/epe_interior": "EPE elsewhere",
            "val/reg_dice": "registration Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            {"row": "ddir", "baseline": "vxm_diff", "metric": band},
            {"row": "ddir", "baseline": "ddir_global", "metric": band},
            {"row": "ddir", "baseline": "vxm_diff", "metric": "val/reg_dice"},
            {"row": "ddir", "baseline": "vxm_diff", "metric": "val/folding_percent"},
            {"row": "ddir", "baseline": "ddir_global", "metric": "val/reg_dice"},
            {"row": "ddir_vxm_loss", "baseline": "vxm_diff", "metric": band},
            {"row": "ddir_vxm_loss", "baseline": "vxm_diff", "metric": "val/reg_dice"},
        ]
        if not long
        else [
            {"row": "ddir", "baseline": "vxm_diff", "metric": band},
            {"row": "ddir_vxm_loss", "baseline": "vxm_diff", "metric": band},
            {"row": "ddir", "baseline": "vxm_diff", "metric": "val/reg_dice"},
            {"row": "ddir_vxm_loss", "baseline": "vxm_diff", "metric": "val/reg_dice"},
        ],
        "budget": f"{steps} updates each, batch 4; the same U-Net widths for every "
        "registration network (DDIR: one per region)",
        "field_figure": True,
    }
