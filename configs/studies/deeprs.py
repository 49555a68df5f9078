"""DeepRS (He et al., ECCV 2020): few-shot segmentation and registration, with its ablations.

    jrs-jax reproduce deeprs            # 3 seeds x N in {1, 2}: 33 runs
    jrs-jax reproduce deeprs --quick    # pipeline check: tiny nets, tiny data, a few steps

Claim (paper, ablation table; docs/methods.md §23): in the few-shot setting each of the
three devices helps: DeepRS beats DeepRS without Deep Structure Sampling (α ≡ 1), without
the Alignment Confidence Map (λ_acm = 0) and without the Deep Region Constraint
(λ_drc = 0) on segmentation Dice, and beats a U-Net trained on the N labels alone;
its registration beats unsupervised VoxelMorph.

Rows, for N labelled training subjects: UNetSeg (``unet_seg.py``, Dice + CE on the N
labelled subjects); VoxelMorph (``voxelmorph.py``, unsupervised; it does not depend on N, so
its runs are shared by the two groups); DeepRS; DeepRS without DSS; without ACM; without
DRC. Equal budgets: one DeepRS step updates each of its three networks once, so UNetSeg
gets as many updates as DeepRS' segmentation net and VoxelMorph as many as its registration
net (``STEPS`` each); the networks of a role have the same sizes in every row.

Data: the ``anatomy`` scenario at 32 x 32 with the 3 | 4 boundary hidden from the image
(equal mean intensities, ``label_means`` 0.05 0.35 0.8 0.6 0.6), 20 subjects (4 held out,
12 validation pairs). DeepRS' gains are label-driven (warped labels of the N labelled
subjects supervise the segmentation of every other subject): a boundary the image does not
show is what a segmenter trained on N images cannot learn from appearance alone, and what
a registration driven by image similarity cannot align without the region constraint.
32 x 32 keeps 33 runs within the 12-minute budget on 2 cores.

Variants (``deeprs:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data of 10 subjects, 30 steps, N = 2 only, one seed
  ``long``   diagnostic: 3x the steps (600), N = 1 only, rows UNetSeg, VoxelMorph, DeepRS,
             without DSS, without ACM: do the segmentation ablations separate with a
             longer budget (the discriminator's confidence map is near-uniform at 200)?
"""

from jrs_jax.config import parse_flags

STEPS = 200


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "long"})
    quick, long = "quick" in flags, "long" in flags
    steps = 30 if quick else 3 * STEPS if long else STEPS
    nets = {
        "reg": {"features": [8, 16, 16], "decoder_features": [16, 16, 8, 8]},
        "seg": {"features": [8, 16, 16], "decoder_features": [16, 8]},
        "disc": {"features": [8, 16], "decoder_features": [8]},
    }
    if quick:
        nets = {
            "reg": {"features": [4, 8], "decoder_features": [8, 4]},
            "seg": {"features": [4, 8], "decoder_features": [8, 4]},
            "disc": {"features": [4, 8], "decoder_features": [4]},
        }
    settings = {
        "shape": [32, 32],
        "num_subjects": 20,
        "num_heldout": 4,
        "num_val_pairs": 12,
        "label_means": [0.05, 0.35, 0.8, 0.6, 0.6],
    }
    if quick:
        settings.update(num_subjects=10, num_heldout=3, num_val_pairs=4)

    def sets(**sections):
        out = {
            "train.steps": steps,
            "train.log_every": 50,
            "train.ckpt_every": steps,
            "train.eval_every": steps,
        }
        for section, role in sections.items():
            out.update({f"{section}.{k}": v for k, v in nets[role].items()})
        return out

    def rows(n):
        deeprs = {
            **sets(reg_model="reg", seg_model="seg", disc_model="disc"),
            "data.num_labelled": n,
        }
        out = [
            {
                "name": "unet_seg",
                "label": "UNetSeg (N labels)",
                "config": "unet_seg.py",
                "set": {**sets(model="seg"), "data.num_labelled": n},
            },
            {
                "name": "voxelmorph",
                "label": "VoxelMorph (unsupervised)",
                "config": "voxelmorph.py",
                "set": sets(model="reg"),
            },
            {"name": "deeprs", "label": "DeepRS", "config": "deeprs.py", "set": deeprs},
            {
                "name": "no_dss",
                "label": "DeepRS without DSS (α ≡ 1)",
                "config": "deeprs.py:no_dss",
                "set": deeprs,
            },
            {
                "name": "no_acm",
                "label": "DeepRS without ACM (λ_acm = 0)",
                "config": "deeprs.py:no_acm",
                "set": deeprs,
            },
            {
                "name": "no_drc",
                "label": "DeepRS without DRC (λ_drc = 0)",
                "config": "deeprs.py:no_drc",
                "set": deeprs,
            },
        ]
        if long:  # the diagnostic: is the ablation gap a budget effect? DRC is a reg. term
            out = [r for r in out if r["name"] != "no_drc"]
        return out

    labelled = [2] if quick else [1] if long else [1, 2]
    seg = "val/seg_dice"
    return {
        "name": "deeprs",
        "method": "deeprs",
        "paper": "He et al., Deep Complementary Joint Model (DeepRS), ECCV 2020",
        "claim": "each DeepRS device (DSS, ACM, DRC) helps few-shot segmentation; DeepRS "
        "beats U-Net segmentation on N labels and unsupervised VoxelMorph registration",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": "32x32 synthetic anatomy, 20 subjects (4 held out, 12 validation pairs), "
            "the 3 | 4 boundary hidden from the image (equal means 0.6 / 0.6): DeepRS' gains "
            "are label-driven, and a hidden boundary is what N = 1 or 2 labelled images "
            "cannot teach from appearance and image similarity cannot align",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": f"N = {n}", "rows": rows(n)} for n in labelled],
        "columns": {
            seg: "segmentation Dice",
            "val/reg_dice": "registration Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            g
            for g in (
                {"row": "deeprs", "baseline": "no_dss", "metric": seg},
                {"row": "deeprs", "baseline": "no_acm", "metric": seg},
                {"row": "deeprs", "baseline": "no_drc", "metric": seg},
                {"row": "deeprs", "baseline": "unet_seg", "metric": seg},
                {"row": "deeprs", "baseline": "voxelmorph", "metric": "val/reg_dice"},
                {"row": "deeprs", "baseline": "no_drc", "metric": "val/reg_dice"},
            )
            if not (long and g["baseline"] == "no_drc")
        ],
        "budget": f"DeepRS {steps} steps, each one update of D, R and S; UNetSeg {steps} "
        f"updates (= S's), VoxelMorph {steps} updates (= R's); same network sizes per role.",
    }
