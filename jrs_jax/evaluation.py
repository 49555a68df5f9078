"""Held-out evaluation of any method, read from the keys its ``predict`` returns.

Registration (a method with a ``"register"`` task) is scored on pairs chosen by the
evaluation mode (the method's :attr:`~jrs_jax.methods.Method.eval_mode`, or the config's
``eval.mode``):

* ``"pairs"``: the dataset's validation pairs (Learn2Reg ``registration_val``), or all
  ordered pairs of held-out subjects when it has none;
* ``"atlas"``: atlas -> subject: the atlas (``eval.atlas``, a subject index; default the first
  labelled training subject) is the moving image of every labelled held-out subject;
* ``"within_subject"``: every ordered pair of two scans of one held-out subject (longitudinal
  data, sequences);
* ``"cross_modal"``: the ``"pairs"`` pairs with the moving image in channel
  ``eval.moving_channel`` (default 0) and the fixed one in ``eval.fixed_channel`` (default 1).

For every pair: the moving labels are warped with the predicted ``disp`` by nearest-neighbour
lookup (Learn2Reg's ``order=0``; multi-label maps channel by channel) and compared with the
fixed labels: Dice over the foreground labels (optionally only ``eval.labels``), a label in
only one of the two maps scoring 0 (as Learn2Reg scores a structure warped out of view), and
the same Dice before registration (``dice_identity``); field regularity: % of voxels with
``det J <= 0`` and Learn2Reg's ``sdlogj``; endpoint error against the ground-truth field when
the dataset has one (``epe``), and, when it also has region masks (the ground truth of
sliding-motion data is discontinuous at region boundaries), the endpoint error within
``eval.boundary_width`` voxels (default 2) of the fixed image's region boundaries and outside
that band (``epe_boundary``, ``epe_interior``; :func:`jrs_jax.metrics.boundary_band`; NaN for a
pair whose fixed image has no mask); HD95 with ``surface``; a segmentation of the fixed image
when the pair prediction has one (``seg_probs`` / ``seg_sigmoid``), and with the moving
image's too (``moving_seg_*``) their agreement through the field, ``seg_consistency`` (Dice
of the moving segmentation warped by nearest-neighbour lookup with the fixed one); and the
method's own
:meth:`~jrs_jax.methods.Method.pair_metrics`.

Segmentation (a ``"segment"`` task) is scored on the labelled held-out subjects, from
:meth:`~jrs_jax.methods.Method.labels` of the prediction (argmax of ``seg_probs``, or
``seg_sigmoid`` thresholded per label): a structure never predicted scores 0.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics
from .data import sampling
from .data.datasets import Dataset
from .methods.base import Method
from .spatial import warp_labels

__all__ = [
    "Evaluation",
    "default_atlas",
    "evaluate",
    "evaluation_pairs",
    "label_dice",
    "warp_labels_nearest",
    "write_json",
    "write_report",
]


@dataclasses.dataclass
class Evaluation:
    """``summary``: ``{"val/<metric>": float}``; ``pairs`` / ``subjects``: one dict per case."""

    summary: dict[str, float]
    pairs: list[dict]
    subjects: list[dict]


def _labelled(dataset: Dataset) -> set[int]:
    return {i for i, s in enumerate(dataset.subjects) if s.has_labels}


def default_atlas(dataset: Dataset) -> int:
    """The first labelled training subject (the atlas of ``"atlas"`` mode by default)."""
    lab = dataset.labelled()
    if not lab:
        raise ValueError(f"{dataset.source}: atlas evaluation needs a labelled training subject")
    return int(lab[0])


def evaluation_pairs(
    dataset: Dataset,
    *,
    mode: str = "pairs",
    atlas: int | None = None,
    max_pairs: int | None = None,
) -> np.ndarray:
    """``(fixed, moving)`` pairs ``int64 [P, 2]`` of ``mode`` (module docstring), labelled on
    both sides."""
    if mode in ("pairs", "cross_modal"):
        if dataset.val_pairs:
            pairs = np.asarray(dataset.val_pairs, np.int64).reshape(-1, 2)
        else:
            held = dataset.held_out()
            pairs = sampling.all_pairs(held) if len(held) >= 2 else np.zeros((0, 2), np.int64)
    elif mode == "atlas":
        a = default_atlas(dataset) if atlas is None else int(atlas)
        pairs = sampling.atlas_pairs(a, dataset.held_out())
    elif mode == "within_subject":
        pairs = sampling.all_within_subject_pairs(dataset, dataset.held_out())
    else:
        raise ValueError(f"unknown evaluation mode {mode!r}")
    lab = _labelled(dataset)
    pairs = np.asarray([p for p in pairs if p[0] in lab and p[1] in lab], np.int64).reshape(-1, 2)
    return pairs if max_pairs is None else pairs[: int(max_pairs)]


def label_dice(
    pred, target, *, multi_label: bool = False, labels: Sequence[int] | None = None
) -> float:
    """Mean foreground Dice of one case: integer maps ``[*S]``, or with ``multi_label`` binary
    maps ``[*S, K]`` scored channel by channel (``labels`` then selects channels). Either way
    a structure in only one map scores 0 and one in neither is not scored."""
    if multi_label:
        return metrics.mean_dice_multilabel(pred, target, channels=labels, missing="zero")
    return metrics.mean_dice(pred, target, labels=labels, missing="zero")


def _mean_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    """HD95 averaged over the labels present in both maps (NaN if none)."""
    values = [v for v in metrics.hd95(pred, target, spacing=spacing).values() if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@jax.jit
def warp_labels_nearest(labels: jax.Array, disp: jax.Array) -> jax.Array:
    """Nearest-neighbour warp of integer ``[B, *S]`` or binary ``[B, *S, K]`` label maps by
    ``disp`` ``[B, *S, D]`` (Learn2Reg's ``order=0``), as evaluation, figures and
    ``jrs-jax register`` warp labels."""
    if labels.ndim == disp.ndim:  # [B, *S, K]: channel by channel
        return jax.vmap(lambda c: warp_labels(c, disp, num_classes=1, mode="nearest"), -1, -1)(
            labels
        )
    return warp_labels(labels, disp, num_classes=1, mode="nearest")


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _pair_batch(dataset: Dataset, pairs: np.ndarray, config: Mapping, mode: str) -> dict:
    kwargs = {}
    if mode == "cross_modal":
        kwargs.update(
            moving_channel=int(config.get("moving_channel", 0)),
            fixed_channel=int(config.get("fixed_channel", 1)),
        )
    if dataset.has_ground_truth(pairs):
        kwargs["fields"] = True
    return sampling.pair_batch(dataset, pairs, **kwargs)


def _summarise(rows: list[dict], names: Mapping[str, str]) -> dict[str, float]:
    out = {}
    for key, name in names.items():
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[f"val/{name}"] = float(np.nanmean(np.asarray(vals, np.float64)))
    return out


def _register_rows(method, variables, dataset, pairs, *, config, mode, batch_size, surface):
    spacing = dataset.subjects[0].spacing if dataset.subjects else None
    band_width = int(config.get("boundary_width", 2))
    dice = functools.partial(
        label_dice, multi_label=method.multi_label, labels=config.get("labels")
    )
    rows = []
    for sl in _chunks(len(pairs), batch_size):
        b = _pair_batch(dataset, pairs[sl], config, mode)
        pred = method.run(variables, b, "register")
        warped = np.asarray(warp_labels_nearest(jnp.asarray(b["moving_labels"]), pred["disp"]))
        disp = np.asarray(pred["disp"])
        seg = method.labels(pred) if method.has_segmentation(pred) else None
        seg_moving = None
        if seg is not None and method.has_segmentation(pred, prefix="moving_"):
            seg_moving = np.asarray(
                warp_labels_nearest(
                    jnp.asarray(method.labels(pred, prefix="moving_")), pred["disp"]
                )
            )
        extra = {k: np.asarray(v) for k, v in method.pair_metrics(pred, b).items()}
        for j, (f, m) in enumerate(pairs[sl]):
            target = b["fixed_labels"][j]
            row = {
                "fixed": dataset.subjects[f].name,
                "moving": dataset.subjects[m].name,
                "dice_identity": dice(b["moving_labels"][j], target),
                "dice": dice(warped[j], target),
                "folding_percent": metrics.folding_fraction(disp[j]),
                "sdlogj": float(metrics.sdlogj(disp[j])),
            }
            if "gt_disp" in b:
                row["epe"] = metrics.endpoint_error(disp[j], b["gt_disp"][j])
                if "fixed_mask" in b:  # NaN without a mask: every row has the same keys
                    row["epe_boundary"] = row["epe_interior"] = float("nan")
                    if b["fixed_has_mask"][j]:
                        band = metrics.boundary_band(b["fixed_mask"][j], width=band_width)
                        for key, inside in (("epe_boundary", band), ("epe_interior", ~band)):
                            row[key] = metrics.endpoint_error(disp[j], b["gt_disp"][j], mask=inside)
            if seg is not None:
                row["seg_dice"] = dice(seg[j], target)
            if seg_moving is not None:  # Seg(moving)∘φ against Seg(fixed)
                row["seg_consistency"] = dice(seg_moving[j], seg[j])
            if surface and warped.ndim == disp.ndim - 1:
                row["hd95"] = _mean_hd95(warped[j], target, spacing)
            row.update({k: float(v[j]) for k, v in extra.items()})
            rows.append(row)
    return rows


def _segment_rows(method, variables, dataset, *, config, batch_size, surface):
    spacing = dataset.subjects[0].spacing if dataset.subjects else None
    dice = functools.partial(
        label_dice, multi_label=method.multi_label, labels=config.get("labels")
    )
    subs = np.asarray([i for i in dataset.held_out() if dataset.subjects[i].has_labels], np.int64)
    rows = []
    for sl in _chunks(len(subs), batch_size):
        b = sampling.subject_batch(dataset, subs[sl])
        pred = method.labels(method.run(variables, b, "segment"))
        for j, i in enumerate(subs[sl]):
            row = {
                "subject": dataset.subjects[i].name,
                "dice": dice(pred[j], b["labels"][j]),
            }
            if surface and pred.ndim == b["image"].ndim - 1:
                row["hd95"] = _mean_hd95(pred[j], b["labels"][j], spacing)
            rows.append(row)
    return rows


def evaluate(
    method: Method,
    variables: dict,
    dataset: Dataset,
    *,
    max_pairs: int | None = None,
    batch_size: int = 4,
    surface: bool = False,
    mode: str | None = None,
) -> Evaluation:
    """Evaluate ``method`` with ``variables`` (= ``jrs_jax.train.variables(state)``).

    Args:
      method: a :class:`~jrs_jax.methods.Method`; its config's ``eval`` section may set
        ``mode``, ``atlas``, ``labels``, ``moving_channel``, ``fixed_channel``,
        ``boundary_width`` (voxels, default 2: the band of ``val/epe_boundary``).
      variables: its networks' parameters.
      dataset: with held-out subjects (their labels score the results).
      max_pairs: evaluate at most this many registration pairs.
      batch_size: pairs / subjects per forward pass.
      surface: also compute HD95 (slower; distance transforms; integer labels only).
      mode: evaluation mode (default :attr:`Method.evaluation_mode`).

    Returns:
      :class:`Evaluation`. Summary keys (when applicable): ``val/reg_dice``,
      ``val/reg_dice_identity``, ``val/folding_percent``, ``val/sdlogj``, ``val/epe``,
      ``val/epe_boundary`` / ``val/epe_interior`` (with region masks too: the endpoint error
      within ``boundary_width`` voxels of a region boundary of the fixed mask, Chebyshev
      distance, and outside that band; the mean over the pairs whose fixed image has a mask),
      ``val/seg_dice``, ``val/seg_consistency``, ``val/mean_dice`` (mean of the two Dice
      scores, for joint methods),
      ``val/<name>`` of the method's pair metrics, and ``val/reg_hd95`` / ``val/seg_hd95``
      with ``surface``.
    """
    config = dict(method.config.get("eval") or {})
    mode = mode or method.evaluation_mode
    summary: dict[str, float] = {}
    pair_rows: list[dict] = []
    subject_rows: list[dict] = []
    if "register" in method.tasks:
        pairs = evaluation_pairs(dataset, mode=mode, atlas=config.get("atlas"), max_pairs=max_pairs)
        pair_rows = _register_rows(
            method,
            variables,
            dataset,
            pairs,
            config=config,
            mode=mode,
            batch_size=batch_size,
            surface=surface,
        )
        names = {
            "dice": "reg_dice",
            "dice_identity": "reg_dice_identity",
            "folding_percent": "folding_percent",
            "sdlogj": "sdlogj",
            "epe": "epe",
            "epe_boundary": "epe_boundary",
            "epe_interior": "epe_interior",
            "hd95": "reg_hd95",
            "seg_dice": "seg_dice",
            "seg_consistency": "seg_consistency",
        }
        extra = [k for k in (pair_rows[0] if pair_rows else {}) if k not in names]
        names.update({k: k for k in extra if k not in ("fixed", "moving")})
        summary.update(_summarise(pair_rows, names))
    if "segment" in method.tasks:
        subject_rows = _segment_rows(
            method, variables, dataset, config=config, batch_size=batch_size, surface=surface
        )
        summary.update(_summarise(subject_rows, {"dice": "seg_dice", "hd95": "seg_hd95"}))
    if "val/reg_dice" in summary and "val/seg_dice" in summary:
        summary["val/mean_dice"] = 0.5 * (summary["val/reg_dice"] + summary["val/seg_dice"])
    return Evaluation(summary=summary, pairs=pair_rows, subjects=subject_rows)


def _stats(rows: list[dict], keys: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for k in keys:
        vals = np.asarray([r[k] for r in rows if k in r], np.float64)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            out.append((k, f"{vals.mean():.4f} ± {vals.std():.4f} (n={len(vals)})"))
    return out


def _atomic_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars and arrays allowed)."""

    def default(x):
        if isinstance(x, (np.floating, np.integer, np.bool_)):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
        raise TypeError(type(x).__name__)

    _atomic_text(path, json.dumps(obj, indent=1, default=default))


def write_report(ev: Evaluation, out: str, *, title: str) -> str:
    """``evaluation.md`` (mean ± std of every per-case metric), ``pairs.csv`` /
    ``subjects.csv`` and ``summary.json`` in ``out``; returns the markdown text.

    Raises:
      ValueError: the evaluation scored nothing (no labelled held-out pairs or subjects).
    """
    table = []
    if ev.pairs:
        keys = [k for k in ev.pairs[0] if k not in ("fixed", "moving")]
        table += [(f"registration {k}", v) for k, v in _stats(ev.pairs, keys)]
    if ev.subjects:
        keys = [k for k in ev.subjects[0] if k != "subject"]
        table += [(f"segmentation {k}", v) for k, v in _stats(ev.subjects, keys)]
    if not table:
        raise ValueError("no labelled held-out pairs or subjects to evaluate")
    os.makedirs(out, exist_ok=True)
    lines = [f"# {title}", "", "| metric | mean ± std |", "|---|---|"]
    text = "\n".join(lines + [f"| {k} | {v} |" for k, v in table]) + "\n"
    for name, rows in (("pairs", ev.pairs), ("subjects", ev.subjects)):
        if rows:
            tmp = os.path.join(out, f"{name}.csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, os.path.join(out, f"{name}.csv"))
    _atomic_text(os.path.join(out, "evaluation.md"), text)
    write_json(os.path.join(out, "summary.json"), ev.summary)
    return text
