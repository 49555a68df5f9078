"""Segmentation network: U-Net features -> per-voxel class logits."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .blocks import spatial_rank
from .unet import UNetConfig

__all__ = ["SegmentationNet"]


class SegmentationNet(UNetConfig, kw_only=True):
    """U-Net -> conv ``1^D`` head with ``num_classes`` outputs (float32 logits).

    ``multilabel=False``: mutually exclusive classes (softmax semantics; train with
    ``optax.softmax_cross_entropy_with_integer_labels`` or Dice on ``softmax``);
    ``multilabel=True``: ``num_classes`` independent labels (sigmoid per channel, e.g.
    ``optax.sigmoid_binary_cross_entropy``). The network always returns raw logits.

    ``dropout_rate`` (default 0: none) drops U-Net activations only in calls given a
    ``"dropout"`` rng, ``net.apply(params, x, rngs={"dropout": key})`` (a mean-teacher
    student); calls without one are deterministic (see :mod:`jrs_jax.nets.blocks`).

    Shapes: ``[B, *S, C] -> [B, *S, K]`` with ``K = num_classes``; ``S`` divisible by
    ``2^(len(features) - 1)``.

    Example:
      >>> import jax
      >>> net = SegmentationNet(num_classes=3, features=(8, 16))
      >>> x = jnp.zeros((2, 16, 16, 1))
      >>> net.apply(net.init(jax.random.key(0), x), x).shape
      (2, 16, 16, 3)

    Reference: Ronneberger et al., "U-Net", MICCAI 2015; Çiçek et al., "3D U-Net", MICCAI
    2016.
    """

    num_classes: int
    multilabel: bool = False

    @nn.compact
    def __call__(self, image: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(image, name="image")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.multilabel and self.num_classes < 2:
            raise ValueError("softmax segmentation needs num_classes >= 2 (or multilabel=True)")
        x = image if jnp.issubdtype(image.dtype, jnp.floating) else image.astype(jnp.float32)
        feats = self.make_unet()(x)
        return nn.Conv(
            self.num_classes,
            kernel_size=(1,) * ndim,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="head",
        )(feats.astype(jnp.float32))
