"""Discriminators for 2-D or 3-D images: PatchGAN (patch scores) and a full-resolution
per-voxel discriminator (U-Net encoder-decoder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ._config import concat_inputs
from .blocks import leaky_relu, norm_layer, spatial_rank
from .unet import UNetConfig

__all__ = ["PatchDiscriminator", "PixelDiscriminator"]

Dtype = Any


class PatchDiscriminator(nn.Module, kw_only=True):
    """PatchGAN: stacked conv ``4^D`` -> norm -> LeakyReLU(0.2), then a conv to 1 channel.

    Every entry of ``features`` but the last uses stride 2; the last uses stride 1, as in
    Isola et al.'s ``C64-C128-C256-C512`` stack. No normalisation after the first conv; the
    others use ``norm`` (``"instance"`` by default; no BatchNorm, so ``apply`` is stateless).
    Padding is ``"SAME"``, so a stride-2 conv maps ``n`` to ``ceil(n / 2)`` and small 3-D
    volumes keep a non-empty score map. No sigmoid: the outputs are logits/critic scores for
    :mod:`jrs_jax.losses` (``gan_discriminator_loss``, ``wasserstein_critic_loss``). To
    condition on another image, concatenate it on the channel axis before calling.

    Shapes: ``[B, *S, C] -> [B, *S', 1]`` with ``S' = ceil(S / 2^(len(features) - 1))``.

    Example:
      >>> import jax
      >>> disc = PatchDiscriminator(features=(8, 16, 32))
      >>> x = jnp.zeros((2, 16, 16, 1))
      >>> disc.apply(disc.init(jax.random.key(0), x), x).shape
      (2, 4, 4, 1)

    Reference: Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional
    Adversarial Networks" (pix2pix), CVPR 2017.
    """

    features: Sequence[int] = (32, 64, 128)
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(image, name="image")
        x = image if jnp.issubdtype(image.dtype, jnp.floating) else image.astype(jnp.float32)
        n = len(self.features)
        for i, f in enumerate(self.features):
            stride = 2 if i < n - 1 else 1
            x = nn.Conv(
                f,
                kernel_size=(4,) * ndim,
                strides=(stride,) * ndim,
                padding="SAME",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{i}",
            )(x)
            if i > 0:
                norm = norm_layer(
                    self.norm, f, dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm{i}"
                )
                if norm is not None:
                    x = norm(x)
            x = leaky_relu(x)
        return nn.Conv(
            1,
            kernel_size=(4,) * ndim,
            padding="SAME",
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="score",
        )(x.astype(jnp.float32))


class PixelDiscriminator(UNetConfig, kw_only=True):
    """Full-resolution (per-voxel) discriminator: ``concat(images)`` -> U-Net -> conv ``1^D``
    to one logit per voxel.

    Where :class:`PatchDiscriminator` scores patches on a coarser grid, this network keeps
    the input resolution, so its sigmoid is a per-voxel confidence map (e.g. DeepRS' alignment
    confidence map: ``sigmoid(D(warped, fixed))`` high where the warped image is aligned
    with the fixed one). The images are concatenated on the channel axis (condition on a
    second image by passing it too); the U-Net is :class:`~jrs_jax.nets.UNet` with the
    :class:`~jrs_jax.nets.unet.UNetConfig` fields (encoder ``features``, ``decoder_features``,
    ``norm``, ...; stateless, no BatchNorm). The head is a float32 conv ``1^D`` with one
    output and no activation: the outputs are logits for :mod:`jrs_jax.losses`
    (``gan_discriminator_loss`` / ``gan_generator_loss`` average over the voxels), and
    ``jax.nn.sigmoid`` of them is the confidence.

    Shapes: ``images[i] [B, *S, C_i] -> [B, *S, 1]`` (float32); ``S`` divisible by
    ``2^(len(features) - 1)``.

    Example:
      >>> import jax
      >>> disc = PixelDiscriminator(features=(8, 16, 16))
      >>> warped = fixed = jnp.zeros((2, 16, 16, 1))
      >>> params = disc.init(jax.random.key(0), warped, fixed)
      >>> disc.apply(params, warped, fixed).shape
      (2, 16, 16, 1)

    Reference: He et al., "Deep Complementary Joint Model for Complex Scene Registration and
    Few-shot Segmentation on Medical Images" (DeepRS), ECCV 2020 (pixel-wise discriminator);
    Ronneberger et al., "U-Net", MICCAI 2015.
    """

    features: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, *images: jnp.ndarray) -> jnp.ndarray:
        if not images:
            raise ValueError("PixelDiscriminator needs at least one input image")
        names = tuple(f"images[{i}]" for i in range(len(images)))
        x, ndim = concat_inputs(*images, names=names)
        feats = self.make_unet()(x)
        return nn.Conv(
            1,
            kernel_size=(1,) * ndim,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="score",
        )(feats.astype(jnp.float32))
