"""Region-of-interest layer: soft centroids, fixed-size crops around a centre, paste back.

A two-stage (coarse-to-fine) pipeline locates a structure on a coarse prediction, crops a
fixed-size window around it and pastes the fine result back::

    c, _ = soft_centroid(probs[..., k:k + 1])           # [B, 1, D] voxels
    crop, start = crop_around(image, c[:, 0], size=(64, 64, 32))
    full = paste_back(fine(crop), start, shape=image.shape[1:-1])

Parameter-free and jit-able (the crop ``size`` is static, the window position is traced).
Differentiable where a gradient means something: :func:`soft_centroid` with respect to the
weights, :func:`crop_around` with respect to the image (not the centre: an integer window
position has no gradient, so the centre is wrapped in ``stop_gradient``), :func:`paste` /
:func:`paste_back` with respect to the crop (and the canvas).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["crop_around", "paste", "paste_back", "soft_centroid"]


def _as_float(x) -> jnp.ndarray:
    """At least float32 (bf16/f16/int -> float32, float64 stays float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_spatial(x, name: str) -> int:
    """Check ``x`` is ``[B, *S, C]`` with 2 or 3 spatial axes; return ``D``."""
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name} must have shape [B, *S, C] with 2 or 3 spatial axes (channels last); got "
            f"shape {tuple(x.shape)}"
        )
    return x.ndim - 2


def _sizes(size, ndim: int) -> tuple[int, ...]:
    """``size`` (an int or one per spatial axis) as ``ndim`` positive Python ints."""
    sizes = (size,) * ndim if np.ndim(size) == 0 else tuple(size)
    if len(sizes) != ndim:
        raise ValueError(f"size must be an int or have {ndim} values; got {size!r}")
    out = []
    for s in sizes:
        if isinstance(s, bool) or int(s) != s or s < 1:
            raise ValueError(f"size must hold positive ints; got {size!r}")
        out.append(int(s))
    return tuple(out)


def _check_fits(sizes: Sequence[int], spatial: Sequence[int]) -> None:
    for ax, (k, n) in enumerate(zip(sizes, spatial)):
        if k > n:
            raise ValueError(
                f"crop size {k} along spatial axis {ax} exceeds the image extent {n} (size "
                f"{tuple(sizes)}, spatial shape {tuple(spatial)})"
            )


# --------------------------------------------------------------------------------------------
# soft centroid
# --------------------------------------------------------------------------------------------


def soft_centroid(
    weights, *, spacing: float | Sequence[float] | jnp.ndarray | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Weighted centroid of every channel of non-negative weights (soft masks, probabilities).

    .. math::

        m_k = \\sum_x w_k(x), \\qquad c_k = h \\odot \\frac{\\sum_x w_k(x)\\, x}{m_k}

    with ``x`` the voxel index along the array axes and ``h`` the spacing (1 by default). A
    channel with zero mass gets ``c_k = 0`` and ``m_k = 0`` (no NaN; finite gradients).
    Differentiable with respect to ``weights``.

    Args:
      weights: ``[B, *S, K]`` non-negative weights, 2 or 3 spatial axes (a one-hot map for hard
        labels: ``jax.nn.one_hot(labels, K)``).
      spacing: voxel size (scalar or one value per spatial axis): centroids in mm; ``None``:
        voxels.

    Returns:
      ``(centroids [B, K, D], mass [B, K])`` in at least float32.

    Example:
      >>> w = jnp.zeros((1, 5, 6, 1)).at[0, 1:4, 2, 0].set(1.0)
      >>> soft_centroid(w)[0]
      Array([[[2., 2.]]], dtype=float32)
    """
    w = _as_float(weights)
    ndim = _check_spatial(w, "weights")
    spatial = w.shape[1:-1]
    dtype = w.dtype
    h = jnp.ones((ndim,), dtype) if spacing is None else jnp.asarray(spacing, dtype)
    h = jnp.broadcast_to(h, (ndim,)) if h.ndim == 0 else h
    if h.shape != (ndim,):
        raise ValueError(
            f"spacing must be a scalar or have {ndim} values; got shape {tuple(h.shape)}"
        )
    axes = tuple(range(1, ndim + 1))
    mass = jnp.sum(w, axis=axes)  # [B, K]
    ok = mass > 0
    den = jnp.where(ok, mass, 1.0)
    cs = []
    for i, n in enumerate(spatial):
        shape = [1] * (ndim + 2)
        shape[i + 1] = n
        coord = jnp.arange(n, dtype=dtype).reshape(shape) * h[i]
        cs.append(jnp.where(ok, jnp.sum(w * coord, axis=axes) / den, 0.0))
    return jnp.stack(cs, axis=-1), mass


# --------------------------------------------------------------------------------------------
# crop / paste
# --------------------------------------------------------------------------------------------


def _window_start(centre, sizes: Sequence[int], spatial: Sequence[int], bsz: int) -> jnp.ndarray:
    """int32 ``[B, D]`` start of the ``sizes`` window centred at ``centre``, clamped inside."""
    ndim = len(sizes)
    c = jax.lax.stop_gradient(_as_float(centre))
    if c.shape == (ndim,):
        c = jnp.broadcast_to(c, (bsz, ndim))
    if c.shape != (bsz, ndim):
        raise ValueError(
            f"centre must have shape [B, D] = {(bsz, ndim)} (or [D]); got {tuple(c.shape)}"
        )
    half = jnp.asarray([(k - 1) / 2.0 for k in sizes], c.dtype)
    start = jnp.floor(c - half + 0.5)  # round half up: the window whose middle is nearest
    hi = jnp.asarray([n - k for n, k in zip(spatial, sizes)], c.dtype)
    return jnp.clip(start, 0.0, hi).astype(jnp.int32)


def crop_around(image, centre, *, size: int | Sequence[int]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Fixed-size crop of every example around its own (rounded) centre.

    Per example and spatial axis ``i`` (``k_i = size[i]``, ``n_i`` the image extent)::

        start_i = clip(floor(centre_i - (k_i - 1) / 2 + 1/2), 0, n_i - k_i)
        crop = image[b, start_0 : start_0 + k_0, ..., :]

    i.e. the window whose middle is nearest to ``centre`` (for an integer centre: the centre
    voxel is the crop's middle for odd ``k``; for even ``k`` it sits at index ``k/2 - 1``, the
    extra voxel after it, as :func:`~jrs_jax.spatial.box_filter` does), shifted to lie inside
    the image when it would cross the border. ``lax.dynamic_slice`` under ``vmap``, so the
    position is traced (one compile for all centres).

    Differentiable with respect to ``image``. ``centre`` is **not** differentiated: it goes
    through ``stop_gradient`` (the window position is an integer).

    Args:
      image: ``[B, *S, C]`` with 2 or 3 spatial axes.
      centre: ``[B, D]`` (or ``[D]``, shared) float voxel coordinates along the array axes,
        e.g. ``soft_centroid(...)[0][:, k]``.
      size: crop size (static): an int or one per spatial axis, each ``<= n_i`` (else
        ``ValueError`` naming the axis).

    Returns:
      ``(crop [B, *size, C], start int32 [B, D])``; ``start`` feeds :func:`paste` /
      :func:`paste_back`.

    Example:
      >>> x = jnp.arange(2 * 6 * 7 * 1.0).reshape(2, 6, 7, 1)
      >>> crop, start = crop_around(x, jnp.array([[2.0, 3.0], [0.0, 6.0]]), size=3)
      >>> start
      Array([[1, 2],
             [0, 4]], dtype=int32)
    """
    image = jnp.asarray(image)
    ndim = _check_spatial(image, "image")
    spatial = image.shape[1:-1]
    sizes = _sizes(size, ndim)
    _check_fits(sizes, spatial)
    start = _window_start(centre, sizes, spatial, image.shape[0])
    c = image.shape[-1]

    def one(img, st):
        return jax.lax.dynamic_slice(img, (*st, jnp.zeros((), jnp.int32)), (*sizes, c))

    return jax.vmap(one)(image, start), start


def paste(crop, start, canvas) -> jnp.ndarray:
    """``canvas`` with the window at ``start`` replaced by ``crop`` (per example).

    ``out[b, start_b + y] = crop[b, y]`` for ``y`` in the crop, ``canvas[b, x]`` elsewhere
    (``lax.dynamic_update_slice`` under ``vmap``). ``start`` as returned by
    :func:`crop_around` lies inside the canvas; a start that does not is clamped by XLA so the
    window does. Differentiable with respect to ``crop`` and ``canvas``.

    Args:
      crop: ``[B, *k, C]``.
      start: integer ``[B, D]`` (or ``[D]``, shared) window start.
      canvas: ``[B, *S, C]`` with ``k_i <= S_i``; same ``B`` and ``C`` as ``crop``.

    Returns:
      ``[B, *S, C]`` in the common dtype of ``crop`` and ``canvas``.

    Example:
      >>> out = paste(jnp.ones((1, 2, 2, 1)), jnp.array([[1, 3]]), jnp.zeros((1, 4, 6, 1)))
      >>> out[0, :, :, 0].astype(int)
      Array([[0, 0, 0, 0, 0, 0],
             [0, 0, 0, 1, 1, 0],
             [0, 0, 0, 1, 1, 0],
             [0, 0, 0, 0, 0, 0]], dtype=int32)
    """
    crop = jnp.asarray(crop)
    canvas = jnp.asarray(canvas)
    ndim = _check_spatial(canvas, "canvas")
    if (
        crop.ndim != canvas.ndim
        or crop.shape[0] != canvas.shape[0]
        or (crop.shape[-1] != canvas.shape[-1])
    ):
        raise ValueError(
            f"crop [B, *k, C] and canvas [B, *S, C] must share B, C and the number of axes; got "
            f"{tuple(crop.shape)} and {tuple(canvas.shape)}"
        )
    _check_fits(crop.shape[1:-1], canvas.shape[1:-1])
    start = jnp.asarray(start)
    if not jnp.issubdtype(start.dtype, jnp.integer):
        raise ValueError(f"start must be an integer array; got dtype {start.dtype}")
    bsz = canvas.shape[0]
    if start.shape == (ndim,):
        start = jnp.broadcast_to(start, (bsz, ndim))
    if start.shape != (bsz, ndim):
        raise ValueError(f"start must have shape [B, D] = {(bsz, ndim)}; got {start.shape}")
    start = start.astype(jnp.int32)
    dtype = jnp.result_type(crop, canvas)

    def one(cv, cr, st):
        return jax.lax.dynamic_update_slice(cv, cr, (*st, jnp.zeros((), jnp.int32)))

    return jax.vmap(one)(canvas.astype(dtype), crop.astype(dtype), start)


def paste_back(crop, start, *, shape: Sequence[int], fill: float = 0.0) -> jnp.ndarray:
    """``crop`` placed at ``start`` on a ``fill``-valued canvas of spatial shape ``shape``.

    ``paste(crop, start, full([B, *shape, C], fill))``: e.g. a fine segmentation of a crop
    returned to the full image grid (``fill`` outside the window). Differentiable with respect
    to ``crop``.

    Args:
      crop: ``[B, *k, C]``.
      start: integer ``[B, D]`` window start (from :func:`crop_around`).
      shape: spatial shape ``S`` of the full image (static, ``D`` ints, ``k_i <= S_i``).
      fill: value outside the window.

    Returns:
      ``[B, *shape, C]`` in the crop's dtype.

    Example:
      >>> x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 1))
      >>> crop, start = crop_around(x, jnp.array([[4.0, 4.0]]), size=3)
      >>> full = paste_back(crop, start, shape=(8, 8))  # x in [3:6, 3:6], 0 elsewhere
    """
    crop = jnp.asarray(crop)
    ndim = _check_spatial(crop, "crop")
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim:
        raise ValueError(f"shape must have {ndim} values (the spatial shape); got {shape}")
    canvas = jnp.full((crop.shape[0], *shape, crop.shape[-1]), fill, crop.dtype)
    return paste(crop, start, canvas)
