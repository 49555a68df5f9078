"""Image-to-image generator (U-Net with skips) for modality synthesis."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ._config import concat_inputs
from .unet import UNetConfig

__all__ = ["OUTPUT_ACTIVATIONS", "ImageGenerator"]

OUTPUT_ACTIVATIONS = ("none", "tanh", "sigmoid")

_ACTIVATIONS = {"none": lambda y: y, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


class ImageGenerator(UNetConfig, kw_only=True):
    """U-Net generator: ``concat(images)`` -> U-Net features -> conv ``1^D`` -> activation.

    The images are concatenated on the channel axis (they must agree on batch and spatial
    shape). The head is a conv ``1^D`` with ``out_channels`` outputs computed in float32
    (lecun-normal kernel, or zeros with ``zero_head=True``; zero bias), followed by
    ``output_activation``: ``"none"`` (identity), ``"tanh"`` (images in ``[-1, 1]``, as in
    CycleGAN) or ``"sigmoid"`` (images in ``[0, 1]``).

    ``residual=True`` predicts a correction of the first image: the output is
    ``images[0] + act(head(features))``, so ``images[0]`` must have ``out_channels``
    channels, and ``output_activation`` must be ``"none"`` or ``"tanh"`` (``"tanh"`` bounds
    the correction to ``(-1, 1)``; ``sigmoid(0) = 0.5`` is not a zero correction, so
    ``"sigmoid"`` is rejected). With ``zero_head=True`` a residual generator is exactly the
    identity on ``images[0]`` at initialisation.

    Shapes: ``images[i] [B, *S, C_i] -> [B, *S, out_channels]`` (float32); ``S`` divisible
    by ``2^(len(features) - 1)``.

    Example:
      >>> gen = ImageGenerator(out_channels=1, features=(8, 16), output_activation="tanh")
      >>> t1 = jnp.zeros((2, 16, 16, 1))
      >>> seg = jnp.zeros((2, 16, 16, 3))
      >>> params = gen.init(jax.random.key(0), t1, seg)
      >>> gen.apply(params, t1, seg).shape
      (2, 16, 16, 1)

    Reference: Ronneberger et al., "U-Net", MICCAI 2015 (architecture); Isola et al.,
    "Image-to-Image Translation with Conditional Adversarial Networks" (pix2pix), CVPR 2017
    (U-Net generator with skips, tanh output); Zhu et al., "Unpaired Image-to-Image
    Translation using Cycle-Consistent Adversarial Networks" (CycleGAN), ICCV 2017.
    """

    out_channels: int = 1
    output_activation: str = "none"
    residual: bool = False
    zero_head: bool = False

    @nn.compact
    def __call__(self, *images: jnp.ndarray) -> jnp.ndarray:
        if not images:
            raise ValueError("ImageGenerator needs at least one input image")
        if self.out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {self.out_channels}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={self.output_activation!r} is not one of {OUTPUT_ACTIVATIONS}"
            )
        names = tuple(f"images[{i}]" for i in range(len(images)))
        x, ndim = concat_inputs(*images, names=names)
        if self.residual:
            if self.output_activation == "sigmoid":
                raise ValueError(
                    "residual=True needs output_activation 'none' or 'tanh' (the output is "
                    "images[0] + act(head) and sigmoid(0) = 0.5 is not a zero correction)"
                )
            if images[0].shape[-1] != self.out_channels:
                raise ValueError(
                    f"residual=True needs images[0] to have out_channels={self.out_channels} "
                    f"channels; got shape {tuple(images[0].shape)}"
                )
        feats = self.make_unet()(x)
        head_init = nn.initializers.zeros if self.zero_head else nn.initializers.lecun_normal()
        y = nn.Conv(
            self.out_channels,
            kernel_size=(1,) * ndim,
            kernel_init=head_init,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="head",
        )(feats.astype(jnp.float32))
        y = _ACTIVATIONS[self.output_activation](y)
        if self.residual:
            y = images[0].astype(jnp.float32) + y
        return y
