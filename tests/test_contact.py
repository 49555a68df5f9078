"""Tests for jrs_jax.metrics.contact_count (face-adjacent voxel pairs of two classes):
analytic values, symmetry, separation, translation invariance, 3-D, batches, a brute-force
reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jrs_jax.metrics import contact_count


def _squares(shape=(16, 16), *, h=5, w_a=4, w_b=3, gap=0, top=3, left=2):
    """Two axis-aligned rectangles of height ``h`` side by side along axis 1: class 1 then,
    ``gap`` columns further, class 2 (shared edge of length ``h`` when ``gap == 0``)."""
    lab = np.zeros(shape, np.int32)
    lab[top : top + h, left : left + w_a] = 1
    lab[top : top + h, left + w_a + gap : left + w_a + gap + w_b] = 2
    return lab


def _brute(lab: np.ndarray, a: int, b: int) -> int:
    """Every voxel and every face neighbour along +axis, one by one."""
    n = 0
    for idx in itertools.product(*[range(s) for s in lab.shape]):
        for ax in range(lab.ndim):
            j = list(idx)
            j[ax] += 1
            if j[ax] >= lab.shape[ax]:
                continue
            pair = {int(lab[idx]), int(lab[tuple(j)])}
            n += pair == {a, b}
    return n


@pytest.mark.parametrize("h", [1, 3, 7])
def test_shared_edge_length(h):
    assert contact_count(_squares(h=h), 1, 2) == h
    # stacked along axis 0 instead: the shared edge is the rectangles' width
    lab = np.zeros((16, 16), np.int32)
    lab[2:6, 3 : 3 + h] = 1
    lab[6:9, 3 : 3 + h] = 2
    assert contact_count(lab, 1, 2) == h


def test_symmetric_and_zero_when_separated():
    lab = _squares()
    assert contact_count(lab, 1, 2) == contact_count(lab, 2, 1) == 5
    assert contact_count(_squares(gap=1), 1, 2) == 0  # one column of background between
    # corners touching diagonally are not face neighbours
    lab = np.zeros((8, 8), np.int32)
    lab[1:3, 1:3] = 1
    lab[3:5, 3:5] = 2
    assert contact_count(lab, 1, 2) == 0
    assert contact_count(lab, 1, 7) == 0  # an absent class
    with pytest.raises(ValueError, match="differ"):
        contact_count(lab, 2, 2)


def test_translation_invariant_and_brute_force():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (12, 14))
    ref = _brute(lab, 1, 3)
    assert contact_count(lab, 1, 3) == ref > 0
    padded = np.zeros((20, 24), np.int64)
    for dy, dx in ((0, 0), (3, 5), (8, 10)):
        moved = padded.copy()
        moved[dy : dy + 12, dx : dx + 14] = lab
        assert contact_count(moved, 1, 3) == ref
    # integer-valued floats (as loaded by nibabel) count the same
    assert contact_count(lab.astype(np.float32), 3, 1) == ref


def test_3d():
    lab = np.zeros((10, 10, 10), np.int32)
    lab[2:5, 2:6, 3:7] = 1  # a 3 x 4 x 4 box
    lab[5:8, 2:6, 3:7] = 2  # stacked on it along axis 0: a 4 x 4 face
    assert contact_count(lab, 1, 2) == 16
    lab[5, 2, 3] = 0
    assert contact_count(lab, 2, 1) == 15
    rng = np.random.default_rng(1)
    r = rng.integers(0, 3, (5, 6, 4))
    assert contact_count(r, 0, 2) == _brute(r, 0, 2)


def test_batched():
    maps = np.stack([_squares(h=2), _squares(gap=1), _squares(h=6)])
    out = contact_count(maps, 1, 2, batched=True)
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 6]
    assert out.tolist() == [contact_count(m, 1, 2) for m in maps]
    vols = maps[..., None]  # [B, *S3]: 3-D maps with a singleton third axis
    assert contact_count(vols, 1, 2, batched=True).tolist() == [2, 0, 6]
    with pytest.raises(ValueError, match="batched=True"):
        contact_count(vols, 1, 2)
