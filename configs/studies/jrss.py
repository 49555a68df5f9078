"""JRSS (BSPC 2022): self-training rounds on few-shot data, the synthetic anatomy.

    jrs-jax reproduce jrss            # 3 seeds x N in {1, 2}
    jrs-jax reproduce jrss --quick    # pipeline check: tiny nets, 32 x 32, N = 2, a few steps

Claim (docs/methods.md §26, proposed target): in the few-shot setting, successive
self-training rounds raise both the segmentation Dice and the registration Dice, and the
last round ends above the segmentation trained on the labels alone (U-Net) and the
unsupervised registration (VoxelMorph).

Rows, for N labelled training subjects: JRSS validated after teacher pretraining (round 0,
the teacher alone), after rounds 1 and 2 (stage rows of the JRSS run, ``from``/``at_step``
at :func:`~jrs_jax.methods.jrss.round_ends`) and at the end of round 3 (the JRSS row);
segmentation alone (U-Net, Dice + CE, the N labels); registration alone (unsupervised
VoxelMorph). Equal budgets (:func:`~jrs_jax.methods.jrss.update_counts`): the U-Net gets as
many updates as the JRSS segmenter (teacher pretraining + student steps), VoxelMorph as
many as the JRSS registration net.

Data: the built-in ``anatomy`` scenario at 48 x 48, 20 subjects, 4 held out (12 validation
pairs), chosen for the premise before any run: few labels (N = 1, 2), strong appearance
variation between subjects (per-subject label-mean jitter 0.08 and bias field 0.25, against
0.03 / 0.1 by default: one or two labelled images do not show it, the unlabelled images the
student trains on do), and the 3 | 4 boundary hidden from the image (equal means 0.6 / 0.6):
image similarity cannot align it, (pseudo-)labels can.

Size: 48 x 48 and 100 + 3 x (50 + 50) JRSS steps so that 3 seeds x 2 label budgets (6 JRSS
runs, 6 U-Net runs, 3 VoxelMorph runs: VoxelMorph does not depend on N) fit the 12-minute
budget on 2 cores; a self-training step (student on two views, teacher, pool and
registration forward passes) costs about 3 VoxelMorph steps.

Variants (``jrss:VARIANT,...``):
  ``quick``       tiny networks, 32 x 32 data, N = 2 only, 2 rounds of 5 + 5 steps, one seed
  ``pretrain_ce`` diagnostic: teacher pretraining with Dice + CE (the paper: soft Dice)
"""

from jrs_jax.config import parse_flags
from jrs_jax.methods.jrss import round_ends, update_counts


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "pretrain_ce"})
    quick = "quick" in flags
    pre, reg_steps, seg_steps, rounds = (10, 5, 5, 2) if quick else (100, 50, 50, 3)
    schedule = {"teacher_pretrain": pre, "reg_steps": reg_steps, "seg_steps": seg_steps}
    steps = pre + rounds * (reg_steps + seg_steps)
    spec = {"schedule": schedule, "train": {"steps": steps}}
    ends = round_ends(spec)
    n_reg, n_seg = update_counts(spec)["reg"], update_counts(spec)["seg"]
    every = reg_steps + seg_steps  # one round; the pretraining is one round long
    assert pre == every and all(e % every == 0 for e in ends), ends  # validated at each end
    small = {"features": [8, 16, 16], "decoder_features": [16, 8, 8]} if quick else {}
    settings = {
        "shape": [48, 48],
        "num_subjects": 20,
        "num_heldout": 4,
        "num_val_pairs": 12,
        "label_means": [0.05, 0.35, 0.8, 0.6, 0.6],
        "intensity_jitter": 0.08,
        "bias": 0.25,
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)

    def sets(n_steps, nets=("model",), **extra):
        out = {"train.steps": n_steps, "train.log_every": 50, "train.ckpt_every": n_steps}
        out["train.eval_every"] = extra.pop("eval_every", n_steps)
        for net in nets:
            out.update({f"{net}.{k}": v for k, v in small.items()})
        return {**out, **extra}

    def rows(n):
        jrss_sets = sets(
            steps,
            nets=("reg_model", "seg_model"),
            eval_every=every,
            **{"data.num_labelled": n},
            **{f"schedule.{k}": v for k, v in schedule.items()},
        )
        if "pretrain_ce" in flags:
            jrss_sets["loss.pretrain"] = "dice_ce"
        stages = [
            {
                "name": "teacher" if r == 0 else f"round{r}",
                "label": "JRSS round 0 (teacher only)" if r == 0 else f"JRSS round {r}",
                "from": "jrss",
                "at_step": ends[r],
            }
            for r in range(rounds)
        ]
        return [
            *stages,
            {
                "name": "jrss",
                "label": f"JRSS round {rounds} (final)",
                "config": "jrss.py",
                "set": jrss_sets,
            },
            {
                "name": "seg_alone",
                "label": "segmentation alone (U-Net, N labels)",
                "config": "unet_seg.py",
                "set": sets(n_seg, **{"data.num_labelled": n}),
            },
            {
                "name": "reg_unsup",
                "label": "registration alone (VoxelMorph)",
                "config": "voxelmorph.py",
                "set": sets(n_reg),
            },
        ]

    labelled = [2] if quick else [1, 2]
    return {
        "name": "jrss",
        "method": "jrss",
        "paper": "Joint few-shot registration and segmentation self-training of 3D medical "
        "images, BSPC 2022",
        "claim": "self-training rounds raise segmentation and registration Dice above the "
        "networks trained alone, with few labels",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": f"{settings['shape'][0]}x{settings['shape'][1]} synthetic anatomy, "
            f"{settings['num_subjects']} subjects ({settings['num_heldout']} held out); "
            "few labels (N = 1, 2) and strong appearance variation (label-mean jitter 0.08, "
            "bias 0.25) so the unlabelled images carry what the labelled ones lack; the "
            "3 | 4 boundary hidden from the image so only (pseudo-)labels can align it",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": f"N = {n}", "rows": rows(n)} for n in labelled],
        "columns": {
            "val/seg_dice": "segmentation Dice",
            "val/reg_dice": "registration Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": [
            {"row": "jrss", "baseline": "seg_alone", "metric": "val/seg_dice"},
            {"row": "jrss", "baseline": "reg_unsup", "metric": "val/reg_dice"},
            {"row": "jrss", "baseline": "teacher", "metric": "val/seg_dice"},
            {"row": "jrss", "baseline": "round1", "metric": "val/seg_dice"},
            {"row": "jrss", "baseline": "round1", "metric": "val/reg_dice"},
        ],
        "budget": f"JRSS {pre} teacher-pretraining steps + {rounds} rounds of {reg_steps} "
        f"registration + {seg_steps} self-training steps (validated at steps {ends}); "
        f"U-Net {n_seg} updates (= the JRSS segmenter's), VoxelMorph {n_reg} (= the JRSS "
        "registration net's).",
    }
