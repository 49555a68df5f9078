"""Separable filters over the spatial axes of channels-last arrays ``[B, *S, C]``.

Each filter is applied one axis at a time as a sum of shifted slices (a stencil), which XLA
fuses into elementwise loops; on CPU this is much faster than a dense 3-D convolution.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_choice

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
    taps = tuple(float(w) for w in np.asarray(taps, dtype=np.float64).ravel())
    axis = axis % x.ndim
    lo = (len(taps) - 1) // 2
    if padding == "zeros":
        return _correlate_zeros(x, taps, axis, lo)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, len(taps) - 1 - lo)
    xp = jnp.pad(x, pad, mode=_PAD_MODES[padding])
    return _correlate_valid(xp, taps, axis, x.shape[axis])


def _correlate_valid(xp, taps, axis, n):
    """``out[i] = sum_t taps[t] * xp[i + t]`` for ``i < n``: a sum of shifted slices."""
    out = None
    for t, w in enumerate(taps):
        if w == 0.0:
            continue
        term = jax.lax.slice_in_dim(xp, t, t + n, axis=axis)
        term = term if w == 1.0 else term * jnp.asarray(w, xp.dtype)
        out = term if out is None else out + term
    if out is None:
        return jnp.zeros((*xp.shape[:axis], n, *xp.shape[axis + 1 :]), xp.dtype)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _correlate_zeros(x, taps, axis, lo):
    """Zero-padded correlation with ``lo`` taps before the centre.

    Its transpose is the zero-padded correlation with the reversed taps (and ``k - 1 - lo``
    taps before the centre); written as a custom VJP because XLA-CPU differentiates the
    pad-and-slice form ~9x slower than it runs it.
    """
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, len(taps) - 1 - lo)
    return _correlate_valid(jnp.pad(x, pad), taps, axis, x.shape[axis])


def _correlate_zeros_fwd(x, taps, axis, lo):
    return _correlate_zeros(x, taps, axis, lo), None


def _correlate_zeros_bwd(taps, axis, lo, _, g):
    return (_correlate_zeros(g, taps[::-1], axis, len(taps) - 1 - lo),)


_correlate_zeros.defvjp(_correlate_zeros_fwd, _correlate_zeros_bwd)


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
    check_choice("padding", padding, tuple(_PAD_MODES))
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    axes = _spatial_axes(x)
    sizes = tuple(int(k) for k in _per_axis(size, len(axes)))
    # lax.reduce_window: one pass per axis; forward and backward are both fast on XLA-CPU.
    widths = [(0, 0)] * x.ndim
    window = [1] * x.ndim
    for ax, k in zip(axes, sizes):
        widths[ax] = ((k - 1) // 2, k - 1 - (k - 1) // 2)
    if padding != "zeros":
        x = jnp.pad(x, widths, mode=_PAD_MODES[padding])
    for ax, k in zip(axes, sizes):
        window[ax] = k
        pad_ax = [(0, 0)] * x.ndim
        if padding == "zeros":
            pad_ax[ax] = widths[ax]
        x = jax.lax.reduce_window(
            x, np.zeros((), x.dtype), jax.lax.add, tuple(window), (1,) * x.ndim, pad_ax
        )
        window[ax] = 1
    if normalize:
        x = x / jnp.asarray(float(np.prod(sizes)), x.dtype)
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


def otsu_threshold(x: jnp.ndarray, *, bins: int = 256, mask: jnp.ndarray | None = None):
    """Otsu's threshold of each example of a batch (``skimage.filters.threshold_otsu``'s).

    Shape rule: axis 0 is the batch and every other axis holds one example's voxels, so
    ``x`` may be ``[B, *S]`` or ``[B, *S, C]`` (all channels pooled: use ``C = 1`` for one
    intensity image); a single image ``[*S]`` is ``x[None]``. Returns float ``[B]``.

    Per example, exactly scikit-image's definition for float images: a histogram of ``bins``
    equal bins over ``[min, max]`` of the example (``numpy.histogram``; the maximum falls in
    the last bin), bin centres ``c``, ``w1 = cumsum(counts)``, ``w2`` the reverse cumsum,
    ``m1 = cumsum(counts c) / w1``, ``m2`` the reverse analogue, between-class variance
    ``w1[:-1] w2[1:] (m1[:-1] - m2[1:])^2``, threshold ``c[argmax]`` (the first maximum; the
    foreground is ``x > threshold``, as in scikit-image). Integer inputs are cast to float
    (scikit-image bins integer images by integer values instead). A constant example (or one
    voxel) returns that constant; an example whose ``mask`` is empty returns NaN.

    Jittable (``bins`` static). The histogram counts are exact integers and the rest is
    computed in the input's float precision (float32 by default), so against a float64
    reference the threshold is the same bin unless two bins' variances tie to ~1e-6.
    No gradient flows through the threshold (its input passes ``jax.lax.stop_gradient``): it
    is piecewise constant in ``x``, so it can be computed inside a loss, e.g. to binarise a
    target, without a spurious gradient.

    Args:
      x: ``[B, ...]`` intensities.
      bins: number of histogram bins (static, ``>= 2``).
      mask: optional bool array of ``x``'s shape (or ``x``'s shape without a trailing
        channel axis of size 1); only voxels where it is true enter the histogram, min and max.

    Returns:
      ``[B]`` thresholds, in the float dtype of ``x`` (float32 for integer inputs).
    """
    bins = int(bins)
    if bins < 2:
        raise ValueError(f"bins must be >= 2; got {bins}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have a batch axis: [B, ...] (a single image: x[None])")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    x = jax.lax.stop_gradient(x)
    b = x.shape[0]
    if mask is None:
        m = jnp.ones(x.shape, bool)
    else:
        m = jnp.asarray(mask).astype(bool)
        if m.shape != x.shape and (*m.shape, 1) == x.shape:
            m = m[..., None]
        if m.shape != x.shape:
            raise ValueError(f"mask must have x's shape {x.shape}; got {m.shape}")
    flat, m = x.reshape(b, -1), m.reshape(b, -1)
    return jax.vmap(functools.partial(_otsu_one, bins=bins))(flat, m)


def _otsu_one(v: jnp.ndarray, m: jnp.ndarray, *, bins: int) -> jnp.ndarray:
    """Otsu's threshold of the voxels ``v[m]`` (1-D arrays)."""
    dtype = v.dtype
    lo = jnp.min(jnp.where(m, v, jnp.inf))
    hi = jnp.max(jnp.where(m, v, -jnp.inf))
    width = hi - lo
    safe = jnp.where(width > 0, width, jnp.ones((), dtype))
    # numpy.histogram's equal bins: edges lo + (hi - lo) k / bins; index floor((v - lo) /
    # (hi - lo) * bins), corrected by one where rounding put a value across its edge.
    edges = lo + safe * (jnp.arange(bins + 1, dtype=dtype) / bins)
    idx = jnp.floor((v - lo) / safe * bins).astype(jnp.int32)
    idx = jnp.clip(idx, 0, bins - 1)
    idx = jnp.where(v < edges[idx], idx - 1, idx)
    idx = jnp.where((v >= edges[idx + 1]) & (idx != bins - 1), idx + 1, idx)
    idx = jnp.clip(idx, 0, bins - 1)
    counts = jnp.zeros((bins,), dtype).at[idx].add(m.astype(dtype))
    centers = (edges[:-1] + edges[1:]) / 2
    w1 = jnp.cumsum(counts)
    w2 = jnp.cumsum(counts[::-1])[::-1]
    s1 = jnp.cumsum(counts * centers)
    s2 = jnp.cumsum((counts * centers)[::-1])[::-1]
    m1 = s1 / jnp.where(w1 > 0, w1, 1)
    m2 = s2 / jnp.where(w2 > 0, w2, 1)
    # the minimum lies in bin 0 and the maximum in the last bin, so w1 > 0 and w2[1:] > 0
    # wherever skimage's means are used (the guards only keep 0 / 0 of masked-out examples
    # out of the arithmetic).
    var12 = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    t = centers[jnp.argmax(var12)]
    t = jnp.where(width > 0, t, lo)
    return jnp.where(jnp.any(m), t, jnp.asarray(jnp.nan, dtype))
