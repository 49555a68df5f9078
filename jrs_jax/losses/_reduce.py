"""Shared reductions for the loss modules: dtype promotion, masks, per-example means."""

from __future__ import annotations

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
    if mask.ndim == like.ndim - 1:
        mask = mask[..., None]
    allowed = {(*like.shape[:-1], 1)} | ({tuple(like.shape)} if per_channel else set())
    if tuple(mask.shape) not in allowed:
        expected = " or ".join(str(s) for s in [tuple(like.shape[:-1]), *sorted(allowed)])
        raise ValueError(f"mask must have shape {expected}; got {tuple(mask.shape)}")
    return mask.astype(like.dtype)


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Per-example mean of ``values [B, ...]`` weighted by ``mask`` (broadcastable); 0 when
    the mask is empty."""
    if mask is None:
        return per_example_mean(values)
    mask = jnp.broadcast_to(mask, values.shape)
    axes = tuple(range(1, values.ndim))
    return safe_div(jnp.sum(values * mask, axis=axes), jnp.sum(mask, axis=axes))
