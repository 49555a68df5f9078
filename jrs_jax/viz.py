"""Figures for registration and segmentation results (matplotlib, headless, thread-safe).

Every function builds a :class:`matplotlib.figure.Figure` attached to an Agg canvas
(``FigureCanvasAgg``) and never touches :mod:`matplotlib.pyplot` global state, so it works
without a display and from several threads. Save with :func:`save_figure` (atomic PNG).

Conventions (those of :mod:`jrs_jax.spatial`):

- Images are ``[*S]`` or ``[*S, C]`` per case (a leading batch axis of size 1 is accepted),
  numpy or jax arrays; multi-channel images show channel 0. Without a label map or a
  displacement to fix ``S``, a 3-axis image is ``[H, W, C]`` when its last axis has size
  <= 4 and is smaller than the two others, otherwise a ``[D, H, W]`` volume.
- Label maps are integer ``[*S]``; 0 is background and gets no contour.
- Displacements are ``[*S, D]`` in voxels along array axes: component ``k`` moves along
  axis ``k``; ``warp(I, u)(x) = I(x + u(x))``.
- Display orientation is ``imshow``'s: array axis 0 of the plane runs down the rows (data
  ``y``, increasing downward), array axis 1 runs along the columns (data ``x``). A ``+t``
  displacement along axis 0 therefore moves drawn grid points *down* by ``t``.
- 3-D inputs show one slice: ``axis`` (0..2) is the axis cut, ``index`` the slice (``None``
  = middle). The plane keeps the two other axes in order (first = rows); a displacement
  shows its two in-plane components. For 2-D inputs ``axis``/``index`` are ignored.

Example::

    from jrs_jax import viz
    fig = viz.registration_panel(fixed, moving, warped, fixed_labels=lf,
                                 moving_labels=lm, warped_labels=lw, disp=u)
    viz.save_figure(fig, "out/case0.png")
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "deformation_grid",
    "display_labels",
    "field_comparison",
    "frame_strip",
    "jacobian_map",
    "overlay",
    "registration_panel",
    "save_figure",
    "training_curves",
]

_PANEL_INCHES = 3.0
_DPI = 100
_LABEL_CMAP = "tab10"


# ----------------------------------------------------------------------------- helpers


def _new_figure(ncols: int = 1, nrows: int = 1, *, width: float | None = None):
    """A Figure on an Agg canvas (no pyplot) and its axes (flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w = width if width is not None else _PANEL_INCHES * ncols
    fig = Figure(figsize=(w, _PANEL_INCHES * nrows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
    return fig, axes


def _figure_and_ax(ax):
    if ax is None:
        fig, (ax,) = _new_figure(1, 1)
        return fig, ax
    return ax.figure, ax


def _np(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is None")
    return np.asarray(x)


def _spatial_from_disp(disp: np.ndarray, name: str = "disp") -> tuple[np.ndarray, int]:
    """Strip an optional batch axis of 1 from ``[*S, D]``; returns (field, D)."""
    shape = disp.shape
    d = disp
    if d.ndim in (4, 5) and shape[0] == 1 and shape[-1] == d.ndim - 2:
        d = d[0]
    if d.ndim not in (3, 4) or d.shape[-1] != d.ndim - 1:
        raise ValueError(
            f"{name} must be [*S, D] with D = len(S) in (2, 3) (optionally with a leading "
            f"batch axis of 1); got shape {shape}"
        )
    return d, d.ndim - 1


def _spatial_from_labels(
    labels: np.ndarray, spatial: tuple[int, ...] | None, name: str
) -> np.ndarray:
    shape = labels.shape
    lab = labels
    if spatial is not None:
        for cand in (lab, lab[0] if lab.ndim and shape[0] == 1 else None):
            if cand is None:
                continue
            if cand.shape == spatial:
                lab = cand
                break
            if cand.shape == (*spatial, 1):
                lab = cand[..., 0]
                break
        else:
            raise ValueError(f"{name} shape {shape} does not match the spatial shape {spatial}")
    else:
        if lab.ndim == 4 and shape[0] == 1:
            lab = lab[0]
        if lab.ndim not in (2, 3):
            raise ValueError(
                f"{name} must be an integer map [*S] with 2 or 3 spatial axes "
                f"(optionally with a leading batch axis of 1); got shape {shape}"
            )
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise ValueError(f"{name} must hold integer labels; got dtype {lab.dtype}")
    return lab.astype(np.int64)


def _spatial_from_image(
    image: np.ndarray, spatial: tuple[int, ...] | None, name: str
) -> np.ndarray:
    """Return the image as ``[*S]`` (channel 0 if multi-channel)."""
    shape = image.shape
    img = image
    if spatial is not None:
        cands = [img]
        if img.ndim and shape[0] == 1:
            cands.append(img[0])
        for cand in cands:
            if cand.shape == spatial:
                return cand.astype(np.float64)
            if cand.ndim == len(spatial) + 1 and cand.shape[:-1] == spatial:
                return cand[..., 0].astype(np.float64)
        raise ValueError(f"{name} shape {shape} does not match the spatial shape {spatial}")

    def chan_last(a: np.ndarray) -> bool:
        return a.shape[-1] <= 4 and a.shape[-1] < min(a.shape[:-1])

    if img.ndim in (4, 5) and shape[0] == 1:
        img = img[0]  # batch axis
    if img.ndim == 4:
        img = img[..., 0]  # [D, H, W, C]
    if img.ndim == 3 and chan_last(img):
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be [*S] or [*S, C] with 2 or 3 spatial axes (optionally with a "
            f"leading batch axis of 1); got shape {shape}"
        )
    return img.astype(np.float64)


def _check_slice(spatial: tuple[int, ...], axis: int, index: int | None) -> int | None:
    if len(spatial) == 2:
        return None
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 for 3-D inputs of shape {spatial}; got {axis}")
    n = spatial[axis]
    idx = n // 2 if index is None else int(index)
    if not -n <= idx < n:
        raise ValueError(f"index {index} out of range for axis {axis} of shape {spatial}")
    return idx % n


def _slice(arr: np.ndarray, ndim: int, axis: int, idx: int | None) -> np.ndarray:
    if ndim == 2:
        return arr
    return np.take(arr, idx, axis=axis)


def _slice_disp(disp: np.ndarray, ndim: int, axis: int, idx: int | None) -> np.ndarray:
    """In-plane ``[H, W, 2]``: component 0 along plane rows, 1 along plane columns."""
    if ndim == 2:
        return disp
    comps = [k for k in range(3) if k != axis]
    return np.take(disp, idx, axis=axis)[..., comps]


def _slice_suffix(ndim: int, axis: int, idx: int | None) -> str:
    return "" if ndim == 2 else f" [axis {axis}, {idx}]"


def _label_color(label: int):
    from matplotlib import colormaps

    cmap = colormaps[_LABEL_CMAP]
    return cmap((int(label) - 1) % cmap.N)


def _draw_contours(
    ax, labels2d: np.ndarray, contours_of: Iterable[int] | None, *, linestyle: str = "solid"
) -> list:
    """One ``ax.contour`` per present non-zero label; gid ``"label:<k>"``."""
    present = [int(v) for v in np.unique(labels2d) if v != 0]
    wanted = present if contours_of is None else [int(v) for v in contours_of]
    sets = []
    for lab in wanted:
        if lab not in present:
            continue
        mask = (labels2d == lab).astype(np.float64)
        if mask.min() == mask.max():  # fills the whole plane: no boundary to draw
            continue
        cs = ax.contour(
            mask,
            levels=[0.5],
            colors=[_label_color(lab)],
            linewidths=1.2,
            linestyles=linestyle,
        )
        cs.set_gid(f"label:{lab}")
        sets.append(cs)
    return sets


def _show_image(ax, img2d: np.ndarray, title: str | None) -> None:
    ax.imshow(img2d, cmap="gray", interpolation="nearest", origin="upper")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


# ----------------------------------------------------------------------------- public


def save_figure(fig, path: str | os.PathLike, *, dpi: float | None = None) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temp file in the same folder + rename).

    Creates the parent folder. The image is ``figsize * dpi`` pixels (``dpi`` defaults
    to the figure's, 100 for figures made here). Returns the path.

    Example::

        save_figure(overlay(img, lab), "figs/overlay.png")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi if dpi is not None else fig.dpi)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def display_labels(labels, *, ndim: int) -> np.ndarray:
    """A label map to draw: integer ``[*S]`` unchanged; a multi-label binary ``[*S, K]`` map
    as the highest set label ``k + 1`` per voxel (0 where none is set)."""
    labels = np.asarray(labels)
    if labels.ndim == ndim + 1:
        ranks = np.arange(1, labels.shape[-1] + 1)
        return (np.asarray(labels, bool) * ranks).max(-1).astype(np.int32)
    return labels


def overlay(
    image,
    labels=None,
    *,
    contours_of: Iterable[int] | None = None,
    ax=None,
    title: str | None = None,
    axis: int = 0,
    index: int | None = None,
):
    """Grey image with one coloured contour per label.

    Args:
      image: ``[*S]`` or ``[*S, C]`` (optional leading batch axis of 1); channel 0 shown.
      labels: integer ``[*S]`` or ``None``. Each non-zero label present in the shown plane
        gets ``ax.contour`` of its mask at level 0.5 (the half-integer boundary), in a fixed
        colour per label value (``tab10``, label ``k`` -> colour ``(k-1) % 10``); each
        contour set has gid ``"label:<k>"``.
      contours_of: only these label values (default: all non-zero present).
      ax: draw into this Axes (its figure is returned) instead of a new figure.
      title: axes title.
      axis, index: slice for 3-D inputs (``index=None`` -> middle).

    Returns:
      The :class:`~matplotlib.figure.Figure`.

    Example::

        fig = overlay(np.random.rand(32, 32), lab)        # 2-D
        fig = overlay(vol, lab3d, axis=2, index=10)        # 3-D, slice 10 along axis 2
    """
    image = _np(image, "image")
    spatial = None
    lab = None
    if labels is not None:
        lab = _spatial_from_labels(_np(labels, "labels"), None, "labels")
        spatial = lab.shape
    img = _spatial_from_image(image, spatial, "image")
    ndim = img.ndim
    idx = _check_slice(img.shape, axis, index)
    fig, ax = _figure_and_ax(ax)
    suffix = _slice_suffix(ndim, axis, idx)
    _show_image(ax, _slice(img, ndim, axis, idx), (title + suffix) if title else None)
    if lab is not None:
        _draw_contours(ax, _slice(lab, ndim, axis, idx), contours_of)
    return fig


def deformation_grid(disp, *, spacing: int = 4, ax=None, axis: int = 0, index: int | None = None):
    """Warped grid lines ``x + u(x)`` for every ``spacing``-th row and column of the plane.

    Drawn in ``imshow`` orientation (y axis inverted, limits ``[-0.5, n - 0.5]``): the
    point of plane row ``r``, column ``c`` is drawn at data ``(x, y) = (c + u1, r + u0)``,
    where ``u0`` is the in-plane component along the rows (array axis 0 for 2-D). So a
    ``+t`` field along axis 0 moves the horizontal lines down by ``t``. Lines carry gid
    ``"row:<r>"`` (horizontal) or ``"col:<c>"`` (vertical).

    Args:
      disp: ``[*S, D]`` voxel displacement (optional leading batch axis of 1).
      spacing: grid pitch in voxels (>= 1).
      ax, axis, index: as :func:`overlay`.

    Example::

        fig = deformation_grid(u, spacing=2)     # u: [H, W, 2]
    """
    d, ndim = _spatial_from_disp(_np(disp, "disp"))
    if int(spacing) < 1:
        raise ValueError(f"spacing must be >= 1; got {spacing}")
    spacing = int(spacing)
    idx = _check_slice(d.shape[:-1], axis, index)
    plane = _slice_disp(d.astype(np.float64), ndim, axis, idx)
    h, w = plane.shape[:2]
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ys = rr + plane[..., 0]
    xs = cc + plane[..., 1]
    fig, ax = _figure_and_ax(ax)
    for r in range(0, h, spacing):
        ax.plot(xs[r, :], ys[r, :], color="tab:blue", lw=0.8, gid=f"row:{r}")
    for c in range(0, w, spacing):
        ax.plot(xs[:, c], ys[:, c], color="tab:orange", lw=0.8, gid=f"col:{c}")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("grid x + u(x)" + _slice_suffix(ndim, axis, idx), fontsize=9)
    return fig


def jacobian_map(disp, *, ax=None, axis: int = 0, index: int | None = None):
    """Map of ``det(I + grad u)`` (via :func:`jrs_jax.spatial.jacobian_determinant`).

    Diverging ``RdBu_r`` colormap centred on 1 (``TwoSlopeNorm(vcenter=1)``, range at
    least ``[0, 2]``), voxels with ``J <= 0`` painted solid lime on top, colorbar. The
    title reads ``"det J: folding P % ..."``, ``P`` the percentage of voxels with
    ``J <= 0`` in the whole field (for 3-D also the shown slice's percentage).

    Args:
      disp: ``[*S, D]`` voxel displacement (optional leading batch axis of 1).
      ax, axis, index: as :func:`overlay`.

    Example::

        fig = jacobian_map(u)                    # u: [H, W, 2] or [D, H, W, 3]
    """
    import jax.numpy as jnp
    from matplotlib.colors import ListedColormap, TwoSlopeNorm

    from jrs_jax.spatial import jacobian_determinant

    d, ndim = _spatial_from_disp(_np(disp, "disp"))
    idx = _check_slice(d.shape[:-1], axis, index)
    jac = np.asarray(jacobian_determinant(jnp.asarray(d[None], dtype=jnp.float32)))[0]
    jac = jac.astype(np.float64)
    pct = 100.0 * float(np.mean(jac <= 0))
    j2 = _slice(jac, ndim, axis, idx)
    finite = j2[np.isfinite(j2)]
    lo = min(float(finite.min()) if finite.size else 0.0, 0.0)
    hi = max(float(finite.max()) if finite.size else 2.0, 2.0)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
    fig, ax = _figure_and_ax(ax)
    im = ax.imshow(j2, cmap="RdBu_r", norm=norm, interpolation="nearest", origin="upper")
    folded = np.ma.masked_where(~(j2 <= 0), np.ones_like(j2))
    ax.imshow(
        folded,
        cmap=ListedColormap(["lime"]),
        interpolation="nearest",
        origin="upper",
        vmin=0,
        vmax=1,
    )
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    title = f"det J: folding {pct:.2f} %"
    if ndim == 3:
        title += f" (slice {100.0 * float(np.mean(j2 <= 0)):.2f} %)"
    ax.set_title(title + _slice_suffix(ndim, axis, idx), fontsize=9)
    return fig


def registration_panel(
    fixed,
    moving,
    warped,
    *,
    fixed_labels=None,
    moving_labels=None,
    warped_labels=None,
    disp=None,
    axis: int = 0,
    index: int | None = None,
):
    """A row of panels: fixed | moving | warped | |fixed-moving| | |fixed-warped| [| grid | J].

    Each image shows its own label contours (solid); the warped panel also shows the fixed
    contours dashed so residual misalignment is visible. The two difference maps (channel 0)
    share one colour scale; their titles give the mean absolute difference. With ``disp``
    the :func:`deformation_grid` and :func:`jacobian_map` panels are appended.

    Args:
      fixed, moving, warped: ``[*S]`` or ``[*S, C]`` (optional leading batch axis of 1),
        same ``S``.
      fixed_labels, moving_labels, warped_labels: integer ``[*S]`` or ``None``.
      disp: ``[*S, D]`` (the field that produced ``warped``) or ``None``.
      axis, index: slice for 3-D inputs (``index=None`` -> middle).

    Raises:
      ValueError: on mismatched shapes (message names them) or bad ndim.

    Example::

        fig = registration_panel(f, m, warp(m[None], u[None])[0], fixed_labels=lf,
                                 moving_labels=lm, warped_labels=lw, disp=u)
    """
    spatial = None
    disp_arr = None
    if disp is not None:
        disp_arr, _ = _spatial_from_disp(_np(disp, "disp"))
        spatial = disp_arr.shape[:-1]
    labs = {}
    for name, lab in (
        ("fixed_labels", fixed_labels),
        ("moving_labels", moving_labels),
        ("warped_labels", warped_labels),
    ):
        if lab is not None:
            labs[name] = _spatial_from_labels(_np(lab, name), spatial, name)
            spatial = labs[name].shape
    f = _spatial_from_image(_np(fixed, "fixed"), spatial, "fixed")
    spatial = f.shape
    m = _spatial_from_image(_np(moving, "moving"), spatial, "moving")
    w = _spatial_from_image(_np(warped, "warped"), spatial, "warped")
    ndim = len(spatial)
    idx = _check_slice(spatial, axis, index)

    def sl(a):
        return _slice(a, ndim, axis, idx)

    ncols = 5 + (2 if disp_arr is not None else 0)
    fig, axes = _new_figure(ncols, 1)
    fig.suptitle("registration" + _slice_suffix(ndim, axis, idx), fontsize=10)
    for ax, img, title, key in (
        (axes[0], f, "fixed", "fixed_labels"),
        (axes[1], m, "moving", "moving_labels"),
        (axes[2], w, "warped", "warped_labels"),
    ):
        _show_image(ax, sl(img), title)
        if key in labs:
            _draw_contours(ax, sl(labs[key]), None)
    if "fixed_labels" in labs:
        _draw_contours(axes[2], sl(labs["fixed_labels"]), None, linestyle="dashed")
    d0 = np.abs(sl(f) - sl(m))
    d1 = np.abs(sl(f) - sl(w))
    vmax = max(float(np.nanmax(d0)), float(np.nanmax(d1)), 1e-12)
    for ax, diff, title in ((axes[3], d0, "|fixed - moving|"), (axes[4], d1, "|fixed - warped|")):
        ax.imshow(diff, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\nmean {float(np.nanmean(diff)):.3g}", fontsize=9)
    if disp_arr is not None:
        deformation_grid(disp_arr, ax=axes[5], axis=axis, index=idx, spacing=_auto_spacing(spatial))
        jacobian_map(disp_arr, ax=axes[6], axis=axis, index=idx)
    return fig


def field_comparison(
    fields: Mapping[str, Any],
    *,
    gt=None,
    regions=None,
    spacing: int | None = None,
    axis: int = 0,
    index: int | None = None,
):
    """Several fields of one pair side by side: deformation grids, and their endpoint error.

    Top row: the :func:`deformation_grid` of the ground truth ``gt`` (when given) and of every
    field, each with the region boundaries of ``regions`` (the fixed image's region map or
    labels) drawn on top, so a field that slides along a boundary shows grid lines that break
    there while a globally smooth one bends them across it. Bottom row (with ``gt``): the
    endpoint error ``|u - u_gt|`` of each field on one colour scale, titled with its mean.

    Args:
      fields: ``{name: [*S, D]}`` (optional leading batch axis of 1), in display order.
      gt: ``[*S, D]`` ground truth or ``None``.
      regions: integer ``[*S]`` or ``None``.
      spacing: grid pitch (default: about 16 lines across the image).
      axis, index: slice for 3-D inputs (``index=None`` -> middle).

    Example::

        fig = field_comparison({"VoxelMorph": u_vxm, "DDIR": u_ddir}, gt=u_gt, regions=mask)
    """
    shown = {
        name: _spatial_from_disp(_np(u, name), f"field {name!r}")[0] for name, u in fields.items()
    }
    if not shown:
        raise ValueError("field_comparison needs at least one field")
    if gt is not None:
        gt = _spatial_from_disp(_np(gt, "gt"), "gt")[0]
    spatial = next(iter(shown.values())).shape[:-1]
    for name, u in {**shown, **({"gt": gt} if gt is not None else {})}.items():
        if u.shape[:-1] != spatial:
            raise ValueError(f"field {name!r} has spatial shape {u.shape[:-1]}, not {spatial}")
    reg = None
    if regions is not None:
        reg = _spatial_from_labels(_np(regions, "regions"), spatial, "regions")
    ndim = len(spatial)
    idx = _check_slice(spatial, axis, index)
    panels = ({"ground truth": gt} if gt is not None else {}) | shown
    nrows = 2 if gt is not None else 1
    fig, axes = _new_figure(len(panels), nrows)
    pitch = int(spacing) if spacing else max(1, min(spatial) // 16)
    for ax, (name, u) in zip(axes, panels.items()):
        deformation_grid(u, ax=ax, axis=axis, index=idx, spacing=pitch)
        if reg is not None:
            _draw_contours(ax, _slice(reg, ndim, axis, idx), None)
        ax.set_title(name, fontsize=9)
    if gt is not None:
        errs = {n: np.linalg.norm(u - gt, axis=-1) for n, u in panels.items()}
        vmax = max(max(float(e.max()) for e in errs.values()), 1e-12)
        for ax, err in zip(axes[len(panels) :], errs.values()):
            err2d = _slice(err, ndim, axis, idx)
            im = ax.imshow(err2d, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            if reg is not None:
                _draw_contours(ax, _slice(reg, ndim, axis, idx), None, linestyle="dashed")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"|u - u_gt|: mean {float(err.mean()):.3g}", fontsize=9)
        fig.colorbar(im, ax=axes[-1], shrink=0.8)
    fig.suptitle("fields of one pair" + _slice_suffix(ndim, axis, idx), fontsize=10)
    return fig


def frame_strip(
    frames,
    labels=None,
    *,
    titles: Sequence[str] | None = None,
    reference=None,
    axis: int = 0,
    index: int | None = None,
    columns: int = 10,
):
    """A sequence as a strip of frames (a GIF's frames side by side), each with its label
    contours: e.g. a cardiac cycle with the labels propagated from end-diastole.

    Args:
      frames: ``[T, *S]`` or ``[T, *S, C]`` images (channel 0 shown).
      labels: integer ``[T, *S]`` (one map per frame) or ``None``.
      titles: one title per frame (default ``t = 0 .. T - 1``).
      reference: optional integer ``[T, *S]`` second set of contours, dashed (e.g. the hidden
        ground truth next to the propagated labels).
      axis, index: slice for 3-D frames (``index=None`` -> middle).
      columns: frames per row.

    Example::

        fig = frame_strip(cine[0, ..., 0], propagated, reference=truth)
    """
    frames = _np(frames, "frames")
    t = frames.shape[0]
    if t < 1:
        raise ValueError("frame_strip needs at least one frame")
    labs = None if labels is None else _np(labels, "labels")
    refs = None if reference is None else _np(reference, "reference")
    for name, arr in (("labels", labs), ("reference", refs)):
        if arr is not None and arr.shape[0] != t:
            raise ValueError(f"{name} has {arr.shape[0]} frames; frames has {t}")
    titles = list(titles) if titles is not None else [f"t = {k}" for k in range(t)]
    ncols = min(int(columns), t)
    nrows = -(-t // ncols)
    fig, axes = _new_figure(ncols, nrows)
    for ax in axes[t:]:
        ax.axis("off")
    for k, ax in enumerate(axes[:t]):
        lab = None if labs is None else labs[k]
        overlay(frames[k], lab, ax=ax, title=titles[k], axis=axis, index=index)
        if refs is not None:
            ref = _spatial_from_labels(refs[k], None, "reference")
            idx = _check_slice(ref.shape, axis, index)
            _draw_contours(ax, _slice(ref, ref.ndim, axis, idx), None, linestyle="dashed")
    return fig


def _auto_spacing(spatial: Sequence[int]) -> int:
    return max(1, min(spatial) // 16)


def _read_history(history) -> list[Mapping[str, Any]]:
    if isinstance(history, (str, os.PathLike)):
        with open(history, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    return list(history)


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def training_curves(history, *, keys: Sequence[str] | None = None, log_y: bool = False):
    """Training / validation curves from a metrics log.

    Args:
      history: list of dicts (one JSON-lines record each, e.g.
        ``{"step": 10, "loss": 0.5, "sim": 0.4, "val/dice": 0.8}``) or a path to a JSONL
        file. ``x`` is ``"step"`` (the record's position when absent).
      keys: metrics to plot (default: every numeric key except the bookkeeping ``"step"``
        and ``"seconds"``, the elapsed time :func:`~jrs_jax.train.fit` logs, whose scale
        would flatten every loss drawn beside it).
      log_y: logarithmic y axes (non-positive values are masked).

    One subplot per group: keys without ``/`` together ("train"), then one per prefix
    (``val/*``, ...). Missing, non-numeric and NaN/inf values are skipped point by point;
    each line has ``label`` = its key.

    Raises:
      ValueError: empty history, or no numeric metric to plot.

    Example::

        recs = [json.loads(l) for l in open("run/metrics.jsonl")]
        save_figure(training_curves(recs, log_y=True), "run/curves.png")
    """
    recs = _read_history(history)
    if not recs:
        raise ValueError("history is empty")
    if keys is None:
        seen: dict[str, None] = {}
        for r in recs:
            for k, v in r.items():
                if k not in ("step", "seconds") and _as_float(v) is not None:
                    seen.setdefault(k, None)
        keys = list(seen)
    if not keys:
        raise ValueError("history has no numeric metric to plot")
    groups: dict[str, list[str]] = {}
    for k in keys:
        g = k.split("/", 1)[0] if "/" in k else "train"
        groups.setdefault(g, []).append(k)
    order = sorted(groups, key=lambda g: (g != "train", g != "val", g))
    fig, axes = _new_figure(len(order), 1, width=4.0 * len(order))
    for ax, g in zip(axes, order):
        for k in groups[g]:
            xs, ys = [], []
            for i, r in enumerate(recs):
                y = _as_float(r.get(k))
                if y is None or (log_y and y <= 0):
                    continue
                x = _as_float(r.get("step", i))
                xs.append(i if x is None else x)
                ys.append(y)
            ax.plot(xs, ys, marker="." if len(xs) < 50 else None, lw=1.0, label=k)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(g, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig
