"""Shared input checks of the task networks (internal)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from .blocks import spatial_rank


def concat_inputs(*images: jnp.ndarray | None, names: Sequence[str]) -> tuple[jnp.ndarray, int]:
    """Check that the given ``[B, *S, C]`` images agree on ``B`` and ``S``; concatenate channels.

    ``None`` entries are skipped. Returns ``(x, D)``.
    """
    present = [(im, n) for im, n in zip(images, names) if im is not None]
    ref, ref_name = present[0]
    ndim = spatial_rank(ref, name=ref_name)
    for im, n in present[1:]:
        spatial_rank(im, name=n)
        if im.shape[:-1] != ref.shape[:-1]:
            raise ValueError(
                f"{n} must have the same batch and spatial shape as {ref_name}: got "
                f"{tuple(im.shape)} vs {tuple(ref.shape)}"
            )
    dtype = jnp.result_type(*[im.dtype for im, _ in present])
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return jnp.concatenate([im.astype(dtype) for im, _ in present], axis=-1), ndim
