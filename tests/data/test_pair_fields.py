"""Pair-level ground-truth fields in the data layer: ``Dataset.pair_fields``, the
``registration_val`` ``disp`` files (written, read back lazily, checked against the fixed
image's grid) and ``pair_batch(fields=True)`` preferring them to subject composition."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from jrs_jax.data import Dataset, Subject, load_learn2reg, pair_batch, save_image, write_learn2reg
from jrs_jax.data.datasets import _DeferredField

SHAPE = (12, 10)


def _subject(i: int, *, fields: bool) -> Subject:
    rng = np.random.default_rng(i)
    return Subject(
        name=f"case_{i}",
        image=rng.random((*SHAPE, 1)).astype(np.float32),
        labels=(rng.random(SHAPE) > 0.5).astype(np.int32),
        affine=np.diag([1.5, 2.0, 1.0, 1.0]),
        spacing=(1.5, 2.0),
        image_path="",
        held_out=True,
        field=np.full((*SHAPE, 2), (0.5, 0.0), np.float32) if fields else None,
        field_inv=np.full((*SHAPE, 2), (0.0, -0.25), np.float32) if fields else None,
    )


def _pair_value(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(*SHAPE, 2)).astype(np.float32)


@pytest.fixture
def written(tmp_path):
    """A written dataset: subjects 0, 1 with subject fields, 2 without; validation pairs
    (0, 1) and (2, 0) with pair fields, (1, 0) without."""
    ds = Dataset(
        subjects=(_subject(0, fields=True), _subject(1, fields=True), _subject(2, fields=False)),
        val_pairs=((0, 1), (2, 0), (1, 0)),
        pair_fields={(0, 1): _pair_value(1), (2, 0): _pair_value(2)},
    )
    return write_learn2reg(tmp_path / "d", ds, extra={"ndim": 2}), ds


def test_written_as_registration_val_disp(written):
    path, _ = written
    meta = json.load(open(path))
    val = meta["registration_val"]
    assert val[0]["disp"] == "./fieldsVal/case_0_case_1_disp.nii.gz"
    assert val[1]["disp"] == "./fieldsVal/case_2_case_0_disp.nii.gz"
    assert "disp" not in val[2]
    root = os.path.dirname(path)
    assert sorted(os.listdir(os.path.join(root, "fieldsVal"))) == [
        "case_0_case_1_disp.nii.gz",
        "case_2_case_0_disp.nii.gz",
    ]


def test_read_back_lazily_and_preferred_by_pair_batch(written):
    path, src = written
    ds = load_learn2reg(path, normalize=False)
    index = {s.name: i for i, s in enumerate(ds.subjects)}
    a, b, c = index["case_0"], index["case_1"], index["case_2"]
    assert set(ds.pair_fields) == {(a, b), (c, a)}
    assert all(isinstance(v, _DeferredField) for v in ds.pair_fields.values())  # not read yet
    assert ds.has_pair_field(a, b) and not ds.has_pair_field(b, a)
    assert ds.has_ground_truth([[a, b], [c, a], [b, a]])
    assert not ds.has_ground_truth([[b, c]]) and not ds.has_ground_truth(np.zeros((0, 2)))
    np.testing.assert_array_equal(ds.pair_field(a, b), src.pair_fields[(0, 1)])
    assert isinstance(ds.pair_fields[(a, b)], np.ndarray)  # cached after the first access
    assert ds.pair_field(b, a) is None

    gt = pair_batch(ds, [[a, b], [c, a], [b, a]], fields=True)["gt_disp"]
    assert gt.shape == (3, *SHAPE, 2) and gt.dtype == np.float32
    np.testing.assert_array_equal(gt[0], src.pair_fields[(0, 1)])  # not the composition
    np.testing.assert_array_equal(gt[1], src.pair_fields[(2, 0)])  # subject 2 has no fields
    np.testing.assert_allclose(gt[2], np.full((*SHAPE, 2), (0.5, -0.25)), atol=1e-6)
    with pytest.raises(ValueError, match=r"pair \(fixed=1, moving=2\).*'case_1' <- 'case_2'"):
        pair_batch(ds, [[a, b], [b, c]], fields=True)

    eager = load_learn2reg(path, fields=True)
    assert isinstance(eager.pair_fields[(a, b)], np.ndarray)
    assert load_learn2reg(path, fields=False).pair_fields == {}


def test_round_trip_keeps_pair_fields(written, tmp_path):
    path, src = written
    ds = load_learn2reg(path, normalize=False)
    again = load_learn2reg(write_learn2reg(tmp_path / "again", ds), normalize=False)
    for (f, m), v in src.pair_fields.items():
        np.testing.assert_array_equal(again.pair_field(f, m), v)


@pytest.mark.parametrize(
    "bad, eager",
    [
        (np.zeros((*SHAPE[::-1], 1, 2), np.float32), "does not match field shape"),
        (np.zeros((*SHAPE, 1, 3), np.float32), r"must be \[\*S, 2\]"),
    ],
    ids=["shape", "components"],
)
def test_off_grid_pair_field_is_an_error_naming_the_file(written, bad, eager):
    path, _ = written
    f = os.path.join(os.path.dirname(path), "fieldsVal", "case_2_case_0_disp.nii.gz")
    save_image(f, bad, affine=np.diag([1.5, 2.0, 1.0, 1.0]))
    # lazy: the header check of subject fields; eager: the full loader's message
    for fields, match in (("lazy", "does not match the image grid"), (True, eager)):
        with pytest.raises(ValueError, match=match) as err:
            load_learn2reg(path, fields=fields)
        assert "case_2_case_0_disp.nii.gz" in str(err.value)
        assert "registration_val[1] disp" in str(err.value)
        assert "\n" not in str(err.value)


def test_wrong_affine_is_an_error(written):
    path, _ = written
    f = os.path.join(os.path.dirname(path), "fieldsVal", "case_0_case_1_disp.nii.gz")
    save_image(f, np.zeros((*SHAPE, 1, 2), np.float32), affine=np.diag([1.0, 2.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=re.escape("case_0_case_1_disp.nii.gz")):
        load_learn2reg(path)


def test_missing_pair_field_file_is_an_error(written):
    path, _ = written
    os.remove(os.path.join(os.path.dirname(path), "fieldsVal", "case_0_case_1_disp.nii.gz"))
    with pytest.raises(ValueError, match=r"registration_val\[0\] disp.*not found"):
        load_learn2reg(path)


def test_dataset_checks_pair_field_keys(tmp_path):
    subs = (_subject(0, fields=False), _subject(1, fields=False))
    with pytest.raises(ValueError, match="out of range"):
        Dataset(subjects=subs, pair_fields={(0, 2): _pair_value(0)})
    ds = Dataset(subjects=subs, val_pairs=((0, 1),), pair_fields={(1, 0): _pair_value(0)})
    with pytest.raises(ValueError, match="not validation pairs"):
        write_learn2reg(tmp_path / "x", ds)
