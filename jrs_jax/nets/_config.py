"""Shared U-Net hyper-parameters for the task networks (internal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .blocks import spatial_rank
from .unet import UNet

Dtype = Any


class UNetConfig(nn.Module, kw_only=True):
    """Base class carrying the :class:`~jrs_jax.nets.UNet` fields (see there)."""

    features: Sequence[int] = (16, 32, 32, 32)
    decoder_features: Sequence[int] | None = None
    convs_per_level: int = 1
    norm: str = "none"
    downsample: str = "conv"
    upsample: str = "linear"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    def make_unet(self, name: str = "unet") -> UNet:
        return UNet(
            features=tuple(self.features),
            decoder_features=None
            if self.decoder_features is None
            else tuple(self.decoder_features),
            convs_per_level=self.convs_per_level,
            norm=self.norm,
            downsample=self.downsample,
            upsample=self.upsample,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            remat=self.remat,
            name=name,
        )


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
