"""Held-out evaluation of a method: registration Dice / folding and segmentation Dice.

Registration is evaluated on the dataset's validation pairs (Learn2Reg
``registration_val``; all ordered pairs of held-out subjects when it has none): the moving
label map is warped with nearest-neighbour lookup (Learn2Reg's ``order=0``) and compared to
the fixed labels with :func:`jrs_jax.metrics.mean_dice` over the foreground labels; a label
in only one of the two maps scores 0 (as Learn2Reg scores a structure warped out of view).
The identity row is the Dice before registration. Field regularity: % of voxels with
``det J <= 0`` (central differences) and Learn2Reg's ``sdlogj``. Segmentation is evaluated
on the labelled held-out subjects (argmax of the logits; a structure never predicted
scores 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import metrics
from ..data.datasets import Dataset
from ..data.sampling import all_pairs, pair_batch, subject_batch
from ..spatial import warp_labels
from .base import Method

__all__ = ["Evaluation", "evaluate", "evaluation_pairs"]


@dataclasses.dataclass
class Evaluation:
    """``summary``: ``{"val/<metric>": float}``; ``pairs`` / ``subjects``: one dict per case."""

    summary: dict[str, float]
    pairs: list[dict]
    subjects: list[dict]


def evaluation_pairs(dataset: Dataset, *, max_pairs: int | None = None) -> np.ndarray:
    """``(fixed, moving)`` pairs ``[P, 2]`` with labels on both sides (see module docstring)."""
    if dataset.val_pairs:
        pairs = np.asarray(dataset.val_pairs, np.int64).reshape(-1, 2)
    else:
        held = dataset.held_out()
        pairs = all_pairs(held) if len(held) >= 2 else np.zeros((0, 2), np.int64)
    lab = {i for i, s in enumerate(dataset.subjects) if s.has_labels}
    pairs = np.asarray([p for p in pairs if p[0] in lab and p[1] in lab], np.int64).reshape(-1, 2)
    return pairs if max_pairs is None else pairs[: int(max_pairs)]


def _mean_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    """HD95 averaged over the labels present in both maps (NaN if none)."""
    values = [v for v in metrics.hd95(pred, target, spacing=spacing).values() if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@jax.jit
def _warp_nearest(labels: jax.Array, disp: jax.Array) -> jax.Array:
    return warp_labels(labels, disp, num_classes=1, mode="nearest")


def _chunks(n: int, size: int) -> Sequence[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def evaluate(
    method: Method,
    variables: dict,
    dataset: Dataset,
    *,
    max_pairs: int | None = None,
    batch_size: int = 4,
    surface: bool = False,
) -> Evaluation:
    """Evaluate ``method`` with ``variables`` (= ``jrs_jax.train.variables(state)``).

    Args:
      method: a :class:`~jrs_jax.methods.base.Method`.
      variables: its networks' parameters.
      dataset: with held-out subjects (their labels score the results).
      max_pairs: evaluate at most this many registration pairs.
      batch_size: pairs / subjects per forward pass.
      surface: also compute HD95 (slower; distance transforms).

    Returns:
      :class:`Evaluation`. Summary keys (when applicable): ``val/reg_dice``,
      ``val/reg_dice_identity``, ``val/folding_percent``, ``val/sdlogj``, ``val/seg_dice``,
      ``val/mean_dice`` (mean of the two Dice scores, for joint methods)
      (and ``val/reg_hd95``, ``val/seg_hd95`` with ``surface``).
    """
    spacing = dataset.subjects[0].spacing if dataset.subjects else None
    summary: dict[str, float] = {}
    pair_rows: list[dict] = []
    subject_rows: list[dict] = []
    if method.can_register:
        pairs = evaluation_pairs(dataset, max_pairs=max_pairs)
        for sl in _chunks(len(pairs), batch_size):
            b = pair_batch(dataset, pairs[sl])
            disp = method.predict_disp(variables, b["moving"], b["fixed"])
            warped = np.asarray(_warp_nearest(jnp.asarray(b["moving_labels"]), disp))
            disp = np.asarray(disp)
            for j, (f, m) in enumerate(pairs[sl]):
                row = {
                    "fixed": dataset.subjects[f].name,
                    "moving": dataset.subjects[m].name,
                    "dice_identity": metrics.mean_dice(
                        b["moving_labels"][j], b["fixed_labels"][j], missing="zero"
                    ),
                    "dice": metrics.mean_dice(warped[j], b["fixed_labels"][j], missing="zero"),
                    "folding_percent": metrics.folding_fraction(disp[j]),
                    "sdlogj": float(metrics.sdlogj(disp[j])),
                }
                if surface:
                    row["hd95"] = _mean_hd95(warped[j], b["fixed_labels"][j], spacing)
                pair_rows.append(row)
        if pair_rows:
            for key, name in (
                ("dice", "reg_dice"),
                ("dice_identity", "reg_dice_identity"),
                ("folding_percent", "folding_percent"),
                ("sdlogj", "sdlogj"),
                ("hd95", "reg_hd95"),
            ):
                if key in pair_rows[0]:
                    summary[f"val/{name}"] = float(np.nanmean([r[key] for r in pair_rows]))
    if method.can_segment:
        subs = np.asarray(
            [i for i in dataset.held_out() if dataset.subjects[i].has_labels], np.int64
        )
        for sl in _chunks(len(subs), batch_size):
            b = subject_batch(dataset, subs[sl])
            pred = np.asarray(jnp.argmax(method.predict_logits(variables, b["image"]), -1))
            for j, i in enumerate(subs[sl]):
                row = {
                    "subject": dataset.subjects[i].name,
                    "dice": metrics.mean_dice(pred[j], b["labels"][j], missing="zero"),
                }
                if surface:
                    row["hd95"] = _mean_hd95(pred[j], b["labels"][j], spacing)
                subject_rows.append(row)
        if subject_rows:
            summary["val/seg_dice"] = float(np.nanmean([r["dice"] for r in subject_rows]))
            if surface:
                summary["val/seg_hd95"] = float(np.nanmean([r["hd95"] for r in subject_rows]))
    if "val/reg_dice" in summary and "val/seg_dice" in summary:
        summary["val/mean_dice"] = 0.5 * (summary["val/reg_dice"] + summary["val/seg_dice"])
    return Evaluation(summary=summary, pairs=pair_rows, subjects=subject_rows)
