"""OAR cascade (TMI 2022): does the registration-segmentation cascade segment small organs
better than a U-Net on the whole image and than atlas registration, and do its iterations
help?

    jrs-jax reproduce oar_cascade           # 5 rows x 3 seeds, 64 x 64, STEPS updates each
    jrs-jax reproduce oar_cascade --quick   # pipeline check: tiny nets and data, 10 steps

Claim (docs/methods.md §31): the cascade beats both the whole-image U-Net and the
registration-only (atlas-warped) segmentation on small organs, and more cascade rounds help.

Rows (each segments the held-out subjects; Dice and HD95 over the five small organs):
  ``unet``      U-Net segmentation of the whole image (``unet_seg``)
  ``atlas``     registration only: the selected template's masks warped to the image
  ``cascade1``  the cascade, 1 round (registration, then the ROI segmentation)
  ``cascade2``  2 rounds (the second registration sees the first segmentation)
  ``cascade3``  3 rounds
Columns: small-organ Dice (mean and per organ), HD95, seconds per subject.
"""

from jrs_jax.config import parse_flags

STEPS = 600
SMALL = [5, 6, 7, 8, 9]  # organ_1..organ_5 (1 body, 2-4 the large structures)


def get_study(arg=None):
    flags = parse_flags(arg, {"quick"})
    quick = "quick" in flags
    steps = 10 if quick else STEPS
    settings = {"shape": [64, 64], "num_subjects": 24, "num_heldout": 6}
    if quick:
        settings.update(shape=[48, 48], num_subjects=8, num_heldout=2)
    reg = {"features": [16, 32, 32], "decoder_features": [32, 32, 16, 16]}
    seg = {"features": [16, 32, 32], "decoder_features": [32, 16]}
    unet = {"features": [16, 32, 32], "decoder_features": [32, 16, 16]}
    crop = [16, 16]
    if quick:
        reg = seg = {"features": [4, 8], "decoder_features": [8, 4]}
        unet = {"features": [4, 8], "decoder_features": [8, 4]}
        crop = [8, 8]
    common = {
        "train.steps": steps,
        "train.log_every": 25 if not quick else 5,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "eval.labels": SMALL,
        "eval.surface": True,
        "eval.timing": True,
    }
    cascade = {
        **common,
        "model.crop": crop,
        "model.roi_labels": SMALL,  # the organs at risk; body and large structures: R's masks
        **{f"reg_model.{k}": v for k, v in reg.items()},
        **{f"seg_model.{k}": v for k, v in seg.items()},
    }
    if quick:
        cascade.update({"template.candidates": 2, "template.steps": 2})
    rows = [
        {
            "name": "unet",
            "label": "U-Net, whole image",
            "config": "unet_seg.py",
            "set": {**common, **{f"model.{k}": v for k, v in unet.items()}},
        },
        {"name": "atlas", "label": "registration only", "config": "oar_cascade.py:atlas"},
        {"name": "cascade1", "label": "cascade, 1 round", "config": "oar_cascade.py:it1"},
        {"name": "cascade2", "label": "cascade, 2 rounds", "config": "oar_cascade.py"},
        {"name": "cascade3", "label": "cascade, 3 rounds", "config": "oar_cascade.py:it3"},
    ]
    for r in rows[1:]:
        r["set"] = cascade
    pairs = [
        ("cascade2", "unet"),
        ("cascade2", "atlas"),
        ("cascade2", "cascade1"),
        ("cascade3", "cascade2"),
    ]
    gaps = [
        {"row": row, "baseline": base, "metric": m}
        for row, base in pairs
        for m in ("val/seg_dice", "val/seg_hd95")
    ]
    columns = {"val/seg_dice": "small-organ Dice"}
    columns.update({f"val/seg_dice/organ_{i}": f"organ {i}" for i in range(1, 6)})
    columns.update({"val/seg_hd95": "HD95", "val/seg_seconds": "s / subject"})
    return {
        "name": "oar_cascade",
        "method": "oar_cascade",
        "paper": "3D Lightweight Network for Simultaneous Registration and Segmentation of "
        "Organs-at-Risk in CT Images of Head and Neck Cancer, IEEE TMI 2022",
        "claim": "the registration-segmentation cascade beats a whole-image U-Net and atlas "
        "registration on small organs, and its iterations help",
        "data": {
            "scenario": "small_organs",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (48x48, 8 subjects); the full study: " if quick else "")
            + "64x64 small_organs scenario, 24 subjects (18 training, all labelled; 6 held "
            "out): a body, 3 large structures and 5 small organs of 2-4 voxels radius, each "
            "next to a large one, like head-and-neck organs at risk (the claim's premise: "
            "structures a few voxels across, where a whole-image network and a coarse "
            "registration both lose accuracy)",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "held-out subjects", "rows": rows}],
        "columns": columns,
        "gaps": gaps,
        "budget": f"every row makes {steps} updates on batches of 4 labelled training "
        "subjects; the cascade's registration and ROI segmentation networks are stepped "
        "jointly by each (one Adam state each); template selection (50 steps of field "
        "optimisation per candidate pair, before training) is not counted as updates",
    }
