"""Image similarity losses for registration: MSE, L1, (local) NCC, mutual information, SSIM.

Every loss takes images ``[B, *S, C]`` (channels last, ``S`` 2-D or 3-D unless stated otherwise),
returns **per-example values** ``[B]`` (the caller takes the batch mean) and is "lower is better":
similarities are negated (``-NCC``, ``-MI``) or subtracted from one (``1 - SSIM``). Arrays are
positional, hyper-parameters keyword-only and static (they may change the trace). Computation
is done in at least float32 (bf16/f16 inputs are upcast; float64 stays float64), and all losses
are free of NaN, with finite gradients, on constant and all-zero images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jrs_jax.spatial.filters import box_filter, filter_1d

from .._checks import check_choice
from ._reduce import as_float, masked_mean, per_example_mean, voxel_mask

__all__ = ["l1", "local_ncc", "mse", "mutual_information", "ncc", "ssim"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _pair(a, b, *, spatial: bool = False):
    """Check shapes, cast both to the compute dtype."""
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; got {a.shape} and {b.shape}")
    if spatial:
        if a.ndim not in (4, 5):
            raise ValueError(
                "images must have shape [B, *S, C] with 2 or 3 spatial axes (channels last); got "
                f"shape {a.shape}"
            )
    elif a.ndim < 2:
        raise ValueError(f"images must have shape [B, ...]; got shape {a.shape}")
    dt = jnp.result_type(as_float(a), as_float(b))
    return a.astype(dt), b.astype(dt)


# --------------------------------------------------------------------------------------------
# MSE / L1
# --------------------------------------------------------------------------------------------


def _masked_mean(err: jnp.ndarray, mask) -> jnp.ndarray:
    """Per-example mean of ``err [B, *S, C]`` over voxels weighted by ``mask``."""
    return masked_mean(err, None if mask is None else voxel_mask(mask, err))


def mse(a, b, *, mask=None) -> jnp.ndarray:
    """Mean squared error per example (lower is better).

    ``MSE = sum_{x,c} m(x) (a(x,c) - b(x,c))^2 / sum_{x,c} m(x)``, with ``m = 1`` without mask;
    an empty mask gives 0 (not NaN).

    Args:
      a, b: ``[B, ...]`` (usually ``[B, *S, C]``).
      mask: optional voxel weights ``[B, *S]``, ``[B, *S, 1]`` or ``[B, *S, C]`` (binary or soft).

    Returns:
      ``[B]``.

    Example:
      >>> mse(jnp.zeros((2, 4, 4, 1)), jnp.ones((2, 4, 4, 1)))  # -> [1., 1.]

    Reference: VoxelMorph's ``MSE`` (image_sigma = 1), per example.
    """
    a, b = _pair(a, b)
    return _masked_mean(jnp.square(a - b), mask)


def l1(a, b, *, mask=None) -> jnp.ndarray:
    """Mean absolute error per example (lower is better).

    ``L1 = sum_{x,c} m(x) |a(x,c) - b(x,c)| / sum_{x,c} m(x)``; an empty mask gives 0.

    Args:
      a, b: ``[B, ...]`` (usually ``[B, *S, C]``).
      mask: optional voxel weights ``[B, *S]``, ``[B, *S, 1]`` or ``[B, *S, C]``.

    Returns:
      ``[B]``.

    Example:
      >>> l1(jnp.zeros((2, 4, 4, 1)), jnp.full((2, 4, 4, 1), -2.0))  # -> [2., 2.]

    Reference: the usual mean absolute error (``torch.nn.L1Loss`` per example).
    """
    a, b = _pair(a, b)
    return _masked_mean(jnp.abs(a - b), mask)


# --------------------------------------------------------------------------------------------
# global NCC
# --------------------------------------------------------------------------------------------


def ncc(a, b, *, eps: float = 1e-5) -> jnp.ndarray:
    """Global normalised cross-correlation loss ``-NCC`` per example (lower is better).

    Over all voxels and channels of one example (``N`` values)::

        a' = a - mean(a),  b' = b - mean(b)
        NCC = mean(a' b') / sqrt(max(mean(a'^2), eps) * max(mean(b'^2), eps))

    so ``NCC`` is Pearson's correlation in ``[-1, 1]`` (signed, not squared) whenever both
    variances exceed ``eps``; a constant image gives ``NCC = 0``.

    Args:
      a, b: ``[B, ...]``.
      eps: lower clamp of each variance (in intensity units squared).

    Returns:
      ``[B]``: ``-NCC``, in ``[-1, 1]``; ``-1`` for ``b = alpha * a + beta`` with ``alpha > 0``,
      ``+1`` with ``alpha < 0``.

    Example:
      >>> x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
      >>> ncc(x, 3.0 * x + 1.0)  # -> [-1., -1.]

    Reference: Pearson's correlation coefficient over the whole image (the global counterpart
    of :func:`local_ncc`); ``eps`` clamps the variances as MONAI's LNCC ``smooth_dr`` does.
    """
    a, b = _pair(a, b)
    bsz = a.shape[0]
    a = a.reshape(bsz, -1)
    b = b.reshape(bsz, -1)
    a = a - jnp.mean(a, axis=1, keepdims=True)
    b = b - jnp.mean(b, axis=1, keepdims=True)
    cov = jnp.mean(a * b, axis=1)
    var_a = jnp.maximum(jnp.mean(a * a, axis=1), eps)
    var_b = jnp.maximum(jnp.mean(b * b, axis=1), eps)
    return -cov * jax.lax.rsqrt(var_a * var_b)


# --------------------------------------------------------------------------------------------
# local NCC
# --------------------------------------------------------------------------------------------

_LNCC_KERNELS = ("box", "gaussian")
_LNCC_CONVENTIONS = ("monai", "voxelmorph")


def _lncc_taps(window: int, kernel: str, sigma) -> np.ndarray:
    if kernel == "box":
        return np.ones(window)
    lo = (window - 1) // 2  # tap t sits at offset t - lo (filter_1d's centring)
    s = window / 3.0 if sigma is None else float(sigma)
    if s <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    t = np.arange(window, dtype=np.float64) - lo
    return np.exp(-0.5 * (t / s) ** 2)  # peak 1, not normalised (MONAI's gaussian kernel)


def _lncc_inputs(a, b, *, window, kernel, convention):
    """Checked ``(a, b, window)`` of the local NCC (the options named in the errors)."""
    check_choice("kernel", kernel, _LNCC_KERNELS)
    check_choice("convention", convention, _LNCC_CONVENTIONS)
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    a, b = _pair(a, b, spatial=True)
    return a, b, int(window)


def _window_sums(stack: jnp.ndarray, *, window: int, kernel: str, taps) -> jnp.ndarray:
    """Window sums of every channel of ``stack`` in one separable pass (zero padding,
    "same" size): the box filter, or ``taps`` along each spatial axis."""
    if kernel == "box":
        return box_filter(stack, window)
    for ax in range(1, stack.ndim - 1):
        stack = filter_1d(stack, taps, ax)
    return stack


def _local_cc(a, b, *, window, kernel, sigma, squared, eps, convention) -> jnp.ndarray:
    """Per-voxel local (squared) correlation map: ``[B, *S, C]`` (``[B, *S, 1]`` for voxelmorph)."""
    a, b, window = _lncc_inputs(a, b, window=window, kernel=kernel, convention=convention)
    nd = a.ndim - 2
    c = a.shape[-1]
    taps = _lncc_taps(window, kernel, sigma)

    # all five window sums in one separable pass (zero padding, "same" size)
    stack = jnp.concatenate([a, b, a * a, b * b, a * b], axis=-1)
    sums = _window_sums(stack, window=window, kernel=kernel, taps=taps)
    s_a, s_b, s_aa, s_bb, s_ab = jnp.split(sums, 5, axis=-1)
    vol = float(np.sum(taps)) ** nd  # "number of voxels" in the window (sum of weights)
    if convention == "voxelmorph":  # one window over all channels
        s_a, s_b, s_aa, s_bb, s_ab = (
            jnp.sum(s, axis=-1, keepdims=True) for s in (s_a, s_b, s_aa, s_bb, s_ab)
        )
        vol = vol * c
    return _cc_from_sums(
        s_a, s_b, s_aa, s_bb, s_ab, vol, squared=squared, eps=eps, convention=convention
    )


def _cc_from_sums(s_a, s_b, s_aa, s_bb, s_ab, count, *, squared, eps, convention):
    """The local correlation from window sums and the window count ``W`` (a number, or a
    map for the masked form): ``cross = S[ab] − S[a] S[b] / W``, clamped variances, squared
    or signed (:func:`local_ncc`)."""
    mean_a = s_a / count
    mean_b = s_b / count
    cross = s_ab - mean_b * s_a
    var_a = jnp.maximum(s_aa - mean_a * s_a, eps)
    var_b = jnp.maximum(s_bb - mean_b * s_b, eps)
    if convention == "voxelmorph":
        cross = jnp.maximum(cross, eps)
        if squared:
            return (cross / var_a) * (cross / var_b)
        return cross / jnp.sqrt(var_a * var_b + eps)
    if squared:
        return cross * cross / (var_a * var_b)
    return cross * jax.lax.rsqrt(var_a * var_b)


#: Lower clamp of the masked window count ``W = S[m]`` (in voxels): where the window holds
#: (almost) no masked voxel every window sum is (almost) 0 and the clamp keeps ``S[ma]^2 / W``
#: and its gradient finite; it changes a variance by at most ``_MIN_COUNT * max a^2``.
_MIN_COUNT = 1e-6


def _masked_local_cc(a, b, mask, *, window, kernel, sigma, squared, eps, convention):
    """Masked counterpart of :func:`_local_cc`: ``(cc [B, *S, C] (voxelmorph: [B, *S, 1]),
    mask [B, *S, 1])``, the window statistics taken over the masked voxels only."""
    a, b, window = _lncc_inputs(a, b, window=window, kernel=kernel, convention=convention)
    m = voxel_mask(mask, a, per_channel=False)  # [B, *S, 1], a's dtype
    c = a.shape[-1]
    taps = _lncc_taps(window, kernel, sigma)

    ma, mb = m * a, m * b
    stack = jnp.concatenate([m, ma, mb, ma * a, mb * b, ma * b], axis=-1)
    sums = _window_sums(stack, window=window, kernel=kernel, taps=taps)
    s_m = sums[..., :1]  # W = S[m]: the (weighted) number of masked voxels in the window
    s_a, s_b, s_aa, s_bb, s_ab = jnp.split(sums[..., 1:], 5, axis=-1)
    if convention == "voxelmorph":  # one window over all channels
        s_a, s_b, s_aa, s_bb, s_ab = (
            jnp.sum(s, axis=-1, keepdims=True) for s in (s_a, s_b, s_aa, s_bb, s_ab)
        )
        s_m = s_m * c
    count = jnp.maximum(s_m, _MIN_COUNT)
    cc = _cc_from_sums(
        s_a, s_b, s_aa, s_bb, s_ab, count, squared=squared, eps=eps, convention=convention
    )
    return cc, m


def local_ncc(
    a,
    b,
    *,
    window: int = 9,
    kernel: str = "box",
    sigma: float | None = None,
    squared: bool = True,
    eps: float = 1e-5,
    convention: str = "monai",
    mask=None,
) -> jnp.ndarray:
    """Local (windowed) normalised cross-correlation loss ``-mean(LNCC)`` (lower is better).

    Window sums ``S[.]`` use the separable kernel ``w`` of ``window`` taps per axis with zero
    padding ("same" size; a ones kernel for ``kernel="box"``), as in VoxelMorph and MONAI. With
    ``W = (sum w)^ndim`` the window "volume" (``window^ndim`` for the box)::

        cross = S[ab] - S[a] S[b] / W
        var_a = max(S[aa] - S[a]^2 / W, eps),   var_b = max(S[bb] - S[b]^2 / W, eps)
        squared=True:  cc = cross^2 / (var_a var_b)          in [0, 1]
        squared=False: cc = cross / sqrt(var_a var_b)        in [-1, 1]
        loss = -mean_{x, c} cc

    ``eps`` is a clamp on the (unnormalised, window-summed) variances only, so a constant
    patch gives ``cc = 0`` (not NaN) and an anti-correlated window counts like a correlated
    one for the squared form. This is ``convention="monai"`` (the default): for
    ``kernel="box"`` it equals MONAI's ``LocalNormalizedCrossCorrelationLoss`` (kernel_type
    ``"rectangular"``, ``smooth_nr=0``, ``smooth_dr=eps``), and for ``kernel="gaussian"`` with
    ``sigma=None`` MONAI's ``"gaussian"`` kernel (``sigma = window / 3``, taps
    ``exp(-t^2 / 2 sigma^2)``, ``|t| <= window // 2``). MONAI averages over channels
    separately; it returns the batch mean, ours is per example.

    ``convention="voxelmorph"`` reproduces VoxelMorph's (TF) ``NCC``, which differs in three
    ways: a window spans all channels jointly (``W = window^ndim * C``, one map per voxel), the
    cross term is clamped too (``cross = max(cross, eps)``, so anti-correlated windows score
    ``~0``, and the signed form is never negative) and the signed form is
    ``cross / sqrt(var_a var_b + eps)``. For a single channel and the squared form the two
    conventions differ only on windows with ``cross < eps``.

    **Mask.** With ``mask`` ``m`` (``[B, *S]`` or ``[B, *S, 1]``, weights in ``[0, 1]``, binary
    or soft; shared by the channels) the window statistics are taken over the masked voxels
    only, each voxel weighted by ``m`` (times the kernel weight), and ``W`` becomes the
    effective window count at each voxel::

        W = max(S[m], 1e-6)
        cross = S[mab] - S[ma] S[mb] / W
        var_a = max(S[maa] - S[ma]^2 / W, eps),   var_b = max(S[mbb] - S[mb]^2 / W, eps)
        cc as above (squared or signed)
        loss = -sum_{x, c} m(x) cc(x, c) / sum_{x, c} m(x)      (0 if the mask is empty)

    The window sums ``S[.]`` are the same zero-padded filters, so a voxel outside the image
    has ``m = 0`` and does not count either: ``W`` is the number of masked voxels of the
    window *inside the image*. Consequently the content under ``m = 0`` is ignored entirely,
    in its own windows and its neighbours' (the loss and its gradient do not depend on it),
    and the border behaves differently from ``mask=None``: a mask of ones gives the unmasked
    ``cc`` map on voxels whose window lies inside the image, but at the border the unmasked
    form counts the zero padding as samples (``W = (sum w)^ndim`` always) while the masked
    one does not (so, e.g., ``b = alpha a + beta`` scores ``cc = 1`` up to the border with a
    mask, not without). ``convention="voxelmorph"`` with a mask is the analogous pooled form
    (sums over the channels, ``W = C S[m]``, ``cross`` clamped, the signed form ``cross /
    sqrt(var_a var_b + eps)``). ``mask=None`` is exactly the unmasked function above.

    Defaults: ``window=9`` as VoxelMorph (MONAI's default ``kernel_size`` is 3, pass
    ``window=3`` for it), box kernel, squared CC. Computed in at least float32.

    Args:
      a, b: ``[B, *S, C]`` with 2 or 3 spatial axes.
      window: window size in voxels (odd for a centred window; even sizes put the extra tap
        after the centre).
      kernel: ``"box"`` or ``"gaussian"`` window weights.
      sigma: Gaussian standard deviation in voxels (default ``window / 3``); ignored for box.
      squared: squared CC (VoxelMorph/MONAI default) or signed CC.
      eps: clamp of the window variances (and, for voxelmorph, of ``cross``; see above).
      convention: ``"monai"`` (default) or ``"voxelmorph"``.
      mask: optional voxel weights ``[B, *S]`` / ``[B, *S, 1]`` in ``[0, 1]`` (see above).

    Returns:
      ``[B]``: ``-mean(cc)`` (with a mask: the mask-weighted mean), ``-1`` at best.

    Example:
      >>> x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 16, 1))
      >>> local_ncc(x, 2.0 * x)  # -> [-1., -1.]

    Reference: Avants et al., "Symmetric diffeomorphic image registration with cross-correlation"
    (MedIA 2008); Balakrishnan et al., VoxelMorph (TMI 2019).
    """
    if mask is not None:
        cc, m = _masked_local_cc(
            a,
            b,
            mask,
            window=window,
            kernel=kernel,
            sigma=sigma,
            squared=squared,
            eps=eps,
            convention=convention,
        )
        return -masked_mean(cc, m)
    cc = _local_cc(
        a,
        b,
        window=window,
        kernel=kernel,
        sigma=sigma,
        squared=squared,
        eps=eps,
        convention=convention,
    )
    return -per_example_mean(cc)


# --------------------------------------------------------------------------------------------
# mutual information
# --------------------------------------------------------------------------------------------


def _parzen_weights(x, centres, preterm, minval, maxval):
    """``x``: ``[..., n]`` -> Gaussian Parzen weights ``[..., n, bins]`` normalised over bins."""
    x = jnp.clip(x, minval, maxval)
    logits = -preterm * jnp.square(x[..., None] - centres)
    return jax.nn.softmax(logits, axis=-1)  # = exp / sum(exp), stable for tiny sigmas


def _joint_hist(a, b, *, centres, preterm, minval, maxval, chunk_size):
    """Joint Parzen histogram ``[B, bins, bins]`` (sums of weights, not yet divided by N)."""
    hp = jax.lax.Precision.HIGHEST
    if chunk_size is None or chunk_size >= a.shape[1]:
        wa = _parzen_weights(a, centres, preterm, minval, maxval)
        wb = _parzen_weights(b, centres, preterm, minval, maxval)
        return jnp.einsum("bni,bnj->bij", wa, wb, precision=hp)

    bsz, n = a.shape
    k = int(chunk_size)
    nc = -(-n // k)
    pad = nc * k - n
    valid = jnp.arange(nc * k).reshape(nc, k) < n  # [nc, k]
    a = jnp.pad(a, ((0, 0), (0, pad))).reshape(bsz, nc, k).swapaxes(0, 1)
    b = jnp.pad(b, ((0, 0), (0, pad))).reshape(bsz, nc, k).swapaxes(0, 1)

    @jax.checkpoint  # keep only the chunk inputs for the backward pass, not the weights
    def chunk_hist(ac, bc, vc):
        wa = _parzen_weights(ac, centres, preterm, minval, maxval)
        wb = _parzen_weights(bc, centres, preterm, minval, maxval)
        wa = wa * vc[None, :, None].astype(wa.dtype)
        return jnp.einsum("bni,bnj->bij", wa, wb, precision=hp)

    def body(acc, xs):
        return acc + chunk_hist(*xs), None

    nbins = centres.shape[0]
    init = jnp.zeros((bsz, nbins, nbins), a.dtype)
    joint, _ = jax.lax.scan(body, init, (a, b, valid))
    return joint


def mutual_information(
    a,
    b,
    *,
    num_bins: int = 23,
    sigma_ratio: float = 0.5,
    minval: float = 0.0,
    maxval: float = 1.0,
    normalized: bool = False,
    eps: float = 1e-7,
    chunk_size: int | None = None,
) -> jnp.ndarray:
    """Global mutual information loss ``-MI`` (or ``-NMI``) with Gaussian Parzen windows.

    Semantics of MONAI's ``GlobalMutualInformationLoss`` (gaussian kernel): over all ``N``
    voxels and channels of one example, intensities are clipped to ``[minval, maxval]``, bin
    centres are ``c_i = linspace(minval, maxval, num_bins)``, ``sigma = sigma_ratio * (c_1 -
    c_0)`` and each voxel gets weights ``w_i(x) = exp(-(x - c_i)^2 / (2 sigma^2))`` normalised
    to sum 1 over the bins. Then::

        p_ab[i, j] = (1/N) sum_n w_i(a_n) w_j(b_n)          (joint, [bins, bins])
        p_a[i] = sum_j p_ab[i, j],  p_b[j] = sum_i p_ab[i, j]
        MI  = sum_ij p_ab log((p_ab + eps) / (p_a p_b + eps))
        H_a = -sum_i p_a log(p_a + eps),  H_ab = -sum_ij p_ab log(p_ab + eps)
        NMI = (H_a + H_b) / max(H_ab, eps)            (Studholme et al. 1999, in [1, 2])

    MONAI writes ``log((p_ab + eps) / (p_a p_b + eps) + eps)`` (one more ``eps`` in the log,
    ``smooth_nr = smooth_dr = 1e-7``); the two agree to ~1e-7. Because the Parzen joint keeps
    the marginals exactly, ``MI(a, a) = 2 H_a - H_aa <= H_a`` and ``NMI(a, a) = 2 H_a / H_aa
    <= 2``, with equality in the hard-binning limit (small ``sigma_ratio``).

    Memory: the voxels x bins x bins tensor is never formed: the per-image weights ``[B, N,
    bins]`` are contracted into ``p_ab`` by a batched matmul. At 160 x 192 x 224 (N = 6,881,280
    voxels, 1 channel) and 23 bins in float32, each image's weights take N * 23 * 4 B = 633 MB,
    both 1.27 GB per example (1.18 GiB), against 23^2 * 4 B = 2.1 kB for the joint; reverse-mode
    differentiation keeps about as much again as residuals. ``chunk_size=k`` accumulates the
    joint over chunks of ``k`` voxels with ``lax.scan`` under ``jax.checkpoint``, bounding the
    extra memory to ``2 * B * k * bins * 4`` bytes (12 MB for k = 65536, B = 1) in the forward
    and backward pass, at the cost of recomputing the weights in the backward pass.

    Args:
      a, b: ``[B, ...]`` images (any layout; all voxels and channels of an example pooled).
      num_bins: number of histogram bins.
      sigma_ratio: Parzen standard deviation as a fraction of the bin spacing.
      minval, maxval: intensity range; values outside are clipped (zero gradient there).
      normalized: return ``-NMI`` instead of ``-MI``.
      eps: smoothing inside the logs and clamp of ``H_ab`` (see above).
      chunk_size: voxels per chunk (``None``: all at once).

    Returns:
      ``[B]``: ``-MI`` (``<= 0``) or ``-NMI`` (in ``[-2, -1]``).

    Example:
      >>> x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
      >>> mutual_information(x, x)  # -> about [-2.04, -2.06]  (-(2 H(x) - H(x, x)))

    Reference: Mattes/Viola-Wells Parzen MI as in DeepReg and MONAI's
    ``GlobalMutualInformationLoss`` (Guo, MEng thesis MIT 2019, Sec. 3.1); NMI: Studholme, Hill &
    Hawkes, Pattern Recognition 32 (1999).
    """
    if int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    if not maxval > minval:
        raise ValueError(f"need maxval > minval, got minval={minval}, maxval={maxval}")
    if sigma_ratio <= 0:
        raise ValueError(f"sigma_ratio must be > 0, got {sigma_ratio}")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    a, b = _pair(a, b)
    bsz = a.shape[0]
    a = a.reshape(bsz, -1)
    b = b.reshape(bsz, -1)
    n = a.shape[1]
    num_bins = int(num_bins)
    centres_np = np.linspace(minval, maxval, num_bins)
    sigma = sigma_ratio * float(np.mean(np.diff(centres_np)))
    preterm = 1.0 / (2.0 * sigma * sigma)
    centres = jnp.asarray(centres_np, a.dtype)

    joint = _joint_hist(
        a,
        b,
        centres=centres,
        preterm=jnp.asarray(preterm, a.dtype),
        minval=minval,
        maxval=maxval,
        chunk_size=chunk_size,
    )
    p_ab = joint / n
    p_a = jnp.sum(p_ab, axis=2)  # [B, bins]
    p_b = jnp.sum(p_ab, axis=1)
    if not normalized:
        papb = p_a[:, :, None] * p_b[:, None, :]
        mi = jnp.sum(p_ab * (jnp.log(p_ab + eps) - jnp.log(papb + eps)), axis=(1, 2))
        return -mi
    h_a = -jnp.sum(p_a * jnp.log(p_a + eps), axis=1)
    h_b = -jnp.sum(p_b * jnp.log(p_b + eps), axis=1)
    h_ab = -jnp.sum(p_ab * jnp.log(p_ab + eps), axis=(1, 2))
    return -(h_a + h_b) / jnp.maximum(h_ab, eps)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

_SSIM_KERNELS = ("gaussian", "box")


def ssim(
    a,
    b,
    *,
    window: int = 7,
    kernel: str = "gaussian",
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Structural-similarity loss ``1 - mean(SSIM)`` per example (lower is better).

    With normalised window weights (Gaussian of ``window`` taps and std ``sigma``, or a box),
    local statistics ``mu = w * x``, ``s_a = w * a^2 - mu_a^2``, ``s_ab = w * (ab) - mu_a mu_b``
    and ``C1 = (k1 data_range)^2``, ``C2 = (k2 data_range)^2``::

        SSIM = (2 mu_a mu_b + C1) (2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (s_a + s_b + C2))
        loss = 1 - mean_{x, c} SSIM

    over the "valid" positions only (windows entirely inside the image; no padding), with the
    population covariance: exactly MONAI's ``SSIMLoss``/``SSIMMetric`` (whose default window is
    11) and pytorch-msssim. Loss is 0 for identical images, in ``[0, 2]``. ``C1, C2 > 0`` keep it
    finite on constant images.

    Args:
      a, b: ``[B, *S, C]`` with 2 or 3 spatial axes, every spatial size ``>= window``.
      window: window size in voxels.
      kernel: ``"gaussian"`` or ``"box"``.
      sigma: Gaussian standard deviation in voxels (ignored for box).
      data_range: intensity range (max - min) of the images.
      k1, k2: stability constants.

    Returns:
      ``[B]``.

    Example:
      >>> x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
      >>> ssim(x, x)  # -> [0., 0.]

    Reference: Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility
    to structural similarity", IEEE TIP 13(4), 2004.
    """
    check_choice("kernel", kernel, _SSIM_KERNELS)
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    window = int(window)
    if isinstance(data_range, (int, float)) and not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    a, b = _pair(a, b, spatial=True)
    spatial = a.shape[1:-1]
    if min(spatial) < window:
        raise ValueError(f"every spatial size must be >= window={window}; got shape {a.shape}")
    if kernel == "gaussian":
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        t = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
        taps = np.exp(-0.5 * (t / sigma) ** 2)
    else:
        taps = np.ones(window)
    taps = taps / taps.sum()

    lo = (window - 1) // 2
    hi = window - 1 - lo
    stack = jnp.concatenate([a, b, a * a, b * b, a * b], axis=-1)
    for ax in range(1, a.ndim - 1):
        stack = filter_1d(stack, taps, ax)
        n = stack.shape[ax]
        stack = jax.lax.slice_in_dim(stack, lo, n - hi, axis=ax)  # keep valid positions
    mu_a, mu_b, m_aa, m_bb, m_ab = jnp.split(stack, 5, axis=-1)
    s_a = m_aa - mu_a * mu_a
    s_b = m_bb - mu_b * mu_b
    s_ab = m_ab - mu_a * mu_b
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * s_ab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (s_a + s_b + c2)
    return 1.0 - per_example_mean(num / den)
