"""Segis-Net (Li et al., NeuroImage 2021): single-step segmentation + registration of
longitudinal tract scans.

    jrs-jax reproduce segis_net           # 3 seeds x 2 rows
    jrs-jax reproduce segis_net --quick   # pipeline check: tiny nets, a few steps

Claim (docs/methods.md §34, proposed target): the single-step model beats a multi-stage
pipeline (segment, then register) on the spatio-temporal consistency of the tract
segmentations.

Rows: the segment-then-register pipeline (``segis_net.py:pipeline``: the same two networks
and updates with the coupling term off, ``γ = 0``, so the segmentation and the registration
network are trained separately and the segmentations are compared through the field only at
evaluation); Segis-Net (``γ = 1``, the public code's). Equal budgets: ``STEPS`` updates of
batch 4 each, every update stepping both networks; λ ramped 10 -> 100 over the first half,
as the public code's +4 per epoch; Adam 1e-3 for both rows (the Keras code's 1e-4 is tuned
for a hundred epochs of real volumes).

Data: the ``tracts`` scenario combined with ``longitudinal``, 64 x 64: 14 subjects of 2
scans (11 for training, 3 held out), three crossing tube-like tracts with overlapping
multi-label maps (a voxel may belong to two tracts), one tract (tract_1) thickening or
thinning slightly between the scans: overlapping structures and a small change over time,
the premise of a per-tract, longitudinal-consistency claim. Columns: Dice per tract, the
consistency ``Seg(t1)∘φ`` vs ``Seg(t2)``, registration Dice, and the training time.

Variants (``segis_net:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 6 subjects, a few steps, one seed
"""

from jrs_jax.config import parse_flags

STEPS = 400


def get_study(arg=None):
    flags = parse_flags(arg, {"quick"})
    quick = "quick" in flags
    steps = 20 if quick else STEPS
    settings = {
        "shape": [64, 64],
        "num_subjects": 14,
        "num_heldout": 3,
        "num_timepoints": 2,
        "num_labels": 3,
    }
    nets = {
        "seg_model.features": [16, 32, 32, 32],
        "seg_model.decoder_features": [32, 32, 32, 16],
        "reg_model.features": [16, 32, 32, 32],
        "reg_model.decoder_features": [32, 32, 32, 16, 16],
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=6, num_heldout=2)
        nets = {
            "seg_model.features": [8, 16],
            "seg_model.decoder_features": [8],
            "reg_model.features": [8, 16],
            "reg_model.decoder_features": [16, 8],
        }
    common = {
        **nets,
        "train.steps": steps,
        "schedule.ramp_steps": steps // 2,
        "optim.learning_rate": 1e-3,
        "train.log_every": 50,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "data.batch_size": 4,
    }
    rows = [
        {
            "name": "pipeline",
            "label": "segment, then register (γ = 0)",
            "config": "segis_net.py:pipeline",
            "set": common,
        },
        {
            "name": "segis_net",
            "label": "Segis-Net (single step)",
            "config": "segis_net.py",
            "set": common,
        },
    ]
    cons = "val/seg_consistency"
    tracts = [f"tract_{k}" for k in range(1, 4)]
    gaps = [{"row": "segis_net", "baseline": "pipeline", "metric": cons}]
    gaps += [{"row": "segis_net", "baseline": "pipeline", "metric": "val/reg_dice"}]
    gaps += [{"row": "segis_net", "baseline": "pipeline", "metric": "val/seg_dice"}]
    gaps += [
        {"row": "segis_net", "baseline": "pipeline", "metric": f"val/seg_dice/{t}"} for t in tracts
    ]
    columns = {cons: "consistency Seg(t1)∘φ vs Seg(t2)", "val/seg_dice": "segmentation Dice"}
    columns.update({f"val/seg_dice/{t}": f"Dice {t}" for t in tracts})
    columns.update({"val/reg_dice": "registration Dice", "val/folding_percent": "folding %"})
    return {
        "name": "segis_net",
        "method": "segis_net",
        "paper": "Li, Niessen, Klein, Vernooij, Bron, Longitudinal diffusion MRI analysis using "
        "Segis-Net: A single-step deep-learning framework for simultaneous segmentation and "
        "registration, NeuroImage 2021",
        "claim": "single-step training gives more consistent tract segmentations over time "
        "than segmenting, then registering",
        "data": {
            "scenario": "tracts",
            "seed": 0,
            "settings": settings,
            "why": "crossing tracts with overlapping multi-label maps, scanned twice with a "
            "slight change of one tract: overlapping structures and consistency over time, "
            "the premise of the claim",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "tracts x longitudinal", "rows": rows}],
        "columns": columns,
        "gaps": gaps,
        "budget": f"{steps} updates of batch 4 each, both networks stepped by every update; λ "
        f"ramped 10 -> 100 over {steps // 2}",
    }
