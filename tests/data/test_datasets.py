"""Tests for :mod:`jrs_jax.data.datasets` (Learn2Reg / folder readers, pair samplers)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jrs_jax.data import DataError, labelled_case_pairs, save_image
from jrs_jax.data.datasets import Dataset, load_folder, load_learn2reg
from jrs_jax.data.sampling import all_pairs, atlas_pairs, sample_pairs
from jrs_jax.data.synthetic import write_learn2reg_dataset


@pytest.fixture(scope="module")
def l2r_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2r2d")
    return write_learn2reg_dataset(root, key=0, shape=(32, 32), num_subjects=6, num_labelled=3)


@pytest.fixture(scope="module")
def l2r_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2r3d")
    return write_learn2reg_dataset(
        root, key=1, shape=(16, 16, 16), num_subjects=5, num_labelled=2, num_heldout=2
    )


# --------------------------------------------------------------------------------------------
# Learn2Reg
# --------------------------------------------------------------------------------------------


def test_load_learn2reg_2d(l2r_2d):
    ds = load_learn2reg(l2r_2d)
    meta = json.load(open(l2r_2d))
    n_train = meta["numTraining"]  # 4 training + 2 held out
    assert len(ds) == 6 and ds.shape == (32, 32) and ds.ndim == 2
    for s in ds.subjects:
        assert s.image.shape == (32, 32, 1) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0  # normalised
        assert len(s.spacing) == 2
        if s.labels is not None:
            assert s.labels.shape == (32, 32) and s.labels.dtype == np.int32
    assert ds.training() == list(range(n_train))
    assert ds.labelled() == [0, 1, 2] and ds.unlabelled() == [3]
    assert ds.held_out() == [4, 5]
    # val pairs resolve to the held-out subjects, in the JSON's order
    assert len(ds.val_pairs) == len(meta["registration_val"]) > 0
    for (f, m), entry in zip(ds.val_pairs, meta["registration_val"], strict=True):
        assert ds.subjects[f].held_out and ds.subjects[m].held_out and f != m
        assert ds.subjects[f].image_path.endswith(os.path.basename(entry["fixed"]))
        assert ds.subjects[m].image_path.endswith(os.path.basename(entry["moving"]))
    # held-out labels are picked up from labelsTr for validation
    assert all(ds.subjects[i].labels is not None for i in ds.held_out())


def test_load_learn2reg_normalize_off_and_ndim3_override(l2r_2d):
    raw = load_learn2reg(l2r_2d, normalize=False)
    normed = load_learn2reg(l2r_2d)
    assert not np.allclose(raw.subjects[0].image, normed.subjects[0].image)
    as3d = load_learn2reg(l2r_2d, ndim=3, normalize=False)
    assert as3d.shape == (32, 32, 1)
    np.testing.assert_array_equal(as3d.subjects[0].image[:, :, 0], raw.subjects[0].image)


def test_load_learn2reg_3d_and_stack(l2r_3d):
    ds = load_learn2reg(l2r_3d)
    assert ds.shape == (16, 16, 16) and len(ds) == 5
    assert ds.labelled() == [0, 1] and ds.unlabelled() == [2]
    b = ds.stack([0, 2, 3])
    assert b["images"].shape == (3, 16, 16, 16, 1) and b["images"].dtype == np.float32
    assert b["labels"].shape == (3, 16, 16, 16) and b["labels"].dtype == np.int32
    assert b["has_label"].tolist() == [True, False, True]
    assert np.all(b["labels"][1] == 0) and b["labels"][0].max() > 0
    np.testing.assert_array_equal(b["images"][1], ds.subjects[2].image)


def test_split_labelled(l2r_2d):
    ds = load_learn2reg(l2r_2d)
    a = ds.split_labelled(2, key_or_seed=3)
    b = ds.split_labelled(2, key_or_seed=3)
    assert len(a.labelled()) == 2 and a.labelled() == b.labelled()
    assert set(a.labelled()) <= set(ds.labelled())
    assert len(a.unlabelled()) == 2
    assert all(a.subjects[i].labels is not None for i in a.held_out())  # untouched
    seen = {tuple(ds.split_labelled(1, key_or_seed=s).labelled()) for s in range(20)}
    assert len(seen) > 1  # depends on the seed
    assert ds.split_labelled(0, key_or_seed=0).labelled() == []
    with pytest.raises(ValueError, match="requested 5 labelled subjects but only 3 of 4"):
        ds.split_labelled(5, key_or_seed=0)


def _write_json(path, meta):
    with open(path, "w") as f:
        json.dump(meta, f)
    return str(path)


def test_learn2reg_json_errors(l2r_2d, tmp_path):
    meta = json.load(open(l2r_2d))
    root = os.path.dirname(l2r_2d)

    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=r"nope\.json"):
        load_learn2reg(missing)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json.*invalid JSON"):
        load_learn2reg(bad)

    p = _write_json(os.path.join(root, "no_training.json"), {"name": "x"})
    with pytest.raises(DataError, match=r"no_training\.json.*'training'"):
        load_learn2reg(p)

    m = dict(meta, training=[{"label": meta["training"][0]["label"]}])
    p = _write_json(os.path.join(root, "no_image.json"), m)
    with pytest.raises(DataError, match=r"no_image.json.*training\[0\].*'image'"):
        load_learn2reg(p)

    m = dict(meta, training=[*meta["training"], {"image": "./imagesTr/ghost.nii.gz"}])
    p = _write_json(os.path.join(root, "ghost.json"), m)
    with pytest.raises(DataError, match=r"ghost.json.*training\[4\].*ghost.nii.gz") as e:
        load_learn2reg(p)
    assert os.path.join(root, "imagesTr", "ghost.nii.gz") in str(e.value)

    m = dict(meta, registration_val=[{"fixed": "./imagesTr/x.nii.gz", "moving": "./y.nii.gz"}])
    p = _write_json(os.path.join(root, "ghost_val.json"), m)
    with pytest.raises(DataError, match=r"ghost_val.json.*registration_val\[0\] fixed"):
        load_learn2reg(p)


def test_learn2reg_shape_mismatch(tmp_path):
    aff = np.eye(4)
    save_image(tmp_path / "a.nii.gz", np.zeros((8, 8, 8), np.float32), affine=aff)
    save_image(tmp_path / "b.nii.gz", np.ones((8, 9, 8), np.float32), affine=aff)
    p = _write_json(
        tmp_path / "d.json", {"training": [{"image": "a.nii.gz"}, {"image": "b.nii.gz"}]}
    )
    with pytest.raises(DataError, match=r"d.json.*'b'.*\(8, 9, 8\).*resampl"):
        load_learn2reg(p)


# --------------------------------------------------------------------------------------------
# folder layout
# --------------------------------------------------------------------------------------------


def _folder(root, names, labelled):
    rng = np.random.default_rng(0)
    for n in names:
        save_image(
            root / "images" / f"{n}.nii.gz", rng.random((8, 8, 8), np.float32), affine=np.eye(4)
        )
    for n in labelled:
        lab = rng.integers(0, 3, (8, 8, 8)).astype(np.int32)
        save_image(root / "labels" / f"{n}.nii.gz", lab, affine=np.eye(4))


def test_load_folder(tmp_path):
    _folder(tmp_path, ["c", "a", "b"], ["a", "c"])
    ds = load_folder(tmp_path)
    assert [s.name for s in ds.subjects] == ["a", "b", "c"]
    assert ds.labelled() == [0, 2] and ds.unlabelled() == [1] and ds.val_pairs == ()
    assert ds.subjects[0].labels.shape == (8, 8, 8) and ds.subjects[0].image.shape == (8, 8, 8, 1)
    assert ds.stack([0, 1])["has_label"].tolist() == [True, False]


def test_load_folder_label_without_image(tmp_path):
    _folder(tmp_path, ["a"], ["a"])
    save_image(tmp_path / "labels" / "z.nii.gz", np.zeros((8, 8, 8), np.int32), affine=np.eye(4))
    with pytest.raises(DataError, match=r"z\.nii\.gz.*no image"):
        load_folder(tmp_path)


def test_load_folder_missing_images(tmp_path):
    with pytest.raises(DataError, match="images"):
        load_folder(tmp_path)


# --------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------


def test_all_pairs():
    idx = [3, 5, 7, 11]
    p = all_pairs(idx)
    assert p.shape == (12, 2)
    assert np.all(p[:, 0] != p[:, 1])
    assert len({tuple(r) for r in p.tolist()}) == 12
    assert set(p.ravel().tolist()) == set(idx)


def test_atlas_pairs_direction():
    p = atlas_pairs(2, [0, 1, 2, 3])
    assert p.tolist() == [[0, 2], [1, 2], [3, 2]]  # (fixed=subject, moving=atlas)


def test_sample_pairs():
    a = sample_pairs(0, [1, 2, 3], 500)
    assert a.shape == (500, 2) and np.all(a[:, 0] != a[:, 1])
    assert len({tuple(r) for r in a.tolist()}) == 6  # every ordered pair reachable
    np.testing.assert_array_equal(a, sample_pairs(0, [1, 2, 3], 500))
    assert not np.array_equal(a, sample_pairs(1, [1, 2, 3], 500))
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(0, [1], 4)


def test_labelled_case_pairs_cases_and_mix():
    lab, unl = [0, 1, 2], [3, 4, 5, 6]
    mix = (0.4, 0.3, 0.2, 0.1)
    pairs, cases = labelled_case_pairs(np.random.default_rng(0), lab, unl, 8000, mix=mix)
    assert pairs.shape == (8000, 2) and cases.shape == (8000,)
    fl, ml = np.isin(pairs[:, 0], lab), np.isin(pairs[:, 1], lab)
    expected = np.select([fl & ml, fl & ~ml, ~fl & ml], [0, 1, 2], 3)
    np.testing.assert_array_equal(cases, expected)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    freq = np.bincount(cases, minlength=4) / len(cases)
    np.testing.assert_allclose(freq, mix, atol=0.03)


def test_labelled_case_pairs_renormalise_and_determinism():
    _, cases = labelled_case_pairs(0, [0, 1, 2], [], 200)
    assert np.all(cases == 0)
    _, cases = labelled_case_pairs(0, [0], [1, 2, 3], 4000)  # case 0 impossible (1 labelled)
    assert 0 not in cases
    np.testing.assert_allclose(np.bincount(cases, minlength=4)[1:] / 4000, [1 / 3] * 3, atol=0.04)
    a = labelled_case_pairs(7, [0, 1], [2, 3], 64)
    b = labelled_case_pairs(7, [0, 1], [2, 3], 64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="no DeepAtlas case"):
        labelled_case_pairs(0, [0], [], 4)
    with pytest.raises(ValueError, match="overlap"):
        labelled_case_pairs(0, [0, 1], [1, 2], 4)


def test_dataset_is_frozen(l2r_3d):
    ds = load_learn2reg(l2r_3d)
    assert isinstance(ds, Dataset)
    with pytest.raises(AttributeError):
        ds.subjects = ()
