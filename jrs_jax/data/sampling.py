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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .datasets import Dataset

__all__ = [
    "all_pairs",
    "as_rng",
    "atlas_pairs",
    "batch_rng",
    "draw_distinct",
    "pair_batch",
    "sample_pairs",
    "subject_batch",
    "unique_indices",
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


def sample_pairs(rng, indices: Sequence[int], batch_size: int) -> np.ndarray:
    """``batch_size`` random ordered ``(fixed, moving)`` pairs, uniform over the
    ``n(n-1)`` pairs of distinct ``indices`` (with replacement across rows): ``int64 [B, 2]``.

    Raises:
      ValueError: fewer than two indices.
    """
    idx = unique_indices(indices)
    if len(idx) < 2:
        raise ValueError(f"need at least 2 indices to draw pairs; got {len(idx)}")
    return draw_distinct(as_rng(rng), idx, int(batch_size)).astype(np.int64)


def pair_batch(dataset: Dataset, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """Stack ``(fixed, moving)`` index pairs ``[B, 2]`` into arrays.

    Returns ``fixed``/``moving`` float32 ``[B, *S, 1]``, ``fixed_labels``/``moving_labels``
    int32 ``[B, *S]`` (zeros where unlabelled) and ``fixed_has_label``/``moving_has_label``
    bool ``[B]``.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    f, m = dataset.stack(pairs[:, 0]), dataset.stack(pairs[:, 1])
    return {
        "fixed": f["images"],
        "moving": m["images"],
        "fixed_labels": f["labels"],
        "moving_labels": m["labels"],
        "fixed_has_label": f["has_label"],
        "moving_has_label": m["has_label"],
    }


def subject_batch(dataset: Dataset, indices: np.ndarray) -> dict[str, np.ndarray]:
    """``image`` ``[B, *S, 1]``, ``labels`` ``[B, *S]`` and ``has_label`` ``[B]`` of subjects."""
    s = dataset.stack(indices)
    return {"image": s["images"], "labels": s["labels"], "has_label": s["has_label"]}
