"""NIfTI input/output and host-side preprocessing (numpy, no JAX).

Conventions
-----------
Arrays. An image is ``[X, Y, Z]`` (or ``[X, Y, Z, C]`` with ``channels=True``), a label map an
``int32`` ``[X, Y, Z]``; array axis ``k`` is NIfTI voxel axis ``k`` (nibabel order, *not*
SimpleITK's reversed ``[z, y, x]``). Batch them yourself (``np.stack``) into ``[B, *S, C]``.

World coordinates. ``Volume.affine`` maps a voxel index ``(i, j, k)`` of ``Volume.data`` to
world millimetres in nibabel's RAS+ frame (``+x`` Right, ``+y`` Anterior, ``+z`` Superior).
Voxel centres are at integer indices. ``Volume.spacing`` is the column norms of
``affine[:3, :3]`` (voxel size along each array axis, also for oblique affines).

Canonical orientation. ``load_image(..., canonical=True)`` (the default) reorients the array
to the closest RAS+ orientation, exactly as ``nibabel.as_closest_canonical``: axes are
permuted / flipped so that array axis 0 runs (mostly) towards Right, 1 towards Anterior, 2
towards Superior, and the affine is updated so that every voxel keeps its world position
(``affine_canonical = affine_file @ inv_ornt_aff(ornt, shape)``). Only whole-axis
permutations and flips are applied (no interpolation), so it is lossless; an oblique affine
stays oblique. Images of one subject loaded this way share array axes whatever the scanner's
storage order, which is what a network needs.

Restoring the orientation on save. A ``Volume`` remembers ``ornt`` (the nibabel orientation
that took the file's axes to ``data``'s axes), ``file_affine`` (the affine on disk) and the
file's ``header``. ``save_image(path, array, reference=vol)`` undoes the reorientation (inverse
permutation / flips of the first three axes), writes the file's affine and header (only the
dtype, shape and scaling are changed), so the output has the input file's array layout and
overlays it in any viewer; a load -> save round trip reproduces the input's data array and
affine exactly.

Atomic writes. :func:`save_image` writes to a hidden temporary file in the destination's
directory (created if missing), flushes it to disk and moves it into place with
``os.replace``: the destination is either the old file or the complete new one, never a
partial file, and the temporary file is removed if anything fails.

Errors. Problems with the user's files raise :class:`~jrs_jax.data.DataError` (a
``ValueError``) with a one-line message that starts with the file name; voxel indices in
messages are indices of the *file's* array (as a viewer shows them), before reorientation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from .errors import DataError

__all__ = [
    "CropPadInfo",
    "Volume",
    "check_pair",
    "crop_or_pad",
    "load_image",
    "load_labels",
    "load_multilabel",
    "normalize_intensity",
    "read_label_names",
    "resample_to_spacing",
    "save_image",
    "uncrop",
]

_IDENTITY_ORNT = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
_INT32 = np.iinfo(np.int32)


# --------------------------------------------------------------------------------------------
# Volume
# --------------------------------------------------------------------------------------------


def _spacing(affine: np.ndarray) -> tuple[float, ...]:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Volume:
    """One image or label map on its voxel grid.

    Attributes:
      data: ``[X, Y, Z]`` or ``[X, Y, Z, C]`` array (float for images, ``int32`` for labels).
      affine: ``[4, 4]`` float64 voxel-to-world (RAS+, mm) matrix of ``data``'s grid.
      spacing: voxel size in mm along array axes 0, 1, 2 (column norms of ``affine[:3, :3]``);
        computed from ``affine``, not passed.
      header: the NIfTI header *of the file on disk* (file axis order, file dtype), used by
        :func:`save_image` so that outputs keep the input's metadata; ``None`` if not loaded.
      path: the file it was loaded from (as given), or ``None``.
      ornt: ``[3, 2]`` nibabel orientation taking the file's array axes to ``data``'s axes
        (identity unless loaded with ``canonical=True`` from a non-RAS file).
      file_affine: the affine stored in the file (``affine`` before reorientation).

    ``dataclasses.replace(vol, data=..., affine=...)`` makes a volume on another grid; keep
    ``ornt`` and ``header`` so that :func:`save_image` can still restore the file orientation
    (a stale ``file_affine`` is ignored: it is only used when it agrees with ``affine``).
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...] = dataclasses.field(init=False)
    header: nib.Nifti1Header | None = None
    path: str | None = None
    ornt: np.ndarray | None = None
    file_affine: np.ndarray | None = None

    def __post_init__(self):
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4; got shape {affine.shape}")
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "data", np.asarray(self.data))
        ornt = _IDENTITY_ORNT if self.ornt is None else np.array(self.ornt, dtype=np.float64)
        if ornt.shape != (3, 2):
            raise ValueError(f"ornt must have shape (3, 2); got {ornt.shape}")
        object.__setattr__(self, "ornt", ornt)
        if self.file_affine is not None:
            object.__setattr__(self, "file_affine", np.array(self.file_affine, np.float64))
        if self.path is not None:
            object.__setattr__(self, "path", os.fspath(self.path))
        object.__setattr__(self, "spacing", _spacing(affine))

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(X, Y, Z)`` (without the channel axis)."""
        return tuple(self.data.shape[:3])

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        codes = "".join(nib.aff2axcodes(self.affine))
        return (
            f"Volume(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, "
            f"spacing=({sp}), axes={codes}, path={self.path!r})"
        )


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(path) -> tuple[str, nib.Nifti1Pair]:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DataError(p, "file not found")
    if os.path.isdir(p):
        raise DataError(p, "is a directory, not a NIfTI file")
    try:
        img = nib.load(p)
    except Exception as exc:
        raise DataError(p, f"not a readable NIfTI file ({_describe(exc)})") from exc
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the .hdr/.img pairs
        raise DataError(p, f"not a NIfTI file (nibabel reads it as {type(img).__name__})")
    return p, img


def _read_array(p: str, img) -> np.ndarray:
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated .nii / .nii.gz, bad gzip stream, short reads, ...
        raise DataError(
            p, f"cannot read the voxel data, truncated or corrupt file? ({_describe(exc)})"
        ) from exc
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DataError(p, f"unsupported voxel dtype {arr.dtype} (expected integer or float)")
    return arr


def _to_spatial(p: str, arr: np.ndarray, channels: bool) -> np.ndarray:
    shape = tuple(int(n) for n in arr.shape)
    if arr.size == 0:
        raise DataError(p, f"empty image: shape {shape} has a zero-size axis")
    if arr.ndim < 3:
        raise DataError(p, f"expected a 3-D volume, got {arr.ndim}-D data of shape {shape}")
    extra = [n for n in shape[3:] if n != 1]
    if channels:
        if len(extra) > 1:
            raise DataError(
                p, f"expected [X, Y, Z] or [X, Y, Z, C] data, got {arr.ndim}-D shape {shape}"
            )
        return arr.reshape(*shape[:3], extra[0] if extra else 1)
    if extra:
        raise DataError(
            p,
            f"expected a 3-D volume, got {arr.ndim}-D data of shape {shape} "
            "(use channels=True for multi-channel images)",
        )
    return arr.reshape(shape[:3])


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _check_finite(p: str, arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    n = int(np.count_nonzero(bad))
    if n:
        idx = _first(bad)
        raise DataError(
            p, f"{what} has {n} non-finite (NaN/Inf) voxels (e.g. {arr[idx]} at voxel {idx})"
        )


def _check_affine(p: str, affine: np.ndarray) -> None:
    lin = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(lin)) < 1e-12 * max(
        1.0, float(np.abs(lin).max()) ** 3
    ):
        text = " ".join(np.array2string(affine[:3], precision=4, separator=", ").split())
        raise DataError(p, f"affine is singular or not finite: {text}")


def _reorient(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nibabel.as_closest_canonical`` on an array: (data, affine, ornt)."""
    ornt = nio.io_orientation(affine)
    if np.array_equal(ornt, _IDENTITY_ORNT):
        return arr, affine.copy(), _IDENTITY_ORNT.copy()
    data = np.ascontiguousarray(nio.apply_orientation(arr, ornt))
    return data, affine @ nio.inv_ornt_aff(ornt, arr.shape[:3]), ornt


def _make_volume(p: str, img, arr: np.ndarray, canonical: bool) -> Volume:
    file_affine = np.array(img.affine, dtype=np.float64)
    _check_affine(p, file_affine)
    if canonical:
        data, affine, ornt = _reorient(arr, file_affine)
    else:
        data, affine, ornt = arr, file_affine.copy(), _IDENTITY_ORNT.copy()
    return Volume(
        data=np.ascontiguousarray(data),
        affine=affine,
        header=img.header.copy(),
        path=p,
        ornt=ornt,
        file_affine=file_affine,
    )


def load_image(
    path: str | os.PathLike,
    *,
    canonical: bool = True,
    dtype=np.float32,
    channels: bool = False,
) -> Volume:
    """Load a NIfTI image (``.nii`` / ``.nii.gz``) as a float :class:`Volume`.

    Args:
      path: the file.
      canonical: reorient to the closest RAS+ orientation (lossless axis permutation / flips,
        affine kept consistent; see the module docstring). :func:`save_image` with this volume
        as ``reference`` restores the file's orientation.
      dtype: float dtype of ``data`` (NIfTI scaling ``scl_slope`` / ``scl_inter`` applied).
      channels: if False (default) the file must hold one 3-D volume (a trailing 4th axis of
        size 1 is dropped) and ``data`` is ``[X, Y, Z]``; if True, ``data`` is
        ``[X, Y, Z, C]`` (the 4th non-singleton axis, ``C = 1`` for a 3-D file).

    Returns:
      The volume; ``data`` C-contiguous, ``affine`` of the (reoriented) grid.

    Raises:
      DataError: missing / unreadable / non-NIfTI / truncated file, wrong number of
        dimensions, zero-size data, NaN or Inf voxels (count and first voxel), singular affine.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a float dtype; got {dtype}")
    p, img = _open(path)
    arr = _to_spatial(p, _read_array(p, img), channels)
    if arr.dtype.kind == "f":
        _check_finite(p, arr, "image")
    with np.errstate(over="ignore"):
        arr = arr.astype(dtype, copy=False)
    _check_finite(p, arr, "image")  # e.g. float64 values that overflow float32
    return _make_volume(p, img, arr, canonical)


def load_labels(path: str | os.PathLike, *, canonical: bool = True) -> Volume:
    """Load a NIfTI label map as an ``int32`` ``[X, Y, Z]`` :class:`Volume`.

    Integer files are cast to ``int32``; float files (or scaled integer files) are accepted
    when every value is a whole number (``2.0`` -> ``2``).

    Raises:
      DataError: everything :func:`load_image` checks, plus non-integer values (count and an
        example voxel), negative labels, labels beyond the ``int32`` range.
    """
    p, img = _open(path)
    arr = _to_spatial(p, _read_array(p, img), channels=False)
    if arr.dtype.kind == "f":
        _check_finite(p, arr, "label map")
        frac = arr != np.rint(arr)
        n = int(np.count_nonzero(frac))
        if n:
            idx = _first(frac)
            raise DataError(
                p, f"label map has {n} non-integer values (e.g. {arr[idx]:g} at voxel {idx})"
            )
    neg = arr < 0
    n = int(np.count_nonzero(neg))
    if n:
        idx = _first(neg)
        raise DataError(p, f"label map has {n} negative labels (e.g. {arr[idx]:g} at voxel {idx})")
    top = arr.max()
    if top > _INT32.max:
        raise DataError(p, f"label map has a label {top:g} beyond the int32 range")
    return _make_volume(p, img, arr.astype(np.int32), canonical)


def _grid_mismatch(
    shape_a, affine_a, shape_b, affine_b, *, atol_mm: float
) -> tuple[str, float] | None:
    """``None`` if two grids agree, else ``("shape", 0)`` or ``("affine", deviation_mm)``."""
    if tuple(shape_a) != tuple(shape_b):
        return "shape", 0.0
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape_a])), np.float64)
    corners = np.concatenate([corners, np.ones((len(corners), 1))], axis=1)
    diff = (np.asarray(affine_a, np.float64) - np.asarray(affine_b, np.float64))[:3] @ corners.T
    dev = float(np.linalg.norm(diff, axis=0).max())
    return None if dev <= atol_mm else ("affine", dev)


def _fmt_affine(a) -> str:
    return " ".join(np.array2string(np.asarray(a)[:3], precision=4, separator=", ").split())


def check_pair(
    image: Volume, labels: Volume, *, atol_mm: float = 1e-3, what: str = "label"
) -> None:
    """Check that an image and its label map lie on the same voxel grid.

    Shapes must be equal (spatial axes; ``image`` may have a channel axis, and so may
    ``labels``: multi-label maps ``[X, Y, Z, K]``) and the affines must agree to ``atol_mm``:
    the largest distance, over the grid's corner voxels (hence over every voxel), between the
    world positions the two affines give. ``what`` names the second volume in the message
    (``"label"``, ``"mask"``, ``"channel"``, ``"field"``...).

    Raises:
      DataError: naming both files, with both shapes or both affines.
    """
    names = f"{image.path or '<image>'} / {labels.path or f'<{what}>'}"
    bad = None if labels.data.ndim in (3, 4) else ("shape", 0.0)
    bad = bad or _grid_mismatch(
        image.shape, image.affine, labels.shape, labels.affine, atol_mm=atol_mm
    )
    if bad is None:
        return
    if bad[0] == "shape":
        raise DataError(
            names,
            f"image shape {tuple(image.data.shape)} does not match {what} shape "
            f"{tuple(labels.data.shape)}",
        )
    raise DataError(
        names,
        f"affines differ by up to {bad[1]:.4g} mm (tolerance {atol_mm:g} mm): image affine "
        f"{_fmt_affine(image.affine)} vs {what} affine {_fmt_affine(labels.affine)}",
    )


def load_multilabel(path: str | os.PathLike, *, canonical: bool = True) -> Volume:
    """Load a multi-label map: ``K`` binary channels ``[X, Y, Z, K]`` as a ``uint8`` Volume.

    Channel ``k`` is the (possibly overlapping) mask of structure ``k``; a 3-D file is one
    channel (``K = 1``). The file is 4-D ``[X, Y, Z, K]`` (or 5-D ``[X, Y, Z, 1, K]``); 2-D
    maps are ``[H, W, 1, K]``.

    Raises:
      DataError: everything :func:`load_image` checks, plus values other than 0 and 1 (count
        and an example voxel, in file indices).
    """
    p, img = _open(path)
    arr = _to_spatial(p, _read_array(p, img), channels=True)
    if arr.dtype.kind == "f":
        _check_finite(p, arr, "multi-label map")
    bad = (arr != 0) & (arr != 1)
    n = int(np.count_nonzero(bad))
    if n:
        idx = _first(bad)
        raise DataError(
            p,
            f"multi-label map must be binary (0/1) in each of its {arr.shape[-1]} channels; "
            f"{n} voxels are not (e.g. {arr[idx]:g} at voxel {idx[:3]}, channel {idx[3]})",
        )
    return _make_volume(p, img, arr.astype(np.uint8), canonical)


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def _normalize_one(x: np.ndarray, mask, lower: float, upper: float) -> np.ndarray:
    vals = x[mask] if mask is not None else x.ravel()
    if vals.size == 0:
        raise ValueError("mask selects no voxels")
    if not np.all(np.isfinite(vals)):
        raise ValueError("data has NaN or Inf values")
    lo, hi = np.percentile(vals, [lower, upper])
    if not hi > lo:  # constant (within the percentile window): no contrast to scale
        return np.zeros(x.shape, np.float32)
    return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def normalize_intensity(
    data,
    *,
    lower: float = 0.5,
    upper: float = 99.5,
    mask=None,
    channel_axis: int | None = None,
) -> np.ndarray:
    """Clip intensities to the ``[lower, upper]`` percentiles, then scale them to ``[0, 1]``.

    ``lo, hi = percentile(data[mask], [lower, upper])`` (linear interpolation, numpy's
    default); the result is ``(clip(data, lo, hi) - lo) / (hi - lo)``, so ``lo`` -> 0 and
    ``hi`` -> 1. The mask (e.g. a brain or body mask) only selects the voxels the percentiles
    are computed from; every voxel is clipped and scaled. If ``hi == lo`` (constant image, or
    a percentile window without contrast) the result is all zeros: never NaN.

    Args:
      data: ``[*S]`` or ``[*S, C]`` array.
      lower, upper: percentiles in ``[0, 100]``, ``lower < upper`` (``0, 100``: min-max).
      mask: optional boolean array of ``data``'s shape (or of the spatial shape when
        ``channel_axis`` is given).
      channel_axis: if given, each channel along this axis is normalised on its own
        (multi-modal images); otherwise all values share one ``lo, hi``.

    Returns:
      float32 array of ``data``'s shape, values in ``[0, 1]``.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100; got lower={lower}, upper={upper}")
    x = np.asarray(data, dtype=np.float64)
    m = None if mask is None else np.asarray(mask, dtype=bool)
    if channel_axis is None:
        if m is not None and m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} does not match data shape {x.shape}")
        return _normalize_one(x, m, lower, upper)
    xc = np.moveaxis(x, channel_axis, -1)
    if m is not None and m.shape != xc.shape[:-1]:
        raise ValueError(f"mask shape {m.shape} does not match spatial shape {xc.shape[:-1]}")
    out = np.stack([_normalize_one(xc[..., c], m, lower, upper) for c in range(xc.shape[-1])], -1)
    return np.moveaxis(out, -1, channel_axis)


def resample_to_spacing(
    vol: Volume,
    spacing: float | Sequence[float],
    *,
    order: int = 1,
    mode: str = "nearest",
) -> Volume:
    """Resample a volume to a new voxel spacing (same orientation and field of view).

    The new grid has ``round(n * old_spacing / new_spacing)`` voxels per axis (at least 1),
    centred on the old grid: new voxel ``j`` sits at old (fractional) index
    ``scale * j + offset`` with ``scale = new_spacing / old_spacing`` and
    ``offset = ((n_old - 1) - scale * (n_new - 1)) / 2``, and the new affine is
    ``affine @ [[diag(scale), offset], [0, 1]]``, so the world position of every new voxel
    centre is the point its value was interpolated at. Values are sampled with
    ``scipy.ndimage.affine_transform`` (``order`` 0: nearest, for label maps; 1: linear;
    3: cubic spline), channel by channel.

    Args:
      vol: the volume (``[X, Y, Z]`` or ``[X, Y, Z, C]``).
      spacing: new voxel size in mm, one number or one per array axis.
      order: interpolation order; integer data (labels) require ``order=0`` and stay integer
        (same dtype, values from the input's label set).
      mode: ``scipy.ndimage`` boundary mode for points just outside the old grid.

    Returns:
      A new :class:`Volume` (``header`` / ``ornt`` / ``path`` kept, so it can still be a
      ``reference`` for :func:`save_image`).
    """
    new_sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if not np.all(new_sp > 0) or not np.all(np.isfinite(new_sp)):
        raise ValueError(f"spacing must be positive; got {spacing}")
    integer = vol.data.dtype.kind in "biu"
    if integer and order != 0:
        raise DataError(
            vol.path,
            f"integer data (dtype {vol.data.dtype}, e.g. a label map) must be resampled with "
            f"order=0, got order={order}",
        )
    old_sp = np.asarray(vol.spacing)
    old_shape = np.asarray(vol.shape)
    new_shape = np.maximum(1, np.round(old_shape * old_sp / new_sp)).astype(int)
    scale = new_sp / old_sp
    offset = ((old_shape - 1) - scale * (new_shape - 1)) / 2.0
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = offset
    data = vol.data[..., None] if vol.data.ndim == 3 else vol.data
    out = np.stack(
        [
            ndimage.affine_transform(
                data[..., c],
                scale,
                offset=offset,
                output_shape=tuple(int(n) for n in new_shape),
                order=order,
                mode=mode,
                prefilter=order > 1,
            )
            for c in range(data.shape[-1])
        ],
        axis=-1,
    )
    if vol.data.ndim == 3:
        out = out[..., 0]
    return dataclasses.replace(vol, data=out, affine=vol.affine @ step, file_affine=None)


@dataclasses.dataclass(frozen=True)
class CropPadInfo:
    """What :func:`crop_or_pad` did, per leading (spatial) axis; consumed by :func:`uncrop`.

    Attributes:
      original_shape: the input's shape along those axes.
      crop: ``(start, stop)`` range of the input that was kept, per axis.
      pad: ``(before, after)`` voxels added after cropping, per axis.
    """

    original_shape: tuple[int, ...]
    crop: tuple[tuple[int, int], ...]
    pad: tuple[tuple[int, int], ...]

    @property
    def offset(self) -> tuple[int, ...]:
        """Output voxel ``j`` is input voxel ``j + offset`` (per axis)."""
        return tuple(c[0] - p[0] for c, p in zip(self.crop, self.pad))

    def update_affine(self, affine) -> np.ndarray:
        """Affine of the cropped / padded grid given the input's ``[4, 4]`` affine."""
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or len(self.offset) != 3:
            raise ValueError("update_affine needs a 4x4 affine and 3 cropped/padded axes")
        shift = np.eye(4)
        shift[:3, 3] = self.offset
        return affine @ shift


def crop_or_pad(data, shape: Sequence[int], *, value=0) -> tuple[np.ndarray, CropPadInfo]:
    """Centre-crop or pad the leading ``len(shape)`` axes of ``data`` to ``shape``.

    Per axis of size ``n`` and target ``m``: if ``n > m`` keep ``[(n - m) // 2, ... + m)``;
    if ``n < m`` pad ``(m - n) // 2`` before and the rest after with ``value``. Trailing axes
    (channels) are untouched. The grid's affine changes by a translation:
    ``info.update_affine(affine)``.

    Returns:
      ``(array, info)``; :func:`uncrop` with ``info`` undoes it.
    """
    data = np.asarray(data)
    shape = tuple(int(m) for m in shape)
    k = len(shape)
    if k > data.ndim or any(m < 1 for m in shape):
        raise ValueError(f"cannot crop/pad shape {data.shape} to {shape}")
    crop, pad = [], []
    for n, m in zip(data.shape[:k], shape):
        start = max(n - m, 0) // 2
        crop.append((start, start + min(n, m)))
        before = max(m - n, 0) // 2
        pad.append((before, max(m - n, 0) - before))
    out = data[tuple(slice(a, b) for a, b in crop)]
    widths = pad + [(0, 0)] * (data.ndim - k)
    if any(w != (0, 0) for w in widths):
        out = np.pad(out, widths, mode="constant", constant_values=value)
    info = CropPadInfo(tuple(int(n) for n in data.shape[:k]), tuple(crop), tuple(pad))
    return out, info


def uncrop(data, info: CropPadInfo, original_shape: Sequence[int] | None = None, *, value=0):
    """Inverse of :func:`crop_or_pad`: back to the original shape.

    Removes the padding and pads the cropped-away borders with ``value`` (their content is
    lost), so ``uncrop(crop_or_pad(x, s)[0], info)`` equals ``x`` on the kept region and
    ``crop_or_pad(uncrop(y, info), s)[0]`` equals ``y`` wherever ``y`` was not padding.

    Args:
      data: array whose leading axes have the cropped / padded shape (e.g. a prediction).
      info: from :func:`crop_or_pad`.
      original_shape: optional check: must equal ``info.original_shape`` (trailing axes may
        be given too and are ignored).
    """
    data = np.asarray(data)
    k = len(info.original_shape)
    if original_shape is not None and tuple(original_shape)[:k] != info.original_shape:
        raise ValueError(
            f"original_shape {tuple(original_shape)} does not match info {info.original_shape}"
        )
    expected = tuple((c1 - c0) + p0 + p1 for (c0, c1), (p0, p1) in zip(info.crop, info.pad))
    if data.shape[:k] != expected:
        raise ValueError(f"data shape {data.shape} does not match the cropped shape {expected}")
    out = data[tuple(slice(p0, p0 + (c1 - c0)) for (c0, c1), (p0, _) in zip(info.crop, info.pad))]
    widths = [(c0, n - c1) for (c0, c1), n in zip(info.crop, info.original_shape)]
    widths += [(0, 0)] * (data.ndim - k)
    if any(w != (0, 0) for w in widths):
        out = np.pad(out, widths, mode="constant", constant_values=value)
    return out


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """Orientation taking ``apply_orientation(x, ornt)`` back to ``x``."""
    inv = np.empty_like(ornt)
    for axis, (dest, flip) in enumerate(ornt):
        inv[int(dest)] = (axis, flip)
    return inv


def _output_dtype(p: str, arr: np.ndarray, dtype) -> np.dtype:
    if dtype is not None:
        target = np.dtype(dtype)
    elif arr.dtype.kind == "b":
        target = np.dtype(np.uint8)
    elif arr.dtype == np.float16:
        target = np.dtype(np.float32)
    elif arr.dtype.itemsize == 8 and arr.dtype.kind in "iu":
        target = np.dtype(np.int32)  # int64 NIfTI files are not read by every tool
    else:
        target = arr.dtype
    if target.kind not in "iuf" or target == np.float16:
        raise DataError(p, f"cannot save dtype {target} as NIfTI (use an integer or float dtype)")
    return target


def _cast(p: str, arr: np.ndarray, target: np.dtype) -> np.ndarray:
    if target.kind in "iu":
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise DataError(p, f"cannot save NaN/Inf values as {target}")
            arr = np.rint(arr)
        if arr.dtype.kind == "f" or not np.can_cast(arr.dtype, target):
            info = np.iinfo(target)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise DataError(p, f"values in [{lo:g}, {hi:g}] do not fit in {target}")
    return arr.astype(target, copy=False)


def _file_mode(p: str) -> int:
    with contextlib.suppress(OSError):
        return os.stat(p).st_mode & 0o7777
    umask = None
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_save(img, p: str) -> None:
    """Write a nibabel image to ``p`` atomically (temp file in the same folder, fsync,
    ``os.replace``); the parent folder is created; on failure nothing is left behind."""
    directory = os.path.dirname(os.path.abspath(p))
    os.makedirs(directory, exist_ok=True)
    suffix = ".nii.gz" if p.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(p)}.", suffix=f".tmp{suffix}", dir=directory
    )
    os.close(fd)
    try:
        nib.save(img, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(p))
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_image(
    path: str | os.PathLike,
    data,
    *,
    reference: Volume | None = None,
    affine=None,
    dtype=None,
    label_names: Mapping | None = None,
) -> None:
    """Write a scalar, label or multi-channel volume as NIfTI, atomically.

    Args:
      path: ``.nii`` or ``.nii.gz`` file; its directory is created if missing. Written to a
        temporary file in that directory and moved into place with ``os.replace``.
      data: ``[X, Y, Z]`` (image or label map) or ``[X, Y, Z, C]`` (stored as a 4-D file)
        array on ``reference``'s grid, numpy or JAX. (Displacement fields for ANTs/ITK: use
        :func:`jrs_jax.data.save_ants_warp`.)
      reference: the :class:`Volume` whose grid ``data`` is on (typically the loaded input).
        The file gets the reference file's orientation (the canonical reorientation of
        :func:`load_image` is undone), affine and header (dtype, shape and scaling updated,
        ``cal_min/cal_max`` reset), so it overlays the input in any viewer.
      affine: instead of ``reference``: the ``[4, 4]`` voxel-to-RAS affine of ``data``
        (stored as sform and qform, code 1); a fresh header.
      dtype: stored dtype. Default: ``data``'s (bool -> uint8, float16 -> float32, 64-bit
        integers -> int32). Floats saved as an integer dtype are rounded to nearest; values
        out of the dtype's range raise :class:`DataError`. No intensity scaling is applied.
      label_names: ``{label or channel index: name}`` stored in the file, as a NIfTI comment
        extension holding ``{"label_names": {...}}`` JSON (read back by
        :func:`read_label_names`), and the names joined into ``descrip`` (80 characters).
    """
    p = os.fspath(path)
    if not (p.endswith(".nii") or p.endswith(".nii.gz")):
        raise DataError(p, "output file name must end in .nii or .nii.gz")
    if (reference is None) == (affine is None):
        raise ValueError("save_image needs exactly one of reference= or affine=")
    arr = np.asarray(data)
    if arr.ndim not in (3, 4) or arr.size == 0:
        raise DataError(
            p, f"can only save non-empty [X, Y, Z] or [X, Y, Z, C] arrays, got shape {arr.shape}"
        )
    arr = _cast(p, arr, _output_dtype(p, arr, dtype))

    header = None
    if reference is not None:
        if arr.shape[:3] != reference.shape:
            raise DataError(
                f"{p} / {reference.path or '<reference>'}",
                f"data shape {arr.shape} does not match the reference grid {reference.shape}",
            )
        inv = _inverse_ornt(reference.ornt)
        if not np.array_equal(inv, _IDENTITY_ORNT):
            arr = np.ascontiguousarray(nio.apply_orientation(arr, inv))
        file_affine = reference.affine @ nio.inv_ornt_aff(inv, reference.shape)
        if reference.file_affine is not None and np.allclose(
            file_affine, reference.file_affine, rtol=0.0, atol=1e-6
        ):
            file_affine = reference.file_affine  # bit-exact affine of the input file
        if isinstance(reference.header, nib.Nifti1Header):
            header = reference.header.copy()
    else:
        file_affine = np.asarray(affine, dtype=np.float64)
        if file_affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4; got shape {file_affine.shape}")

    if header is None:
        img = nib.Nifti1Image(arr, file_affine)
        img.header.set_sform(file_affine, code=1)
        img.header.set_qform(file_affine, code=1)
        img.header.set_xyzt_units("mm")
    else:
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        if not np.array_equal(header.get_best_affine(), file_affine):
            sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
            header.set_sform(file_affine, code=sform_code or 2)
            header.set_qform(file_affine, code=qform_code)
        img = cls(arr, file_affine, header=header)
        img.header["cal_min"] = 0
        img.header["cal_max"] = 0
    img.header.set_data_dtype(arr.dtype)
    if label_names:
        names = {str(int(k)): str(v) for k, v in dict(label_names).items()}
        ext = nib.nifti1.Nifti1Extension("comment", json.dumps({"label_names": names}).encode())
        img.header.extensions.append(ext)
        img.header["descrip"] = " ".join(f"{k}={v}" for k, v in names.items())[:79].encode()
    atomic_save(img, p)


def read_label_names(path: str | os.PathLike) -> dict[int, str] | None:
    """The label names :func:`save_image` stored in a file (``label_names=``), or ``None``."""
    _, img = _open(path)
    for ext in getattr(img.header, "extensions", []):
        if ext.get_code() != 6:  # comment
            continue
        try:
            names = json.loads(ext.get_content()).get("label_names")
        except (ValueError, AttributeError):
            continue
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
    return None
