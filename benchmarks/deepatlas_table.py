"""The DeepAtlas paper's comparison on the built-in synthetic anatomy.

For N labelled training subjects (default N in {1, 5}) and several seeds, trains

* registration alone, unsupervised (``configs/voxelmorph.py``);
* registration with N labels (``voxelmorph.py:dice``, anatomy Dice on labelled pairs;
  impossible for N = 1: no labelled pair exists);
* segmentation alone with N labels (``configs/unet_seg.py``);
* Semi-DeepAtlas: registration pretrained unsupervised, then segmentation trained through the
  frozen registration network (the DeepAtlas run evaluated at the end of that stage);
* DeepAtlas: then joint alternating training (``configs/deepatlas.py``),

and reports registration Dice on held-out pairs, segmentation Dice on held-out subjects,
% folding and training time, as mean ± std over seeds. Every network gets the same number of
steps as its DeepAtlas counterpart (the baselines are not short-changed). Writes
``benchmarks/results/deepatlas_table.md`` / ``.json`` and ``deepatlas_table.png``.

    python benchmarks/deepatlas_table.py          # the full table (~15 min on 2 CPU cores)
    python benchmarks/deepatlas_table.py --quick  # a few minutes, small nets: smoke only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from common import write_results  # noqa: E402

ROWS = (
    ("reg_unsup", "registration alone (unsupervised)"),
    ("reg_labels", "registration with N labels"),
    ("seg_alone", "segmentation alone (N labels)"),
    ("semi", "Semi-DeepAtlas"),
    ("deepatlas", "DeepAtlas"),
)


def _cfg(name: str, variants: str | None, extra: tuple[str, ...] = (), **sets) -> dict:
    from jrs_jax.config import apply_overrides, load_config

    path = os.path.join(ROOT, "configs", f"{name}.py")
    cfg = load_config(path + (f":{variants}" if variants else ""))
    overrides = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sets.items()]
    return apply_overrides(cfg, [*overrides, *extra])


def _train(cfg: dict, workdir: str) -> tuple[dict, float, list[dict]]:
    """Train (or reuse the finished run: the table is resumable)."""
    from jrs_jax.experiment import train_or_reuse
    from jrs_jax.train import read_log

    res = train_or_reuse(cfg, workdir=workdir, progress=False, figures=False)
    log = read_log(os.path.join(workdir, "metrics.jsonl"))
    return res["evaluation"], res["train_seconds"], log


SHORT = {
    "reg_unsup": "reg alone",
    "reg_labels": "reg + N labels",
    "seg_alone": "seg alone",
    "semi": "Semi-DeepAtlas",
    "deepatlas": "DeepAtlas",
}


def update_counts(args) -> tuple[int, int]:
    """Updates of DeepAtlas' F_R and F_S over the whole run (pretraining + joint rounds)."""
    from jrs_jax.methods import update_counts as counts

    schedule = {
        "reg_pretrain": args.reg_pretrain,
        "seg_pretrain": args.seg_pretrain,
        "reg_steps": args.reg_steps,
        "seg_steps": args.seg_steps,
    }
    steps = args.reg_pretrain + args.seg_pretrain + args.joint
    n = counts({"schedule": schedule, "train": {"steps": steps}})
    return n["reg"], n["seg"]


def run(args) -> list[dict]:
    from jrs_jax.data import write_learn2reg_dataset

    out = args.workdir
    data = os.path.join(out, "data", "dataset.json")
    settings = {"label_means": args.label_means} if args.label_means else {}
    if not os.path.exists(data):
        write_learn2reg_dataset(
            os.path.join(out, "data"),
            key=0,
            shape=tuple(args.shape),
            num_subjects=args.subjects,
            num_heldout=args.heldout,
            num_val_pairs=args.heldout * (args.heldout - 1),
            **settings,
        )
    with open(data) as f:
        found = json.load(f)["jrs_jax"]["subject_settings"]
    if found != settings:
        raise SystemExit(
            f"{data} was generated with {found}, not {settings}: use another --workdir"
        )
    da_steps = args.reg_pretrain + args.seg_pretrain + args.joint
    reg_steps, seg_steps = update_counts(args)
    common = {"data.dataset": data, "train.log_every": 50}
    small = {}
    if args.quick:
        small = {"features": (8, 16, 16), "decoder_features": (16, 8, 8)}
    records = []
    for seed in args.seeds:
        for n in args.labelled:
            runs = {}
            base = dict(common, seed=seed)
            runs["reg_unsup"] = _cfg("voxelmorph", None, **base, **{"train.steps": reg_steps})
            if n >= 2:
                runs["reg_labels"] = _cfg(
                    "voxelmorph",
                    "dice",
                    **base,
                    **{"train.steps": reg_steps, "data.num_labelled": n},
                )
            runs["seg_alone"] = _cfg(
                "unet_seg", None, **base, **{"train.steps": seg_steps, "data.num_labelled": n}
            )
            runs["deepatlas"] = _cfg(
                "deepatlas",
                None,
                tuple(args.da_set),
                **base,
                **{
                    "train.steps": da_steps,
                    "data.num_labelled": n,
                    "schedule.reg_pretrain": args.reg_pretrain,
                    "schedule.seg_pretrain": args.seg_pretrain,
                    "schedule.reg_steps": args.reg_steps,
                    "schedule.seg_steps": args.seg_steps,
                    "train.eval_every": args.reg_pretrain + args.seg_pretrain,
                },
            )
            for key, cfg in runs.items():
                for section in ("model", "reg_model", "seg_model"):
                    if small and section in cfg:
                        cfg[section].update({k: list(v) for k, v in small.items()})
                cfg["train"]["ckpt_every"] = cfg["train"]["steps"]
                if key != "deepatlas":
                    cfg["train"]["eval_every"] = cfg["train"]["steps"]
                # the unsupervised registration does not depend on N: train it once per seed
                tag = f"{key}_s{seed}" + ("" if key == "reg_unsup" else f"_n{n}")
                t0 = time.perf_counter()
                ev, secs, log = _train(cfg, os.path.join(out, tag))
                print(
                    f"{tag}: {json.dumps({k: round(v, 4) for k, v in ev.items()})} "
                    f"({secs:.0f} s, {time.perf_counter() - t0:.0f} s wall)",
                    flush=True,
                )
                rec = {"seed": seed, "n": n, "row": key, "seconds": secs, **ev}
                if key == "deepatlas":
                    semi = [
                        r
                        for r in log
                        if r.get("split") == "val"
                        and r["step"] == args.reg_pretrain + args.seg_pretrain
                    ]
                    if semi:
                        s = {k: v for k, v in semi[0].items() if k.startswith("val/")}
                        records.append({"seed": seed, "n": n, "row": "semi", "seconds": None, **s})
                records.append(rec)
    return records


def _ms(values) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return "—"
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def table(records: list[dict], labelled) -> tuple[str, list[dict]]:
    lines, rows = [], []
    for n in labelled:
        lines += [
            f"### N = {n} labelled training subjects",
            "",
            "| method | registration Dice | segmentation Dice | folding % | time (s) |",
            "|---|---|---|---|---|",
        ]
        for key, label in ROWS:
            recs = [r for r in records if r["row"] == key and (r["n"] == n or key == "reg_unsup")]
            if key == "reg_unsup":
                seen, uniq = set(), []
                for r in recs:
                    if r["seed"] not in seen:
                        seen.add(r["seed"])
                        uniq.append(r)
                recs = uniq
            if not recs:
                lines.append(f"| {label} | n/a | n/a | n/a | n/a |")
                continue
            row = {
                "n": n,
                "method": label,
                "reg_dice": _ms([r.get("val/reg_dice") for r in recs]),
                "seg_dice": _ms([r.get("val/seg_dice") for r in recs]),
                "folding": _ms([r.get("val/folding_percent") for r in recs]),
                "time": _ms([r.get("seconds") for r in recs]),
            }
            rows.append(row)
            lines.append(
                f"| {label} | {row['reg_dice']} | {row['seg_dice']} | "
                f"{row['folding']} | {row['time']} |"
            )
        ident = _ms([r.get("val/reg_dice_identity") for r in records if r["row"] == "reg_unsup"])
        lines += ["", f"Registration Dice before registration (identity): {ident}.", ""]
    return "\n".join(lines), rows


def paired(records: list[dict], labelled) -> str:
    """DeepAtlas minus the separately trained network, seed by seed (same data split, same
    labelled subjects, same initial weights): the claim to reproduce is a positive gap."""
    lines = [
        "### DeepAtlas minus the separately trained network, per seed",
        "",
        "| N | registration Dice gap | seeds won | segmentation Dice gap | seeds won |",
        "|---|---|---|---|---|",
    ]

    def gaps(n, metric, base):
        da = {r["seed"]: r.get(metric) for r in records if r["row"] == "deepatlas" and r["n"] == n}
        ref = {
            r["seed"]: r.get(metric)
            for r in records
            if r["row"] == base and (r["n"] == n or base == "reg_unsup")
        }
        return [da[s] - ref[s] for s in sorted(da) if da[s] is not None and ref.get(s) is not None]

    for n in labelled:
        reg = gaps(n, "val/reg_dice", "reg_unsup")
        seg = gaps(n, "val/seg_dice", "seg_alone")
        if not reg or not seg:
            continue
        lines.append(
            f"| {n} | {np.mean(reg):+.4f} ({', '.join(f'{g:+.3f}' for g in reg)}) | "
            f"{sum(g > 0 for g in reg)}/{len(reg)} | "
            f"{np.mean(seg):+.4f} ({', '.join(f'{g:+.3f}' for g in seg)}) | "
            f"{sum(g > 0 for g in seg)}/{len(seg)} |"
        )
    return "\n".join(lines) + "\n"


def figure(records: list[dict], labelled, path: str) -> None:
    from matplotlib.figure import Figure

    from jrs_jax.viz import save_figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    for j, metric in enumerate(("val/reg_dice", "val/seg_dice")):
        ax = fig.add_subplot(1, 2, j + 1)
        width = 0.8 / len(labelled)
        for i, n in enumerate(labelled):
            means, stds, names = [], [], []
            for key, _label in ROWS:
                vals = [
                    r.get(metric)
                    for r in records
                    if r["row"] == key and (r["n"] == n or key == "reg_unsup")
                ]
                vals = [v for v in vals if v is not None and np.isfinite(v)]
                names.append(SHORT[key])
                means.append(np.mean(vals) if vals else np.nan)
                stds.append(np.std(vals) if vals else 0)
            x = np.arange(len(ROWS)) + i * width
            ax.bar(x, means, width, yerr=stds, label=f"N = {n}", capsize=3)
        ax.set_xticks(np.arange(len(ROWS)) + width * (len(labelled) - 1) / 2, names, fontsize=7)
        ax.set_title(metric.replace("val/", "").replace("_", " "))
        lo = np.nanmin([r.get(metric, np.nan) for r in records if r.get(metric) is not None])
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labelled", type=int, nargs="+", default=[1, 5])
    p.add_argument("--shape", type=int, nargs="+", default=[64, 64])
    p.add_argument("--subjects", type=int, default=20)
    p.add_argument("--heldout", type=int, default=4)
    p.add_argument("--reg-pretrain", type=int, default=300)
    p.add_argument("--seg-pretrain", type=int, default=150)
    p.add_argument("--joint", type=int, default=840)
    p.add_argument("--reg-steps", type=int, default=20, help="joint stage: reg steps per round")
    p.add_argument("--seg-steps", type=int, default=1, help="joint stage: seg steps per round")
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "deepatlas_table"))
    p.add_argument("--out", default=os.path.join(HERE, "results", "deepatlas_table"))
    p.add_argument(
        "--label-means",
        type=float,
        nargs="+",
        help="synthetic mean intensity per class (equal means hide a boundary: "
        "0.05 0.35 0.8 0.6 0.6 hides the 3 | 4 boundary)",
    )
    p.add_argument(
        "--da-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the DeepAtlas config, as `jrs-jax train --set` (repeatable); "
        "e.g. --da-set loss.supervised_weight=3",
    )
    p.add_argument("--quick", action="store_true", help="tiny nets and steps (smoke)")
    args = p.parse_args()
    if args.quick:
        args.reg_pretrain, args.seg_pretrain, args.joint = 20, 10, 21
        args.seeds, args.workdir = args.seeds[:1], args.workdir + "_quick"
        args.out += "_quick"
    t0 = time.perf_counter()
    records = run(args)
    text, _ = table(records, args.labelled)
    text += "\n" + paired(records, args.labelled)
    reg_steps, seg_steps = update_counts(args)
    header = (
        f"# DeepAtlas comparison on the synthetic anatomy ({'x'.join(map(str, args.shape))}, "
        f"{args.subjects} subjects, {args.heldout} held out; seeds {args.seeds}"
        + (f"; label means {args.label_means}" if args.label_means else "")
        + ")\n\n"
        f"Steps: registration {args.reg_pretrain} pretrain + joint, segmentation "
        f"{args.seg_pretrain} pretrain + joint, joint {args.joint} at {args.reg_steps} reg : "
        f"{args.seg_steps} seg (every baseline gets as many updates as its DeepAtlas "
        f"counterpart: registration {reg_steps}, segmentation {seg_steps}). "
        f"Command: `python benchmarks/deepatlas_table.py {' '.join(sys.argv[1:])}` "
        f"(training time of all runs {sum(r['seconds'] or 0 for r in records) / 60:.0f} min; "
        f"this invocation {time.perf_counter() - t0:.0f} s, finished runs are reused).\n\n"
    )
    write_results(args.out, records, header + text)
    figure(records, args.labelled, args.out + ".png")
    print(header + text)


if __name__ == "__main__":
    main()
