"""Identity grids in voxel units ("ij": component k indexes array axis k)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp


def identity_grid(shape: Sequence[int], *, dtype=jnp.float32) -> jnp.ndarray:
    """Voxel coordinates of every voxel centre.

    ``grid[i, j, (k,)] = (i, j, (k,))``: voxel centres sit at integers, component ``k``
    indexes array axis ``k``.

    Args:
      shape: spatial shape ``S`` (2 or 3 ints).
      dtype: floating dtype of the result.

    Returns:
      ``[*S, D]`` array.

    Example:
      >>> identity_grid((2, 3))[1, 2]
      Array([1., 2.], dtype=float32)
    """
    axes = [jnp.arange(n, dtype=dtype) for n in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)
