"""Samplers and batch builders (numpy, host side): index pairs and the arrays of a batch.

Conventions
-----------
- Pairs are ``(fixed, moving)`` index pairs into ``Dataset.subjects``: a registration network
  warps the *moving* image onto the *fixed* one. Samplers return ``int64`` arrays ``[P, 2]``
  with column 0 = fixed, column 1 = moving.
- Randomness: numpy only. ``rng`` arguments accept a ``numpy.random.Generator``, an integer
  seed (``numpy.random.default_rng(rng)``) or a JAX key; the same seed gives the same draws.
  :func:`batch_rng` gives the generator of one training step, so batches are a pure function
  of ``(seed, step)`` and a resumed run draws exactly the batches of an uninterrupted one.
- Batch builders (:func:`pair_batch`, :func:`subject_batch`) turn indices into the dict of
  arrays a method's ``train_step`` / ``predict`` reads; the keys are documented there and in
  :mod:`jrs_jax.methods.base`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .datasets import Dataset

__all__ = [
    "PAIR_CASES",
    "all_pairs",
    "all_within_subject_pairs",
    "as_rng",
    "atlas_pairs",
    "batch_rng",
    "draw_distinct",
    "labelled_case_pairs",
    "labelled_pair_batch",
    "leading_windows",
    "pair_batch",
    "sample_pairs",
    "sequence_batch",
    "sequence_windows",
    "subject_batch",
    "unique_indices",
    "within_subject_pairs",
]


def batch_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The numpy generator of the batch at ``step`` (independent per ``(seed, step, stream)``)."""
    return np.random.default_rng([int(seed), int(step), int(stream)])


def as_rng(rng) -> np.random.Generator:
    """A numpy ``Generator`` from a ``Generator``, an integer seed or a JAX PRNG key."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    try:  # a JAX PRNG key (raw uint32 array or typed key)
        import jax

        data = (
            jax.random.key_data(rng)
            if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
            else rng
        )
        return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())
    except Exception as exc:
        raise TypeError(
            f"expected an integer seed, a numpy Generator or a JAX key; got {type(rng).__name__}"
        ) from exc


def unique_indices(indices, name: str = "indices") -> np.ndarray:
    """``int64 [n]`` from ``indices``; ``ValueError`` naming ``name`` on duplicates."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{name} contains duplicates: {idx.tolist()}")
    return idx


def all_pairs(indices: Sequence[int]) -> np.ndarray:
    """All ordered ``(fixed, moving)`` pairs ``i != j`` of ``indices``: ``int64 [n(n-1), 2]``
    (fixed-major order)."""
    idx = unique_indices(indices)
    f, m = np.meshgrid(idx, idx, indexing="ij")
    keep = f != m
    return np.stack([f[keep], m[keep]], -1).astype(np.int64)


def atlas_pairs(atlas_index: int, indices: Sequence[int]) -> np.ndarray:
    """Atlas-to-subject pairs: ``int64 [n, 2]`` rows ``(fixed=subject, moving=atlas)``.

    The atlas is the *moving* image, warped onto every subject (the *fixed* image), so a
    warped atlas label map segments each subject (atlas-based segmentation). The atlas itself
    is skipped if it appears in ``indices``. Swap the columns (``pairs[:, ::-1]``) for the
    subject-to-atlas direction.
    """
    a = int(atlas_index)
    idx = unique_indices(indices)
    idx = idx[idx != a]
    return np.stack([idx, np.full_like(idx, a)], -1).astype(np.int64)


def draw_distinct(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``[n, 2]`` ordered pairs of distinct elements of ``pool`` (``len(pool) >= 2``)."""
    i = rng.integers(0, len(pool), size=n)
    j = rng.integers(0, len(pool) - 1, size=n)
    j = j + (j >= i)  # uniform over the others
    return np.stack([pool[i], pool[j]], -1)


def sample_pairs(
    rng, indices: Sequence[int], batch_size: int, *, distinct: bool = True
) -> np.ndarray:
    """``batch_size`` random ordered ``(fixed, moving)`` pairs, uniform over the
    ``n(n-1)`` pairs of distinct ``indices`` (with replacement across rows): ``int64 [B, 2]``.

    With ``distinct=False`` a row may pair a subject with itself (uniform over the ``n^2``
    pairs): cross-modal registration of one scan's two modalities
    (``pair_batch(..., moving_channel=0, fixed_channel=1)``).

    Raises:
      ValueError: fewer than two indices (one with ``distinct=False``).
    """
    idx = unique_indices(indices)
    rng = as_rng(rng)
    if not distinct:
        if len(idx) < 1:
            raise ValueError("need at least 1 index to draw pairs; got 0")
        return idx[rng.integers(0, len(idx), size=(int(batch_size), 2))].astype(np.int64)
    if len(idx) < 2:
        raise ValueError(f"need at least 2 indices to draw pairs; got {len(idx)}")
    return draw_distinct(rng, idx, int(batch_size)).astype(np.int64)


def _scans_by_subject(dataset: Dataset, indices: Sequence[int]) -> list[np.ndarray]:
    """Per subject (first-appearance order among ``indices``): its scans in ``indices``,
    sorted by time."""
    idx = unique_indices(indices)
    groups: dict[str, list[int]] = {}
    for i in idx.tolist():
        groups.setdefault(dataset.subjects[i].subject, []).append(i)
    return [
        np.asarray(sorted(g, key=lambda i: (dataset.subjects[i].time, i)), np.int64)
        for g in groups.values()
    ]


def within_subject_pairs(
    rng, dataset: Dataset, indices: Sequence[int], batch_size: int
) -> np.ndarray:
    """Random ordered ``(fixed, moving)`` pairs of two distinct scans of one subject:
    ``int64 [B, 2]``.

    Each row draws a subject uniformly among the subjects with at least two scans in
    ``indices`` (``Subject.subject``), then an ordered pair of two of its scans uniformly
    (longitudinal registration).

    Raises:
      ValueError: no subject has two scans among ``indices`` (naming how many subjects and
        scans there are).
    """
    groups = _scans_by_subject(dataset, indices)
    pools = [g for g in groups if len(g) >= 2]
    if not pools:
        raise ValueError(
            f"no subject has 2 or more scans among the {sum(len(g) for g in groups)} indices "
            f"({len(groups)} subjects, 1 scan each); within-subject pairs need longitudinal "
            "data (Subject.subject shared by several scans)"
        )
    rng = as_rng(rng)
    which = rng.integers(0, len(pools), size=int(batch_size))
    out = np.zeros((int(batch_size), 2), np.int64)
    for b, w in enumerate(which.tolist()):
        out[b] = draw_distinct(rng, pools[w], 1)[0]
    return out


def all_within_subject_pairs(dataset: Dataset, indices: Sequence[int]) -> np.ndarray:
    """Every ordered pair of two distinct scans of one subject: ``int64 [P, 2]``.

    Deterministic order (for evaluation): subjects in order of first appearance among
    ``indices``; within a subject, fixed-major over its scans sorted by time. ``[0, 2]``
    when no subject has two scans.
    """
    parts = [all_pairs(g) for g in _scans_by_subject(dataset, indices) if len(g) >= 2]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 2), np.int64)


def sequence_windows(
    rng, dataset: Dataset, indices: Sequence[int], length: int, batch_size: int
) -> np.ndarray:
    """Random windows of ``length`` consecutive-in-time scans of one subject:
    ``int64 [B, T]`` (row ``b``: scan indices in increasing time).

    Each row draws a subject uniformly among those with at least ``T`` scans in ``indices``,
    then a start uniformly among its ``n - T + 1`` windows ("consecutive" is among the
    subject's scans in ``indices``, ordered by ``Subject.time``).

    Raises:
      ValueError: ``length < 1`` or no subject has ``length`` scans among ``indices``.
    """
    t = int(length)
    if t < 1:
        raise ValueError(f"length must be >= 1; got {length}")
    groups = _scans_by_subject(dataset, indices)
    pools = [g for g in groups if len(g) >= t]
    if not pools:
        most = max((len(g) for g in groups), default=0)
        raise ValueError(
            f"no subject has {t} scans among the indices (at most {most} scans per subject, "
            f"{len(groups)} subjects)"
        )
    rng = as_rng(rng)
    which = rng.integers(0, len(pools), size=int(batch_size))
    out = np.zeros((int(batch_size), t), np.int64)
    for b, w in enumerate(which.tolist()):
        start = int(rng.integers(0, len(pools[w]) - t + 1))
        out[b] = pools[w][start : start + t]
    return out


def leading_windows(
    dataset: Dataset, indices: Sequence[int], length: int | None = None
) -> tuple[list[str], np.ndarray]:
    """The first ``length`` scans (all of them if ``None``) of every subject among
    ``indices`` that has at least that many (and at least 2): ``(subject ids, int64 [N,
    T])``, each row in time order; ``T`` is the shortest such subject's count when
    ``length`` is ``None``. Deterministic (evaluation; training on whole cycles): e.g. every
    cardiac sequence from its end-diastolic frame 0."""
    ids, rows = [], []
    for sid in dict.fromkeys(dataset.subjects[int(i)].subject for i in indices):
        scans = dataset.scans(sid, indices)
        t = len(scans) if length is None else int(length)
        if len(scans) >= max(t, 2):
            ids.append(sid)
            rows.append(scans[:t])
    if not rows:
        return [], np.zeros((0, 0), np.int64)
    t = min(len(r) for r in rows)
    return ids, np.asarray([r[:t] for r in rows], np.int64)


def sequence_batch(
    dataset: Dataset, windows: np.ndarray, *, hidden_labels: bool = False
) -> dict[str, np.ndarray]:
    """Stack windows of scans ``[B, T]`` (:func:`sequence_windows`) into arrays.

    Returns ``sequence`` float32 ``[B, T, *S, C]``, ``sequence_labels`` int32
    ``[B, T, *S]`` (multi-label datasets: uint8 ``[B, T, *S, K]``; zeros where unlabelled),
    ``sequence_has_label`` bool ``[B, T]`` and ``sequence_time`` int64 ``[B, T]``
    (``Subject.time``); with masks also ``sequence_masks`` int32 ``[B, T, *S]`` and
    ``sequence_has_mask`` bool ``[B, T]``. ``hidden_labels=True`` (evaluation only, never
    for a training batch) adds the evaluation-only labels (:attr:`Subject.hidden_labels`)
    when the dataset has them: ``sequence_hidden_labels`` ``[B, T, *S]`` (format of
    ``sequence_labels``; zeros where absent) and ``sequence_has_hidden`` bool ``[B, T]``.
    """
    windows = np.asarray(windows, np.int64)
    if windows.ndim != 2:
        raise ValueError(f"windows must be [B, T]; got shape {windows.shape}")
    b, t = windows.shape
    s = dataset.stack(windows.reshape(-1))
    out = {
        "sequence": s["images"].reshape(b, t, *s["images"].shape[1:]),
        "sequence_labels": s["labels"].reshape(b, t, *s["labels"].shape[1:]),
        "sequence_has_label": s["has_label"].reshape(b, t),
        "sequence_time": np.asarray(
            [dataset.subjects[i].time for i in windows.reshape(-1)], np.int64
        ).reshape(b, t),
    }
    if "masks" in s:
        out["sequence_masks"] = s["masks"].reshape(b, t, *s["masks"].shape[1:])
        out["sequence_has_mask"] = s["has_mask"].reshape(b, t)
    if hidden_labels and dataset.has_hidden_labels:
        ref = next(x.hidden_labels for x in dataset.subjects if x.hidden_labels is not None)
        hidden = np.zeros((b * t, *ref.shape), ref.dtype)
        has = np.zeros((b * t,), bool)
        for k, i in enumerate(windows.reshape(-1).tolist()):
            if dataset.subjects[i].hidden_labels is not None:
                hidden[k], has[k] = dataset.subjects[i].hidden_labels, True
        out["sequence_hidden_labels"] = hidden.reshape(b, t, *hidden.shape[1:])
        out["sequence_has_hidden"] = has.reshape(b, t)
    return out


@functools.cache
def _compose_jit():
    import jax

    from ..spatial.fields import compose

    return jax.jit(compose)


def _gt_displacements(dataset: Dataset, pairs: np.ndarray) -> np.ndarray:
    """Per row: the stored pair field (:meth:`Dataset.pair_field`) if there is one, else
    ``compose(fixed.field, moving.field_inv)``."""
    rows = [(int(f), int(m)) for f, m in pairs]
    stored = [dataset.has_pair_field(f, m) for f, m in rows]
    composed = [b for b, (f, m) in enumerate(rows) if not stored[b]]
    for b in composed:
        f, m = rows[b]
        lacking = [i for i in (f, m) if not dataset.subjects[i].has_field]
        if lacking:
            s = dataset.subjects[lacking[0]]
            bad = sum(
                not (dataset.subjects[f2].has_field and dataset.subjects[m2].has_field)
                for f2, m2 in (rows[c] for c in composed)
            )
            raise ValueError(
                f"fields=True needs the ground truth of every pair of the batch; pair "
                f"(fixed={f}, moving={m}) ({dataset.subjects[f].name!r} <- "
                f"{dataset.subjects[m].name!r}) has no pair field and subject {lacking[0]} "
                f"({s.name!r}) has none of the subject fields to compose ({bad} such pairs)"
            )
    out = np.zeros((len(rows), *dataset.shape, dataset.ndim), np.float32)
    if composed:
        u = np.stack([dataset.subjects[rows[b][0]].field for b in composed])
        v = np.stack([dataset.subjects[rows[b][1]].field_inv for b in composed])
        out[composed] = np.asarray(_compose_jit()(u, v), np.float32)
    for b, (f, m) in enumerate(rows):
        if stored[b]:
            out[b] = dataset.pair_field(f, m)
    return out


def pair_batch(
    dataset: Dataset,
    pairs: np.ndarray,
    *,
    moving_channel: int | None = None,
    fixed_channel: int | None = None,
    fields: bool = False,
) -> dict[str, np.ndarray]:
    """Stack ``(fixed, moving)`` index pairs ``[B, 2]`` into arrays.

    Returns ``fixed``/``moving`` float32 ``[B, *S, C]`` (``[B, *S, 1]`` with
    ``fixed_channel`` / ``moving_channel``: that channel only, for cross-modal
    registration), ``fixed_labels``/``moving_labels`` int32 ``[B, *S]`` (multi-label
    datasets: uint8 ``[B, *S, K]``; zeros where unlabelled) and
    ``fixed_has_label``/``moving_has_label`` bool ``[B]``. If the dataset has masks, also
    ``fixed_mask``/``moving_mask`` int32 ``[B, *S]`` and ``fixed_has_mask``/
    ``moving_has_mask`` bool ``[B]``. With ``fields=True``, ``gt_disp`` float32
    ``[B, *S, D]``: the ground truth with ``warp(moving, gt_disp) ~ fixed``, the pair's
    stored field (``Dataset.pair_fields``) when it has one, else ``compose(fixed.field,
    moving.field_inv)`` (``ValueError`` naming the pair if it has neither;
    :meth:`Dataset.has_ground_truth` tells beforehand).
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    f = dataset.stack(pairs[:, 0], channels=fixed_channel)
    m = dataset.stack(pairs[:, 1], channels=moving_channel)
    out = {
        "fixed": f["images"],
        "moving": m["images"],
        "fixed_labels": f["labels"],
        "moving_labels": m["labels"],
        "fixed_has_label": f["has_label"],
        "moving_has_label": m["has_label"],
    }
    if "masks" in f:
        out.update(
            fixed_mask=f["masks"],
            moving_mask=m["masks"],
            fixed_has_mask=f["has_mask"],
            moving_has_mask=m["has_mask"],
        )
    if fields:
        out["gt_disp"] = _gt_displacements(dataset, pairs)
    return out


def subject_batch(dataset: Dataset, indices: np.ndarray, *, channels=None) -> dict[str, np.ndarray]:
    """``image`` ``[B, *S, C]`` (``channels``: a subset), ``labels`` ``[B, *S]`` (multi-label:
    ``[B, *S, K]``) and ``has_label`` ``[B]`` of subjects; with masks also ``mask`` int32
    ``[B, *S]`` and ``has_mask`` bool ``[B]``."""
    s = dataset.stack(indices, channels=channels)
    out = {"image": s["images"], "labels": s["labels"], "has_label": s["has_label"]}
    if "masks" in s:
        out.update(mask=s["masks"], has_mask=s["has_mask"])
    return out


#: Names of the pair cases returned by :func:`labelled_case_pairs` (case id = index).
PAIR_CASES = ("both_labelled", "fixed_labelled", "moving_labelled", "none_labelled")


def labelled_case_pairs(
    rng,
    labelled: Sequence[int],
    unlabelled: Sequence[int],
    batch_size: int,
    *,
    mix: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(fixed, moving)`` pairs from the four labelled / unlabelled cases (DeepAtlas's
    pair cases; DeepRS draws its labelled-moving pairs with it too).

    Case ids (see :data:`PAIR_CASES`): 0 both labelled, 1 fixed labelled only, 2 moving
    labelled only, 3 neither labelled. Each row first draws its case with probabilities
    ``mix``, then its fixed / moving indices uniformly from the matching pools (distinct
    indices when both come from the same pool).

    Empty cases: a case whose pools cannot give a pair (case 0 needs >= 2 labelled, case 3
    >= 2 unlabelled, cases 1 and 2 need >= 1 of each) is dropped and ``mix`` is
    renormalised over the remaining cases (e.g. no unlabelled subjects -> every pair is case
    0). Cases with ``mix`` 0 are never drawn.

    Returns:
      ``(pairs, cases)``: ``int64 [B, 2]`` (column 0 fixed, column 1 moving) and ``int64
      [B]`` case ids.

    Raises:
      ValueError: bad ``mix`` (not 4 non-negative values), overlapping pools, or no case
        possible with positive weight.
    """
    lab, unl = (
        unique_indices(labelled, "labelled"),
        unique_indices(unlabelled, "unlabelled"),
    )
    if np.intersect1d(lab, unl).size:
        raise ValueError(f"labelled and unlabelled overlap: {np.intersect1d(lab, unl).tolist()}")
    w = np.asarray(mix, np.float64).reshape(-1)
    if w.shape != (4,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"mix must be 4 non-negative weights; got {tuple(mix)}")
    cross = len(lab) >= 1 and len(unl) >= 1
    possible = np.array([len(lab) >= 2, cross, cross, len(unl) >= 2])
    w = np.where(possible, w, 0.0)
    if w.sum() <= 0:
        raise ValueError(
            f"no DeepAtlas case can be drawn with mix={tuple(mix)} from {len(lab)} labelled "
            f"and {len(unl)} unlabelled subjects"
        )
    g = as_rng(rng)
    b = int(batch_size)
    cases = g.choice(4, size=b, p=w / w.sum()).astype(np.int64)
    pairs = np.zeros((b, 2), np.int64)
    for c in range(4):
        sel = np.flatnonzero(cases == c)
        k = len(sel)
        if k == 0:
            continue
        if c == 0:
            pairs[sel] = draw_distinct(g, lab, k)
        elif c == 3:
            pairs[sel] = draw_distinct(g, unl, k)
        else:
            fixed_pool, moving_pool = (lab, unl) if c == 1 else (unl, lab)
            pairs[sel, 0] = fixed_pool[g.integers(0, len(fixed_pool), size=k)]
            pairs[sel, 1] = moving_pool[g.integers(0, len(moving_pool), size=k)]
    return pairs, cases


def labelled_pair_batch(
    dataset: Dataset, *, seed: int, step: int, batch_size: int, method: str
) -> dict[str, np.ndarray]:
    """:func:`pair_batch` of ``batch_size`` random ordered pairs of distinct *labelled*
    training subjects, drawn with :func:`batch_rng` ``(seed, step)`` (methods whose loss, or
    whose input, needs both label maps of a pair).

    Raises:
      ValueError: fewer than 2 labelled training subjects (naming ``method``).
    """
    pool = dataset.labelled()
    if len(pool) < 2:
        raise ValueError(
            f"{method} needs at least 2 labelled training subjects; the dataset has {len(pool)}"
        )
    return pair_batch(dataset, sample_pairs(batch_rng(seed, step), pool, int(batch_size)))
