"""Config -> data -> method -> trained run, and back from a run directory to a model.

The functions behind ``jrs-jax train / register / segment / evaluate``; usable from notebooks:

    >>> cfg = load_config("configs/voxelmorph.py:smoke")            # doctest: +SKIP
    >>> result = train(cfg, workdir="runs/vxm")                     # doctest: +SKIP
    >>> method, state, cfg = load_run("runs/vxm")                   # doctest: +SKIP

A run directory holds ``config.json`` (the resolved config: data shape and number of classes
filled in, so it alone rebuilds the networks), ``metrics.jsonl``, ``checkpoints/``,
``results.json`` (final validation numbers) and ``figures/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from .config import save_config
from .data.datasets import Dataset, load_folder, load_learn2reg
from .data.errors import DataError
from .data.sampling import subject_batch
from .evaluation import evaluate, evaluation_pairs, pair_batch_for
from .methods import Method, get_method
from .train import Checkpointer, variables
from .train.loop import fit, read_log

__all__ = [
    "build_method",
    "ensure_figures",
    "evaluate_run",
    "first_pair",
    "load_dataset",
    "load_run",
    "resolve_config",
    "sequence_figure",
    "train",
    "train_or_reuse",
    "write_figures",
]


def load_dataset(config: dict) -> Dataset:
    """The dataset of ``config["data"]``: a Learn2Reg ``dataset.json`` or an ``images/`` +
    ``labels/`` folder, keeping ``num_labelled`` labelled training subjects if set."""
    data = config["data"]
    path = os.fspath(data["dataset"])
    if not os.path.exists(path):
        hint = (
            " (run `jrs-jax make-synthetic` first to generate the built-in synthetic dataset)"
            if "jrs_synthetic" in path
            else ""
        )
        raise DataError(path, f"dataset not found{hint}")
    ds = load_folder(path) if os.path.isdir(path) else load_learn2reg(path)
    if data.get("num_labelled") is not None:
        ds = ds.split_labelled(int(data["num_labelled"]), key_or_seed=int(config.get("seed", 0)))
    return ds


def resolve_config(config: dict, dataset: Dataset) -> dict:
    """A copy of ``config`` with what the networks need from ``dataset`` filled in:
    ``data.shape``, ``data.num_classes`` (label classes, or label channels of multi-label
    data), ``data.num_channels`` (modalities), ``data.multi_label`` and, when the dataset
    names its labels, ``data.label_names``."""
    cfg = json.loads(json.dumps(config))
    data = cfg["data"]
    data["shape"] = list(dataset.shape)
    data["num_channels"] = int(dataset.num_channels)
    for role in ("moving", "fixed", "image"):
        c = data.get(f"{role}_channel")
        if isinstance(c, int) and not 0 <= c < dataset.num_channels:
            mods = ", ".join(dataset.modalities) or "one unnamed modality"
            raise DataError(
                str(dataset.source),
                f"has {dataset.num_channels} image channel(s) ({mods}) but the config reads "
                f"channel {c} (data.{role}_channel): a cross-modal method needs a dataset "
                "with both modalities (nnU-Net channels _0000, _0001)",
            )
    data["multi_label"] = bool(dataset.multi_label)
    if dataset.label_names:
        data["label_names"] = {str(k): v for k, v in dataset.label_names.items()}
    if data.get("num_classes") is None:
        labelled = [s.labels for s in dataset.subjects if s.labels is not None]
        if not labelled:
            raise DataError(str(dataset.source), "no labelled subject: cannot infer num_classes")
        if dataset.multi_label:
            data["num_classes"] = int(labelled[0].shape[-1])
        else:
            data["num_classes"] = max(int(lab.max()) for lab in labelled) + 1
    return cfg


def build_method(config: dict) -> Method:
    """The method of a resolved config (``data.shape`` and ``data.num_classes`` set)."""
    data = config["data"]
    if data.get("shape") is None or data.get("num_classes") is None:
        raise ValueError("config is not resolved: data.shape / data.num_classes missing")
    cls = get_method(config["method"])
    return cls(
        config,
        shape=tuple(data["shape"]),
        num_classes=int(data["num_classes"]),
        num_channels=int(data.get("num_channels") or 1),
        multi_label=bool(data.get("multi_label", False)),
    )


def _evaluator(method: Method, dataset: Dataset, config: dict):
    ev = config.get("eval", {})

    def run(state) -> dict[str, float]:
        return evaluate(
            method,
            variables(jax.device_get(state)),
            dataset,
            max_pairs=ev.get("max_pairs"),
            batch_size=int(ev.get("batch_size", 4)),
            surface=bool(ev.get("surface", False)),
        ).summary

    return run


def first_pair(method: Method, state: Any, dataset: Dataset) -> tuple[dict, dict]:
    """``(batch, prediction)`` of the first evaluation pair (the one every figure shows); the
    batch has ``gt_disp`` when the dataset has its ground truth."""
    pairs = evaluation_pairs(dataset, mode=method.evaluation_mode)[:1]
    if not len(pairs):
        raise ValueError(f"the dataset has no evaluation pair for {method.name}")
    b = pair_batch_for(method, dataset, pairs, method.evaluation_mode)
    return b, method.run(variables(jax.device_get(state)), b, "register")


def write_figures(method: Method, state: Any, dataset: Dataset, workdir: str) -> list[str]:
    """Training curves and, from the keys the method's ``predict`` returns: the registration
    panel of the first evaluation pair (fixed / moving / warped with label contours,
    deformation grid, Jacobian map) and a segmentation overlay of the first labelled held-out
    subject; then the method's own files (:meth:`~jrs_jax.methods.Method.write_outputs`).
    Returns the paths."""
    from . import viz
    from .evaluation import warp_labels_nearest

    fig_dir = os.path.join(workdir, "figures")
    paths = []
    log = [r for r in read_log(os.path.join(workdir, "metrics.jsonl")) if r.get("split") != "error"]
    if log:
        p = os.path.join(fig_dir, "curves.png")
        viz.save_figure(viz.training_curves(log, log_y=False), p)
        paths.append(p)
    v = variables(jax.device_get(state))
    if "register" in method.tasks and len(evaluation_pairs(dataset, mode=method.evaluation_mode)):
        b, pred = first_pair(method, state, dataset)
        wl = warp_labels_nearest(b["moving_labels"], pred["disp"])
        show = lambda x: viz.display_labels(x, ndim=method.ndim)
        fig = viz.registration_panel(
            b["fixed"][0],
            b["moving"][0],
            np.asarray(pred["warped"][0]),
            fixed_labels=show(b["fixed_labels"][0]),
            moving_labels=show(b["moving_labels"][0]),
            warped_labels=show(np.asarray(wl[0])),
            disp=np.asarray(pred["disp"][0]),
        )
        p = os.path.join(fig_dir, "registration.png")
        viz.save_figure(fig, p)
        paths.append(p)
        if "synth" in pred:  # a synthesis method: x, G(x), y and the registered results
            p = os.path.join(fig_dir, "synthesis.png")
            viz.save_figure(synthesis_figure(method, b, pred, wl), p)
            paths.append(p)
    if "sequence" in method.tasks:
        fig = sequence_figure(method, state, dataset)
        if fig is not None:
            p = os.path.join(fig_dir, "sequence.png")
            viz.save_figure(fig, p)
            paths.append(p)
    held = [i for i in dataset.held_out() if dataset.subjects[i].has_labels]
    if "segment" in method.tasks and held:
        b = subject_batch(dataset, held[:1], channels=method.channel("image"))
        pred = method.labels(method.run(v, b, "segment"))[0]
        pred = viz.display_labels(pred, ndim=method.ndim)
        p = os.path.join(fig_dir, "segmentation.png")
        name = dataset.subjects[held[0]].name
        viz.save_figure(viz.overlay(b["image"][0], pred, title=f"{name}: prediction"), p)
        paths.append(p)
    paths += method.write_outputs(jax.device_get(state), workdir)  # e.g. a learned atlas
    return paths


def synthesis_figure(method: Method, batch: Mapping, prediction: Mapping, warped_labels):
    """The first pair of a synthesis method side by side (:func:`jrs_jax.viz.frame_strip`):
    the moving image ``x``, its synthesis ``synth`` (``x`` rendered in the fixed image's
    modality), the fixed image ``y``, the registered synthesis ``warped_synth`` (when
    predicted) and the registered moving image ``warped``, with the moving labels on the
    first two and the fixed labels on the others (dashed on the registered images: the
    warped moving labels)."""
    from . import viz

    show = lambda x: viz.display_labels(np.asarray(x), ndim=method.ndim)
    ml, fl = show(batch["moving_labels"][0]), show(batch["fixed_labels"][0])
    wl = show(warped_labels[0])
    images = [("moving x", batch["moving"], ml, ml), ("synth G(x)", prediction["synth"], ml, ml)]
    images.append(("fixed y", batch["fixed"], fl, fl))
    if "warped_synth" in prediction:
        images.append(("registered G(x)", prediction["warped_synth"], fl, wl))
    images.append(("registered x", prediction["warped"], fl, wl))
    frames = np.stack([np.asarray(im[0])[..., :1] for _, im, _, _ in images])
    return viz.frame_strip(
        frames,
        np.stack([lab for _, _, lab, _ in images]),
        reference=np.stack([ref for _, _, _, ref in images]),
        titles=[t for t, _, _, _ in images],
    )


def sequence_figure(method: Method, state: Any, dataset: Dataset):
    """The first held-out sequence as a frame strip (:func:`jrs_jax.viz.frame_strip`): frame
    0's labels propagated onto every frame through the inverted predicted fields (solid), and
    every frame's labels, evaluation-only hidden labels included (dashed). ``None`` when the
    dataset has no held-out sequence with a labelled frame 0."""
    from . import viz
    from .data import sampling
    from .evaluation import propagate_labels, sequence_truth

    _, windows = sampling.leading_windows(dataset, dataset.held_out())
    if not len(windows):
        return None
    b = sampling.sequence_batch(dataset, windows[:1], hidden_labels=True)
    if not b["sequence_has_label"][0, 0]:
        return None
    pred = method.run(variables(jax.device_get(state)), {"sequence": b["sequence"]}, "sequence")
    shown = propagate_labels(b["sequence_labels"][0, 0], pred["disp_sequence"][0])
    truth = sequence_truth(b)[0][0]
    name = dataset.subjects[int(windows[0, 0])].subject
    titles = [f"{name} t={t}" for t in range(len(shown))]
    show = lambda x: np.stack([viz.display_labels(y, ndim=method.ndim) for y in x])
    return viz.frame_strip(b["sequence"][0], show(shown), reference=show(truth), titles=titles)


def ensure_figures(workdir: str | os.PathLike) -> list[str]:
    """The run's figures (:func:`write_figures`), written from its best checkpoint when its
    ``figures/`` folder is missing (a run trained with ``figures=False``); returns the
    paths of the PNGs in it."""
    workdir = os.path.abspath(os.fspath(workdir))
    fig_dir = os.path.join(workdir, "figures")
    if not os.path.isdir(fig_dir):
        method, state, cfg = load_run(workdir)
        write_figures(method, state, load_dataset(cfg), workdir)
    return sorted(os.path.join(fig_dir, f) for f in os.listdir(fig_dir) if f.endswith(".png"))


def train(
    config: dict,
    *,
    workdir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    figures: bool = True,
) -> dict:
    """Train the method of ``config`` in ``workdir`` (see :func:`jrs_jax.train.loop.fit`).

    Writes ``config.json`` (resolved; on ``resume`` it must equal the saved one, except
    ``train.steps`` which may grow), ``results.json`` and, with ``figures``, PNGs under
    ``figures/``. Returns the :func:`fit` result plus ``"evaluation"`` (the summary).
    """
    workdir = os.path.abspath(os.fspath(workdir))
    dataset = load_dataset(config)
    cfg = resolve_config(config, dataset)
    cfg_path = os.path.join(workdir, "config.json")
    if resume and os.path.exists(cfg_path):
        with open(cfg_path) as f:
            saved = json.load(f)
        a = {**saved, "train": {**saved["train"], "steps": None}}
        b = {**cfg, "train": {**cfg["train"], "steps": None}}
        if a != b:
            raise ValueError(
                f"--resume with a config different from {cfg_path}; resume with the same "
                "config (only train.steps may change) or start a new workdir"
            )
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not resume and os.path.isdir(ckpt_dir):
        # Refuse before save_config: overwriting config.json would orphan the checkpoints.
        with Checkpointer(ckpt_dir) as ckpt:
            latest = ckpt.latest_step()
        if latest is not None:
            raise FileExistsError(
                f"{workdir} already holds checkpoints (last step {latest}); pass --resume to "
                "continue, or use another workdir"
            )
    os.makedirs(workdir, exist_ok=True)
    save_config(cfg, cfg_path)
    method = build_method(cfg)
    tr = cfg["train"]
    seed = int(cfg.get("seed", 0))
    init_key, _ = jax.random.split(jax.random.key(seed))
    result = fit(
        method.train_step,
        method.init(init_key, dataset),
        sample_batch=lambda t: method.sample_batch(dataset, t),
        workdir=workdir,
        steps=int(tr["steps"]),
        seed=seed,
        evaluate=_evaluator(method, dataset, cfg),
        eval_every=int(tr.get("eval_every", 0)),
        ckpt_every=int(tr.get("ckpt_every", 0)),
        log_every=int(tr.get("log_every", 10)),
        keep=int(tr.get("keep", 2)),
        best_metric=method.best_metric,
        resume=resume,
        progress=progress,
        extra={"method": cfg["method"]},
        desc=cfg["method"],
    )
    summary = dict(result["val"])
    out = {
        "method": cfg["method"],
        "steps": result["step"],
        "best_step": result["best_step"],
        "train_seconds": round(result["train_seconds"], 2),
        "first_step_seconds": result["first_step_seconds"],
        **summary,
    }
    tmp = os.path.join(workdir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, os.path.join(workdir, "results.json"))
    if figures:
        result["figures"] = write_figures(method, result["state"], dataset, workdir)
    result["evaluation"] = summary
    result["method"] = method
    return result


def config_differences(requested: dict, saved: dict, prefix: str = "") -> list[str]:
    """Dotted keys where ``saved`` (a run's resolved ``config.json``) is not ``requested``.

    Keys ``requested`` leaves ``None`` (filled in by :func:`resolve_config`) and keys only
    ``saved`` has are not differences; tuples equal lists (JSON).
    """
    out = []
    for k, want in requested.items():
        name = f"{prefix}{k}"
        have = saved.get(k) if isinstance(saved, dict) else None
        if isinstance(want, dict):
            out += config_differences(want, have if isinstance(have, dict) else {}, name + ".")
        elif want is not None and json.loads(json.dumps(want)) != have:
            out.append(name)
    return out


def train_or_reuse(
    config: dict, *, workdir: str | os.PathLike, progress: bool = True, figures: bool = True
) -> dict:
    """:func:`train`, except that a finished run in ``workdir`` (its last checkpoint at
    ``train.steps`` and a ``results.json``) is reused without rebuilding anything, and an
    unfinished one is resumed (a run of a different config is an error, see
    :func:`config_differences`). Returns ``{"evaluation", "train_seconds", "workdir",
    "reused"}`` (plus :func:`train`'s keys when it trained)."""
    workdir = os.path.abspath(os.fspath(workdir))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    done = None
    if os.path.isdir(ckpt_dir):
        with Checkpointer(ckpt_dir) as ck:
            done = ck.latest_step()
    results = os.path.join(workdir, "results.json")
    if done == int(config["train"]["steps"]) and os.path.exists(results):
        with open(os.path.join(workdir, "config.json")) as f:
            differ = config_differences(config, json.load(f))
        if differ:
            raise ValueError(
                f"{workdir} holds a finished run of another config (differs in "
                f"{', '.join(differ)}); use another workdir or delete that one"
            )
        with open(results) as f:
            saved = json.load(f)
        return {
            "evaluation": {k: v for k, v in saved.items() if k.startswith("val/")},
            "train_seconds": float(saved.get("train_seconds", 0.0)),
            "workdir": workdir,
            "reused": True,
        }
    out = train(
        config, workdir=workdir, resume=done is not None, progress=progress, figures=figures
    )
    return {**out, "reused": False}


def load_run(path: str | os.PathLike, *, step: int | str = "best") -> tuple[Method, dict, dict]:
    """``(method, state, config)`` of a run directory (or its ``checkpoints/`` folder).

    ``step``: ``"best"`` (falls back to the latest when no best is recorded), ``"latest"``
    or a step number.

    Raises:
      FileNotFoundError: no ``config.json`` / no checkpoint (naming the path).
      ValueError: the checkpoints were saved by another method than ``config.json`` names,
        or their networks do not match the config's.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.basename(path) == "checkpoints":
        path = os.path.dirname(path)
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{path}: not a run directory (no config.json)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    ckpt_dir = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{path}: no checkpoints/ folder")
    with Checkpointer(ckpt_dir) as ckpt:
        saved = (ckpt.metadata("latest").get("extra") or {}).get("method")
    if saved is not None and saved != cfg.get("method"):
        raise ValueError(
            f"{path}: its checkpoints hold a {saved!r} model but config.json names method "
            f"{cfg.get('method')!r}"
        )
    method = build_method(cfg)
    template = method.init(jax.random.key(0))
    with Checkpointer(ckpt_dir, best_metric=method.best_metric) as ckpt:
        if step == "best" and ckpt.best_step() is None:
            step = "latest"
        state, _, _ = ckpt.restore(template, step=step)
    return method, state, cfg


def evaluate_run(
    path: str | os.PathLike,
    *,
    step: int | str = "best",
    dataset: str | None = None,
    out: str,
    max_pairs: int | None = None,
    batch_size: int = 4,
    surface: bool = True,
) -> str:
    """Evaluate a run directory on its held-out data (or ``dataset``) and write the report
    (:func:`jrs_jax.evaluation.write_report`) to ``out``; returns its markdown text."""
    from .evaluation import write_report

    method, state, cfg = load_run(path, step=step)
    if dataset:
        cfg = {**cfg, "data": {**cfg["data"], "dataset": dataset}}
    ds = load_dataset(cfg)
    if tuple(ds.shape) != tuple(cfg["data"]["shape"]):
        raise ValueError(
            f"dataset shape {ds.shape} differs from the model's {tuple(cfg['data']['shape'])}"
        )
    ev = evaluate(
        method,
        variables(state),
        ds,
        max_pairs=max_pairs,
        batch_size=batch_size,
        surface=surface,
    )
    return write_report(ev, out, title=f"Evaluation of {path} ({cfg['method']})")
