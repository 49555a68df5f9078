"""Segmentation-informed registration of dynamic 2-D vocal-tract MR (Ruthven et al., BSPC
2022): does giving the registration network the (cleaned) segmentations preserve contacts?

    jrs-jax reproduce seg_informed_2d           # 3 seeds x 3 rows
    jrs-jax reproduce seg_informed_2d --quick   # pipeline check: tiny nets, a few steps

Claim (docs/methods.md §22, proposed target): compared with the same registration network
given images only, the segmentation-informed network reaches a higher warped-label Dice and
a smaller change in the tongue / soft-palate contact count after warping.

Rows: image-only VoxelMorph (``seg_informed_2d.py:image_only``: the same registration U-Net,
plain displacement, loss MSE + 0.01 grad-L2 + 1 Dice of the manual labels, the same pairs and
registration updates; only the segmentation inputs differ); segmentation-informed without
the post-processing (``model.lcc_classes=[]``: the raw argmax maps as inputs, the ablation of
stage 2); segmentation-informed (the four stages; LCC on the tissues 1-4). Equal budgets:
``REG`` registration updates of batch 4 in every row; the two segmentation-informed rows
first train their segmentation U-Net for ``SEG`` updates (reported: it is the pipeline's
extra cost, as the public code trains it separately).

Data: the ``speech`` scenario at 64 x 64: 12 speakers of 12 frames (9 for training, all
frames labelled; 3 held out), a mid-sagittal vocal tract with 6 classes, the tongue touching
the soft palate in about half of every speaker's frames and separated by a gap of >= 2
pixels in the others; 18 validation pairs (6 per held-out speaker: contact -> separated,
separated -> contact, both in contact, both separated). The contact is a thin line in the
image (the tissues are grey, the air gap dark and 2-5 pixels wide): the premise that an
intensity-driven field can open or close it.

Variants (``seg_informed_2d:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 6 speakers, a few steps, one seed
"""

from jrs_jax.config import parse_flags

REG, SEG = 400, 200


def get_study(arg=None):
    flags = parse_flags(arg, {"quick"})
    quick = "quick" in flags
    reg, seg = (24, 12) if quick else (REG, SEG)
    settings = {"shape": [64, 64], "num_subjects": 12, "num_heldout": 3, "num_val_pairs": 18}
    nets = {
        "seg_model.features": [16, 32, 32, 32],
        "seg_model.decoder_features": [32, 32, 32, 16],
        "reg_model.features": [16, 32, 32, 32],
        "reg_model.decoder_features": [32, 32, 32, 32, 32, 16, 16],
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=6, num_heldout=2, num_val_pairs=6)
        nets = {
            "seg_model.features": [8, 16],
            "seg_model.decoder_features": [8],
            "reg_model.features": [8, 16],
            "reg_model.decoder_features": [16, 8],
        }

    def sets(steps, seg_steps, **extra):
        return {
            **nets,
            "train.steps": steps,
            "schedule.seg_steps": seg_steps,
            "train.log_every": 50,
            "train.eval_every": steps,
            "train.ckpt_every": steps,
            "data.batch_size": 4,
            **extra,
        }

    rows = [
        {
            "name": "image_only",
            "label": "image-only VoxelMorph (same loss, pairs, updates)",
            "config": "seg_informed_2d.py:image_only",
            "set": sets(reg, 0),
        },
        {
            "name": "seg_no_lcc",
            "label": "segmentation-informed, no post-processing",
            "config": "seg_informed_2d.py",
            "set": sets(reg + seg, seg, **{"model.lcc_classes": []}),
        },
        {
            "name": "seg_informed",
            "label": "segmentation-informed (LCC-cleaned segmentations)",
            "config": "seg_informed_2d.py",
            "set": sets(reg + seg, seg),
        },
    ]
    gaps = [
        {"row": "seg_informed", "baseline": "image_only", "metric": "val/reg_dice"},
        {
            "row": "seg_informed",
            "baseline": "image_only",
            "metric": "val/contact_error",
            "better": "lower",
        },
        {"row": "seg_informed", "baseline": "image_only", "metric": "val/contact_kept"},
        {"row": "seg_informed", "baseline": "image_only", "metric": "val/folding_percent"},
        {"row": "seg_informed", "baseline": "seg_no_lcc", "metric": "val/reg_dice"},
        {
            "row": "seg_informed",
            "baseline": "seg_no_lcc",
            "metric": "val/contact_error",
            "better": "lower",
        },
    ]
    return {
        "name": "seg_informed_2d",
        "method": "seg_informed_2d",
        "paper": "Ruthven, Miquel, King, A segmentation-informed deep learning framework to "
        "register dynamic two-dimensional magnetic resonance images of the vocal tract "
        "during speech, BSPC 2022",
        "claim": "segmentation inputs raise warped-label Dice and preserve the tongue / "
        "soft-palate contacts better than image-only registration",
        "data": {
            "scenario": "speech",
            "seed": 0,
            "settings": settings,
            "why": "64x64 vocal-tract frames, 12 speakers x 12 frames, the tongue touching the "
            "soft palate in about half of the frames (a gap of >= 2 pixels in the others): "
            "contacts that open and close between the frames of a pair, the premise of a "
            "contact-preservation claim",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "speech", "rows": rows}],
        "columns": {
            "val/reg_dice": "registration Dice",
            "val/contact_error": "contact-count error",
            "val/contact_kept": "contact state kept",
            "val/seg_dice": "segmentation Dice (cleaned)",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"{reg} registration updates of batch 4 in every row; the "
        f"segmentation-informed rows first train their segmentation U-Net for {seg} updates",
    }
