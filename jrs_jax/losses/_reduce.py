"""Shared reductions for the loss modules: dtype promotion, masks, per-example means."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp


def as_float(x) -> jnp.ndarray:
    """At least float32: bf16/f16/int -> float32, float64 stays float64 (losses in fp32)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def safe_div(num: jnp.ndarray, den: jnp.ndarray) -> jnp.ndarray:
    """``num / den`` where ``den > 0``, else 0, with finite gradients on both branches."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def per_example_mean(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over every axis but the first: ``[B, ...] -> [B]``."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def voxel_mask(mask, like: jnp.ndarray, *, per_channel: bool = True) -> jnp.ndarray:
    """Check and broadcast a voxel mask against ``like [B, *S, C]``.

    Accepts ``[B, *S]``, ``[B, *S, 1]`` or (``per_channel``) ``[B, *S, C]``; returns it as
    ``like``'s dtype with a trailing axis, raising a ``ValueError`` naming both shapes
    otherwise.
    """
    mask = jnp.asarray(mask)
    given = tuple(mask.shape)
    if mask.ndim == like.ndim - 1:
        mask = mask[..., None]
    allowed = {(*like.shape[:-1], 1)} | ({tuple(like.shape)} if per_channel else set())
    if tuple(mask.shape) not in allowed:
        expected = " or ".join(str(s) for s in [tuple(like.shape[:-1]), *sorted(allowed)])
        raise ValueError(
            f"mask must have shape {expected} (for an input of shape {tuple(like.shape)}); "
            f"got {given}"
        )
    return mask.astype(like.dtype)


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Per-example mean of ``values [B, ...]`` weighted by ``mask`` (broadcastable); 0 when
    the mask is empty."""
    if mask is None:
        return per_example_mean(values)
    mask = jnp.broadcast_to(mask, values.shape)
    axes = tuple(range(1, values.ndim))
    return safe_div(jnp.sum(values * mask, axis=axes), jnp.sum(mask, axis=axes))


def stencil_weight(
    mask: jnp.ndarray, taps: Sequence[Sequence[int]], *, edge: bool = False
) -> jnp.ndarray:
    """Weight of a finite-difference stencil: the product of ``mask`` over the voxels it reads.

    ``mask`` is ``[B, *S, 1]``; ``taps`` are the offsets (one integer per spatial axis) of the
    voxels the stencil reads, relative to the voxel ``x`` it is evaluated at. Without ``edge``
    the result covers the voxels ``x`` whose every tap ``x + t`` (and ``x`` itself) lies in the
    grid: ``N_i - max(0, max_t t_i) + min(0, min_t t_i)`` positions along axis ``i``, the
    first being ``x_i = -min(0, min_t t_i)`` -- exactly the positions of the stencil's values
    as a finite difference computes them by slicing. With ``edge`` the result is
    ``[B, *S, 1]``: a tap past the border reads the nearest border voxel (as a one-sided
    border difference does). Either way every weight is a product of ``len(taps)`` mask values,
    so scaling the mask by ``c`` scales all of them by ``c ** len(taps)``.
    """
    taps = [tuple(int(o) for o in t) for t in taps]
    ndim = mask.ndim - 2
    lo = [min(0, *(t[i] for t in taps)) for i in range(ndim)]
    hi = [max(0, *(t[i] for t in taps)) for i in range(ndim)]
    if edge:
        pad = [(0, 0)] + [(-lo[i], hi[i]) for i in range(ndim)] + [(0, 0)]
        mask = jnp.pad(mask, pad, mode="edge")
    spatial = mask.shape[1:-1]
    weight = None
    for t in taps:
        idx = (slice(None),)
        idx += tuple(slice(t[i] - lo[i], n - hi[i] + t[i]) for i, n in enumerate(spatial))
        shifted = mask[(*idx, slice(None))]
        weight = shifted if weight is None else weight * shifted
    return weight
