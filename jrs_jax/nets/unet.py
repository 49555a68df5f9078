"""Dimension-agnostic U-Net (VoxelMorph-style) returning full-resolution features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .blocks import DOWNSAMPLE_MODES, UPSAMPLE_MODES, Down, Up, block_settings, spatial_rank

__all__ = ["Encoder", "UNet", "check_divisible"]

Dtype = Any


def check_divisible(x: jnp.ndarray, levels: int, *, what: str = "UNet") -> None:
    """Raise a ``ValueError`` unless all spatial sizes of ``x`` divide by ``2^(levels-1)``."""
    multiple = 2 ** max(levels - 1, 0)
    spatial = tuple(int(n) for n in x.shape[1:-1])
    if any(n % multiple for n in spatial):
        raise ValueError(
            f"{what} with {levels} levels needs every spatial size divisible by {multiple}; "
            f"got spatial shape {spatial} (input shape {tuple(x.shape)}). Pad or crop the "
            f"input to a multiple of {multiple}."
        )


class EncoderConfig(nn.Module, kw_only=True):
    """Base class carrying the encoder fields shared by :class:`Encoder`, :class:`UNet` and the
    task networks built on them (see :class:`UNet` for their meaning)."""

    features: Sequence[int] = (16, 32, 32, 32)
    convs_per_level: int = 1
    norm: str = "none"
    downsample: str = "conv"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    conv_impl: str = "auto"
    dropout_rate: float = 0.0

    def make_encoder(self, name: str = "encoder") -> Encoder:
        return Encoder(
            features=tuple(self.features),
            convs_per_level=self.convs_per_level,
            norm=self.norm,
            downsample=self.downsample,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            remat=self.remat,
            conv_impl=self.conv_impl,
            dropout_rate=self.dropout_rate,
            name=name,
        )


class UNetConfig(EncoderConfig, kw_only=True):
    """:class:`EncoderConfig` plus the decoder fields; ``make_unet`` builds the :class:`UNet`."""

    decoder_features: Sequence[int] | None = None
    upsample: str = "linear"

    def decoder_widths(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(level widths, full-resolution final widths)`` of the decoder:
        ``decoder_features`` (default ``features[-2::-1]``) split after ``len(features) - 1``
        entries; ``ValueError`` if there are fewer."""
        levels = len(self.features)
        if self.decoder_features is None:
            dec = tuple(self.features[-2::-1])
        else:
            dec = tuple(self.decoder_features)
        if len(dec) < levels - 1:
            raise ValueError(
                f"decoder_features needs at least {levels - 1} entries for "
                f"{levels} encoder levels; got {dec}"
            )
        return dec[: levels - 1], dec[levels - 1 :]

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
            conv_impl=self.conv_impl,
            dropout_rate=self.dropout_rate,
            name=name,
        )


class Encoder(EncoderConfig, kw_only=True):
    """U-Net encoder: level 0 at full resolution, then (Down -> ConvBlock) per level.

    :meth:`stage` runs one level (``down{i}`` for ``i > 0``, then ``enc{i}``), so two
    encoders can be stepped in lockstep and their features exchanged between levels (see
    :class:`~jrs_jax.nets.CrossStitchNet`); ``__call__`` runs all levels.

    Shapes: ``[B, *S, C] ->`` a list of ``len(features)`` maps, level ``i`` being
    ``[B, *S / 2^i, features[i]]``. ``S`` must be divisible by ``2^(len(features) - 1)``.

    Example:
      >>> import jax
      >>> enc = Encoder(features=(4, 8))
      >>> x = jnp.zeros((1, 16, 16, 2))
      >>> [f.shape for f in enc.apply(enc.init(jax.random.key(0), x), x)]
      [(1, 16, 16, 4), (1, 8, 8, 8)]
    """

    def setup(self):
        if len(self.features) < 1:
            raise ValueError("features must contain at least one entry")
        if self.downsample not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample={self.downsample!r} is not one of {DOWNSAMPLE_MODES}")
        down_cls = nn.remat(Down) if self.remat else Down
        block_cls, common = block_settings(self)
        # setattr in setup registers the submodules under their names (down{i}, enc{i})
        for i, f in enumerate(self.features):
            if i > 0:
                setattr(self, f"down{i}", down_cls(features=f, mode=self.downsample, **common))
            block = block_cls(features=f, num_convs=self.convs_per_level, **common)
            setattr(self, f"enc{i}", block)

    def stage(self, i: int, x: jnp.ndarray) -> jnp.ndarray:
        """Level ``i``: ``[B, *S / 2^(i-1), *]`` (the input image for ``i = 0``, else level
        ``i - 1``'s output) -> ``[B, *S / 2^i, features[i]]``."""
        if not 0 <= i < len(self.features):
            raise ValueError(f"stage index {i} out of range for {len(self.features)} levels")
        if i > 0:
            x = getattr(self, f"down{i}")(x)
        return getattr(self, f"enc{i}")(x)

    def __call__(self, x: jnp.ndarray) -> list[jnp.ndarray]:
        spatial_rank(x)
        check_divisible(x, len(self.features), what=type(self).__name__)
        outs = []
        for i in range(len(self.features)):
            x = self.stage(i, x)
            outs.append(x)
        return outs


class UNet(UNetConfig, kw_only=True):
    """U-Net for 2-D or 3-D images, returning the full-resolution feature map.

    Encoder: ``features[0]`` convs at full resolution, then per level a downsampling
    (strided conv ``3^D`` by default, or ``2^D`` max-pool) followed by ``convs_per_level``
    conv ``3^D`` -> norm -> LeakyReLU(0.2). Decoder: per level upsample x2 (linear by
    default, or transposed conv), concatenate the skip, conv block with
    ``decoder_features[j]``. ``conv_impl`` selects the 3-D convolution algorithm of every
    conv (``"auto"``: depth slices on CPU, native elsewhere; see :class:`blocks.Conv`; the
    parameters do not depend on it). Entries of ``decoder_features`` beyond ``len(features) - 1``
    add full-resolution conv blocks (VoxelMorph's "final convs"). Default decoder:
    ``features[-2::-1]``. ``dropout_rate > 0`` adds dropout after every conv block's
    activation, active only when ``apply`` gets a ``"dropout"`` rng (see
    :mod:`jrs_jax.nets.blocks`); the default 0 builds none (parameters and outputs unchanged).

    Shapes: ``[B, *S, C] -> [B, *S, F_last]`` with ``F_last = decoder_features[-1]``
    (``features[0]`` by default); ``S`` must be divisible by ``2^(len(features) - 1)``,
    otherwise a ``ValueError`` names the shape and the multiple.

    Example:
      >>> import jax
      >>> net = UNet(features=(8, 16, 16))
      >>> x = jnp.zeros((2, 16, 16, 2))
      >>> params = net.init(jax.random.key(0), x)
      >>> net.apply(params, x).shape
      (2, 16, 16, 8)

    Reference: Ronneberger et al., "U-Net", MICCAI 2015; Balakrishnan et al.,
    "VoxelMorph: A Learning Framework for Deformable Medical Image Registration", IEEE TMI
    2019 (architecture with LeakyReLU(0.2), stride-2 encoder convs, upsample + skip decoder).
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r} is not one of {UPSAMPLE_MODES}")
        dec = sum(self.decoder_widths(), ())
        skips = self.make_encoder()(x)
        block_cls, common = block_settings(self)
        levels = len(self.features)
        y = skips[-1]
        for j in range(levels - 1):
            skip = skips[levels - 2 - j]
            y = Up(
                features=dec[j],
                mode=self.upsample,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"up{j}",
            )(y, skip)
            y = block_cls(
                features=dec[j], num_convs=self.convs_per_level, name=f"dec{j}", **common
            )(y)
        for k, f in enumerate(dec[levels - 1 :]):
            y = block_cls(features=f, num_convs=1, name=f"final{k}", **common)(y)
        return y
