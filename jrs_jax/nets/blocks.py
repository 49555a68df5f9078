"""Building blocks shared by the networks: conv blocks, down/up-sampling, normalisation.

Every block is dimension-agnostic: the spatial rank ``D`` is read from the input
``[B, *S, C]`` (channels last, ``D = len(S)`` in {2, 3}) and kernels are built as
``(k,) * D``. Blocks are stateless (no BatchNorm, no mutable collections): normalisation is
``"none"``, ``"group"`` or ``"instance"``. ``dtype`` is the compute dtype (e.g.
``jnp.bfloat16``); parameters are always stored in ``param_dtype`` (float32 by default).

Dropout: :class:`ConvBlock` (and :class:`Down`, and every U-Net through the
``dropout_rate`` field of :class:`~jrs_jax.nets.unet.EncoderConfig`) drops activations after
each conv -> norm -> LeakyReLU with ``nn.Dropout(dropout_rate)``. It is active only when the
call is given a ``"dropout"`` rng stream, ``net.apply(params, x, rngs={"dropout": key})``
(deterministic: ``not self.has_rng("dropout")``); without one the network is deterministic,
so inference, evaluation and ``init`` need no flag. Dropout has no parameters, and with
``dropout_rate=0`` (the default) no dropout layer is built: parameter trees and outputs are
exactly those of a network without the field.

Convolutions go through :class:`Conv`, a drop-in for ``nn.Conv`` (same parameter names and
shapes) whose ``conv_impl`` picks how a 3-D convolution is computed: XLA's CPU backend runs
3-D convolutions (and above all the backward pass of strided ones) far slower than 2-D ones,
so on CPU a ``k^3`` convolution is computed exactly as a sum over its ``k`` depth taps of 2-D
convolutions over depth slices (see :func:`conv_nd`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "CONV_IMPLS",
    "DOWNSAMPLE_MODES",
    "NORM_KINDS",
    "UPSAMPLE_MODES",
    "Conv",
    "ConvBlock",
    "Down",
    "Up",
    "block_settings",
    "conv_nd",
    "leaky_relu",
    "norm_layer",
    "resolve_conv_impl",
    "spatial_rank",
]

NORM_KINDS = ("none", "group", "instance")
DOWNSAMPLE_MODES = ("conv", "maxpool")
UPSAMPLE_MODES = ("linear", "transpose")
CONV_IMPLS = ("auto", "native", "depth_slices", "im2col")

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


def block_settings(module: nn.Module) -> tuple[type, dict]:
    """``(ConvBlock class, shared keywords)`` of a network with the usual fields (``remat``,
    ``norm``, ``conv_impl``, ``dtype``, ``param_dtype``, and ``dropout_rate`` where the module
    has that field; a module without it builds blocks without dropout): the class is
    ``nn.remat(ConvBlock)`` when ``module.remat``."""
    block_cls = nn.remat(ConvBlock) if module.remat else ConvBlock
    common = dict(
        norm=module.norm,
        conv_impl=module.conv_impl,
        dtype=module.dtype,
        param_dtype=module.param_dtype,
        dropout_rate=getattr(module, "dropout_rate", 0.0),
    )
    return block_cls, common


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    """LeakyReLU with negative slope 0.2 (VoxelMorph)."""
    return nn.leaky_relu(x, negative_slope=0.2)


def resolve_conv_impl(conv_impl: str, ndim: int) -> str:
    """Resolve ``conv_impl`` for a ``ndim``-D convolution to ``"native"``, ``"depth_slices"``
    or ``"im2col"`` (kept as asked, in 2-D and 3-D).

    ``"auto"`` is ``"depth_slices"`` for 3-D convolutions when JAX's default backend
    (``jax.default_backend()``, read at trace time) is the CPU, and ``"native"`` otherwise
    (GPU/TPU, where cuDNN/XLA's 3-D convolutions are fast). 2-D convolutions are always native.

    Example:
      >>> resolve_conv_impl("depth_slices", 2)
      'native'
    """
    _check_choice("conv_impl", conv_impl, CONV_IMPLS)
    if conv_impl == "im2col":
        return "im2col"
    if ndim != 3:
        return "native"
    if conv_impl == "auto":
        return "depth_slices" if jax.default_backend() == "cpu" else "native"
    return conv_impl


def _same_padding(n: int, k: int, s: int) -> tuple[int, int, int]:
    """``(out, pad_lo, pad_hi)`` of XLA's ``"SAME"`` padding along one axis."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def _conv_native(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, ...]) -> jnp.ndarray:
    spec = "NHWC" if x.ndim == 4 else "NDHWC"
    return lax.conv_general_dilated(
        x, kernel, strides, "SAME", dimension_numbers=(spec, spec[1:-1] + "IO", spec)
    )


def _conv_depth_slices(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """3-D ``"SAME"`` convolution as ``sum_t conv2d(depth slices for tap t, kernel[t])``."""
    b, d, h, w, c = x.shape
    k = kernel.shape[0]
    out_d, lo, hi = _same_padding(d, k, stride)
    xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
    out = None
    for t in range(k):
        # output depth o reads padded input depth o * stride + t
        sl = lax.slice_in_dim(xp, t, t + (out_d - 1) * stride + 1, stride, axis=1)
        y = _conv_native(sl.reshape(b * out_d, h, w, c), kernel[t], (stride, stride))
        out = y if out is None else out + y
    return out.reshape(b, out_d, *out.shape[1:])


def _conv_im2col(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """``"SAME"`` convolution as one matmul: the ``prod(K)`` shifted (strided) views of the
    padded input stacked on channels, ``[B, *S_out, prod(K) * Cin] @ [prod(K) * Cin, Cout]``."""
    spatial, ks = x.shape[1:-1], kernel.shape[:-2]
    pads, outs = [(0, 0)], []
    for n, k in zip(spatial, ks):
        out, lo, hi = _same_padding(n, k, stride)
        pads.append((lo, hi))
        outs.append(out)
    xp = jnp.pad(x, [*pads, (0, 0)])
    views = []
    for taps in itertools.product(*(range(k) for k in ks)):
        idx = tuple(slice(t, t + (o - 1) * stride + 1, stride) for t, o in zip(taps, outs))
        views.append(xp[(slice(None), *idx, slice(None))])
    patches = jnp.concatenate(views, axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def conv_nd(
    x: jnp.ndarray, kernel: jnp.ndarray, *, strides: int = 1, conv_impl: str = "auto"
) -> jnp.ndarray:
    """``"SAME"``-padded convolution of ``x [B, *S, Cin]`` with ``kernel [*K, Cin, Cout]``.

    ``conv_impl`` (see :func:`resolve_conv_impl`): ``"native"`` is
    ``lax.conv_general_dilated`` (what ``nn.Conv`` runs); ``"depth_slices"`` computes a 3-D
    convolution with ``kd`` depth taps as the sum over taps ``t`` of a 2-D convolution of the
    depth slices ``x[:, o * stride + t - pad]`` (reshaped to ``[B * D_out, H, W, Cin]``) with
    ``kernel[t]`` -- the same sum, reordered, so it agrees with ``"native"`` to float rounding
    (forward and gradients), including stride 2 and odd sizes. Measured on a 2-core CPU
    (``64^3``, 32 -> 32 channels): ~1.8x faster forward, ~1.5x forward+backward at stride 1,
    ~8x forward+backward at stride 2 (XLA-CPU's strided 3-D conv backward is very slow).
    Folding the taps into the input channels (one 2-D conv on ``k * Cin`` channels) or into
    the output channels (one conv to ``k * Cout``, then shift-and-add) was measured too: no
    faster overall and more memory (see ``benchmarks/train_step.py``). ``"im2col"`` stacks
    the ``prod(K)`` shifted views of the input on channels and runs one matmul (``prod(K)``
    times the input's memory): under ``jax.vmap`` with a batched kernel (one network per
    region, :class:`~jrs_jax.nets.RegionRegistrationNets`) it is a batched matmul, where the
    native path becomes a grouped convolution whose CPU backward is ~20x slower.

    Example:
      >>> x = jnp.ones((1, 4, 4, 4, 2))
      >>> conv_nd(x, jnp.ones((3, 3, 3, 2, 1)), conv_impl="depth_slices")[0, 1, 1, 1, 0]
      Array(54., dtype=float32)
    """
    ndim = x.ndim - 2
    impl = resolve_conv_impl(conv_impl, ndim)
    if impl == "native":
        return _conv_native(x, kernel, (strides,) * ndim)
    if impl == "im2col":
        return _conv_im2col(x, kernel, strides)
    return _conv_depth_slices(x, kernel, strides)


class Conv(nn.Module, kw_only=True):
    """``nn.Conv`` with ``"SAME"`` padding and a choice of 3-D algorithm (``conv_impl``).

    Parameters are ``kernel [*(kernel_size,) * D, Cin, features]`` and ``bias [features]``,
    created exactly as ``nn.Conv`` creates them (same names, shapes, initialisers), so
    parameters are interchangeable with ``nn.Conv`` and between ``conv_impl`` values.
    ``conv_impl``: ``"auto"`` (default: depth slices for 3-D on the CPU backend, native
    elsewhere), ``"native"`` or ``"depth_slices"``; see :func:`conv_nd`. 2-D is always native.

    Shapes: ``[B, *S, Cin] -> [B, *ceil(S / strides), features]``.

    Example:
      >>> conv = Conv(features=4, conv_impl="depth_slices")
      >>> x = jnp.zeros((1, 6, 6, 6, 2))
      >>> params = conv.init(jax.random.key(0), x)
      >>> params["params"]["kernel"].shape, conv.apply(params, x).shape
      ((3, 3, 3, 2, 4), (1, 6, 6, 6, 4))
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    conv_impl: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(x)
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (self.kernel_size,) * ndim + (x.shape[-1], self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_nd(x, kernel, strides=self.strides, conv_impl=self.conv_impl)
        if bias is not None:
            y = y + bias
        return y


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
    """``num_convs`` x (conv ``3^D`` -> norm -> LeakyReLU(0.2) [-> dropout]).

    Convolutions are :class:`Conv` (parameters as ``nn.Conv``), ``conv_impl`` chooses the 3-D
    algorithm (``"auto"``: depth slices on CPU, native elsewhere). ``dropout_rate > 0`` adds
    ``nn.Dropout(dropout_rate)`` after each activation, active only when the call has a
    ``"dropout"`` rng (see the module docstring); ``0`` (default) builds no dropout layer.

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
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        spatial_rank(x)
        if self.num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {self.num_convs}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        for i in range(self.num_convs):
            x = Conv(
                features=self.features,
                kernel_size=self.kernel,
                strides=self.strides if i == 0 else 1,
                conv_impl=self.conv_impl,
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
            if self.dropout_rate > 0:
                deterministic = not self.has_rng("dropout")
                x = nn.Dropout(self.dropout_rate, name=f"dropout{i}")(x, deterministic)
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
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_rate: float = 0.0

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
            conv_impl=self.conv_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dropout_rate=self.dropout_rate,
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
