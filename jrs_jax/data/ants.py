"""ANTs / ITK displacement-field files (NIfTI vector images, LPS millimetres).

The conversions themselves are pure ``jax.numpy`` functions of :mod:`jrs_jax.spatial.convert`
(:func:`~jrs_jax.spatial.to_physical_displacement`,
:func:`~jrs_jax.spatial.from_physical_displacement`, whose module docstring explains the RAS /
LPS frames, the direction of ANTs warps and the shared-grid assumption); this module only adds
the file layout ANTs reads and writes (``(X, Y, Z, 1, 3)`` vector images, ``intent_code
1007``), through nibabel and :func:`~jrs_jax.data.atomic_save`.
"""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np

from ..spatial.convert import _spatial_ndim, lps_matrix
from .nifti import atomic_save

__all__ = ["NIFTI_INTENT_VECTOR", "load_ants_warp", "save_ants_warp"]

NIFTI_INTENT_VECTOR = 1007


def save_ants_warp(path: str | os.PathLike, disp, affine, *, dtype=np.float32) -> None:
    """Write a displacement as an ANTs/ITK NIfTI warp (e.g. ``*_1Warp.nii.gz``).

    The file holds ``jrs_jax.spatial.to_physical_displacement(disp, affine)`` (LPS, mm) as a
    5-D array of shape ``(X, Y, Z, 1, 3)`` (``(X, Y, 1, 1, 2)`` in 2-D): the 4th axis is
    NIfTI's time axis (size 1), the 5th the vector components. ``intent_code = 1007``
    (``NIFTI_INTENT_VECTOR``), units mm, and ``affine`` as both sform and qform (code 1).
    ANTs applies it as a pull-back from fixed to moving space (``antsApplyTransforms -r fixed
    -i moving -t path`` samples the moving image at ``p + d(p)`` for every fixed-space point
    ``p``), the same direction as ``warp(moving, disp)``; see :mod:`jrs_jax.spatial.convert`
    for the shared-grid assumption.

    Args:
      path: output ``.nii`` or ``.nii.gz`` path.
      disp: ``[*S, D]`` or ``[1, *S, D]`` voxel displacement (ij) on the fixed grid.
      affine: ``[4, 4]`` NIfTI voxel-to-world (RAS+) matrix of the fixed image.
      dtype: stored float type (ANTs writes float32).
    """
    disp = np.asarray(disp, dtype=np.float64)
    ndim = _spatial_ndim(disp)
    if disp.ndim == ndim + 2:
        if disp.shape[0] != 1:
            raise ValueError(f"save_ants_warp writes one field; got batch size {disp.shape[0]}")
        disp = disp[0]
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4; got shape {affine.shape}")
    d_lps = np.einsum("kl,...l->...k", lps_matrix(affine, ndim, np), disp)
    spatial = disp.shape[:-1] + (1,) * (3 - ndim)
    data = d_lps.reshape(*spatial, 1, ndim).astype(dtype)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_intent(NIFTI_INTENT_VECTOR)
    img.header.set_xyzt_units("mm")
    atomic_save(img, os.fspath(path))


def load_ants_warp(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an ANTs/ITK NIfTI displacement field as our voxel displacement.

    Expects the layout written by ANTs and :func:`save_ants_warp`: shape ``(X, Y, Z, 1, 3)``
    (or ``(X, Y, 1, 1, 2)``), LPS vectors in mm. Converts with
    :func:`~jrs_jax.spatial.from_physical_displacement` using the file's affine (nibabel's
    ``img.affine``: sform if set, else qform).

    Args:
      path: ``.nii`` / ``.nii.gz`` file.

    Returns:
      ``(disp, affine)``: ``disp`` ``[X, Y, Z, 3]`` (``[X, Y, 2]`` in 2-D) float32 voxel
      displacement (ij, unbatched: use ``disp[None]`` for :func:`jrs_jax.spatial.warp`), and
      the ``[4, 4]`` float64 voxel-to-RAS affine.
    """
    img = nib.load(os.fspath(path))
    shape = img.shape
    if len(shape) != 5 or shape[3] != 1 or shape[4] not in (2, 3):
        raise ValueError(
            f"not an ITK/ANTs displacement field: expected shape (X, Y, Z, 1, 3) or "
            f"(X, Y, 1, 1, 2), got {shape}"
        )
    ndim = int(shape[4])
    if ndim == 2 and shape[2] != 1:
        raise ValueError(f"a 2-D field must have shape (X, Y, 1, 1, 2); got {shape}")
    if int(img.header["intent_code"]) != NIFTI_INTENT_VECTOR:
        warnings.warn(
            f"{os.fspath(path)}: intent_code is {int(img.header['intent_code'])}, not "
            f"{NIFTI_INTENT_VECTOR} (NIFTI_INTENT_VECTOR); reading it as a displacement field "
            "anyway",
            stacklevel=2,
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    d_lps = np.asarray(img.dataobj, dtype=np.float64).reshape(*shape[:ndim], ndim)
    m_inv = np.linalg.inv(lps_matrix(affine, ndim, np))
    disp = np.einsum("kl,...l->...k", m_inv, d_lps)
    return disp.astype(np.float32), affine
