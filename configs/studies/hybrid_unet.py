"""Hybrid U-Net (Li et al., MICCAI 2019): one network segments both time points and
registers them.

    jrs-jax reproduce hybrid_unet           # 3 seeds x 4 rows
    jrs-jax reproduce hybrid_unet --quick   # pipeline check: tiny nets, a few steps

Claim (the issue's reading of the paper): one network does both tasks at least as well as
separate networks, with more consistent segmentations over time (Dice of ``Seg(t1)∘φ`` with
``Seg(t2)``); the consistency term ``Dice(S_m∘φ, S_f)`` is what makes the difference.

Rows: separate networks (``hybrid_unet.py:separate``: a segmentation U-Net applied to each
scan and a registration U-Net on the pair, the same widths, losses and updates); the hybrid
without the consistency term (``no_consistency``); the hybrid (consistency on the label
maps, the spec's ``Dice(S_m∘φ, S_f)``); the hybrid with the consistency term on its own
predictions (``predictions``: ``Dice(Ŝ_m∘φ, Ŝ_f)``, the ablation that targets consistency
directly). Equal budgets: ``STEPS`` updates of batch 4 each (a separate row's update steps
both of its networks), within-subject pairs of labelled training scans.

Data: the ``longitudinal`` scenario at 64 x 64: 14 subjects with 3 scans each (11 for
training, 3 held out; every held-out subject's 6 ordered scan pairs evaluated): a large
deformation across subjects, a small change within one (the organ, label 2, grows or shrinks
by 1-2 voxels of radius per time step), small positioning jitter and independent noise per
scan: the premise of a claim about consistency over time within a subject.

Variants (``hybrid_unet:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 6 subjects, a few steps, one seed
  ``long``   diagnostic: separate networks and the hybrid (consistency on labels) at 3x the
             updates (1200), seed 0: is the hybrid's registration gap a budget effect?
"""

from jrs_jax.config import parse_flags

STEPS = 400


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "long"})
    quick, long = "quick" in flags, "long" in flags
    steps = 20 if quick else 3 * STEPS if long else STEPS
    settings = {"shape": [64, 64], "num_subjects": 14, "num_heldout": 3, "num_timepoints": 3}
    nets = {"model.features": [16, 32, 32, 32], "model.decoder_features": [32, 32, 32, 16, 16]}
    if quick:
        # 32 x 32: the organ is ~4 voxels of radius, so a gentler change
        settings.update(shape=[32, 32], num_subjects=6, num_heldout=2, change=[0.5, 1.0])
        nets = {"model.features": [8, 16], "model.decoder_features": [16, 8]}
    common = {
        **nets,
        "train.steps": steps,
        "train.log_every": 50,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "data.batch_size": 4,
    }
    rows = [
        {
            "name": "separate",
            "label": "separate segmentation and registration networks",
            "config": "hybrid_unet.py:separate",
            "set": common,
        },
        {
            "name": "no_consistency",
            "label": "hybrid, no consistency term",
            "config": "hybrid_unet.py:no_consistency",
            "set": common,
        },
        {
            "name": "hybrid",
            "label": "hybrid (consistency on labels)",
            "config": "hybrid_unet.py",
            "set": common,
        },
        {
            "name": "predictions",
            "label": "hybrid, consistency on its predictions",
            "config": "hybrid_unet.py:predictions",
            "set": common,
        },
    ]
    if long:
        rows = [r for r in rows if r["name"] in ("separate", "hybrid")]
    cons = "val/seg_consistency"
    gaps = [
        {"row": "hybrid", "baseline": "separate", "metric": "val/seg_dice"},
        {"row": "hybrid", "baseline": "separate", "metric": "val/reg_dice"},
        {"row": "hybrid", "baseline": "separate", "metric": cons},
        {"row": "hybrid", "baseline": "no_consistency", "metric": cons},
        {"row": "hybrid", "baseline": "no_consistency", "metric": "val/reg_dice"},
        {"row": "predictions", "baseline": "separate", "metric": cons},
        {"row": "predictions", "baseline": "hybrid", "metric": "val/seg_dice"},
    ]
    return {
        "name": "hybrid_unet",
        "method": "hybrid_unet",
        "paper": "Li, Niessen, Klein, de Groot, Ikram, Vernooij, Bron, A Hybrid Deep Learning "
        "Framework for Integrated Segmentation and Registration: Evaluation on Longitudinal "
        "White Matter Tract Changes, MICCAI 2019",
        "claim": "one network segments and registers at least as well as separate networks, "
        "with more consistent segmentations over time",
        "data": {
            "scenario": "longitudinal",
            "seed": 0,
            "settings": settings,
            "why": "several scans per subject, large variation across subjects and a small "
            "local change (a structure growing or shrinking) within one: the premise of a "
            "claim about segmentation consistency over time",
        },
        "seeds": [0] if quick or long else [0, 1, 2],
        "groups": [{"name": "longitudinal", "rows": rows}],
        "columns": {
            "val/reg_dice": "registration Dice (within subject)",
            "val/seg_dice": "segmentation Dice",
            cons: "consistency Seg(t1)∘φ vs Seg(t2)",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            g for g in gaps if not long or {g["row"], g["baseline"]} <= {"separate", "hybrid"}
        ],
        "budget": f"{steps} updates of batch 4 each (a separate row's update steps both of its "
        "networks); within-subject pairs of labelled training scans",
    }
