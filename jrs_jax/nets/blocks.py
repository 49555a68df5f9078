"""Building blocks shared by the networks: conv blocks, down/up-sampling, normalisation.

Every block is dimension-agnostic: the spatial rank ``D`` is read from the input
``[B, *S, C]`` (channels last, ``D = len(S)`` in {2, 3}) and kernels are built as
``(k,) * D``. Blocks are stateless (no BatchNorm, no mutable collections): normalisation is
``"none"``, ``"group"`` or ``"instance"``. ``dtype`` is the compute dtype (e.g.
``jnp.bfloat16``); parameters are always stored in ``param_dtype`` (float32 by default).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "DOWNSAMPLE_MODES",
    "NORM_KINDS",
    "UPSAMPLE_MODES",
    "ConvBlock",
    "Down",
    "Up",
    "leaky_relu",
    "norm_layer",
    "spatial_rank",
]

NORM_KINDS = ("none", "group", "instance")
DOWNSAMPLE_MODES = ("conv", "maxpool")
UPSAMPLE_MODES = ("linear", "transpose")

Dtype = Any


def _check_choice(name: str, value: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
    return value


def spatial_rank(x: jnp.ndarray, *, name: str = "input") -> int:
    """Return ``D`` for a ``[B, *S, C]`` array with ``D = len(S)`` in {2, 3}; else raise."""
    ndim = x.ndim - 2
    if ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape [B, *S, C] with 2 or 3 spatial axes (channels last); got "
            f"shape {tuple(x.shape)}"
        )
    return ndim


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    """LeakyReLU with negative slope 0.2 (VoxelMorph)."""
    return nn.leaky_relu(x, negative_slope=0.2)


def _num_groups(features: int, max_groups: int = 8) -> int:
    """Largest group count ``<= max_groups`` that divides ``features``."""
    for g in range(min(max_groups, features), 0, -1):
        if features % g == 0:
            return g
    return 1


def norm_layer(
    kind: str,
    features: int,
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Module | None:
    """Build a stateless normalisation layer (or ``None`` for ``"none"``).

    - ``"group"``: ``nn.GroupNorm`` with the largest group count ``<= 8`` dividing
      ``features`` (``min(8, features)`` when it divides).
    - ``"instance"``: ``nn.InstanceNorm`` (per-sample, per-channel statistics over space).
    - ``"none"``: returns ``None``.

    Neither layer keeps running statistics, so ``apply`` needs no mutable collections.

    Example:
      >>> norm_layer("group", 12).num_groups
      6
    """
    _check_choice("norm", kind, NORM_KINDS)
    if kind == "none":
        return None
    if kind == "group":
        return nn.GroupNorm(
            num_groups=_num_groups(features), dtype=dtype, param_dtype=param_dtype, name=name
        )
    return nn.InstanceNorm(dtype=dtype, param_dtype=param_dtype, name=name)


class ConvBlock(nn.Module, kw_only=True):
    """``num_convs`` x (conv ``3^D`` -> norm -> LeakyReLU(0.2)).

    Shapes: ``[B, *S, C] -> [B, *S, features]`` (``strides=2`` halves ``S``, rounding up).

    Example:
      >>> block = ConvBlock(features=8)
      >>> x = jnp.zeros((1, 16, 16, 2))
      >>> block.apply(block.init(jax.random.key(0), x), x).shape
      (1, 16, 16, 8)
    """

    features: int
    num_convs: int = 1
    norm: str = "none"
    kernel: int = 3
    strides: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(x)
        if self.num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {self.num_convs}")
        for i in range(self.num_convs):
            x = nn.Conv(
                self.features,
                kernel_size=(self.kernel,) * ndim,
                strides=(self.strides if i == 0 else 1,) * ndim,
                padding="SAME",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{i}",
            )(x)
            norm = norm_layer(
                self.norm,
                self.features,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"norm{i}",
            )
            if norm is not None:
                x = norm(x)
            x = leaky_relu(x)
        return x


class Down(nn.Module, kw_only=True):
    """Halve the spatial size: strided conv ``3^D`` (+ norm, LeakyReLU) or ``2^D`` max-pool.

    Shapes: ``[B, *S, C] -> [B, *S/2, features]`` (``"conv"``) or ``[B, *S/2, C]``
    (``"maxpool"``, parameter-free).

    Example:
      >>> down = Down(features=8, mode="maxpool")
      >>> x = jnp.zeros((1, 16, 16, 2))
      >>> down.apply({}, x).shape
      (1, 8, 8, 2)
    """

    features: int
    mode: str = "conv"
    norm: str = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(x)
        _check_choice("downsample", self.mode, DOWNSAMPLE_MODES)
        if self.mode == "maxpool":
            return nn.max_pool(x, window_shape=(2,) * ndim, strides=(2,) * ndim, padding="SAME")
        return ConvBlock(
            features=self.features,
            norm=self.norm,
            strides=2,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)


class Up(nn.Module, kw_only=True):
    """Upsample ``x`` to the skip's spatial size and concatenate the skip (channels last).

    ``"linear"``: parameter-free (multi)linear resize (``jax.image.resize``) to the skip's
    size; ``"transpose"``: transposed conv ``2^D`` with stride 2 to ``features`` channels.

    Shapes: ``x [B, *S/2, C], skip [B, *S, Cs] -> [B, *S, C' + Cs]`` with ``C' = C``
    (linear) or ``features`` (transpose).

    Example:
      >>> up = Up(features=4)
      >>> y = up.apply({}, jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 16, 16, 2)))
      >>> y.shape
      (1, 16, 16, 5)
    """

    features: int
    mode: str = "linear"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(x)
        _check_choice("upsample", self.mode, UPSAMPLE_MODES)
        target = skip.shape[1:-1]
        if self.mode == "linear":
            x = jax.image.resize(x, (x.shape[0], *target, x.shape[-1]), method="linear")
        else:
            x = nn.ConvTranspose(
                self.features,
                kernel_size=(2,) * ndim,
                strides=(2,) * ndim,
                padding="SAME",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="deconv",
            )(x)
            if x.shape[1:-1] != target:
                x = jax.image.resize(x, (x.shape[0], *target, x.shape[-1]), method="linear")
        return jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
