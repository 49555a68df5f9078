"""PatchGAN discriminator for 2-D or 3-D images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .blocks import leaky_relu, norm_layer, spatial_rank

__all__ = ["PatchDiscriminator"]

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
