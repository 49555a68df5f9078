"""Cross-stitch (Beljaards et al., MIDL 2020): the paper's comparison on the synthetic anatomy.

    jrs-jax reproduce cross_stitch           # 3 seeds x 5 rows
    jrs-jax reproduce cross_stitch --quick   # pipeline check: tiny nets, a few steps

Claim (paper): cross-stitch sharing between a segmentation and a registration path beats
both single-task networks and a shared-encoder network.

Rows: registration alone (VoxelMorph + Dice on labelled pairs, ``configs/voxelmorph.py:dice``);
segmentation alone (U-Net on the fixed image, ``configs/unet_seg.py``); the shared encoder
with two decoders (``cross_stitch.py:shared``: same inputs ``[I_m, I_f, S_m]``, same loss,
only the architecture differs); two paths without stitching (``cross_stitch.py:separate``:
what the inputs and the joint loss give without any sharing); cross-stitch. Every path has
the same widths (encoder 16, 32, 32, 32; decoder 32, 32, 32, 16, 16) and every row the same
loss pieces: the registration rows NCC (window 9) + 0.5 bending energy (the public code's,
also for VoxelMorph) + a label term (VoxelMorph: Dice of ``S_m∘φ``; the joint rows: NCC of
``S_m∘φ``, the paper's); the segmentation rows Dice + cross-entropy (UNetSeg's loss; the
joint rows set ``loss.seg_ce_weight=1`` so their segmentation loss is the same).

Equal budgets: every row trains ``steps`` updates of batch 4 (one optimiser per row; a joint
row's update steps both of its tasks, as a single-task row steps its one task).

Data: the ``anatomy`` scenario at 64 x 64, 20 subjects (all training subjects labelled:
every pair needs ``S_m`` and ``S_f``), 4 held out and their 12 ordered pairs for validation
(so the pair-mode segmentation Dice of the joint rows scores the same 4 subjects, 3 times
each, as UNetSeg's). The image alone registers the default anatomy to ~0.92 Dice, so a
label-driven claim needs labels to carry what the image does not: the 3 | 4 boundary is
hidden (class means 0.05, 0.35, 0.8, 0.6, 0.6).

Variants (``cross_stitch:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data, 30 steps, one seed (pipeline check)
  ``long``   diagnostic: the two-path rows only (no stitching, cross-stitch), twice the
             updates (720), seed 0: is the cross-stitch's registration gap a budget effect?
"""

from jrs_jax.config import parse_flags


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "long"})
    quick = "quick" in flags
    steps = 30 if quick else 360
    if "long" in flags:
        steps *= 2
    nets = {"features": [16, 32, 32, 32], "decoder_features": [32, 32, 32, 16, 16]}
    settings = {
        "shape": [64, 64],
        "num_subjects": 20,
        "num_heldout": 4,
        "num_val_pairs": 12,
        "label_means": [0.05, 0.35, 0.8, 0.6, 0.6],
    }
    if quick:
        nets = {"features": [8, 16, 16], "decoder_features": [16, 8, 8]}
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=6)

    def sets(**extra):
        out = {
            "train.steps": steps,
            "train.log_every": 50,
            "train.eval_every": steps,
            "train.ckpt_every": steps,
            "data.batch_size": 4,
        }
        out.update({f"model.{k}": v for k, v in nets.items()})
        return {**out, **extra}

    same_reg = {"loss.regulariser": "bending_energy", "loss.reg_weight": 0.5}
    joint = {"loss.seg_ce_weight": 1.0}
    rows = [
        {
            "name": "voxelmorph_dice",
            "label": "VoxelMorph + Dice (registration alone)",
            "config": "voxelmorph.py:dice",
            "set": sets(**same_reg),
        },
        {
            "name": "unet_seg",
            "label": "UNetSeg (segmentation alone)",
            "config": "unet_seg.py",
            "set": sets(),
        },
        {
            "name": "shared_encoder",
            "label": "shared encoder, two decoders",
            "config": "cross_stitch.py:shared",
            "set": sets(**joint),
        },
        {
            "name": "separate",
            "label": "two paths, no stitching",
            "config": "cross_stitch.py:separate",
            "set": sets(**joint),
        },
        {
            "name": "cross_stitch",
            "label": "cross-stitch",
            "config": "cross_stitch.py",
            "set": sets(**joint),
        },
    ]
    gaps = [
        {"row": "cross_stitch", "baseline": "voxelmorph_dice", "metric": "val/reg_dice"},
        {"row": "cross_stitch", "baseline": "unet_seg", "metric": "val/seg_dice"},
        {"row": "cross_stitch", "baseline": "shared_encoder", "metric": "val/reg_dice"},
        {"row": "cross_stitch", "baseline": "shared_encoder", "metric": "val/seg_dice"},
        {"row": "cross_stitch", "baseline": "separate", "metric": "val/reg_dice"},
        {"row": "cross_stitch", "baseline": "separate", "metric": "val/seg_dice"},
    ]
    seeds = [0] if quick else [0, 1, 2]
    if "long" in flags:
        rows = [r for r in rows if r["name"] in ("separate", "cross_stitch")]
        gaps = [g for g in gaps if g["baseline"] == "separate"]
        seeds = [0]
    return {
        "name": "cross_stitch",
        "method": "cross_stitch",
        "paper": "Beljaards, Elmahdy, Verbeek, Staring, A Cross-Stitch Architecture for Joint "
        "Registration and Segmentation in Adaptive Radiotherapy, MIDL 2020",
        "claim": "cross-stitch sharing beats both single-task networks and a shared encoder",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": f"{settings['shape'][0]}x{settings['shape'][1]} synthetic anatomy, "
            f"{settings['num_subjects']} subjects, all training subjects labelled (every "
            f"pair needs S_m and S_f), {settings['num_heldout']} held out with all their "
            f"{settings['num_val_pairs']} ordered validation pairs; the 3 | 4 boundary hidden "
            "from the image (class means 0.05 0.35 0.8 0.6 0.6), since the image alone "
            "registers the default anatomy to ~0.92 Dice and the claim is label-driven",
        },
        "seeds": seeds,
        "groups": [{"name": "all labelled", "rows": rows}],
        "columns": {
            "val/reg_dice": "registration Dice",
            "val/seg_dice": "segmentation Dice (S_f)",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"every row {steps} updates of batch 4 (one optimiser each; a joint "
        "row's update trains both tasks at once).",
    }
