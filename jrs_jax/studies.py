"""Paper comparisons as one command: ``jrs-jax reproduce STUDY``.

A study is a Python file ``configs/studies/NAME.py`` with ``get_study(arg=None) -> dict``
(``arg``: comma-separated variants, ``quick`` among them) returning::

    {
      "name": "deepatlas",
      "paper": "Xu & Niethammer, MICCAI 2019",
      "claim": "joint training beats registration and segmentation trained alone",
      "data": {"scenario": "anatomy", "seed": 0, "settings": {...}},   # why: "reason"
      "seeds": [0, 1, 2],
      "groups": [                          # one table per group (e.g. N labelled subjects)
        {"name": "N = 1", "rows": [ROW, ...]},
      ],
      "columns": {"val/reg_dice": "registration Dice", ...},
      "gaps": [{"row": "deepatlas", "baseline": "reg_unsup", "metric": "val/reg_dice"}],
      "budget": "how the update budgets were equalised (text for the table header)",
      "field_figure": True,                # optional: figures/<group>_fields.png, each row's
    }                                      # field of the first pair next to the ground truth

with rows ``{"name", "label", "config": "voxelmorph.py[:variants]", "set": {key: value}}``
(the config path is relative to ``configs/``, or a config dict; ``set`` are ``--set``
overrides, applied after ``data.dataset`` and ``seed``), or ``{"name", "label", "from": ROW,
"at_step": N}``: row ``ROW``'s run as it was validated at step ``N`` (a stage of a longer
schedule), or ``{"name", "label", "from": ROW, "evaluate": {"set": {key: value}, "dataset":
FILE}}``: row ``ROW``'s trained run evaluated again, with its config changed by ``set`` for
the evaluation only (e.g. ``{"eval.refine_steps": 50}``: test-time refinement; a
prediction option) and/or on another dataset file of the study data (``FILE`` relative to
the data folder, e.g. an out-of-distribution test split); no extra training, so the row has
exactly ``ROW``'s update budget. The evaluation is cached in the run folder
(``evaluations/<hash>.json``).

Every row of every seed is trained with :func:`jrs_jax.experiment.train_or_reuse` in
``OUT/runs/<row>-<hash of its config>``: identical configs (a baseline that does not depend on
the group) are trained once, finished runs are reused and killed ones resume. The results go
to ``OUT/table.md``, ``OUT/table.json`` and ``OUT/table.png``: mean ± std over seeds per row
and column, and per-seed paired gaps ``row - baseline`` (same seed: same data split, same
labelled subjects) with the number of seeds won. ``OUT/figures/`` holds each row's
qualitative panels (registration of the first evaluation pair, segmentation of the first
held-out subject) for the first seed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Mapping, Sequence

import numpy as np

from .config import ConfigError, apply_overrides, load_config

__all__ = [
    "CONFIG_DIR",
    "LOWER_IS_BETTER",
    "STUDY_DIR",
    "better",
    "default_out",
    "list_studies",
    "load_study",
    "paired_gaps",
    "run_study",
    "study_table",
]

#: The ``configs/`` folder next to the package (row configs are relative to it).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
#: The study files, ``configs/studies/NAME.py``.
STUDY_DIR = os.path.join(CONFIG_DIR, "studies")


def _study_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(STUDY_DIR) if f.endswith(".py") and f[0] != "_")


def list_studies() -> dict[str, dict]:
    """``{name: study}`` of every ``configs/studies/*.py`` (default variant)."""
    return {n: load_study(n) for n in _study_names()}


def _module(path: str):
    spec = importlib.util.spec_from_file_location("jrs_jax_study_" + os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_study(spec: str, *, quick: bool = False) -> dict:
    """The study ``NAME[:variants]`` (or a path ``PATH.py[:variants]``), validated; ``quick``
    adds the ``quick`` variant. The result's ``"variants"`` lists the variants used.

    Raises:
      ConfigError: unknown study (naming the known ones), bad variants, or a malformed study
        (rows without a config, gaps naming unknown rows, ...).
    """
    name, _, arg = str(spec).partition(":")
    path = name if name.endswith(".py") else os.path.join(STUDY_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise ConfigError(f"unknown study {name!r}; known studies: {_study_names()}")
    variants = [v for v in (arg or "").split(",") if v] + (["quick"] if quick else [])
    study = _module(path).get_study(",".join(variants) or None)
    _validate(study, path)
    return {**study, "variants": variants}


def default_out(study: Mapping) -> str:
    """``jrs_reproduce/NAME[-variants]``: one folder per study variant (their data and tables
    differ)."""
    return os.path.join("jrs_reproduce", "-".join([study["name"], *study.get("variants", [])]))


def _validate(study: Mapping, path: str) -> None:
    for key in ("name", "claim", "data", "seeds", "groups", "columns"):
        if key not in study:
            raise ConfigError(f"{path}: study has no {key!r}")
    if len(study["seeds"]) < 1:
        raise ConfigError(f"{path}: study needs at least one seed")
    for g in study["groups"]:
        names = [r["name"] for r in g["rows"]]
        for r in g["rows"]:
            if "from" in r:
                if r["from"] not in names or ("at_step" in r) == ("evaluate" in r):
                    raise ConfigError(
                        f"{path}: row {r['name']!r} needs an existing 'from' row and one of "
                        "'at_step' or 'evaluate'"
                    )
            elif "config" not in r:
                raise ConfigError(f"{path}: row {r['name']!r} has no 'config'")
        for gap in study.get("gaps", []):
            for role in ("row", "baseline"):
                if gap[role] not in names:
                    raise ConfigError(
                        f"{path}: gap {role} {gap[role]!r} is not a row of group {g['name']!r}"
                    )


def row_config(row: Mapping, *, dataset: str, seed: int) -> dict:
    """The training config of a study row for one seed (``row["config"]``: a path relative
    to ``configs/``, or a config dict, e.g. built in a notebook)."""
    src = row["config"]
    cfg = (
        copy.deepcopy(src)
        if isinstance(src, Mapping)
        else load_config(os.path.join(CONFIG_DIR, src))
    )
    sets = {"data.dataset": dataset, "seed": seed, **row.get("set", {})}
    return _apply_sets(cfg, sets)


def _apply_sets(cfg: Mapping, sets: Mapping) -> dict:
    """``cfg`` with the dotted ``sets`` applied (:func:`~jrs_jax.config.apply_overrides`),
    except that an evaluation option (``eval.*``, see :func:`jrs_jax.evaluation.evaluate`)
    the config leaves out is added rather than refused."""
    cfg = copy.deepcopy(dict(cfg))
    for k, v in sets.items():
        section, _, leaf = k.partition(".")
        if section == "eval" and leaf not in cfg.setdefault("eval", {}):
            cfg["eval"][leaf] = v
        else:
            cfg = apply_overrides(cfg, [f"{k}={json.dumps(v)}"])
    return cfg


def _set_values(cfg):
    """``cfg`` without its ``None`` (unset, default) entries."""
    if isinstance(cfg, Mapping):
        return {k: _set_values(v) for k, v in cfg.items() if v is not None}
    return cfg


def _digest(cfg: Mapping) -> str:
    """The run folder's hash of a row config (unset keys do not count: adding a config key
    whose default is ``None`` keeps finished runs reusable)."""
    text = json.dumps(_set_values(cfg), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _data(study: Mapping, out: str) -> str:
    """Generate (once) the study's scenario data in ``OUT/data``; refuse other settings."""
    from .data.scenarios import make_scenario

    spec = study["data"]
    root = os.path.join(out, "data")
    marker = os.path.join(root, "study_data.json")
    want = {k: spec.get(k) for k in ("scenario", "seed", "settings")}
    if not os.path.exists(root):
        make_scenario(spec["scenario"], root, key=int(spec.get("seed", 0)), **spec["settings"])
        with open(marker + ".tmp", "w") as f:
            json.dump(want, f)
        os.replace(marker + ".tmp", marker)
    with open(marker) as f:
        have = json.load(f)
    if have != json.loads(json.dumps(want)):
        raise ValueError(f"{root} holds data generated with {have}, not {want}: use another --out")
    return os.path.join(root, "dataset.json")


def _val_at(workdir: str, step: int) -> dict:
    from .train import read_log

    recs = [
        r
        for r in read_log(os.path.join(workdir, "metrics.jsonl"))
        if r.get("split") == "val" and r["step"] == step
    ]
    if not recs:
        raise ValueError(f"{workdir}: no validation record at step {step}")
    return {k: v for k, v in recs[-1].items() if k.startswith("val/")}


def _reevaluate(workdir: str, spec: Mapping, data_root: str) -> dict:
    """The ``val/`` summary of the finished run in ``workdir`` evaluated again with its
    config changed by ``spec["set"]`` and/or on ``spec["dataset"]`` (a file of the study's
    data folder); cached in ``workdir/evaluations/<hash>.json``."""
    from .evaluation import evaluate, write_json
    from .experiment import build_method, load_dataset, load_run
    from .train import variables

    want = {"set": dict(spec.get("set") or {}), "dataset": spec.get("dataset")}
    cache = os.path.join(workdir, "evaluations", f"{_digest(want)}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)["summary"]
    _, state, cfg = load_run(workdir, step="latest")
    sets = dict(want["set"])
    if want["dataset"]:
        sets["data.dataset"] = os.path.join(data_root, want["dataset"])
    cfg = _apply_sets(cfg, sets)
    method = build_method(cfg)
    ev_cfg = cfg.get("eval") or {}
    summary = evaluate(
        method,
        variables(state),
        load_dataset(cfg),
        max_pairs=ev_cfg.get("max_pairs"),
        batch_size=int(ev_cfg.get("batch_size", 4)),
    ).summary
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    write_json(cache, {**want, "summary": summary})
    return summary


def run_study(
    study: Mapping,
    *,
    out: str,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Train every row of ``study`` for every seed (reusing finished runs) and write the
    table, its JSON and its plot to ``out``. Returns ``{"records", "table", "gaps",
    "seconds"}``."""
    from .experiment import train_or_reuse

    t0 = time.perf_counter()
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    dataset = _data(study, out)
    seeds = list(study["seeds"] if seeds is None else seeds)
    records = []
    todo = [(s, g, r) for s in seeds for g in study["groups"] for r in g["rows"]]
    for k, (seed, group, row) in enumerate(todo):
        tag = f"[{k + 1}/{len(todo)}] {group['name']} · {row['name']} · seed {seed}"
        rec = {"group": group["name"], "row": row["name"], "seed": seed}
        src = next(r for r in group["rows"] if r["name"] == row["from"]) if "from" in row else row
        cfg = row_config(src, dataset=dataset, seed=seed)
        workdir = os.path.join(out, "runs", f"{src['name']}-{_digest(cfg)}")
        res = train_or_reuse(cfg, workdir=workdir, progress=progress, figures=True)
        if "evaluate" in row:
            data_root = os.path.dirname(dataset)
            rec.update(_reevaluate(workdir, row["evaluate"], data_root), seconds=None)
            rec["updates"] = int(cfg["train"]["steps"])
        elif "from" in row:
            rec.update(_val_at(workdir, int(row["at_step"])), seconds=None)
        else:
            rec.update(res["evaluation"], seconds=res["train_seconds"])
            rec["updates"] = int(cfg["train"]["steps"])
        rec["workdir"] = workdir
        if seed == seeds[0] and "from" not in row:
            _panels(workdir, os.path.join(out, "figures"), f"{group['name']}_{row['name']}")
        shown = {c: round(rec[c], 4) for c in study["columns"] if rec.get(c) is not None}
        log(f"{tag}: {json.dumps(shown)}")
        records.append(rec)
    result = {
        "records": records,
        "gaps": paired_gaps(study, records),
        "seconds": time.perf_counter() - t0,
    }
    result["table"] = study_table(study, records, result["gaps"], seeds=seeds)
    _write(out, study, result)
    figure(study, records, os.path.join(out, "table.png"))
    if study.get("field_figure"):
        _field_figures(study, records, os.path.join(out, "figures"), seed=seeds[0])
    return result


def _field_figures(study: Mapping, records: Sequence[Mapping], fig_dir: str, *, seed: int) -> None:
    """``figures/<group>_fields.png``: every registering row's field of the first evaluation
    pair next to the ground truth (:func:`jrs_jax.viz.field_comparison`), seed ``seed``."""
    from . import viz
    from .experiment import first_pair, load_dataset, load_run

    for group in study["groups"]:
        fields, batch = {}, None
        for row in group["rows"]:
            rec = next(
                (
                    r
                    for r in records
                    if r["group"] == group["name"] and r["row"] == row["name"] and r["seed"] == seed
                ),
                None,
            )
            if rec is None or "from" in row:
                continue
            method, state, cfg = load_run(rec["workdir"])
            if "register" not in method.tasks:
                continue
            batch, pred = first_pair(method, state, load_dataset(cfg))
            fields[row.get("label", row["name"])] = np.asarray(pred["disp"][0])
        if not fields:
            continue
        if "fixed_mask" in batch:
            regions = batch["fixed_mask"][0]
        else:  # multi-label [*S, K] maps shown as the highest set label
            regions = viz.display_labels(batch["fixed_labels"][0], ndim=method.ndim)
        fig = viz.field_comparison(fields, gt=batch.get("gt_disp", [None])[0], regions=regions)
        safe = re.sub(r"[^A-Za-z0-9-]+", "_", group["name"]).strip("_")
        viz.save_figure(fig, os.path.join(fig_dir, f"{safe}_fields.png"))


def _panels(workdir: str, fig_dir: str, prefix: str) -> None:
    """Copy a run's qualitative figures (registration panel, segmentation overlay) to the
    study's ``figures/`` folder as ``<group>_<row>_<name>.png``."""
    import shutil

    from .experiment import ensure_figures

    os.makedirs(fig_dir, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", prefix).strip("_")
    for path in ensure_figures(workdir):
        name = os.path.basename(path)
        if name != "curves.png":
            shutil.copyfile(path, os.path.join(fig_dir, f"{safe}_{name}"))


def _ms(values, digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return "—"
    return (
        f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"
    )


#: Substrings of metric names for which lower is better (a "win" is a negative gap).
LOWER_IS_BETTER = (
    "folding",
    "sdlogj",
    "hd95",
    "assd",
    "epe",
    "non_diffeo",
    "loss",
    "abs_logj",
    "spurious",
    "seconds",
)


def better(gap: Mapping) -> str:
    """``"higher"`` or ``"lower"``: the gap spec's ``"better"``, else ``"lower"`` for a metric
    whose name holds one of :data:`LOWER_IS_BETTER` (folding %, SDlogJ, HD95, ...)."""
    if "better" in gap:
        if gap["better"] not in ("higher", "lower"):
            raise ConfigError(f"gap 'better' must be 'higher' or 'lower'; got {gap['better']!r}")
        return gap["better"]
    name = gap["metric"].lower()
    return "lower" if any(k in name for k in LOWER_IS_BETTER) else "higher"


def paired_gaps(study: Mapping, records: Sequence[Mapping]) -> list[dict]:
    """Per group and gap spec: the per-seed differences ``row - baseline`` of the metric, and
    ``won``: the seeds where the row is better (a positive gap, or a negative one for a
    lower-is-better metric, :func:`better`)."""
    out = []
    for g in study["groups"]:
        for gap in study.get("gaps", []):
            metric = gap["metric"]

            def by_seed(row, g=g, metric=metric):
                return {
                    r["seed"]: r.get(metric)
                    for r in records
                    if r["group"] == g["name"] and r["row"] == row
                }

            a, b = by_seed(gap["row"]), by_seed(gap["baseline"])
            seeds = [s for s in a if a[s] is not None and b.get(s) is not None]
            diffs = [float(a[s] - b[s]) for s in seeds]
            out.append(
                {
                    "group": g["name"],
                    "row": gap["row"],
                    "baseline": gap["baseline"],
                    "metric": metric,
                    "seeds": seeds,
                    "gaps": diffs,
                    "mean": float(np.mean(diffs)) if diffs else None,
                    "better": better(gap),
                    "won": int(sum((d < 0) if better(gap) == "lower" else (d > 0) for d in diffs)),
                }
            )
    return out


def study_table(study: Mapping, records, gaps, *, seeds) -> str:
    """The markdown table: per group, mean ± std per row and column, then the paired gaps."""
    labels = {r["name"]: r.get("label", r["name"]) for g in study["groups"] for r in g["rows"]}
    cols = study["columns"]
    runs = {r["workdir"]: 0.0 for r in records}  # an evaluate / from row adds no training
    runs.update({r["workdir"]: r["seconds"] for r in records if r.get("seconds") is not None})
    lines = [
        f"# {study['name']}: {study['claim']}",
        "",
        f"Paper: {study.get('paper', '—')}. Seeds {list(seeds)}. "
        f"{len(runs)} runs, {sum(runs.values()) / 60:.0f} min of training in all. "
        + (f"Budget: {study['budget']} " if study.get("budget") else "")
        + (f"Data: {study['data'].get('why', '')}" if study["data"].get("why") else ""),
        "",
    ]
    for g in study["groups"]:
        lines += [
            f"## {g['name']}",
            "",
            "| row | " + " | ".join(cols.values()) + " | updates | train s |",
            "|---|" + "---|" * (len(cols) + 2),
        ]
        for row in g["rows"]:
            recs = [r for r in records if r["group"] == g["name"] and r["row"] == row["name"]]
            cells = [_ms([r.get(c) for r in recs]) for c in cols]
            ups = sorted({r["updates"] for r in recs if r.get("updates")})
            ups_txt = ", ".join(map(str, ups)) or f"(stage of {row.get('from')})"
            lines.append(
                f"| {labels[row['name']]} | "
                + " | ".join(cells)
                + f" | {ups_txt} | {_ms([r.get('seconds') for r in recs], 0)} |"
            )
        lines.append("")
    if gaps:
        lines += [
            "## Paired gaps (row − baseline, same seed)",
            "",
            "| group | row | baseline | metric | mean gap | per seed | seeds won |",
            "|---|---|---|---|---|---|---|",
        ]
        for gp in gaps:
            per = ", ".join(f"{d:+.3f}" for d in gp["gaps"]) or "—"
            mean = "—" if gp["mean"] is None else f"{gp['mean']:+.4f}"
            lines.append(
                f"| {gp['group']} | {labels[gp['row']]} | {labels[gp['baseline']]} | "
                f"{cols.get(gp['metric'], gp['metric'])} | {mean} | {per} | "
                f"{gp['won']}/{len(gp['gaps'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _write(out: str, study: Mapping, result: Mapping) -> None:
    from .evaluation import write_json

    path = os.path.join(out, "table.md")
    with open(path + ".tmp", "w") as f:
        f.write(result["table"])
    os.replace(path + ".tmp", path)
    write_json(
        os.path.join(out, "table.json"),
        {
            "study": {k: v for k, v in study.items() if k != "groups"},
            "groups": study["groups"],
            "records": result["records"],
            "gaps": result["gaps"],
            "seconds": round(result["seconds"], 1),
        },
    )


def figure(study: Mapping, records, path: str) -> None:
    """Bars: mean ± std over seeds of each column, rows side by side, one panel per column."""
    from matplotlib.figure import Figure

    from .viz import save_figure

    cols = list(study["columns"].items())
    fig = Figure(figsize=(4.2 * len(cols), 3.6), layout="constrained")
    groups = study["groups"]
    width = 0.8 / max(1, len(groups))
    for j, (metric, title) in enumerate(cols):
        ax = fig.add_subplot(1, len(cols), j + 1)
        names: list[str] = []
        for g in groups:
            for r in g["rows"]:
                if r["name"] not in names:
                    names.append(r["name"])
        for i, g in enumerate(groups):
            means, stds = [], []
            for name in names:
                vals = [
                    r.get(metric)
                    for r in records
                    if r["group"] == g["name"] and r["row"] == name and r.get(metric) is not None
                ]
                vals = [v for v in vals if np.isfinite(v)]
                means.append(np.mean(vals) if vals else np.nan)
                stds.append(np.std(vals) if vals else 0.0)
            x = np.arange(len(names)) + i * width
            ax.bar(x, means, width, yerr=stds, capsize=3, label=g["name"])
        ax.set_xticks(
            np.arange(len(names)) + width * (len(groups) - 1) / 2,
            names,
            fontsize=7,
            rotation=20,
        )
        ax.set_title(title)
        if "dice" in metric:
            vals = [r.get(metric) for r in records if r.get(metric) is not None]
            if vals:
                ax.set_ylim(max(0.0, float(np.nanmin(vals)) - 0.05), 1.0)
        ax.legend(fontsize=7)
    save_figure(fig, path)
