"""Joint motion estimation and segmentation of cardiac sequences (Qin et al., MICCAI 2018):
does joint learning segment the unlabelled frames better, and does the recurrent unit
smooth the motion over time?

    jrs-jax reproduce cardiac_motion           # 3 seeds x 3 rows
    jrs-jax reproduce cardiac_motion --quick   # pipeline check: tiny nets, a few steps

Claim (docs/methods.md §27, the issue's reading of the paper): joint learning segments
unlabelled frames better than separately trained motion and segmentation networks, and the
recurrent unit smooths motion over time.

Rows: separate networks (``cardiac_motion.py:separate``: the same architecture twice, one
trained on MSE + Huber, one on the supervised cross-entropy, each with its own optimiser; no
shared encoder, no warped term); joint without the recurrent unit
(``cardiac_motion.py:no_recurrent``: a conv block of the same width instead of the ConvGRU);
joint with it (the method). Equal budgets: ``STEPS`` updates of 2 whole cycles each (a
separate row's update steps both of its networks, as a joint row's steps its one), Adam 1e-3
for every row (the public code's 1e-4 is tuned for tens of thousands of updates).

Data: the ``cardiac`` scenario at 40 x 40, 10 sequences of 6 frames (one cycle, ED at frame
0, ES at frame 2): 7 for training, 3 held out; training labels only at ED and ES (the labels
of the other 4 frames of every sequence are hidden, kept for evaluation only). The size
keeps the 9 runs inside the 20-minute budget on 2 cores (a whole cycle is 6 frames per
sample). Columns: Dice on the unlabelled frames against the hidden labels, registration Dice
(every frame's labels warped onto ED), the temporal smoothness of the fields (mean squared
second difference over time; the ground truth's is shown too) and the endpoint error against
the generator's motion.

Variants (``cardiac_motion:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 5 sequences of 4 frames, a few steps, one seed
"""

from jrs_jax.config import parse_flags

STEPS = 300


def get_study(arg=None):
    flags = parse_flags(arg, {"quick"})
    quick = "quick" in flags
    steps = 12 if quick else STEPS
    settings = {
        "shape": [40, 40],
        "num_subjects": 10,
        "num_heldout": 3,
        "num_frames": 6,
        "num_labels": 3,
    }
    nets = {
        "model.features": [16, 32, 32],
        "model.decoder_features": [32, 16],
        "model.gru_features": 16,
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=5, num_heldout=2, num_frames=4)
        nets = {"model.features": [4, 8], "model.decoder_features": [4], "model.gru_features": 4}
    common = {
        **nets,
        "train.steps": steps,
        "train.log_every": 50,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "data.batch_size": 2,
        # the public code's Adam 1e-4 is for tens of thousands of updates; at this budget
        # every row gets 1e-3 (the rate of the other studies' U-Nets)
        "optim.learning_rate": 1e-3,
    }
    rows = [
        {
            "name": "separate",
            "label": "separate motion and segmentation networks",
            "config": "cardiac_motion.py:separate",
            "set": common,
        },
        {
            "name": "no_recurrent",
            "label": "joint, no recurrent unit",
            "config": "cardiac_motion.py:no_recurrent",
            "set": common,
        },
        {
            "name": "joint",
            "label": "joint, with the ConvGRU",
            "config": "cardiac_motion.py",
            "set": common,
        },
    ]
    unl, smooth = "val/seg_dice_unlabelled", "val/temporal_diff2"
    gaps = [
        {"row": "joint", "baseline": "separate", "metric": unl},
        {"row": "joint", "baseline": "separate", "metric": "val/reg_dice"},
        {"row": "no_recurrent", "baseline": "separate", "metric": unl},
        {"row": "joint", "baseline": "no_recurrent", "metric": smooth, "better": "lower"},
        {"row": "joint", "baseline": "no_recurrent", "metric": "val/reg_dice"},
        {"row": "joint", "baseline": "no_recurrent", "metric": "val/epe"},
    ]
    return {
        "name": "cardiac_motion",
        "method": "cardiac_motion",
        "paper": "Qin, Bai, Schlemper, Petersen, Piechnik, Neubauer, Rueckert, Joint Learning "
        "of Motion Estimation and Segmentation for Cardiac MR Image Sequences, MICCAI 2018",
        "claim": "joint learning segments the unlabelled frames better than separate networks, "
        "and the recurrent unit smooths the motion over time",
        "data": {
            "scenario": "cardiac",
            "seed": 0,
            "settings": settings,
            "why": "beating ring-and-pool hearts over one cycle, labels only at ED and ES (the "
            "other frames' labels hidden, for evaluation): the premise of a claim about "
            "segmenting unlabelled frames through motion",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "cardiac", "rows": rows}],
        "columns": {
            unl: "Dice, unlabelled frames",
            "val/seg_dice_labelled": "Dice, ED/ES",
            "val/reg_dice": "registration Dice",
            smooth: "temporal 2nd difference",
            "val/epe": "EPE",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"{steps} updates of 2 whole cycles each (a separate row's update steps both "
        "of its networks)",
    }
