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
* ``"sequence"``: every held-out sequence from its frame 0 (the first ``eval.frames``
  frames, default all). A method with a ``"sequence"`` task predicts the whole sequence at
  once and is scored per sequence against every frame's labels, the evaluation-only
  :attr:`~jrs_jax.data.Subject.hidden_labels` included: segmentation Dice on the frames
  with training labels (``seg_dice_labelled``) and on the others (``seg_dice_unlabelled``),
  registration Dice of every frame's labels warped onto frame 0 (``reg_dice``, and
  ``reg_dice_identity``), folding %, the temporal smoothness of the motion
  (``temporal_diff2``: mean squared second difference of the fields over time, with the
  ground truth's ``temporal_diff2_truth``) and the endpoint error when the data has ground
  truth; other methods register the pairs (frame 0, frame k).

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

Every label map scored also counts its spurious fragments, the connected components beyond
the first of each label (:func:`spurious_components`): ``seg_spurious`` (the
segmentation), ``reg_spurious`` (the warped moving labels), in total and per label
(``seg_spurious/<label>``). With ``eval.refine_steps`` every pair (or subject, for a method
whose refinement serves ``segment``) is first refined on its own
(:mod:`jrs_jax.refinement`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import time
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
    "pair_batch_for",
    "pair_channels",
    "per_label_dice",
    "propagate_labels",
    "sequence_truth",
    "spurious_components",
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
    elif mode == "sequence":  # frame 0 of each held-out sequence against every later frame
        _, w = sampling.leading_windows(dataset, dataset.held_out())
        pairs = np.asarray([(r[0], m) for r in w for m in r[1:]], np.int64).reshape(-1, 2)
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


def per_label_dice(
    pred,
    target,
    *,
    multi_label: bool = False,
    labels: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Dice of each foreground label (integer maps ``[*S]``) or channel (multi-label
    ``[*S, K]``) of one case, keyed by its name (``names``, e.g. ``Dataset.label_names``; the
    index otherwise), as :func:`label_dice` scores them: a structure in only one map scores 0,
    one in neither ``NaN``. ``labels`` restricts the labels / channels scored."""
    if multi_label:
        k = np.asarray(pred).shape[-1]
        chans = range(k) if labels is None else labels
        scores = metrics.dice_per_channel(pred, target, channels=chans, missing="zero")
    else:
        if labels is None:
            known = [int(i) for i in (names or {}) if int(i) > 0]
            present = np.union1d(np.unique(pred), np.unique(target))
            labels = sorted(set(known) | {int(v) for v in present if v > 0})
        scores = metrics.dice_per_label(pred, target, labels=labels, missing="zero")
    names = names or {}
    return {str(names.get(int(i), i)): float(v) for i, v in scores.items()}


def spurious_components(
    labels_map,
    *,
    multi_label: bool = False,
    labels: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Connected components beyond the first of each foreground label (or channel) of one
    case (:func:`jrs_jax.metrics.spurious_components`, face connectivity): ``{"": total,
    name: count}`` over ``labels`` (default: the dataset's named labels, else those present);
    fragments a topology-preserving segmentation (an atlas warped by a diffeomorphism)
    cannot have."""
    if labels is None and not multi_label:
        known = [int(i) for i in (names or {}) if int(i) > 0]
        present = [int(v) for v in np.unique(labels_map) if v > 0]
        labels = sorted(set(known) | set(present))
    counts = metrics.spurious_components(labels_map, labels=labels, multi_label=multi_label)
    names = names or {}
    out = {str(names.get(int(k), k)): float(v) for k, v in counts.items()}
    return {"": float(sum(counts.values())), **out}


def _components(prefix: str, labels_map, **kwargs) -> dict[str, float]:
    """:func:`spurious_components` as row entries ``prefix`` (the total) and
    ``prefix/<label>``."""
    return {
        prefix if k == "" else f"{prefix}/{k}": v
        for k, v in spurious_components(labels_map, **kwargs).items()
    }


def _mean_hd95(pred: np.ndarray, target: np.ndarray, spacing, labels=None) -> float:
    """HD95 averaged over the labels present in both maps (only ``labels`` when given, as
    ``eval.labels`` restricts the Dice; NaN if none)."""
    scores = metrics.hd95(pred, target, spacing=spacing)
    if labels is not None:
        scores = {k: v for k, v in scores.items() if int(k) in {int(i) for i in labels}}
    values = [v for v in scores.values() if np.isfinite(v)]
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


def propagate_labels(labels0, disp_sequence) -> np.ndarray:
    """Frame 0's labels carried onto every frame of a sequence: ``labels0`` integer ``[*S]``
    (or binary ``[*S, K]``) and the fields ``disp_sequence`` ``[T, *S, D]`` (frame ``k + 1``
    pulled onto frame 0, a ``"sequence"`` prediction) -> ``[T + 1, *S(, K)]``: ``labels0``,
    then ``labels0`` warped by nearest-neighbour lookup through each inverted field."""
    from .spatial import invert_displacement

    disp = jnp.asarray(disp_sequence)
    lab = jnp.broadcast_to(jnp.asarray(labels0), (disp.shape[0], *np.shape(labels0)))
    moved = np.asarray(warp_labels_nearest(lab, invert_displacement(disp)))
    return np.concatenate([np.asarray(labels0)[None], moved.astype(np.asarray(labels0).dtype)])


def sequence_truth(batch: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's labels of a :func:`~jrs_jax.data.sequence_batch` built with
    ``hidden_labels=True``: ``(labels [B, T, *S(, K)], has_labels bool [B, T])``, the
    evaluation-only hidden labels where a frame has them, else its training labels."""
    truth, has = batch["sequence_labels"], batch["sequence_has_label"].copy()
    if "sequence_hidden_labels" in batch:
        hidden = batch["sequence_has_hidden"]
        expand = hidden.reshape(*hidden.shape, *([1] * (truth.ndim - 2)))
        truth = np.where(expand, batch["sequence_hidden_labels"], truth)
        has |= hidden
    return truth, has


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def pair_channels(method: Method, mode: str) -> dict[str, int | None]:
    """The :func:`~jrs_jax.data.pair_batch` channel keywords of ``method``'s evaluation
    pairs: the method's own (:meth:`~jrs_jax.methods.Method.pair_channels`, cross-modal
    training), or in mode ``"cross_modal"`` the config's ``eval.moving_channel`` /
    ``eval.fixed_channel`` (default: the method's, else 0 and 1)."""
    own = method.pair_channels()
    if mode != "cross_modal":
        return own
    config = method.config.get("eval") or {}
    mc = config.get("moving_channel", 0 if own["moving_channel"] is None else own["moving_channel"])
    fc = config.get("fixed_channel", 1 if own["fixed_channel"] is None else own["fixed_channel"])
    return {"moving_channel": int(mc), "fixed_channel": int(fc)}


def pair_batch_for(method: Method, dataset: Dataset, pairs: np.ndarray, mode: str) -> dict:
    """:func:`~jrs_jax.data.pair_batch` of evaluation ``pairs`` as ``method`` sees them
    (:func:`pair_channels`), with the ground truth when the dataset has it."""
    kwargs = pair_channels(method, mode)
    if dataset.has_ground_truth(pairs):
        kwargs["fields"] = True
    return sampling.pair_batch(dataset, pairs, **kwargs)


def _run(method: Method, variables: dict, batch: Mapping, task: str, config: Mapping) -> dict:
    """``method.run`` on ``batch``; with ``eval.refine_steps > 0`` and ``task`` the method's
    refinement task, each example is first refined on its own
    (:func:`jrs_jax.refinement.refine_variables`, learning rate ``eval.refine_lr``, default
    the config's ``refine.lr``) and predicted with its refined variables."""
    from .refinement import refine_options, refine_variables

    steps = int(config.get("refine_steps") or 0)
    if steps == 0 or task != method.refine_task:
        return method.run(variables, batch, task)
    steps, lr = refine_options(method.config, steps=steps, lr=config.get("refine_lr"))
    keys = method.inputs(task)
    n = len(np.asarray(batch[keys[0]]))
    preds = []
    for j in range(n):
        one = {k: np.asarray(batch[k])[j : j + 1] for k in keys}
        refined, _ = refine_variables(method, variables, one, steps=steps, lr=lr)
        preds.append(method.run(refined, one, task))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *preds)


def _summarise(rows: list[dict], names: Mapping[str, str]) -> dict[str, float]:
    out = {}
    for key, name in names.items():
        vals = [r[key] for r in rows if key in r]
        vals = np.asarray(vals, np.float64)
        if vals.size:  # all-NaN (e.g. no unlabelled frame): NaN, without numpy's warning
            out[f"val/{name}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
    return out


def _register_rows(method, variables, dataset, pairs, *, config, mode, batch_size, surface):
    spacing = dataset.subjects[0].spacing if dataset.subjects else None
    band_width = int(config.get("boundary_width", 2))
    dice = functools.partial(
        label_dice, multi_label=method.multi_label, labels=config.get("labels")
    )
    per_label = functools.partial(
        per_label_dice,
        multi_label=method.multi_label,
        labels=config.get("labels"),
        names=dataset.label_names,
    )
    parts = {
        "multi_label": method.multi_label,
        "labels": config.get("labels"),
        "names": dataset.label_names,
    }
    rows = []
    for sl in _chunks(len(pairs), batch_size):
        b = pair_batch_for(method, dataset, pairs[sl], mode)
        pred = _run(method, variables, b, "register", config)
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
                **{f"reg_dice/{k}": v for k, v in per_label(warped[j], target).items()},
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
            row.update(_components("reg_spurious", warped[j], **parts))
            if seg is not None:
                row["seg_dice"] = dice(seg[j], target)
                row.update({f"seg_dice/{k}": v for k, v in per_label(seg[j], target).items()})
                row.update(_components("seg_spurious", seg[j], **parts))
            if seg_moving is not None:  # Seg(moving)∘φ against Seg(fixed)
                row["seg_consistency"] = dice(seg_moving[j], seg[j])
            if surface and warped.ndim == disp.ndim - 1:
                row["hd95"] = _mean_hd95(warped[j], target, spacing, config.get("labels"))
            row.update({k: float(v[j]) for k, v in extra.items()})
            rows.append(row)
    return rows


def _segment_rows(method, variables, dataset, *, config, batch_size, surface):
    spacing = dataset.subjects[0].spacing if dataset.subjects else None
    dice = functools.partial(
        label_dice, multi_label=method.multi_label, labels=config.get("labels")
    )
    per_label = functools.partial(
        per_label_dice,
        multi_label=method.multi_label,
        labels=config.get("labels"),
        names=dataset.label_names,
    )
    names = dataset.label_names or {}
    subs = np.asarray([i for i in dataset.held_out() if dataset.subjects[i].has_labels], np.int64)
    timing = bool(config.get("timing", False))
    rows = []
    for n, sl in enumerate(_chunks(len(subs), batch_size)):
        b = sampling.subject_batch(dataset, subs[sl], channels=method.channel("image"))
        if timing and n == 0:  # compile first: the timed calls measure inference only
            jax.block_until_ready(_run(method, variables, b, "segment", config))
        t0 = time.perf_counter()
        out = jax.block_until_ready(_run(method, variables, b, "segment", config))
        seconds = (time.perf_counter() - t0) / len(subs[sl])
        pred = method.labels(out)
        for j, i in enumerate(subs[sl]):
            row = {
                "subject": dataset.subjects[i].name,
                "dice": dice(pred[j], b["labels"][j]),
                **{f"seg_dice/{k}": v for k, v in per_label(pred[j], b["labels"][j]).items()},
                **_components(
                    "seg_spurious",
                    pred[j],
                    multi_label=method.multi_label,
                    labels=config.get("labels"),
                    names=dataset.label_names,
                ),
            }
            if surface and pred.ndim == b["image"].ndim - 1:
                row["hd95"] = _mean_hd95(pred[j], b["labels"][j], spacing, config.get("labels"))
                row.update(
                    {
                        f"seg_hd95/{names.get(int(k), k)}": v
                        for k, v in metrics.hd95(pred[j], b["labels"][j], spacing=spacing).items()
                    }
                )
            if timing:
                row["seconds"] = seconds
            rows.append(row)
    return rows


def _second_difference(disp: np.ndarray) -> float:
    """Mean squared second temporal difference of the fields ``[T, *S, D]`` of one sequence,
    ``mean ||u_{k+1} - 2 u_k + u_{k-1}||^2`` (voxels^2; ``u_0 = 0``, frame 0 onto itself):
    how far the motion departs from a constant velocity; lower is smoother in time."""
    u = np.concatenate([np.zeros_like(disp[:1]), disp], 0).astype(np.float64)
    if len(u) < 3:
        return float("nan")
    d2 = u[2:] - 2.0 * u[1:-1] + u[:-2]
    return float(np.mean(np.sum(d2**2, -1)))


def _sequence_rows(method, variables, dataset, *, config, batch_size):
    """One row per held-out sequence (frame 0 the target), scored against every frame's
    labels, the evaluation-only ``hidden_labels`` included (see :func:`evaluate`)."""
    dice = functools.partial(
        label_dice, multi_label=method.multi_label, labels=config.get("labels")
    )
    ids, windows = sampling.leading_windows(dataset, dataset.held_out(), config.get("frames"))
    rows = []
    for sl in _chunks(len(windows), batch_size):
        b = sampling.sequence_batch(dataset, windows[sl], hidden_labels=True)
        pred = method.run(variables, {"sequence": b["sequence"]}, "sequence")
        disp = np.asarray(pred["disp_sequence"])
        seg = method.labels({"seg_probs": pred["seg_sequence_probs"]})
        truth, has_truth = sequence_truth(b)
        warped = np.asarray(
            warp_labels_nearest(
                jnp.asarray(truth[:, 1:].reshape(-1, *truth.shape[2:])),
                jnp.asarray(disp.reshape(-1, *disp.shape[2:])),
            )
        ).reshape(truth[:, 1:].shape)
        for j, w in enumerate(windows[sl]):
            lab, tru = b["sequence_has_label"][j], has_truth[j]
            seg_l = [dice(seg[j, t], truth[j, t]) for t in range(len(w)) if tru[t] and lab[t]]
            seg_u = [dice(seg[j, t], truth[j, t]) for t in range(len(w)) if tru[t] and not lab[t]]
            ks = [k for k in range(1, len(w)) if tru[k] and tru[0]]
            row = {
                "sequence": ids[sl.start + j],
                "frames": len(w),
                "seg_dice": float(np.mean(seg_l + seg_u)) if seg_l + seg_u else float("nan"),
                "seg_dice_labelled": float(np.mean(seg_l)) if seg_l else float("nan"),
                "seg_dice_unlabelled": float(np.mean(seg_u)) if seg_u else float("nan"),
                "reg_dice": float(np.mean([dice(warped[j, k - 1], truth[j, 0]) for k in ks]))
                if ks
                else float("nan"),
                "reg_dice_identity": float(np.mean([dice(truth[j, k], truth[j, 0]) for k in ks]))
                if ks
                else float("nan"),
                "folding_percent": float(np.mean([metrics.folding_fraction(u) for u in disp[j]])),
                "temporal_diff2": _second_difference(disp[j]),
            }
            pairs = np.asarray([(w[0], m) for m in w[1:]], np.int64)
            if dataset.has_ground_truth(pairs):
                gt = sampling.pair_batch(dataset, pairs, fields=True)["gt_disp"]
                row["epe"] = metrics.endpoint_error(disp[j], gt)
                row["temporal_diff2_truth"] = _second_difference(gt)
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
        ``boundary_width`` (voxels, default 2: the band of ``val/epe_boundary``),
        ``refine_steps`` / ``refine_lr`` (test-time refinement of every example before it
        is scored, :mod:`jrs_jax.refinement`; default none), ``timing`` (segmentation
        seconds per subject, ``val/seg_seconds``, after a compiling call; default off).
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
      ``val/<name>`` of the method's pair metrics, ``val/reg_dice/<label>`` and
      ``val/seg_dice/<label>`` per label (multi-label: per channel; named by
      ``Dataset.label_names``), ``val/reg_hd95`` / ``val/seg_hd95`` (and
      ``val/seg_hd95/<label>``) with ``surface``, ``val/seg_spurious`` / ``val/reg_spurious``
      (and per label), ``val/seg_seconds`` with ``eval.timing``.
    """
    config = dict(method.config.get("eval") or {})
    mode = mode or method.evaluation_mode
    summary: dict[str, float] = {}
    pair_rows: list[dict] = []
    subject_rows: list[dict] = []
    if mode == "sequence" and "sequence" in method.tasks:
        pair_rows = _sequence_rows(
            method, variables, dataset, config=config, batch_size=max(1, batch_size // 4)
        )
        keys = ["seg_dice", "seg_dice_labelled", "seg_dice_unlabelled", "reg_dice"]
        keys += ["reg_dice_identity", "folding_percent", "temporal_diff2", "epe"]
        keys += ["temporal_diff2_truth"]
        summary.update(_summarise(pair_rows, {k: k for k in keys}))
    elif "register" in method.tasks:
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
        extra = [k for k in dict.fromkeys(k for r in pair_rows for k in r) if k not in names]
        names.update({k: k for k in extra if k not in ("fixed", "moving")})
        summary.update(_summarise(pair_rows, names))
    if "segment" in method.tasks:
        subject_rows = _segment_rows(
            method, variables, dataset, config=config, batch_size=batch_size, surface=surface
        )
        names = {"dice": "seg_dice", "hd95": "seg_hd95", "seconds": "seg_seconds"}
        prefixes = ("seg_dice/", "seg_spurious", "seg_hd95/")
        names.update({k: k for r in subject_rows for k in r if k.startswith(prefixes)})
        summary.update(_summarise(subject_rows, names))
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
