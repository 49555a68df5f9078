"""Operations on displacement and velocity fields ``[B, *S, D]`` (voxel units, "ij")."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_field
from .grid import identity_grid
from .warp import sample, warp

__all__ = [
    "affine_to_displacement",
    "compose",
    "displacement_gradient",
    "integrate_velocity",
    "invert_displacement",
    "jacobian_determinant",
    "resize_field",
]


def compose(u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Compose two displacement fields: ``w(x) = u(x) + v(x + u(x))``.

    With ``phi_u(x) = x + u(x)`` this is ``phi_w = phi_v o phi_u``, hence
    ``warp(I, compose(u, v)) == warp(warp(I, v), u)`` (up to interpolation): ``v`` is applied to
    the image first. ``v`` is sampled linearly with border padding.

    Args:
      u: ``[B, *S, D]``.
      v: ``[B, *S', D]`` (sampled at ``x + u(x)``; usually ``S' == S``).

    Returns:
      ``[B, *S, D]``.
    """
    check_field(u, name="u")
    check_field(v, name="v")
    return u + warp(v, u, padding="border")


def integrate_velocity(velocity: jnp.ndarray, *, steps: int = 7) -> jnp.ndarray:
    """Exponentiate a stationary velocity field by scaling and squaring.

    ``u_0 = v / 2^N``; ``u_{i+1} = compose(u_i, u_i)``; returns ``u_N ~ exp(v)``. The inverse
    transform is ``integrate_velocity(-v)``. The loop is a ``lax.fori_loop`` with a static trip
    count (reverse-differentiable, compiled once); each step's backward pass recomputes its
    interpolation corners, so memory with gradients is about one field per step.

    Args:
      velocity: ``[B, *S, D]`` in voxels.
      steps: number of squarings ``N`` (static; 0 returns ``v`` unchanged). Default 7, as
        VoxelMorph.

    Returns:
      ``[B, *S, D]`` displacement.
    """
    check_field(velocity, name="velocity")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    u = velocity / (2.0**steps)
    if steps == 0:
        return u
    return jax.lax.fori_loop(0, steps, lambda _, w: compose(w, w), u)


def resize_field(disp: jnp.ndarray, shape: Sequence[int], *, rescale: bool = True) -> jnp.ndarray:
    """Resample a field to a new spatial shape and rescale its vectors.

    Voxel centres sit at integers and the first/last voxel centres of both grids coincide
    (``align_corners=True``): a voxel index ``x`` of the input maps to ``x * r_k`` on the
    output along axis ``k`` with ``r_k = (n_out_k - 1) / (n_in_k - 1)``, and component ``k`` is
    multiplied by ``r_k``. Hence a translation by ``t`` voxels becomes a translation by
    ``t * r`` voxels, and ``warp`` commutes with resizing. Used for half-resolution integration
    (``resize_field(integrate_velocity(resize_field(v, half)), full)``).

    Args:
      disp: ``[B, *S, D]``.
      shape: output spatial shape (D ints).
      rescale: multiply component ``k`` by ``r_k`` (default). ``False`` only resamples, for
        fields whose values are not in input voxels (e.g. noise given in output voxels).

    Returns:
      ``[B, *shape, D]``.
    """
    ndim = check_field(disp)
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim:
        raise ValueError(f"shape must have {ndim} entries, got {shape}")
    in_shape = disp.shape[1:-1]
    ratio = np.array(
        [(no - 1) / (ni - 1) if ni > 1 else 1.0 for ni, no in zip(in_shape, shape)],
        dtype=np.float64,
    )
    inv = np.where(ratio > 0, 1.0 / np.where(ratio > 0, ratio, 1.0), 0.0)
    coords = identity_grid(shape, dtype=disp.dtype) * jnp.asarray(inv, disp.dtype)
    out = sample(disp, coords[None], padding="border")
    return out * jnp.asarray(ratio, disp.dtype) if rescale else out


def affine_to_displacement(matrix: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
    """Dense displacement of an affine transform about the volume centre.

    ``phi(x) = A (x - c) + t + c`` with ``c = (n - 1) / 2`` per axis, coordinates in voxels
    along array axes; returns ``u(x) = phi(x) - x``. With the pull-back convention
    ``warp(I, u)(x) = I(phi(x))``, i.e. the matrix maps output (fixed) voxels to input
    (moving) voxels. The identity matrix gives a zero field.

    Args:
      matrix: ``[B, D+1, D+1]`` homogeneous or ``[B, D, D+1]`` (a missing batch axis is
        added), ``[:D, :D] = A``, ``[:D, D] = t``.
      shape: spatial shape ``S`` (D ints).

    Returns:
      ``[B, *S, D]``.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    matrix = jnp.asarray(matrix)
    if matrix.ndim == 2:
        matrix = matrix[None]
    if matrix.shape[-1] != ndim + 1 or matrix.shape[-2] not in (ndim, ndim + 1):
        raise ValueError(
            f"matrix must be [B, {ndim + 1}, {ndim + 1}] or [B, {ndim}, {ndim + 1}] for a "
            f"{ndim}-D shape; got {tuple(matrix.shape)}"
        )
    dtype = matrix.dtype if jnp.issubdtype(matrix.dtype, jnp.floating) else jnp.float32
    centre = jnp.asarray([(n - 1) / 2.0 for n in shape], dtype)
    x = identity_grid(shape, dtype=dtype) - centre
    a = matrix[:, :ndim, :ndim].astype(dtype)
    t = matrix[:, :ndim, ndim].astype(dtype)
    mapped = jnp.einsum("bkl,...l->b...k", a, x)
    return mapped + t.reshape(t.shape[0], *([1] * ndim), ndim) - x


def invert_displacement(disp: jnp.ndarray, *, iterations: int = 20) -> jnp.ndarray:
    """Approximate inverse of a displacement by fixed-point iteration.

    Finds ``w`` with ``w(x) = -u(x + w(x))``, i.e. ``phi_u o phi_w = id`` and
    ``compose(w, u) ~ 0``; starts from ``w = -u``. Converges when ``u`` is smooth and
    invertible (contraction: ``|grad u| < 1``); the residual is then below interpolation error
    after ~10-20 iterations.

    Args:
      disp: ``[B, *S, D]``.
      iterations: number of fixed-point steps (static).

    Returns:
      ``[B, *S, D]``.
    """
    check_field(disp)
    return jax.lax.fori_loop(
        0, int(iterations), lambda _, w: -warp(disp, w, padding="border"), -disp
    )


def displacement_gradient(
    disp: jnp.ndarray, *, spacing: Sequence[float] | None = None
) -> jnp.ndarray:
    """Spatial derivatives ``G[..., k, l] = d u_k / d x_l`` by finite differences.

    Central differences in the interior, one-sided first-order differences at the borders
    (``numpy.gradient`` semantics; VoxelMorph's Jacobian scheme).

    Args:
      disp: ``[B, *S, D]``.
      spacing: optional voxel size per axis; derivatives are divided by it.

    Returns:
      ``[B, *S, D, D]``.
    """
    ndim = check_field(disp)
    cols = []
    for axis in range(ndim):
        ax = axis + 1
        n = disp.shape[ax]
        if n < 2:
            d = jnp.zeros_like(disp)
        else:
            take = lambda a, b, ax=ax: jax.lax.slice_in_dim(disp, a, b, axis=ax)
            first = take(1, 2) - take(0, 1)
            last = take(n - 1, n) - take(n - 2, n - 1)
            mid = (take(2, n) - take(0, n - 2)) * 0.5
            d = (
                jnp.concatenate([first, mid, last], axis=ax)
                if n > 2
                else jnp.concatenate([first, last], axis=ax)
            )
        if spacing is not None:
            d = d / jnp.asarray(spacing[axis], disp.dtype)
        cols.append(d)
    return jnp.stack(cols, axis=-1)


def jacobian_determinant(
    disp: jnp.ndarray, *, spacing: Sequence[float] | None = None
) -> jnp.ndarray:
    """Jacobian determinant ``det(I + grad u)`` of ``phi(x) = x + u(x)`` per voxel.

    Finite differences as :func:`displacement_gradient` (central inside, one-sided at the
    borders). For Learn2Reg's exact scheme (zero padding, 2-voxel crop) use
    :func:`jrs_jax.metrics.jacobian_determinant_l2r`.

    Spacing: our displacements are in voxels, and then the determinant does not depend on
    the voxel size (``det(I + S G S^-1) = det(I + G)``): leave ``spacing=None``. Pass
    ``spacing`` only when ``disp`` holds displacements in mm *along the array axes*
    (``u * spacing``) on a grid with that voxel size. (World-frame fields such as the LPS
    output of :func:`jrs_jax.spatial.to_physical_displacement` are rotated/flipped: convert
    them back with ``from_physical_displacement`` first.)

    Args:
      disp: ``[B, *S, D]``.
      spacing: voxel size per axis, for physical-unit displacements.

    Returns:
      ``[B, *S]``; values <= 0 mark folding.
    """
    ndim = check_field(disp)
    jac = displacement_gradient(disp, spacing=spacing) + jnp.eye(ndim, dtype=disp.dtype)
    if ndim == 2:
        return jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
    return (
        jac[..., 0, 0] * (jac[..., 1, 1] * jac[..., 2, 2] - jac[..., 1, 2] * jac[..., 2, 1])
        - jac[..., 0, 1] * (jac[..., 1, 0] * jac[..., 2, 2] - jac[..., 1, 2] * jac[..., 2, 0])
        + jac[..., 0, 2] * (jac[..., 1, 0] * jac[..., 2, 1] - jac[..., 1, 1] * jac[..., 2, 0])
    )
