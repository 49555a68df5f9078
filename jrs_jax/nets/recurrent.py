"""Convolutional GRU (2-D / 3-D) for sequences of feature maps or images."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .blocks import Conv, spatial_rank

__all__ = ["ConvGRU", "ConvGRUCell"]

Dtype = Any


class ConvGRUCell(nn.Module, kw_only=True):
    """Convolutional GRU cell: the GRU's dense maps replaced by ``kernel^D`` convolutions.

    With ``*`` a conv ``kernel^D`` (SAME padding) and ``⊙`` the elementwise product::

        z  = sigmoid(W_z * x + U_z * h + b_z)          # update ("keep") gate
        r  = sigmoid(W_r * x + U_r * h + b_r)          # reset gate
        n  = tanh(W_n * x + U_n * (r ⊙ h) + b_n)       # candidate state
        h' = z ⊙ h + (1 - z) ⊙ n

    ``z = 1`` keeps the previous state; this is the convention of Cho et al. (2014) and of
    :class:`flax.linen.GRUCell` (Ballas et al. write ``z`` for ``1 - z``). Parameters:
    ``input`` (conv on ``x`` to ``3F`` channels ``[z | r | n]``, with the biases), ``hidden``
    (conv on ``h`` to ``2F`` channels ``[z | r]``, no bias) and ``candidate`` (conv on
    ``r ⊙ h`` to ``F``, no bias). The convolutions run in ``dtype`` (``conv_impl`` picks the
    3-D algorithm, see :class:`blocks.Conv`); the gates and the state are float32 (a bf16
    state would drift over long sequences).

    Shapes: ``h [B, *S, F], x [B, *S, C] -> (h' [B, *S, F], h' [B, *S, F])`` (float32), the
    ``(carry, output)`` convention of Flax cells and :func:`flax.linen.scan`.

    Example:
      >>> cell = ConvGRUCell(features=4)
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> h = jnp.zeros((2, 8, 8, 4))
      >>> h_new, y = cell.apply(cell.init(jax.random.key(0), h, x), h, x)
      >>> h_new.shape, h_new.dtype
      ((2, 8, 8, 4), dtype('float32'))

    Reference: Ballas, Yao, Pal, Courville, "Delving Deeper into Convolutional Networks for
    Learning Video Representations", ICLR 2016 (ConvGRU); Shi et al., "Convolutional LSTM
    Network", NeurIPS 2015; Cho et al., "Learning Phrase Representations using RNN
    Encoder-Decoder", EMNLP 2014 (GRU).
    """

    features: int
    kernel: int = 3
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jnp.ndarray, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        spatial_rank(x, name="x")
        f = self.features
        if f < 1:
            raise ValueError(f"features must be >= 1, got {f}")
        expected = (*x.shape[:-1], f)
        if tuple(h.shape) != expected:
            raise ValueError(
                f"hidden state h must have shape [B, *S, features] = {expected} for x of shape "
                f"{tuple(x.shape)}; got {tuple(h.shape)}"
            )

        def conv(out, name, use_bias):
            return Conv(
                features=out,
                kernel_size=self.kernel,
                use_bias=use_bias,
                conv_impl=self.conv_impl,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        h = h.astype(jnp.float32)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        xi = conv(3 * f, "input", True)(x).astype(jnp.float32)
        hh = conv(2 * f, "hidden", False)(h).astype(jnp.float32)
        z = jax.nn.sigmoid(xi[..., :f] + hh[..., :f])
        r = jax.nn.sigmoid(xi[..., f : 2 * f] + hh[..., f:])
        n = jnp.tanh(xi[..., 2 * f :] + conv(f, "candidate", False)(r * h).astype(jnp.float32))
        h_new = z * h + (1.0 - z) * n
        return h_new, h_new


class ConvGRU(nn.Module, kw_only=True):
    """A :class:`ConvGRUCell` scanned over the time axis of a sequence (``nn.scan``).

    The cell's parameters (``cell``) are shared over time. The initial state is zeros
    unless ``h0`` is given. See :class:`ConvGRUCell` for the gate equations.

    Shapes: ``xs [B, T, *S, C]`` (2 or 3 spatial axes), ``h0 [B, *S, F] | None`` ->
    ``(hs [B, T, *S, F], h_last [B, *S, F])`` (float32) with ``hs[:, t]`` the state after
    step ``t`` and ``h_last = hs[:, -1]``.

    Example:
      >>> gru = ConvGRU(features=4)
      >>> xs = jnp.ones((2, 5, 8, 8, 1))
      >>> hs, h_last = gru.apply(gru.init(jax.random.key(0), xs), xs)
      >>> hs.shape, h_last.shape
      ((2, 5, 8, 8, 4), (2, 8, 8, 4))

    Reference: Ballas et al., "Delving Deeper into Convolutional Networks for Learning Video
    Representations", ICLR 2016; Shi et al., "Convolutional LSTM Network", NeurIPS 2015.
    """

    features: int
    kernel: int = 3
    unroll: int = 1
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, xs: jnp.ndarray, h0: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        if xs.ndim not in (5, 6):
            raise ValueError(
                "xs must have shape [B, T, *S, C] with 2 or 3 spatial axes (channels last); "
                f"got shape {tuple(xs.shape)}"
            )
        if xs.shape[1] < 1:
            raise ValueError(f"xs needs at least one time step; got shape {tuple(xs.shape)}")
        expected = (xs.shape[0], *xs.shape[2:-1], self.features)
        if h0 is None:
            h0 = jnp.zeros(expected, jnp.float32)
        elif tuple(h0.shape) != expected:
            raise ValueError(
                f"h0 must have shape [B, *S, features] = {expected} for xs of shape "
                f"{tuple(xs.shape)}; got {tuple(h0.shape)}"
            )
        scan = nn.scan(
            ConvGRUCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
            unroll=self.unroll,
        )
        cell = scan(
            features=self.features,
            kernel=self.kernel,
            conv_impl=self.conv_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="cell",
        )
        h_last, hs = cell(h0.astype(jnp.float32), xs)
        return hs, h_last
