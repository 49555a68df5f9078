"""DeepAtlas (Xu & Niethammer, MICCAI 2019): the paper's comparison on the synthetic anatomy.

    jrs-jax reproduce deepatlas            # 3 seeds x N in {1, 5}; 16-24 min of training, 2 CPUs
    jrs-jax reproduce deepatlas --quick    # pipeline check: tiny nets, a few steps (42 s)

Claim (paper, Tables 1-2): joint training improves both networks over training them alone,
most where labels are few (N = 1 and 5 labelled training subjects).

Rows, for N labelled training subjects: registration alone (unsupervised VoxelMorph);
registration with the N labels (VoxelMorph + Dice; needs a labelled pair, so not at N = 1);
segmentation alone (U-Net, Dice + CE, N labels); Semi-DeepAtlas (the DeepAtlas run validated
after its segmentation-pretraining stage: F_S trained through the frozen, unsupervised F_R);
DeepAtlas (then joint alternating training). Equal budgets: every baseline gets as many
updates as its DeepAtlas counterpart (``jrs_jax.methods.update_counts``).

Data: the built-in ``anatomy`` scenario at 64 x 64, 20 subjects, 4 held out (12 validation
pairs): large enough for the held-out Dice to separate the rows, small enough for 3 seeds x 2
label budgets in 20 minutes on 2 cores. The DeepAtlas premise (labels are scarce) is set by N.

Variants (``deepatlas:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data, N = 5 only, 51 DeepAtlas steps, one seed (a
             pipeline check: every row, the table, the gaps and the figures)
  ``r4``     joint stage at 4 reg : 1 seg (instead of the paper's 20 : 1)
  ``long``   joint stage 3x longer (2520 steps), seeds 0 and 1
  ``hidden`` the 3 | 4 boundary hidden from the image (equal mean intensities 0.6 / 0.6)
  ``n16``    N = 16 (every training subject labelled), seed 0
"""

from jrs_jax.config import parse_flags
from jrs_jax.methods.deepatlas import update_counts


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "r4", "long", "hidden", "n16"})
    reg_pre, seg_pre, joint = (20, 10, 21) if "quick" in flags else (300, 150, 840)
    if "long" in flags:
        joint *= 3
    reg_steps, seg_steps = (4, 1) if "r4" in flags else (20, 1)
    schedule = {
        "reg_pretrain": reg_pre,
        "seg_pretrain": seg_pre,
        "reg_steps": reg_steps,
        "seg_steps": seg_steps,
    }
    da_steps = reg_pre + seg_pre + joint
    n_reg, n_seg = update_counts({"schedule": schedule, "train": {"steps": da_steps}}).values()
    small = {}
    if "quick" in flags:
        small = {"features": [8, 16, 16], "decoder_features": [16, 8, 8]}
    settings = {"shape": [64, 64], "num_subjects": 20, "num_heldout": 4, "num_val_pairs": 12}
    if "quick" in flags:  # a pipeline check: small data too
        settings = {"shape": [32, 32], "num_subjects": 10, "num_heldout": 3, "num_val_pairs": 4}
    if "hidden" in flags:
        settings["label_means"] = [0.05, 0.35, 0.8, 0.6, 0.6]

    def sets(steps, nets=("model",), **extra):
        out = {"train.steps": steps, "train.log_every": 50, "train.ckpt_every": steps}
        out["train.eval_every"] = extra.pop("eval_every", steps)
        for net in nets:
            out.update({f"{net}.{k}": v for k, v in small.items()})
        return {**out, **extra}

    def rows(n):
        out = [
            {
                "name": "reg_unsup",
                "label": "registration alone (unsupervised)",
                "config": "voxelmorph.py",
                "set": sets(n_reg),
            }
        ]
        if n >= 2:
            out.append(
                {
                    "name": "reg_labels",
                    "label": "registration with N labels",
                    "config": "voxelmorph.py:dice",
                    "set": sets(n_reg, **{"data.num_labelled": n}),
                }
            )
        da_sets = sets(
            da_steps,
            nets=("reg_model", "seg_model"),
            eval_every=reg_pre + seg_pre,
            **{"data.num_labelled": n},
            **{f"schedule.{k}": v for k, v in schedule.items()},
        )
        out += [
            {
                "name": "seg_alone",
                "label": "segmentation alone (N labels)",
                "config": "unet_seg.py",
                "set": sets(n_seg, **{"data.num_labelled": n}),
            },
            {
                "name": "semi",
                "label": "Semi-DeepAtlas",
                "from": "deepatlas",
                "at_step": reg_pre + seg_pre,
            },
            {"name": "deepatlas", "label": "DeepAtlas", "config": "deepatlas.py", "set": da_sets},
        ]
        return out

    labelled = [16] if "n16" in flags else [1, 5]
    if "quick" in flags:  # N = 5 alone has every row
        labelled = [5]
    seeds = (
        [0] if ("quick" in flags or "n16" in flags) else [0, 1] if "long" in flags else [0, 1, 2]
    )
    return {
        "name": "deepatlas",
        "method": "deepatlas",
        "paper": "Xu & Niethammer, DeepAtlas, MICCAI 2019",
        "claim": "joint training beats registration and segmentation trained alone "
        "when labels are scarce",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": "64x64 synthetic anatomy, 20 subjects (4 held out, 12 validation pairs); "
            "scarce labels (N) are the paper's premise"
            + ("; the 3 | 4 boundary hidden from the image" if "hidden" in flags else ""),
        },
        "seeds": seeds,
        "groups": [{"name": f"N = {n}", "rows": rows(n)} for n in labelled],
        "columns": {
            "val/reg_dice": "registration Dice",
            "val/seg_dice": "segmentation Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            {"row": "deepatlas", "baseline": "reg_unsup", "metric": "val/reg_dice"},
            {"row": "deepatlas", "baseline": "seg_alone", "metric": "val/seg_dice"},
        ],
        "budget": f"DeepAtlas {reg_pre} reg pretrain + {seg_pre} seg pretrain + {joint} joint "
        f"at {reg_steps}:{seg_steps}; registration baselines {n_reg} updates (= F_R's), "
        f"segmentation baseline {n_seg} (= F_S's).",
    }
