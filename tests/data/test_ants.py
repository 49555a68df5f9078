"""Tests for :mod:`jrs_jax.data.ants` (ANTs / ITK displacement-field files)."""

from __future__ import annotations

import jax
import nibabel as nib
import numpy as np
import pytest

import jrs_jax.spatial
from jrs_jax.data import load_ants_warp, save_ants_warp
from jrs_jax.spatial import random_velocity, to_physical_displacement

SHAPES = {2: (9, 7), 3: (7, 6, 5)}


def _field(ndim, *, seed=0, batch=2):
    """A smooth random field (amplitude 1.5 voxels)."""
    key = jax.random.PRNGKey(seed)
    return random_velocity(key, SHAPES[ndim], batch_size=batch, amplitude=1.5, control_spacing=3)


def test_io_lives_in_data_not_spatial():
    assert not hasattr(jrs_jax.spatial, "save_ants_warp")
    assert not hasattr(jrs_jax.spatial, "load_ants_warp")
    assert not hasattr(jrs_jax.spatial.convert, "save_ants_warp")


@pytest.mark.parametrize("ndim", [2, 3])
def test_save_load_ants_warp(tmp_path, ndim, oblique_affine):
    affine = oblique_affine(ndim, seed=4)
    u = np.asarray(_field(ndim, seed=10, batch=1)[0])
    path = tmp_path / "movingToFixed_1Warp.nii.gz"
    save_ants_warp(path, u, affine)

    img = nib.load(path)
    spatial = (*SHAPES[ndim], *(1,) * (3 - ndim))
    assert img.shape == (*spatial, 1, ndim)
    assert int(img.header["intent_code"]) == 1007
    assert img.header.get_intent()[0] == "vector"
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    # stored values are the LPS vectors
    stored = np.asarray(img.dataobj).reshape(*SHAPES[ndim], ndim)
    np.testing.assert_allclose(stored, to_physical_displacement(u, affine), atol=1e-4)

    disp, aff = load_ants_warp(path)
    assert disp.shape == u.shape and disp.dtype == np.float32
    np.testing.assert_allclose(aff, affine, atol=1e-5)
    np.testing.assert_allclose(disp, u, atol=1e-5)


def test_save_ants_warp_accepts_batch_of_one(tmp_path, oblique_affine):
    affine = oblique_affine(3)
    u = np.asarray(_field(3, batch=1))
    save_ants_warp(tmp_path / "w.nii", u, affine)
    disp, _ = load_ants_warp(tmp_path / "w.nii")
    np.testing.assert_allclose(disp, u[0], atol=1e-5)
    with pytest.raises(ValueError):
        save_ants_warp(tmp_path / "w2.nii", np.zeros((2, 4, 4, 4, 3)), affine)


def test_load_ants_warp_rejects_plain_volume(tmp_path):
    path = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), path)
    with pytest.raises(ValueError):
        load_ants_warp(path)
