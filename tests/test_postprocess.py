"""Tests for jrs_jax.postprocess.largest_component: the bigger blob of a class is kept and
the others become background, single-component maps are unchanged, ties are deterministic,
connectivity, 3-D, batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import jrs_jax
from jrs_jax.postprocess import largest_component


def _two_blobs():
    """Class 1: a 3x3 blob and a 2x2 island; class 2: one 2x4 bar touching the blob."""
    lab = np.zeros((12, 12), np.int32)
    lab[1:4, 1:4] = 1
    lab[8:10, 8:10] = 1
    lab[4:6, 1:5] = 2
    return lab


def test_keeps_the_bigger_blob():
    lab = _two_blobs()
    out = largest_component(lab)
    assert out.dtype == lab.dtype and out.shape == lab.shape
    assert (out == 1).sum() == 9 and np.all(out[1:4, 1:4] == 1)
    assert np.all(out[8:10, 8:10] == 0)  # the island became background
    np.testing.assert_array_equal(out == 2, lab == 2)  # the other class is untouched
    assert np.all(lab[8:10, 8:10] == 1)  # the input is not modified
    # every class of the result is one component
    for k in (1, 2):
        assert ndimage.label(out == k)[1] == 1
    assert jrs_jax.postprocess.largest_component is largest_component


def test_single_component_maps_are_unchanged():
    rng = np.random.default_rng(0)
    lab = np.zeros((20, 20), np.int64)
    lab[2:15, 3:12] = 1
    lab[5:9, 5:9] = 2
    lab[15:18, 3:19] = 3
    np.testing.assert_array_equal(largest_component(lab), lab)
    np.testing.assert_array_equal(largest_component(np.zeros((6, 6), np.int32)), 0)
    noisy = rng.integers(0, 3, (16, 16))  # many components: each class is reduced to one
    out = largest_component(noisy)
    for k in (1, 2):
        comp = ndimage.label(noisy == k)[0]
        assert ndimage.label(out == k)[1] == 1
        assert (out == k).sum() == np.bincount(comp.ravel())[1:].max()
    assert np.all((out == noisy) | (out == 0))


def test_ties_are_deterministic():
    lab = np.zeros((10, 10), np.int32)
    lab[6:8, 6:8] = 1  # listed second in raster order ...
    lab[1:3, 1:3] = 1  # ... this one first: it is kept
    out = largest_component(lab)
    assert out[1:3, 1:3].all() and not out[6:8, 6:8].any()
    np.testing.assert_array_equal(out, largest_component(lab))
    flipped = largest_component(lab[::-1, ::-1])  # the first one in raster order again
    assert flipped[2:4, 2:4].all() and not flipped[7:9, 7:9].any()


def test_connectivity_and_num_classes():
    lab = np.zeros((8, 8), np.int32)
    lab[1:3, 1:3] = 1
    lab[3, 3] = 1  # touches the blob diagonally only
    assert largest_component(lab)[3, 3] == 0  # face neighbours: a separate component
    assert largest_component(lab, connectivity=2)[3, 3] == 1  # 8-neighbours: one component
    lab[6, 6] = 5
    lab[6, 7] = 0
    np.testing.assert_array_equal(largest_component(lab, num_classes=6)[6, 6], 5)
    with pytest.raises(ValueError, match="num_classes"):
        largest_component(lab, num_classes=4)
    # classes: only those are processed
    two = _two_blobs()
    np.testing.assert_array_equal(largest_component(two, classes=[2]), two)
    np.testing.assert_array_equal(largest_component(two, classes=[1, 2]), largest_component(two))
    with pytest.raises(ValueError, match="background"):
        largest_component(two, classes=[0, 1])
    with pytest.raises(ValueError, match="connectivity"):
        largest_component(lab, connectivity=3)
    with pytest.raises(ValueError, match="integer"):
        largest_component(lab.astype(np.float32))


def test_3d_and_batched():
    vol = np.zeros((10, 10, 10), np.int32)
    vol[1:5, 1:5, 1:5] = 2
    vol[7:9, 7:9, 7:9] = 2
    vol[1:3, 6:9, 6:9] = 3
    vol[8, 1, 1] = 3
    out = largest_component(vol)
    assert (out == 2).sum() == 64 and (out == 3).sum() == 18
    assert out[7:9, 7:9, 7:9].max() == 0 and out[8, 1, 1] == 0
    # the face of one voxel in 3-D: diagonal neighbours are not connected at connectivity 1
    vol2 = vol.copy()
    vol2[5, 5, 5] = 2  # touches the 4^3 blob at a corner only
    assert largest_component(vol2)[5, 5, 5] == 0
    assert largest_component(vol2, connectivity=3)[5, 5, 5] == 2
    # batched equals per item (2-D and 3-D maps)
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 4, (3, 14, 14)).astype(np.int32)
    batch = largest_component(maps, batched=True)
    np.testing.assert_array_equal(batch, np.stack([largest_component(m) for m in maps]))
    vols = np.stack([vol, vol2])
    np.testing.assert_array_equal(
        largest_component(vols, batched=True), np.stack([out, largest_component(vol2)])
    )
    with pytest.raises(ValueError, match="batched=True"):
        largest_component(vols)
