"""Concurrent registration and tumour segmentation (Estienne et al. 2020): does masking the
similarity by the predicted tumour keep the atlas-to-patient deformation plausible at the
lesion without losing healthy accuracy?

    jrs-jax reproduce tumour_jrs           # 5 rows x 3 seeds, 64 x 64, STEPS updates each
    jrs-jax reproduce tumour_jrs --quick   # pipeline check: tiny nets and data, 10 steps

Claim (docs/methods.md §24): compared with the same network trained with an unmasked
similarity, the tumour-masked one gives a more plausible deformation in and around the
tumour (endpoint error against the ground-truth field, |log det J|), with healthy-structure
Dice and tumour Dice no worse.

Rows (the lesion-free atlas registered onto every held-out patient):
  ``unmasked``   shared encoder, similarity not masked (the ablation)
  ``masked``     shared encoder, similarity weighted by 1 − p_tumour (jrs_jax's default)
  ``hard``       shared encoder, the public code's argmax mask [p_tumour < 0.5]
  ``separate``   separate segmentation and registration networks, masked as ``masked``
  ``oracle``     shared encoder, the true tumour as the mask (a bound, not a method)
Columns: healthy-label Dice, endpoint error inside / around the lesion (4-voxel band),
mean |log det J| inside / around it, tumour Dice, folding %.

Variant ``weak_reg`` (diagnostic, same folder): unmasked and masked also with a 10x weaker
regulariser (λ = 0.01); see benchmarks/results/tumour_jrs_analysis.md.
"""

from jrs_jax.config import parse_flags

STEPS = 600


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "weak_reg"})
    quick = "quick" in flags
    steps = 10 if quick else STEPS
    settings = {
        "shape": [64, 64],
        "num_subjects": 24,
        "num_heldout": 6,
        "num_labels": 4,
        "lesion_radius": [5.0, 8.0],
        "mass_effect": 2.5,
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=8, num_heldout=2, lesion_radius=[3.0, 4.0])
        settings["mass_effect"] = 1.0
    nets = {"features": [16, 32, 32], "decoder_features": [32, 32, 16, 16]}
    if quick:
        nets = {"features": [4, 8], "decoder_features": [8, 4]}
    common = {
        "train.steps": steps,
        "train.log_every": 25 if not quick else 5,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "eval.labels": [1, 2, 3],  # the healthy structures (4 is the lesion)
        **{f"model.{k}": v for k, v in nets.items()},
    }
    rows = [
        {"name": "unmasked", "label": "unmasked similarity", "config": "tumour_jrs.py:unmasked"},
        {"name": "masked", "label": "masked by 1 − p_tumour", "config": "tumour_jrs.py"},
        {"name": "hard", "label": "masked by [p_tumour < 0.5]", "config": "tumour_jrs.py:hard"},
        {
            "name": "separate",
            "label": "separate networks, masked",
            "config": "tumour_jrs.py:separate",
        },
        {"name": "oracle", "label": "oracle mask (true tumour)", "config": "tumour_jrs.py:truth"},
    ]
    for r in rows:
        r["set"] = common
    pairs = (("masked", "unmasked"), ("hard", "unmasked"), ("masked", "separate"))
    if "weak_reg" in flags:  # diagnostic: unmasked and masked with a 10x weaker regulariser
        rows = rows[:2]
        rows += [
            {
                **r,
                "name": f"{r['name']}_weak",
                "label": f"{r['label']}, λ = 0.01",
                "set": {**common, "loss.reg_weight": 0.01},
            }
            for r in rows
        ]
        pairs = (("masked", "unmasked"), ("masked_weak", "unmasked_weak"))
    metrics = (
        "val/reg_dice",
        "val/epe_lesion",
        "val/epe_around",
        "val/abs_logj_around",
        "val/tumour_dice",
    )
    gaps = [{"row": row, "baseline": base, "metric": m} for row, base in pairs for m in metrics]
    return {
        "name": "tumour_jrs",
        "method": "tumour_jrs",
        "paper": "Estienne et al., Deep Learning-Based Concurrent Brain Registration and Tumor "
        "Segmentation, Frontiers in Computational Neuroscience 2020",
        "claim": "masking the similarity by the predicted tumour keeps the deformation "
        "plausible in and around the tumour without losing healthy-structure or tumour "
        "accuracy",
        "data": {
            "scenario": "lesion",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (32x32, 8 subjects); the full study: " if quick else "")
            + "64x64 lesion scenario, 24 subjects: subject 0 the lesion-free atlas, 17 "
            "training patients and 6 held-out ones, all labelled (3 healthy structures + the "
            "lesion). Each patient has a lesion of radius 5-8 voxels, absent from the atlas, "
            "with its own intensity, and a radial mass effect pushing the tissue up to 2.5 "
            "voxels outwards: the premise of the claim, image content with no counterpart in "
            "the atlas, and a known ground-truth field (the patient's deformation) to score "
            "the field's plausibility at the lesion",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "atlas onto patients", "rows": rows}],
        "columns": {
            "val/reg_dice": "healthy Dice",
            "val/epe_lesion": "EPE in lesion",
            "val/epe_around": "EPE around",
            "val/abs_logj_lesion": "|log J| in lesion",
            "val/abs_logj_around": "|log J| around",
            "val/tumour_dice": "tumour Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"every row makes {steps} updates on batches of 4 (atlas, patient) pairs; "
        "shared and separate networks are stepped jointly by each update (one Adam state "
        "per network)",
    }
