"""JSSR (Li et al., ECCV 2020): does joint synthesis + registration + segmentation beat MI
registration and the separate pipeline on cross-modal pairs?

    jrs-jax reproduce jssr           # 5 rows x 3 seeds, 64 x 64, STEPS updates each
    jrs-jax reproduce jssr --quick   # pipeline check: tiny nets and data, 10 steps

Claim (docs/methods.md §30): joint synthesis, registration and segmentation register two
modalities better (warped-label Dice) than registration with mutual information and than
the separately trained synthesis-then-registration pipeline.

Rows (every one registers moving = modality X onto fixed = modality Y):
  ``vxm_mi``       VoxelMorph with mutual information (the usual cross-modal baseline)
  ``vxm_mi_dice``  the same + Dice on labelled pairs (VoxelMorph's ``--seg``)
  ``separate``     synthesis (G with D, τ = identity) for STEPS updates, then STEPS
                   updates of registration on the frozen G's output (``jssr.py:separate``)
  ``jssr_no_seg``  joint synthesis + registration, no segmentation consistency
  ``jssr``         JSSR: pretraining, then joint with the consistency Dice
Columns: cross-modal registration Dice, segmentation Dice of modality X through synthesis
(``S(G(x, y))`` against the moving labels; VoxelMorph has none), folding %.

Variants (``jssr:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data, 10 steps, one seed
  ``bound``  diagnostic: MI registration of X onto Y against L1 registration of Y onto Y
             (``vxm_l1_y``: what JSSR's registration term reaches with a perfect synthesis),
             also with a 10x weaker regulariser (``vxm_l1_y_soft``)
"""

from jrs_jax.config import parse_flags

STEPS = 600
NETS = {"features": [16, 32, 32], "decoder_features": [32, 32, 16]}


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "bound"})
    quick = "quick" in flags
    steps = 10 if quick else STEPS
    settings = {
        "shape": [64, 64],
        "num_subjects": 20,
        "num_heldout": 4,
        "num_val_pairs": 12,
        "contrast": "scrambled",
        "label_modality": 1,
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)
    common = {
        "train.steps": steps,
        "train.log_every": 25 if not quick else 5,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "data.moving_channel": 0,
        "data.fixed_channel": 1,
    }
    nets = {"features": [4, 8], "decoder_features": [8, 4]} if quick else NETS
    reg_nets = {**nets, "decoder_features": [*nets["decoder_features"], nets["features"][0]]}
    vxm = {
        **common,
        "model.features": nets["features"],
        "model.decoder_features": reg_nets["decoder_features"],
    }
    jssr = {**common, "schedule.pretrain_steps": steps // 2}
    for section, n in (("gen_model", nets), ("seg_model", nets), ("reg_model", reg_nets)):
        jssr.update({f"{section}.{k}": v for k, v in n.items()})
    jssr["disc.features"] = [4, 8] if quick else [16, 32, 64]
    rows = [
        {"name": "vxm_mi", "label": "VoxelMorph, MI", "config": "voxelmorph.py:mi", "set": vxm},
        {
            "name": "vxm_mi_dice",
            "label": "VoxelMorph, MI + Dice",
            "config": "voxelmorph.py:mi,dice",
            "set": vxm,
        },
        {
            "name": "separate",
            "label": "synthesis, then registration",
            "config": "jssr.py:separate",
            # G alone for `steps` updates, then Φ alone for `steps`: Φ's budget as the others'
            "set": {**jssr, "train.steps": 2 * steps, "schedule.pretrain_steps": steps},
        },
        {
            "name": "jssr_no_seg",
            "label": "JSSR without segmentation",
            "config": "jssr.py:no_seg",
            "set": jssr,
        },
        {"name": "jssr", "label": "JSSR", "config": "jssr.py", "set": jssr},
    ]
    if "bound" in flags:
        mono = {**vxm, "data.moving_channel": 1, "data.fixed_channel": 1}
        rows = [
            rows[0],
            {
                "name": "vxm_l1_y",
                "label": "VoxelMorph, L1, Y onto Y",
                "config": "voxelmorph.py:l1",
                "set": mono,
            },
            {
                "name": "vxm_l1_y_soft",
                "label": "VoxelMorph, L1, Y onto Y, λ_reg = 0.1",
                "config": "voxelmorph.py:l1",
                "set": {**mono, "loss.reg_weight": 0.1},
            },
        ]
        gaps = [
            {"row": row, "baseline": "vxm_mi", "metric": m}
            for row in ("vxm_l1_y", "vxm_l1_y_soft")
            for m in ("val/reg_dice", "val/folding_percent")
        ]
        return {**_study(quick, steps, settings, rows, gaps), "name": "jssr_bound"}
    gaps = [
        {"row": row, "baseline": base, "metric": metric}
        for row, base in (
            ("jssr", "vxm_mi"),
            ("jssr", "vxm_mi_dice"),
            ("jssr", "separate"),
            ("jssr", "jssr_no_seg"),
        )
        for metric in ("val/reg_dice", "val/folding_percent")
    ]
    return _study(quick, steps, settings, rows, gaps)


def _study(quick, steps, settings, rows, gaps):
    return {
        "name": "jssr",
        "method": "jssr",
        "paper": "Li et al., JSSR: A Joint Synthesis, Segmentation, and Registration System for "
        "3D Multi-modal Image Alignment of Large-Scale Pathological CT Scans, ECCV 2020",
        "claim": "joint synthesis + registration + segmentation beats MI registration and the "
        "separately trained synthesis-then-registration pipeline",
        "data": {
            "scenario": "multimodal",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (32x32, 10 subjects); the full study: " if quick else "")
            + "64x64 two-modality anatomy, 20 subjects (16 training, all labelled; 4 held out, "
            "12 cross-modal validation pairs, moving in X and fixed in Y). Modality Y's "
            "label->intensity map is a fixed non-monotonic permutation of X's (contrast "
            "'scrambled', as contrast enhancement brightens some organs and not others), so "
            "no intensity-based mono-modal loss applies without synthesis and MI is the "
            "standard baseline; labels recorded for modality Y (label_modality 1), the "
            "modality JSSR's supervised Dice uses",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "moving in X, fixed in Y", "rows": rows}],
        "columns": {
            "val/reg_dice": "registration Dice",
            "val/seg_dice_moving": "seg Dice of X (through G)",
            "val/seg_dice": "seg Dice of Y",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"every row's registration network makes {steps} updates on batches of 4 "
        f"cross-modal pairs. JSSR's generator, registration and segmentation nets are all "
        f"stepped by each of its {steps} updates (the first {steps // 2} pretraining, the "
        "rest joint), each with its own optimiser state; 'separate' first makes "
        f"{steps} generator updates (with τ = identity), then {steps} registration updates "
        "on the frozen generator's output; the discriminators make one update per generator "
        "update",
    }
