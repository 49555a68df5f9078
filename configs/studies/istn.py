"""ISTN (Lee et al., MICCAI 2019): do structure-guided transformers register images of
varying appearance better than a spatial transformer on the raw images, and does test-time
refinement add more?

    jrs-jax reproduce istn           # 4 trained rows + 4 refined x 3 seeds, 64 x 64
    jrs-jax reproduce istn --quick   # pipeline check: tiny nets and data, 10 steps

Claim (docs/methods.md §25): ISTN-e and ISTN-i give higher warped-label Dice than an STN on
the raw images, and refining the STN on the test pair (ITN frozen, ‖M'∘φ − F'‖²) improves
it further.

Rows (all register pairs of held-out subjects; same dense STN, same update budget):
  ``stn_u``      STN on raw images, unsupervised ‖M∘φ − F‖² (the image-similarity baseline)
  ``stn_s``      STN on raw images, supervised ‖S_M∘φ − S_F‖² (the same labels as ISTN)
  ``istn_e``     ISTN-e (explicit ITN supervision)
  ``istn_i``     ISTN-i (implicit, with the public code's coupling terms)
  ``*_refined``  the row's trained run, each test pair refined for REFINE Adam steps at 1e-3
                 (the public code's 50 and learning rate) before it is scored; the STN rows
                 refine on ‖M∘φ − F‖² (they have no structure maps)
Columns: warped-label Dice, folding %, sdlogj, and for the evaluation rows of ISTN the
Dice of the fixed image's structure map read as a segmentation (``itn_dice``).

Variant ``diagnose``: ISTN-e / ISTN-i refined at learning rates 1e-3, 1e-4 and 1e-5 (the
same trained runs; see benchmarks/results/istn_analysis.md).
"""

from jrs_jax.config import parse_flags

STEPS = 600
REFINE = 50


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "diagnose"})
    quick = "quick" in flags
    steps, refine = (10, 3) if quick else (STEPS, REFINE)
    settings = {
        "shape": [64, 64],
        "num_subjects": 24,
        "num_heldout": 6,
        "num_val_pairs": 16,
        "intensity_jitter": 0.2,
        "bias": 0.4,
        "noise": 0.04,
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)
    stn = {"features": [16, 32, 32], "decoder_features": [32, 32, 16, 16]}
    itn = {"features": [8, 16, 16], "decoder_features": [16, 8]}
    if quick:
        stn = {"features": [4, 8], "decoder_features": [8, 4]}
        itn = {"features": [4, 8], "decoder_features": [8, 4]}
    common = {
        "train.steps": steps,
        "train.log_every": 25 if not quick else 5,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        **{f"stn_model.{k}": v for k, v in stn.items()},
        **{f"itn_model.{k}": v for k, v in itn.items()},
    }
    trained = [
        ("stn_u", "STN, raw images, unsupervised", "istn.py:stn_u"),
        ("stn_s", "STN, raw images, label-supervised", "istn.py:stn_s"),
        ("istn_e", "ISTN-e", "istn.py"),
        ("istn_i", "ISTN-i", "istn.py:implicit"),
    ]
    rows = [{"name": n, "label": label, "config": c, "set": common} for n, label, c in trained]
    rows += [
        {
            "name": f"{n}_refined",
            "label": f"{label} + refinement",
            "from": n,
            "evaluate": {"set": {"eval.refine_steps": refine, "eval.refine_lr": 1e-3}},
        }
        for n, label, _ in trained
    ]
    if "diagnose" in flags:  # refinement at lower learning rates (same trained runs)
        rows = [r for r in rows if r["name"] in ("istn_e", "istn_i", "stn_s")]
        for n, label in (("istn_e", "ISTN-e"), ("istn_i", "ISTN-i")):
            rows += [
                {
                    "name": f"{n}_refined_{tag}",
                    "label": f"{label} + refinement, lr {lr:g}",
                    "from": n,
                    "evaluate": {"set": {"eval.refine_steps": refine, "eval.refine_lr": lr}},
                }
                for tag, lr in (("1e-3", 1e-3), ("1e-4", 1e-4), ("1e-5", 1e-5))
            ]
        gaps = [
            {"row": f"{n}_refined_{tag}", "baseline": n, "metric": "val/reg_dice"}
            for n in ("istn_e", "istn_i")
            for tag in ("1e-3", "1e-4", "1e-5")
        ]
        return {**_study(quick, steps, refine, settings, rows, gaps), "name": "istn_diagnose"}
    pairs = [
        ("stn_s", "stn_u"),
        ("istn_e", "stn_s"),
        ("istn_i", "stn_s"),
        ("istn_e_refined", "istn_e"),
        ("istn_i_refined", "istn_i"),
        ("stn_s_refined", "stn_s"),
        ("istn_e_refined", "stn_s_refined"),
    ]
    gaps = [
        {"row": row, "baseline": base, "metric": m}
        for row, base in pairs
        for m in ("val/reg_dice", "val/folding_percent")
    ]
    return _study(quick, steps, refine, settings, rows, gaps)


def _study(quick, steps, refine, settings, rows, gaps):
    return {
        "name": "istn",
        "method": "istn",
        "paper": "Lee et al., Image-and-Spatial Transformer Networks for Structure-Guided "
        "Image Registration, MICCAI 2019",
        "claim": "structure-guided registration (ISTN-e, ISTN-i) beats an STN on the raw "
        "images, and test-time refinement of the STN adds more",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (32x32, 10 subjects); the full study: " if quick else "")
            + "64x64 anatomy, 24 subjects (18 training, all labelled; 6 held out, 16 "
            "validation pairs) with strong appearance variation, the claim's premise: each "
            "subject's label intensities jittered by N(0, 0.2^2) around means 0.05-0.95 "
            "(neighbouring contrasts shrink or invert between subjects), a smooth "
            "multiplicative bias exp(b), std(b) = 0.4, and noise 0.04, so that image "
            "intensities are an unreliable guide to correspondence",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "held-out pairs", "rows": rows}],
        "columns": {
            "val/reg_dice": "warped-label Dice",
            "val/folding_percent": "folding %",
            "val/sdlogj": "sdlogj",
            "val/itn_dice": "ITN structure Dice",
        },
        "gaps": gaps,
        "budget": f"every trained row makes {steps} joint updates (ITN and STN together for "
        "ISTN, one Adam state each) on batches of 4 labelled training pairs; the refined "
        f"rows are the same runs, each test pair then refined alone for {refine} Adam steps "
        "of the STN (no training data, no labels)",
    }
