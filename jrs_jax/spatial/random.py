"""Random smooth fields for augmentation and synthetic data (``key`` first)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .fields import integrate_velocity, resize_field

__all__ = ["random_displacement", "random_velocity"]


def _control_shape(shape: Sequence[int], control_spacing: int) -> tuple[int, ...]:
    return tuple(max(2, -(-int(n) // int(control_spacing)) + 1) for n in shape)


def random_velocity(
    key: jax.Array,
    shape: Sequence[int],
    *,
    batch_size: int = 1,
    amplitude: float = 2.0,
    control_spacing: int = 8,
    dtype=jnp.float32,
) -> jnp.ndarray:
    """Random smooth field: Gaussian noise on a coarse control grid, upsampled linearly.

    Each component at each control point is ``N(0, amplitude^2)`` (voxels); the control grid
    has one point every ``control_spacing`` voxels (plus the borders), so features are about
    that size. The field is band-limited by construction (no dense filtering).

    Args:
      key: PRNG key.
      shape: spatial shape ``S``.
      batch_size: ``B``.
      amplitude: standard deviation of the control-point vectors, in voxels.
      control_spacing: voxels between control points (larger = smoother).
      dtype: floating dtype.

    Returns:
      ``[B, *S, D]``.
    """
    shape = tuple(int(n) for n in shape)
    coarse = _control_shape(shape, control_spacing)
    noise = amplitude * jax.random.normal(key, (batch_size, *coarse, len(shape)), dtype)
    # amplitudes are given in output voxels: resample without rescaling the vectors.
    return resize_field(noise, shape, rescale=False)


def random_displacement(
    key: jax.Array,
    shape: Sequence[int],
    *,
    batch_size: int = 1,
    amplitude: float = 2.0,
    control_spacing: int = 8,
    diffeomorphic: bool = True,
    steps: int = 7,
    dtype=jnp.float32,
) -> jnp.ndarray:
    """Random smooth displacement; by default the exponential of a :func:`random_velocity`.

    With ``diffeomorphic=True`` the result is ``integrate_velocity(v, steps=steps)`` (invertible
    for moderate amplitudes, inverse ``integrate_velocity(-v)``); otherwise the smooth field
    itself is returned as a displacement (may fold for large amplitudes).

    Args:
      key: PRNG key.
      shape: spatial shape ``S``.
      batch_size: ``B``.
      amplitude: control-point standard deviation in voxels.
      control_spacing: voxels between control points.
      diffeomorphic: integrate as a stationary velocity field.
      steps: squaring steps when ``diffeomorphic``.
      dtype: floating dtype.

    Returns:
      ``[B, *S, D]``.
    """
    v = random_velocity(
        key,
        shape,
        batch_size=batch_size,
        amplitude=amplitude,
        control_spacing=control_spacing,
        dtype=dtype,
    )
    return integrate_velocity(v, steps=steps) if diffeomorphic else v
