"""Separable filters over the spatial axes of channels-last arrays ``[B, *S, C]``.

Each filter is applied one axis at a time as a sum of shifted slices (a stencil), which XLA
fuses into elementwise loops; on CPU this is much faster than a dense 3-D convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from ._checks import check_choice

# our name -> numpy.pad mode; the scipy.ndimage equivalent is given in the docstrings.
_PAD_MODES = {
    "zeros": "constant",  # scipy "constant" (cval 0)
    "edge": "edge",  # scipy "nearest"
    "symmetric": "symmetric",  # scipy "reflect"
    "reflect": "reflect",  # scipy "mirror"
    "wrap": "wrap",  # scipy "wrap"
}


def filter_1d(x: jnp.ndarray, taps, axis: int, *, padding: str = "zeros") -> jnp.ndarray:
    """Correlate ``x`` with the 1-D kernel ``taps`` along ``axis`` ("same" output size).

    ``out[i] = sum_t taps[t] * x[i + t - (len(taps) - 1) // 2]``, with out-of-range samples
    given by ``padding``: ``"zeros"``, ``"edge"``, ``"symmetric"``, ``"reflect"``, ``"wrap"``
    (scipy.ndimage's ``constant``, ``nearest``, ``reflect``, ``mirror``, ``wrap``).

    Args:
      x: any array.
      taps: static 1-D kernel (numpy / list of floats).
      axis: axis to filter along.
      padding: boundary handling.

    Returns:
      Array of the same shape as ``x``; the dtype of ``x`` if floating, else float32.
    """
    check_choice("padding", padding, tuple(_PAD_MODES))
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)  # fractional taps would truncate to 0 in integer arithmetic
    taps = np.asarray(taps, dtype=np.float64)
    k = taps.shape[0]
    lo = (k - 1) // 2
    hi = k - 1 - lo
    axis = axis % x.ndim
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, hi)
    xp = jnp.pad(x, pad, mode=_PAD_MODES[padding])
    n = x.shape[axis]
    out = None
    for t, w in enumerate(taps):
        if w == 0.0:
            continue
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(t, t + n)
        term = xp[tuple(sl)] if w == 1.0 else xp[tuple(sl)] * jnp.asarray(w, x.dtype)
        out = term if out is None else out + term
    if out is None:
        return jnp.zeros_like(x)
    return out


def _spatial_axes(x: jnp.ndarray) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1))


def _per_axis(value, n: int) -> tuple:
    if np.ndim(value) == 0:
        return (float(value),) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"expected a scalar or {n} values, got {value!r}")
    return value


def box_filter(
    x: jnp.ndarray, size: int | Sequence[int], *, normalize: bool = False, padding: str = "zeros"
) -> jnp.ndarray:
    """Box (moving-window) sum or mean over the spatial axes of ``x``.

    ``out(p) = sum_{|q - p|_inf <= r} x(q)`` for odd ``size = 2r + 1`` (an even size puts the
    extra tap after the centre), zero padding by default: exactly a "same" convolution with a
    ones kernel, as VoxelMorph's and MONAI's local NCC compute window sums.

    Args:
      x: ``[B, *S, C]``.
      size: window size, an int or one per spatial axis.
      normalize: divide by the number of taps (window mean) instead of summing.
      padding: ``"zeros"`` (default) or another mode of :func:`filter_1d`.

    Returns:
      ``[B, *S, C]``.
    """
    axes = _spatial_axes(x)
    sizes = _per_axis(size, len(axes))
    for ax, k in zip(axes, sizes):
        taps = np.full(int(k), 1.0 / int(k) if normalize else 1.0)
        x = filter_1d(x, taps, ax, padding=padding)
    return x


def gaussian_kernel_1d(sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian taps of radius ``int(truncate * sigma + 0.5)`` (as scipy)."""
    if sigma <= 0:
        return np.ones((1,))
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_filter(
    x: jnp.ndarray,
    sigma: float | Sequence[float],
    *,
    truncate: float = 4.0,
    padding: str = "zeros",
) -> jnp.ndarray:
    """Separable Gaussian smoothing over the spatial axes of ``x``.

    Taps match ``scipy.ndimage.gaussian_filter`` (same radius rule), so
    ``gaussian_filter(x, s, padding="symmetric")`` equals scipy's default ``mode="reflect"``
    and ``padding="zeros"`` equals ``mode="constant"``.

    Args:
      x: ``[B, *S, C]``.
      sigma: standard deviation in voxels, scalar or per spatial axis (0 skips an axis).
      truncate: kernel radius in standard deviations.
      padding: boundary handling (``"zeros"`` by default).

    Returns:
      ``[B, *S, C]``.
    """
    axes = _spatial_axes(x)
    sigmas = _per_axis(sigma, len(axes))
    for ax, s in zip(axes, sigmas):
        if s > 0:
            x = filter_1d(x, gaussian_kernel_1d(s, truncate=truncate), ax, padding=padding)
    return x
