"""Host-side evaluation metrics with Learn2Reg semantics (numpy + scipy.ndimage).

Everything here runs on the host, accepts numpy or JAX arrays (converted with ``np.asarray``) and
returns numpy arrays or Python floats. Metrics work on one case at a time unless a function says
it also takes a leading batch axis.

Conventions
-----------
* Label maps are integer (or integer-valued float, as loaded by nibabel) arrays ``[*S]``, 2-D or
  3-D. Label ``0`` is background and is never scored unless listed in ``labels``.
* Displacement fields are ``[*S, D]`` (or ``[B, *S, D]`` where noted) in **voxel units along the
  array axes** ("ij"): component ``k`` moves along array axis ``k``; the warp is the pull-back
  ``I(x + u(x))``, so the transformation is ``phi(x) = x + u(x)``.
* Absent labels (Learn2Reg, ``evaluation/utils.py`` of MDL-UzL/L2R): a label missing from either
  map scores ``NaN`` for Dice, HD95 and ASSD, and means over labels are ``nanmean``.
* Multi-label maps (:func:`dice_per_channel`, :func:`mean_dice_multilabel`) are binary
  ``[*S, K]`` arrays whose channels may overlap; each channel is scored on its own.

References
----------
* Learn2Reg evaluation: https://github.com/MDL-UzL/L2R (``evaluation/utils.py``,
  ``evaluation/evaluation.py``).
* Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy",
  2021 (the DeepMind ``surface-distance`` package; robust Hausdorff definition).
* Liu et al., "On finite difference Jacobian computation in deformable image registration",
  IJCV 2024 (non-diffeomorphic volume; as used by Learn2Reg 2024 LUMIR).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from ._checks import check_label_map

__all__ = [
    "assd",
    "boundary_band",
    "component_counts",
    "contact_count",
    "dice_per_channel",
    "dice_per_label",
    "endpoint_error",
    "folding_fraction",
    "hd95",
    "jacobian_determinant",
    "jacobian_determinant_l2r",
    "mean_dice",
    "mean_dice_multilabel",
    "non_diffeomorphic_volume",
    "sdlogj",
    "spurious_components",
    "summarize_jacobian",
]

_SCHEMES = ("central", "l2r")


# --------------------------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------------------------


def _label_key(value) -> int | float:
    """Python key for a label value: ``int`` when integer-valued, else ``float``."""
    v = float(value)
    return int(v) if v.is_integer() else v


def _checked_pair(pred, target, ranks: tuple[int, int], what: str):
    """``(pred, target)`` as arrays of one shape with a rank in ``ranks``."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.ndim not in ranks:
        raise ValueError(f"{what}; got shape {pred.shape}")
    return pred, target


def _label_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    return _checked_pair(pred, target, (2, 3), "label maps must be 2-D or 3-D [*S]")


def _resolve_labels(pred: np.ndarray, target: np.ndarray, labels) -> list:
    if labels is None:
        present = np.union1d(np.unique(pred), np.unique(target))
        return [_label_key(v) for v in present if v != 0]
    return [_label_key(v) for v in np.atleast_1d(np.asarray(labels)).ravel()]


def _binary_dice(p: np.ndarray, t: np.ndarray, missing: str) -> float:
    """Dice of two boolean masks: NaN when both are empty; when only one is, NaN
    (``missing="nan"``) or 0 (``"zero"``)."""
    n_p, n_t = int(p.sum()), int(t.sum())
    if n_p == 0 and n_t == 0:
        return float("nan")
    if n_p == 0 or n_t == 0:
        return float("nan") if missing == "nan" else 0.0
    return float(2.0 * np.logical_and(p, t).sum() / (n_p + n_t))


def dice_per_label(
    pred, target, *, labels: Sequence[int] | None = None, missing: str = "nan"
) -> dict:
    """Dice overlap per label, ``NaN`` where the label is absent from either map (Learn2Reg).

    ``Dice_l = 2 |P_l ∩ T_l| / (|P_l| + |T_l|)`` with ``P_l = (pred == l)`` and
    ``T_l = (target == l)``. If ``P_l`` or ``T_l`` is empty the score is ``NaN`` (not 0),
    following Learn2Reg's ``compute_dice``, so a label that does not exist in a case does not
    drag the case mean down.
    (Learn2Reg tests presence on the fixed and the *unwarped* moving map; with only
    ``pred``/``target`` at hand we test presence on these two, which differs only when a label
    present in the moving image is warped entirely out of view — scored ``NaN`` here, 0 there.)

    Args:
      pred: label map ``[*S]`` (e.g. the warped moving segmentation), numpy or JAX.
      target: label map ``[*S]`` (e.g. the fixed segmentation).
      labels: labels to score; ``None`` = union of the non-zero labels present in either map.
      missing: ``"nan"`` (Learn2Reg) or ``"zero"``: a label present in only one of the two maps
        scores 0 (``NaN`` only when absent from both). Use ``"zero"`` to score predictions,
        where a structure the model failed to predict must count as a miss.

    Returns:
      ``{label: dice}`` (Python floats in [0, 1] or ``NaN``), ordered as ``labels`` (ascending when
      inferred).

    Example:
      >>> a = np.array([[1, 1, 0], [0, 2, 2]])
      >>> b = np.array([[1, 0, 0], [0, 2, 2]])
      >>> {k: round(v, 3) for k, v in dice_per_label(a, b).items()}
      {1: 0.667, 2: 1.0}

    Reference: MDL-UzL/L2R ``evaluation/utils.py::compute_dice``.
    """
    if missing not in ("nan", "zero"):
        raise ValueError(f"missing must be 'nan' or 'zero'; got {missing!r}")
    pred, target = _label_pair(pred, target)
    out = {}
    for lab in _resolve_labels(pred, target, labels):
        out[lab] = _binary_dice(pred == lab, target == lab, missing)
    return out


def _nanmean(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def mean_dice(pred, target, *, labels: Sequence[int] | None = None, missing: str = "nan") -> float:
    """Mean Dice over labels, ignoring ``NaN`` (absent) labels — Learn2Reg's ``np.nanmean``.

    Args:
      pred: label map ``[*S]``.
      target: label map ``[*S]``.
      labels: labels to average; ``None`` = union of non-zero labels present in either map.
      missing: as :func:`dice_per_label` (``"zero"``: a label missing from one map scores 0).

    Returns:
      Python float; ``NaN`` if no label could be scored.

    Example:
      >>> round(mean_dice(np.array([[1, 1, 0], [0, 2, 2]]), np.array([[1, 0, 0], [0, 2, 2]])), 4)
      0.8333

    Reference: MDL-UzL/L2R ``evaluation/utils.py::compute_dice``.
    """
    return _nanmean(dice_per_label(pred, target, labels=labels, missing=missing).values())


def _multilabel_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    what = "multi-label maps must be [*S, K] with 2 or 3 spatial axes"
    return _checked_pair(pred, target, (3, 4), what)


def dice_per_channel(
    pred, target, *, channels: Sequence[int] | None = None, missing: str = "nan"
) -> dict:
    """Dice per channel of multi-label binary maps ``[*S, K]`` (channels may overlap).

    Channel ``k`` is scored on its own: ``Dice_k = 2 |P_k ∩ T_k| / (|P_k| + |T_k|)`` with
    ``P_k = pred[..., k] > 0`` (likewise ``T_k``), with the ``NaN`` / ``missing`` semantics of
    :func:`dice_per_label` (``"nan"``: a channel empty in either map scores ``NaN``;
    ``"zero"``: empty in one only scores 0; empty in both is always ``NaN``). Every channel
    is scored, including 0 (multi-label maps have no background channel unless you give one).

    Args:
      pred, target: ``[*S, K]`` binary (or boolean) maps, numpy or JAX.
      channels: channels to score; ``None`` = all ``K``.
      missing: ``"nan"`` (Learn2Reg) or ``"zero"``.

    Returns:
      ``{channel: dice}`` (Python floats or ``NaN``), ordered as ``channels``.

    Example:
      >>> p = np.zeros((2, 2, 2), np.uint8); t = np.zeros((2, 2, 2), np.uint8)
      >>> p[0, :, 0] = 1; t[0, 0, 0] = 1; p[1, 1, 1] = t[1, 1, 1] = 1
      >>> {k: round(v, 3) for k, v in dice_per_channel(p, t).items()}
      {0: 0.667, 1: 1.0}
    """
    if missing not in ("nan", "zero"):
        raise ValueError(f"missing must be 'nan' or 'zero'; got {missing!r}")
    pred, target = _multilabel_pair(pred, target)
    k_all = pred.shape[-1]
    chans = range(k_all) if channels is None else [int(c) for c in np.atleast_1d(channels)]
    out = {}
    for k in chans:
        if not 0 <= k < k_all:
            raise ValueError(f"channel {k} out of range for {k_all} channels")
        out[k] = _binary_dice(pred[..., k] > 0, target[..., k] > 0, missing)
    return out


def mean_dice_multilabel(
    pred, target, *, channels: Sequence[int] | None = None, missing: str = "nan"
) -> float:
    """Mean of :func:`dice_per_channel` over channels, ignoring ``NaN`` (Learn2Reg's
    ``nanmean``); ``NaN`` if no channel could be scored."""
    return _nanmean(dice_per_channel(pred, target, channels=channels, missing=missing).values())


# --------------------------------------------------------------------------------------------
# displacement fields against a ground truth
# --------------------------------------------------------------------------------------------


def endpoint_error(disp, gt_disp, *, mask=None, spacing=None) -> float:
    """Mean endpoint error: mean Euclidean distance between two displacement fields.

    ``EPE = mean_x || s * (u(x) - u_gt(x)) ||_2`` over the voxels ``x`` (of ``mask`` if
    given), with ``s`` the voxel size per array axis (``spacing``: the result in mm) or 1
    (the result in voxels). Both fields are ``[*S, D]`` (or ``[B, *S, D]``: mean over every
    voxel of the batch) in voxels along array axes, on the same grid.

    Args:
      disp: predicted displacement ``[*S, D]`` / ``[B, *S, D]``.
      gt_disp: ground truth, same shape (e.g. ``pair_batch(..., fields=True)["gt_disp"]``).
      mask: optional ``[*S]`` (or ``[B, *S]``) region, non-zero = inside.
      spacing: optional voxel size in mm, one value or ``D`` values.

    Returns:
      Python float (``NaN`` if the mask is empty).

    Example:
      >>> u = np.zeros((4, 4, 2)); g = np.zeros((4, 4, 2)); g[..., 0] = 3; g[..., 1] = 4
      >>> endpoint_error(u, g), endpoint_error(u, g, spacing=(2.0, 1.0))
      (5.0, 7.211102550927978)
    """
    u = np.asarray(disp, np.float64)
    g = np.asarray(gt_disp, np.float64)
    if u.shape != g.shape:
        raise ValueError(f"disp and gt_disp shapes differ: {u.shape} vs {g.shape}")
    ndim = u.shape[-1] if u.ndim else 0
    if ndim not in (2, 3) or u.ndim not in (ndim + 1, ndim + 2):
        raise ValueError(
            f"fields must be [*S, D] or [B, *S, D] with D = len(S) in (2, 3); got {u.shape}"
        )
    scale = np.asarray(_resolve_spacing(spacing, ndim), np.float64)
    err = np.linalg.norm((u - g) * scale, axis=-1)
    if mask is not None:
        m = np.asarray(mask) > 0
        if m.shape != err.shape:
            raise ValueError(f"mask shape {m.shape} does not match the fields' {err.shape}")
        err = err[m]
    return float(err.mean()) if err.size else float("nan")


def boundary_band(regions, *, width: int = 2, batched: bool = False) -> np.ndarray:
    """The voxels within ``width`` voxels of a boundary between two regions of a region map.

    Voxel ``x`` is in the band iff some voxel ``y`` of the map with a different value lies
    within Chebyshev distance ``max_i |x_i - y_i| <= width``; so the band is ``width`` voxels
    deep on each side of every boundary between two different values (0 included: a body
    mask's outline is a boundary), and ``2 * width`` voxels wide across a straight one. The
    image border is not a boundary. ``width = 0`` gives an empty band.

    E.g. the endpoint error of a sliding-motion ground truth, discontinuous where two organs
    slide along each other, in the band and outside it:
    ``endpoint_error(u, gt, mask=band)``, ``endpoint_error(u, gt, mask=~band)``.

    Args:
      regions: integer (or integer-valued) region map ``[*S]``, 2-D or 3-D; with ``batched``
        a batch of maps ``[B, *S]`` (each map on its own).
      width: half-width of the band in voxels (``>= 0``).
      batched: ``regions`` has a leading batch axis.

    Returns:
      bool array of ``regions``' shape.

    Example:
      >>> r = np.zeros((10, 10), int); r[:, 5:] = 1  # a vertical boundary between columns 4, 5
      >>> np.flatnonzero(boundary_band(r, width=2)[0])
      array([3, 4, 5, 6])
    """
    r = np.asarray(regions)
    if isinstance(width, bool) or int(width) != width or width < 0:
        raise ValueError(f"width must be an integer >= 0; got {width!r}")
    width = int(width)
    spatial = r.ndim - int(batched)
    if spatial not in (2, 3):
        raise ValueError(
            f"regions must be [*S]{' with a batch axis [B, *S]' if batched else ''} with "
            f"len(S) in (2, 3); got shape {r.shape}"
            + ("" if batched or r.ndim != 4 else " (pass batched=True for a batch)")
        )
    size = (1,) * int(batched) + (2 * width + 1,) * spatial
    # x is in the band iff its window holds two values (x's own included); mode="nearest"
    # only repeats values already in the window, so the border adds no boundary
    hi = ndimage.maximum_filter(r, size=size, mode="nearest")
    lo = ndimage.minimum_filter(r, size=size, mode="nearest")
    return hi != lo


def contact_count(labels, class_a: int, class_b: int, *, batched: bool = False):
    """Number of face-adjacent voxel pairs with one voxel of class ``a`` and the other of
    class ``b``: the length (2-D, in voxel edges) or area (3-D, in voxel faces) of the contact
    between two structures.

    Neighbours are the face neighbours (4 in 2-D, 6 in 3-D); each unordered pair counts once,
    so the count is symmetric in ``a`` and ``b``, and it is 0 as soon as one voxel of another
    class separates the two structures everywhere. E.g. whether the tongue touches the soft
    palate in a vocal-tract frame (:mod:`jrs_jax.data.speech`), and whether that contact
    survives warping: ``contact_count(warped_labels, 4, 2) > 0``.

    Args:
      labels: integer (or integer-valued) label map ``[*S]``, 2-D or 3-D; with ``batched`` a
        batch of maps ``[B, *S]``.
      class_a, class_b: the two classes (different values).
      batched: ``labels`` has a leading batch axis.

    Returns:
      ``int`` (one map) or int64 ``[B]`` (``batched``).

    Example:
      >>> lab = np.zeros((6, 6), int); lab[1:4, 1:3] = 1; lab[1:4, 3:5] = 2  # shared edge 3
      >>> contact_count(lab, 1, 2)
      3
    """
    lab = np.asarray(labels)
    if int(class_a) == int(class_b):
        raise ValueError(f"class_a and class_b must differ; got {class_a} and {class_b}")
    check_label_map(lab, batched=batched)
    batch = lab if batched else lab[None]
    a, b = batch == class_a, batch == class_b
    count = np.zeros(batch.shape[0], np.int64)
    for ax in range(1, batch.ndim):
        n = batch.shape[ax]
        lo = tuple(slice(0, n - 1) if k == ax else slice(None) for k in range(batch.ndim))
        hi = tuple(slice(1, n) if k == ax else slice(None) for k in range(batch.ndim))
        both = (a[lo] & b[hi]) | (b[lo] & a[hi])
        count += both.reshape(batch.shape[0], -1).sum(1)
    return count if batched else int(count[0])


def component_counts(
    label_map,
    *,
    labels: Sequence[int] | None = None,
    connectivity: int = 1,
    multi_label: bool = False,
) -> dict:
    """Number of connected components of each foreground label (``scipy.ndimage.label``).

    Voxels of one label are connected through the neighbourhood
    ``generate_binary_structure(ndim, connectivity)``: ``connectivity=1`` face neighbours (4 in
    2-D, 6 in 3-D), ``2`` adds edge neighbours (8 in 2-D, 18 in 3-D), ``3`` (3-D) adds the
    corners (26). So two voxels touching only diagonally are two components with
    ``connectivity=1`` and one with ``connectivity=ndim``. A topologically plausible organ is
    one component; more means fragments (e.g. spurious islands of a segmentation or of a
    warped label map).

    Args:
      label_map: integer (or integer-valued) label map ``[*S]``, 2-D or 3-D; with
        ``multi_label`` a binary map ``[*S, K]`` whose channels may overlap (channel ``k`` is
        ``label_map[..., k] > 0``).
      labels: labels (channels, with ``multi_label``) to count; ``None`` = the non-zero
        labels present, ascending (all ``K`` channels with ``multi_label``). A label absent
        from the map counts 0.
      connectivity: ``1 <= connectivity <= ndim`` (see above).
      multi_label: ``label_map`` is a ``[*S, K]`` multi-label map.

    Returns:
      ``{label: count}`` (Python ints), ordered as ``labels``.

    Example:
      >>> lab = np.zeros((5, 6), int); lab[0, 0] = lab[1, 1] = 1; lab[3:, 3:] = 2
      >>> component_counts(lab), component_counts(lab, connectivity=2, labels=[1, 2, 3])
      ({1: 2, 2: 1}, {1: 1, 2: 1, 3: 0})
    """
    lab = np.asarray(label_map)
    if multi_label:
        if lab.ndim not in (3, 4):
            raise ValueError(
                f"a multi-label map must be [*S, K] with 2 or 3 spatial axes; got shape {lab.shape}"
            )
        ndim = lab.ndim - 1
    else:
        ndim = check_label_map(lab, name="label_map")
    if (
        isinstance(connectivity, bool)
        or int(connectivity) != connectivity
        or not (1 <= connectivity <= ndim)
    ):
        raise ValueError(f"connectivity must be an int in [1, {ndim}]; got {connectivity!r}")
    structure = ndimage.generate_binary_structure(ndim, int(connectivity))

    def count(mask: np.ndarray) -> int:
        return int(ndimage.label(mask, structure=structure)[1])

    if multi_label:
        k_all = lab.shape[-1]
        chans = range(k_all) if labels is None else [int(c) for c in np.atleast_1d(labels)]
        out = {}
        for k in chans:
            if not 0 <= k < k_all:
                raise ValueError(f"channel {k} out of range for {k_all} channels")
            out[k] = count(lab[..., k] > 0)
        return out
    if labels is None:
        keys = [_label_key(v) for v in np.unique(lab) if v != 0]
    else:
        keys = [_label_key(v) for v in np.atleast_1d(np.asarray(labels)).ravel()]
    return {k: count(lab == k) for k in keys}


def spurious_components(
    label_map,
    *,
    labels: Sequence[int] | None = None,
    connectivity: int = 1,
    multi_label: bool = False,
) -> dict:
    """Components beyond the main one per label: ``max(count - 1, 0)`` of
    :func:`component_counts` (same arguments); 0 for a label in one piece or absent.

    Example:
      >>> lab = np.zeros((5, 6), int); lab[0, 0] = lab[1, 1] = lab[4, 5] = 1; lab[3:, :2] = 2
      >>> spurious_components(lab, labels=[1, 2, 3])
      {1: 2, 2: 0, 3: 0}
    """
    counts = component_counts(
        label_map, labels=labels, connectivity=connectivity, multi_label=multi_label
    )
    return {k: max(c - 1, 0) for k, c in counts.items()}


# --------------------------------------------------------------------------------------------
# surface distances
# --------------------------------------------------------------------------------------------


def _resolve_spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=np.float64)))
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or any(not s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive values; got {spacing!r}")
    return sp


def _surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour (4-/6-connectivity) outside it.

    Space beyond the array counts as outside, so a mask touching the border has a surface there.
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    inner = mask.copy()
    for ax in range(mask.ndim):
        for off in (-1, 1):
            sl = [slice(1, -1)] * mask.ndim
            sl[ax] = slice(1 + off, padded.shape[ax] - 1 + off)
            inner &= padded[tuple(sl)]
    return mask & ~inner


def _directed_surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(distances from surface(a) to surface(b), from surface(b) to surface(a)) in mm.

    Both masks must be non-empty. The arrays are cropped to the bounding box of ``a | b`` first:
    all surface voxels lie inside it and the EDT gives exact Euclidean distances to a feature set,
    so cropping changes nothing but the cost.
    """
    idx = np.nonzero(a | b)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    a, b = a[box], b[box]
    sa, sb = _surface_voxels(a), _surface_voxels(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def _per_label_surface(
    pred, target, labels, spacing, reduce: Callable[[np.ndarray, np.ndarray], float]
) -> dict:
    pred, target = _label_pair(pred, target)
    sp = _resolve_spacing(spacing, pred.ndim)
    out = {}
    for lab in _resolve_labels(pred, target, labels):
        p = pred == lab
        t = target == lab
        if not p.any() or not t.any():
            out[lab] = float("nan")
            continue
        d_pt, d_tp = _directed_surface_distances(p, t, sp)
        out[lab] = float(reduce(d_pt, d_tp))
    return out


def hd95(
    pred,
    target,
    *,
    labels: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    percentile: float = 95,
) -> dict:
    """Robust (percentile) Hausdorff distance per label, in the units of ``spacing`` (mm).

    ``HD_q = max( P_q{ d(p, ∂T) : p ∈ ∂P }, P_q{ d(t, ∂P) : t ∈ ∂T } )`` — the maximum of the two
    *directed* ``q``-th percentiles, as ``compute_robust_hausdorff`` of DeepMind's
    ``surface-distance`` package (used by Learn2Reg). ``∂X`` is the set of surface voxels of X: a
    voxel of X with at least one **face neighbour (4-connectivity in 2-D, 6-connectivity in 3-D)**
    outside X; space beyond the array counts as outside. ``d`` is the Euclidean distance between
    voxel centres scaled by ``spacing`` (``scipy.ndimage.distance_transform_edt(sampling=...)``).
    Percentiles use ``np.percentile``'s default linear interpolation over voxels (the package
    weights surface elements by their area on a half-voxel-shifted grid, so values can differ
    slightly from it; identical maps give 0 and a pure shift by ``k`` voxels gives
    ``k * spacing[axis]`` for ``percentile=100`` in both). ``percentile=100`` is the classic HD.

    A label absent from either map gives ``NaN`` (Learn2Reg returns NaN for such labels;
    surface-distance itself would return ``inf``).

    Args:
      pred: label map ``[*S]`` (2-D or 3-D).
      target: label map ``[*S]``.
      labels: labels to score; ``None`` = union of non-zero labels present in either map.
      spacing: voxel size per array axis (``len(S)`` values, or one scalar); default all 1.
      percentile: ``q`` in [0, 100].

    Returns:
      ``{label: distance}`` (Python floats or ``NaN``).

    Example:
      >>> a = np.zeros((5, 5), int); a[2, 2] = 1
      >>> b = np.zeros((5, 5), int); b[1:4, 1:4] = 1
      >>> round(hd95(a, b)[1], 4)  # ring corners of b are sqrt(2) from a
      1.4142

    Reference: google-deepmind/surface-distance ``compute_robust_hausdorff``; MDL-UzL/L2R
    ``evaluation/utils.py::compute_hd95``.
    """
    q = float(percentile)
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile!r}")

    def reduce(d_pt, d_tp):
        return max(np.percentile(d_pt, q), np.percentile(d_tp, q))

    return _per_label_surface(pred, target, labels, spacing, reduce)


def assd(
    pred,
    target,
    *,
    labels: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> dict:
    """Average symmetric surface distance per label, in the units of ``spacing`` (mm).

    ``ASSD = ( Σ_{p∈∂P} d(p, ∂T) + Σ_{t∈∂T} d(t, ∂P) ) / ( |∂P| + |∂T| )`` — the mean over the
    union of both directed surface-distance sets. Surface voxels (face connectivity: 4 in 2-D,
    6 in 3-D; outside the array counts as outside) and distances are as in :func:`hd95`. A label
    absent from either map gives ``NaN``.

    Args:
      pred: label map ``[*S]`` (2-D or 3-D).
      target: label map ``[*S]``.
      labels: labels to score; ``None`` = union of non-zero labels present in either map.
      spacing: voxel size per array axis (``len(S)`` values, or one scalar); default all 1.

    Returns:
      ``{label: distance}`` (Python floats or ``NaN``).

    Example:
      >>> a = np.zeros((5, 5), int); a[2, 2] = 1
      >>> b = np.zeros((5, 5), int); b[1:4, 1:4] = 1
      >>> round(assd(a, b)[1], 4)  # (1 + 4*1 + 4*sqrt(2)) / 9
      1.1841

    Reference: Heimann et al., IEEE TMI 2009 (ASSD); surface definition as
    google-deepmind/surface-distance.
    """

    def reduce(d_pt, d_tp):
        return (d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size)

    return _per_label_surface(pred, target, labels, spacing, reduce)


# --------------------------------------------------------------------------------------------
# displacement fields: Jacobians
# --------------------------------------------------------------------------------------------


def _as_fields(disp, *, min_size: int = 2) -> tuple[np.ndarray, bool]:
    """Return ``([B, *S, D] float64, batched)`` from ``[*S, D]`` or ``[B, *S, D]``."""
    u = np.asarray(disp, dtype=np.float64)
    d = u.shape[-1] if u.ndim else 0
    if d not in (2, 3) or u.ndim not in (d + 1, d + 2):
        raise ValueError(
            f"disp must have shape [*S, D] or [B, *S, D] with D = len(S) in (2, 3); "
            f"got shape {u.shape}"
        )
    batched = u.ndim == d + 2
    if not batched:
        u = u[None]
    if min(u.shape[1:-1]) < min_size:
        raise ValueError(f"every spatial size must be >= {min_size}; got {u.shape[1:-1]}")
    return u, batched


def _det(m) -> np.ndarray:
    """Determinant from nested lists ``m[i][j]`` of same-shape arrays (D in {2, 3}).

    Explicit cofactor expansion; avoids materialising a ``[*S, D, D]`` stack for large volumes.
    """
    if len(m) == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def _jacdet_single(u: np.ndarray, scheme: str) -> np.ndarray:
    """``det(I + ∇u)`` for one field ``[*S, D]``; ``grad[..., c, k] = ∂u_c/∂x_k``."""
    d = u.shape[-1]
    if scheme == "central":
        grads = [list(np.gradient(u[..., c], axis=tuple(range(d)))) for c in range(d)]
    else:  # "l2r": correlation with [-0.5, 0, 0.5], zero padding
        taps = np.array([-0.5, 0.0, 0.5])
        grads = [
            [
                ndimage.correlate1d(u[..., c], taps, axis=k, mode="constant", cval=0.0)
                for k in range(d)
            ]
            for c in range(d)
        ]
    for c in range(d):
        grads[c][c] = grads[c][c] + 1.0  # I + grad u, grads[c][k] = du_c/dx_k
    return _det(grads)


def jacobian_determinant_l2r(disp) -> np.ndarray:
    """Learn2Reg's Jacobian determinant map ``det(I + ∇u)`` (full size, no crop).

    Each ``∂u_c/∂x_k`` is the correlation of component ``u_c`` with ``[-0.5, 0, 0.5]`` along array
    axis ``k`` with constant-0 padding (``scipy.ndimage.correlate1d(mode="constant")``), i.e. a
    central difference in the interior and ``±u/2`` at the first/last voxel. As in L2R's
    ``jacobian_determinant``, only ``u`` is differentiated and the identity matrix is added to the
    gradient afterwards (the identity grid is never zero-padded). The zero padding makes the
    outermost voxel layer wrong for any non-zero field, which is why L2R statistics crop
    ``[2:-2]`` on every spatial axis (done by :func:`sdlogj` / :func:`folding_fraction`, not here).
    On ``[1:-1]`` the values equal ``np.gradient``-based ones. Works in 2-D and 3-D.

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]``, voxel units, component k along axis k.

    Returns:
      ``[*S]`` (or ``[B, *S]``) float64 determinant map.

    Example:
      >>> float(jacobian_determinant_l2r(np.zeros((6, 6, 6, 3)))[2:-2, 2:-2, 2:-2].min())
      1.0

    Reference: MDL-UzL/L2R ``evaluation/utils.py::jacobian_determinant``.
    """
    return jacobian_determinant(disp, scheme="l2r")


def jacobian_determinant(disp, *, scheme: str = "central") -> np.ndarray:
    """Per-voxel Jacobian determinant ``det(I + ∇u)`` of ``phi(x) = x + u(x)``.

    ``scheme="central"``: ``np.gradient`` (second-order central differences inside, first-order
    one-sided differences at the array border). ``scheme="l2r"``: Learn2Reg's zero-padded central
    differences (see :func:`jacobian_determinant_l2r`). Both agree on ``[1:-1]``.

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]`` (voxel units, "ij").
      scheme: ``"central"`` or ``"l2r"``.

    Returns:
      ``[*S]`` (or ``[B, *S]``) float64 map.

    Example:
      >>> float(jacobian_determinant(np.zeros((4, 4, 2))).mean())
      1.0
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {_SCHEMES}")
    u, batched = _as_fields(disp)
    out = np.stack([_jacdet_single(ui, scheme) for ui in u])
    return out if batched else out[0]


def _crop(a: np.ndarray, c: int) -> np.ndarray:
    if c <= 0:
        return a
    if min(a.shape) <= 2 * c:
        raise ValueError(f"cannot crop {c} voxels per side from a map of shape {a.shape}")
    return a[tuple(slice(c, -c) for _ in range(a.ndim))]


def _per_case(disp, fn, min_size: int = 2):
    u, batched = _as_fields(disp, min_size=min_size)
    vals = [fn(ui) for ui in u]
    return np.asarray(vals, dtype=np.float64) if batched else vals[0]


def _masked(values: np.ndarray, mask, crop: int) -> np.ndarray:
    """Cropped ``values`` restricted to the cropped boolean ``mask`` (``[*S]``), flattened."""
    if mask is None:
        return values.ravel()
    m = _crop(np.asarray(mask) > 0, crop)
    if m.shape != values.shape:
        raise ValueError(f"mask shape {np.shape(mask)} does not match the field's spatial shape")
    return values[m]


def sdlogj(disp, *, mask=None) -> float | np.ndarray:
    """Standard deviation of the log Jacobian determinant, exactly as Learn2Reg computes it.

    ``SDlogJ = std( log( clip(J + 3, 1e-9, 1e9) )[2:-2, 2:-2(, 2:-2)] )`` with ``J`` from
    :func:`jacobian_determinant_l2r`, cropping 2 voxels on every spatial side. Note the ``+ 3``
    shift is part of Learn2Reg's evaluation code (it makes the metric finite for folded voxels);
    it is reproduced for comparability. Population std (``ddof=0``). With ``mask`` (``[*S]``,
    cropped the same way) the std is taken over the masked voxels only (LUMIR's masked variant).

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]``; every spatial size must be >= 5.
      mask: optional region of interest ``[*S]`` (non-zero = inside).

    Returns:
      Python float (or ``[B]`` array for a batch).

    Example:
      >>> sdlogj(np.zeros((8, 8, 8, 3)))
      0.0

    Reference: MDL-UzL/L2R ``evaluation/evaluation.py`` (``'sdlogj'`` metric).
    """

    def one(u):
        jac = _crop(_jacdet_single(u, "l2r"), 2)
        vals = _masked(np.log(np.clip(jac + 3.0, 1e-9, 1e9)), mask, 2)
        return float(vals.std()) if vals.size else float("nan")

    return _per_case(disp, one, min_size=5)


def _default_crop(scheme: str, crop: int | None) -> int:
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {_SCHEMES}")
    if crop is None:
        return 2 if scheme == "l2r" else 0
    if int(crop) < 0:
        raise ValueError(f"crop must be >= 0; got {crop!r}")
    return int(crop)


def folding_fraction(
    disp, *, scheme: str = "central", crop: int | None = None, mask=None
) -> float | np.ndarray:
    """Percentage (0-100) of voxels whose Jacobian determinant is ``<= 0``.

    ``100 * #{x : J(x) <= 0} / #{x}`` over the voxels kept after cropping ``crop`` voxels on every
    spatial side (and inside ``mask`` if given). ``J`` from :func:`jacobian_determinant` with
    ``scheme="central"`` (``np.gradient``, one-sided at the border; default ``crop=0``) or
    ``scheme="l2r"`` (Learn2Reg's zero-padded stencil; default ``crop=2`` to drop its border
    artefacts).

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]`` (voxel units, "ij").
      scheme: ``"central"`` or ``"l2r"``.
      crop: voxels removed per side before counting; ``None`` = 0 (central) or 2 (l2r).
      mask: optional ``[*S]`` region of interest (cropped alike).

    Returns:
      Percentage as a Python float (or ``[B]`` array for a batch).

    Example:
      >>> folding_fraction(np.zeros((5, 5, 5, 3)))
      0.0
    """
    c = _default_crop(scheme, crop)

    def one(u):
        vals = _masked(_crop(_jacdet_single(u, scheme), c), mask, c)
        return float(100.0 * np.mean(vals <= 0)) if vals.size else float("nan")

    return _per_case(disp, one)


# --------------------------------------------------------------------------------------------
# non-diffeomorphic volume (Liu et al. 2024)
# --------------------------------------------------------------------------------------------


def _ndv_map_single(u: np.ndarray) -> np.ndarray:
    """Per-voxel non-diffeomorphic volume on the interior ``[1:-1]`` of one field ``[*S, D]``."""
    d = u.shape[-1]
    shape = u.shape[:-1]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    phi = u + np.moveaxis(grid, 0, -1)

    def at(offset):  # phi(x + offset) for every interior voxel x
        return phi[tuple(slice(1 + o, n - 1 + o) for o, n in zip(offset, shape))]

    center = at((0,) * d)
    unit = np.eye(d, dtype=int)
    # simplices attached to the voxel: (edge vectors as columns, weight); det(edges)/d! is the
    # signed volume of the simplex and every edge set below has det > 0 for the identity.
    simplices = []
    for signs in itertools.product((1, -1), repeat=d):
        # corner simplex: forward (+) or backward (-) difference along each axis
        edges = [s * (at(s * unit[k]) - center) for k, s in enumerate(signs)]
        simplices.append(edges)
    if d == 3:
        # the two central tetrahedra of the 5-tetrahedra cube decompositions (edge vectors are
        # face diagonals; det = 2 for the identity, i.e. volume 1/3)
        simplices.append([at(o) - center for o in ((-1, -1, 0), (-1, 0, -1), (0, -1, -1))])
        simplices.append([at(o) - center for o in ((1, 1, 0), (0, 1, 1), (1, 0, 1))])
    fact = 2.0 if d == 2 else 6.0
    out = np.zeros(center.shape[:-1])
    for edges in simplices:
        det = _det([[e[..., c] for e in edges] for c in range(d)])  # m[component][edge]
        out += np.maximum(-det, 0.0) / fact
    return 0.5 * out  # two decompositions of every cell, averaged


def non_diffeomorphic_volume(disp, *, mask=None, return_map: bool = False):
    """Non-diffeomorphic volume (NDV, 3-D) / area (NDA, 2-D) in percent, after Liu et al. 2024.

    The transformation ``phi(x) = x + u(x)`` is treated as piecewise linear on a simplicial
    decomposition of the voxel grid, and NDV is the total volume of the simplices that ``phi``
    inverts (negative signed volume), as a percentage of the evaluated volume.

    * 3-D: each voxel cube is split into 5 tetrahedra, in its two possible ways (4 corner
      tetrahedra at alternate corners + 1 central tetrahedron each); the 8 corner tetrahedra
      ``{x, x ± e_0, x ± e_1, x ± e_2}`` are the forward/backward finite-difference Jacobians
      ``J_{±±±}`` (volume ``J/6``) and the 2 central ones have face-diagonal edges (volume
      ``J/6`` with ``J = 2`` for the identity).
    * 2-D: each pixel square is split into 2 triangles, in its two ways; the 4 corner triangles
      are ``J_{±±}`` (area ``J/2``).

    Each simplex is attributed to one grid vertex and each cell's two decompositions are averaged:
    ``ndv(x) = 0.5 * Σ_simplices max(-J_s(x), 0) / d!``, and
    ``NDV% = 100 * Σ_x ndv(x) / #x`` over the interior voxels ``x ∈ [1:-1]^D`` (the 1-voxel border
    is excluded, as in the LUMIR evaluation) and inside ``mask`` if given (LUMIR uses the moving
    image's brain mask). An affine ``phi`` with ``det A < 0`` gives ``NDV = 100 |det A|``; any
    ``phi`` whose simplices all keep their orientation gives exactly 0. Unlike the
    central-difference ``J``, this detects foldings hidden from central differences (e.g. a
    single displaced voxel).

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]`` (voxel units, "ij"); sizes >= 3.
      mask: optional ``[*S]`` region of interest (non-zero = inside), cropped to ``[1:-1]``.
      return_map: also return the per-voxel ``ndv(x)`` map ``[*S - 2]`` (or ``[B, *S - 2]``).

    Returns:
      NDV in percent (Python float, or ``[B]`` array for a batch); with ``return_map`` a tuple
      ``(percent, map)``.

    Example:
      >>> non_diffeomorphic_volume(np.zeros((4, 4, 4, 3)))
      0.0

    Reference: Liu, Chen, Wei, Carass, Prince, "On finite difference Jacobian computation in
    deformable image registration", IJCV 2024 (arXiv:2212.06060); yihao6/digital_diffeomorphism;
    JHU-MedImage-Reg/LUMIR_L2R ``L2R_LUMIR_Eval``.
    """
    u, batched = _as_fields(disp, min_size=3)
    maps = np.stack([_ndv_map_single(ui) for ui in u])
    pct = []
    for m in maps:
        vals = _masked(m, mask, 1)
        pct.append(float(100.0 * vals.sum() / vals.size) if vals.size else float("nan"))
    percent = np.asarray(pct) if batched else pct[0]
    if return_map:
        return percent, (maps if batched else maps[0])
    return percent


def summarize_jacobian(
    disp, *, scheme: str = "central", crop: int | None = None, mask=None
) -> dict:
    """Regularity summary of a displacement field, for reports and the CLI.

    Keys (all Python floats, or ``[B]`` arrays for a batch):

    * ``folding_percent`` — :func:`folding_fraction` (``scheme``, ``crop``, ``mask``);
    * ``ndv_percent`` — :func:`non_diffeomorphic_volume` (``mask``);
    * ``sdlogj`` — Learn2Reg :func:`sdlogj` (always the L2R scheme and crop, ``mask``);
    * ``jac_min``, ``jac_max``, ``jac_mean``, ``jac_std`` — of the ``scheme`` Jacobian determinant
      over the voxels kept by ``crop``/``mask`` (``crop=None``: 0 for central, 2 for l2r).

    Args:
      disp: displacement ``[*S, D]`` or ``[B, *S, D]``; spatial sizes >= 5.
      scheme: ``"central"`` or ``"l2r"``.
      crop: voxels removed per side for the folding and ``jac_*`` statistics.
      mask: optional ``[*S]`` region of interest.

    Returns:
      dict as above.

    Example:
      >>> s = summarize_jacobian(np.zeros((6, 6, 6, 3)))
      >>> s["folding_percent"], s["ndv_percent"], s["sdlogj"], s["jac_mean"]
      (0.0, 0.0, 0.0, 1.0)
    """
    c = _default_crop(scheme, crop)
    u, batched = _as_fields(disp, min_size=5)
    rows = []
    for ui in u:
        vals = _masked(_crop(_jacdet_single(ui, scheme), c), mask, c)
        if vals.size:
            stats = (vals.min(), vals.max(), vals.mean(), vals.std(), 100.0 * np.mean(vals <= 0))
        else:
            stats = (float("nan"),) * 5
        rows.append(
            {
                "folding_percent": float(stats[4]),
                "ndv_percent": float(non_diffeomorphic_volume(ui, mask=mask)),
                "sdlogj": float(sdlogj(ui, mask=mask)),
                "jac_min": float(stats[0]),
                "jac_max": float(stats[1]),
                "jac_mean": float(stats[2]),
                "jac_std": float(stats[3]),
            }
        )
    if not batched:
        return rows[0]
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
