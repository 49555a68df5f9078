"""Tests for :mod:`jrs_jax.data.nifti` (NIfTI I/O, errors, preprocessing)."""

from __future__ import annotations

import os
import pickle

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from jrs_jax.data import (
    DataError,
    Volume,
    check_pair,
    crop_or_pad,
    load_image,
    load_labels,
    normalize_intensity,
    resample_to_spacing,
    save_image,
    uncrop,
)

SHAPE = (10, 12, 14)
SPACING = (1.5, 2.0, 2.5)


def _affine(linear, t=(-7.0, 11.0, 3.5)):
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = t
    return a


def _rotation(ax, az):
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


AFFINES = {
    "ras": _affine(np.diag(SPACING)),
    "lps": _affine(np.diag([-1.5, -2.0, 2.5])),
    # file axis 0 -> Superior, 1 -> Left, 2 -> Anterior
    "permuted": _affine(np.array([[0.0, -2.0, 0.0], [0.0, 0.0, 2.5], [1.5, 0.0, 0.0]])),
    "oblique": _affine(_rotation(0.3, -0.5) @ np.diag([-1.5, 2.0, 2.5])),
}


def _write(path, data, affine, dtype=None):
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, os.fspath(path))
    return path


def _raises(func, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# round trips, orientation, spacing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_load_save_round_trip_is_exact(tmp_path, name, dtype):
    affine = AFFINES[name]
    data = (_rng().normal(size=SHAPE) * 300).astype(dtype)
    src = _write(tmp_path / "in.nii.gz", data, affine)
    vol = load_image(src)
    assert vol.data.dtype == np.float32 and vol.data.flags.c_contiguous
    out = tmp_path / "out" / "pred.nii.gz"
    save_image(out, vol.data, reference=vol, dtype=dtype)
    a, b = nib.load(src), nib.load(out)
    assert b.get_data_dtype() == np.dtype(dtype)
    assert np.array_equal(np.asanyarray(b.dataobj), data)
    assert np.array_equal(b.affine, a.affine)
    for key in ("sform_code", "qform_code", "pixdim", "xyzt_units"):
        assert np.array_equal(b.header[key], a.header[key]), key
    # default dtype: the array's (float32), same values
    save_image(tmp_path / "f.nii", vol.data, reference=vol)
    c = nib.load(tmp_path / "f.nii")
    assert c.get_data_dtype() == np.float32
    assert np.array_equal(np.asanyarray(c.dataobj), data.astype(np.float32))
    assert np.array_equal(c.affine, a.affine)


@pytest.mark.parametrize("name", ["lps", "permuted", "oblique"])
def test_labels_and_channels_round_trip(tmp_path, name):
    affine = AFFINES[name]
    labels = _rng(1).integers(0, 5, size=SHAPE).astype(np.int16)
    lab = load_labels(_write(tmp_path / "lab.nii.gz", labels, affine))
    assert lab.data.dtype == np.int32
    save_image(tmp_path / "lab_out.nii.gz", lab.data, reference=lab)
    back = nib.load(tmp_path / "lab_out.nii.gz")
    assert np.array_equal(np.asanyarray(back.dataobj), labels)
    assert np.array_equal(back.affine, nib.load(tmp_path / "lab.nii.gz").affine)

    chans = _rng(2).normal(size=(*SHAPE, 3)).astype(np.float32)
    vol = load_image(_write(tmp_path / "c.nii.gz", chans, affine), channels=True)
    assert vol.data.shape[-1] == 3 and vol.data.ndim == 4
    save_image(tmp_path / "c_out.nii.gz", vol.data, reference=vol)
    back = nib.load(tmp_path / "c_out.nii.gz")
    assert back.shape == (*SHAPE, 3)
    assert np.array_equal(np.asanyarray(back.dataobj), chans)
    assert np.array_equal(back.affine, nib.load(tmp_path / "c.nii.gz").affine)
    # a 3-D file read with channels=True has one channel; without it, C > 1 is an error
    one = load_image(tmp_path / "lab.nii.gz", channels=True)
    assert one.data.shape == (*lab.shape, 1)
    msg = _raises(load_image, tmp_path / "c.nii.gz")
    assert "c.nii.gz" in msg and "(10, 12, 14, 3)" in msg


def test_save_with_affine_and_reference_is_exclusive(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    save_image(tmp_path / "a.nii", data, affine=AFFINES["oblique"])
    img = nib.load(tmp_path / "a.nii")
    assert np.allclose(img.affine, AFFINES["oblique"])
    assert int(img.header["sform_code"]) == 1
    assert np.array_equal(img.get_fdata(), data)
    with pytest.raises(ValueError, match="exactly one"):
        save_image(tmp_path / "b.nii", data)
    vol = load_image(tmp_path / "a.nii")
    msg = _raises(save_image, tmp_path / "c.nii", data[:5], reference=vol)
    assert "c.nii" in msg and "a.nii" in msg and "(5, 12, 14)" in msg
    assert "(12, 12, 14)" not in msg
    assert "out.txt" in _raises(save_image, tmp_path / "out.txt", data, affine=np.eye(4))
    msg = _raises(save_image, tmp_path / "d.nii", data * 1000, affine=np.eye(4), dtype=np.int16)
    assert "d.nii" in msg and "int16" in msg


def test_spacing_from_anisotropic_affines(tmp_path):
    for name, affine in AFFINES.items():
        src = _write(tmp_path / f"{name}.nii", np.zeros(SHAPE, np.float32), affine)
        raw = load_image(src, canonical=False)
        assert np.allclose(raw.spacing, SPACING), name
        assert raw.data.shape == SHAPE
    # canonical reorientation reorders the spacing with the axes
    perm = load_image(tmp_path / "permuted.nii")
    assert perm.data.shape == (12, 14, 10)
    assert np.allclose(perm.spacing, (2.0, 2.5, 1.5))
    assert np.allclose(
        perm.spacing, nib.as_closest_canonical(nib.load(perm.path)).header.get_zooms()
    )


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_canonical_reorientation_keeps_world_positions(tmp_path, name):
    affine = AFFINES[name]
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    vol = load_image(_write(tmp_path / "x.nii.gz", data, affine))
    if name != "oblique":
        assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    ref = nib.as_closest_canonical(nib.load(tmp_path / "x.nii.gz"))
    assert np.allclose(vol.affine, ref.affine)
    assert np.array_equal(vol.data, ref.get_fdata())
    # every file voxel lands at inv(affine_canonical) @ world
    idx = np.indices(SHAPE).reshape(3, -1).T
    world = apply_affine(affine, idx)
    canon = apply_affine(np.linalg.inv(vol.affine), world)
    assert np.allclose(canon, np.round(canon), atol=1e-6)
    canon = np.round(canon).astype(int)
    assert np.array_equal(vol.data[tuple(canon.T)], data[tuple(idx.T)])


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_missing_unreadable_and_non_nifti_files(tmp_path):
    msg = _raises(load_image, tmp_path / "nope" / "case_001.nii.gz")
    assert "case_001.nii.gz" in msg and "not found" in msg
    (tmp_path / "junk.nii.gz").write_bytes(b"this is not a nifti file" * 20)
    msg = _raises(load_image, tmp_path / "junk.nii.gz")
    assert "junk.nii.gz" in msg and "not a readable NIfTI" in msg
    (tmp_path / "junk.nii").write_bytes(b"\x00" * 400)
    assert "junk.nii" in _raises(load_labels, tmp_path / "junk.nii")
    (tmp_path / "notes.txt").write_text("hello")
    assert "notes.txt" in _raises(load_image, tmp_path / "notes.txt")
    assert "is a directory" in _raises(load_image, tmp_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file(tmp_path, suffix):
    data = _rng().normal(size=SHAPE).astype(np.float32)
    src = _write(tmp_path / f"full{suffix}", data, AFFINES["ras"])
    raw = src.read_bytes()
    bad = tmp_path / f"cut{suffix}"
    bad.write_bytes(raw[: len(raw) // 2])
    msg = _raises(load_image, bad)
    assert f"cut{suffix}" in msg and "truncated or corrupt" in msg
    if suffix == ".nii.gz":  # a corrupt gzip stream after an intact header
        steps = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7).astype(np.float32)
        packed = bytearray(_write(tmp_path / "steps.nii.gz", steps, AFFINES["ras"]).read_bytes())
        mid = len(packed) // 2
        packed[mid : mid + 16] = b"\xff" * 16
        (tmp_path / "corrupt.nii.gz").write_bytes(bytes(packed))
        assert "corrupt.nii.gz" in _raises(load_image, tmp_path / "corrupt.nii.gz")


def test_dimension_and_empty_errors(tmp_path):
    a = AFFINES["lps"]
    four = _write(tmp_path / "four.nii.gz", np.zeros((*SHAPE, 2), np.float32), a)
    msg = _raises(load_image, four)
    assert "four.nii.gz" in msg and "(10, 12, 14, 2)" in msg and "4-D" in msg
    single = _write(tmp_path / "single.nii.gz", np.ones((*SHAPE, 1), np.float32), a)
    assert load_image(single).data.shape == SHAPE
    assert load_labels(single).data.shape == SHAPE
    flat = _write(tmp_path / "flat.nii", np.zeros((10, 12), np.float32), a)
    msg = _raises(load_image, flat)
    assert "flat.nii" in msg and "(10, 12)" in msg
    empty = _write(tmp_path / "empty.nii", np.zeros((0, 12, 14), np.float32), a)
    msg = _raises(load_image, empty)
    assert "empty.nii" in msg and "empty" in msg and "(0, 12, 14)" in msg


def test_non_finite_voxels(tmp_path):
    data = np.zeros(SHAPE, np.float32)
    data[3, 4, 5] = np.nan
    data[6, 7, 8] = np.inf
    data[9, 0, 1] = np.nan
    msg = _raises(load_image, _write(tmp_path / "nan.nii.gz", data, AFFINES["lps"]))
    # count, and the first bad voxel as a *file* index (the file is LPS, data is reoriented)
    assert "nan.nii.gz" in msg and "3 non-finite" in msg and "(3, 4, 5)" in msg
    msg = _raises(load_labels, tmp_path / "nan.nii.gz")
    assert "label map" in msg and "3 non-finite" in msg


def test_label_value_errors(tmp_path):
    lab = np.zeros(SHAPE, np.float32)
    lab[2, 2, 2] = 2.0
    lab[3, 4, 5] = 1.5
    lab[5, 5, 5] = 0.25
    msg = _raises(load_labels, _write(tmp_path / "case_003.nii.gz", lab, AFFINES["ras"]))
    assert msg.startswith(str(tmp_path / "case_003.nii.gz"))
    assert "2 non-integer" in msg and "1.5" in msg and "(3, 4, 5)" in msg

    neg = np.zeros(SHAPE, np.int16)
    neg[1, 2, 3] = -2
    msg = _raises(load_labels, _write(tmp_path / "neg.nii.gz", neg, AFFINES["permuted"]))
    assert "neg.nii.gz" in msg and "negative" in msg and "-2" in msg and "(1, 2, 3)" in msg

    whole = np.zeros(SHAPE, np.float32)
    whole[4:7, 4:7, 4:7] = 2.0
    whole[0, 0, 0] = 7.0
    vol = load_labels(_write(tmp_path / "float.nii.gz", whole, AFFINES["ras"]))
    assert vol.data.dtype == np.int32
    assert np.array_equal(vol.data, whole.astype(np.int32))


def test_check_pair(tmp_path):
    a = AFFINES["oblique"]
    img = load_image(_write(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32), a))
    lab = load_labels(_write(tmp_path / "lab.nii.gz", np.zeros(SHAPE, np.uint8), a))
    check_pair(img, lab)
    small = load_labels(_write(tmp_path / "small.nii.gz", np.zeros((10, 12, 13), np.uint8), a))
    msg = _raises(check_pair, img, small)
    assert "img.nii.gz" in msg and "small.nii.gz" in msg
    assert "(10, 12, 14)" in msg and "(10, 12, 13)" in msg
    shifted = a.copy()
    shifted[0, 3] += 0.01
    far = load_labels(_write(tmp_path / "far.nii.gz", np.zeros(SHAPE, np.uint8), shifted))
    msg = _raises(check_pair, img, far)
    assert "img.nii.gz" in msg and "far.nii.gz" in msg and "affine" in msg and "0.01 mm" in msg
    near = a.copy()
    near[0, 3] += 5e-4
    check_pair(img, load_labels(_write(tmp_path / "near.nii.gz", np.zeros(SHAPE, np.uint8), near)))
    # a small rotation error that only shows far from the origin voxel is caught too
    tilted = a.copy()
    tilted[:3, :3] = _rotation(1e-3, 0.0) @ a[:3, :3]
    tilt = load_labels(_write(tmp_path / "tilt.nii.gz", np.zeros(SHAPE, np.uint8), tilted))
    assert "tilt.nii.gz" in _raises(check_pair, img, tilt)


def test_data_error_is_value_error_and_pickles():
    err = DataError("labels/case_003.nii.gz", "label map has non-integer values\n(e.g. 1.5)")
    assert isinstance(err, ValueError)
    assert str(err) == "labels/case_003.nii.gz: label map has non-integer values (e.g. 1.5)"
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.path == err.path


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def test_save_creates_directory_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "a" / "b" / "seg.nii.gz"
    save_image(out, np.ones(SHAPE, np.int32), affine=AFFINES["ras"])
    assert os.listdir(out.parent) == ["seg.nii.gz"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    save_image(out, np.zeros(SHAPE, np.int32), affine=AFFINES["ras"])  # overwrite
    assert os.listdir(out.parent) == ["seg.nii.gz"]
    assert np.asanyarray(nib.load(out).dataobj).max() == 0


def test_failed_write_leaves_destination_untouched(tmp_path, monkeypatch):
    out = tmp_path / "seg.nii.gz"
    save_image(out, np.ones(SHAPE, np.int16), affine=AFFINES["ras"])
    before = out.read_bytes()
    seen = []

    def failing_save(img, filename):
        seen.append(os.fspath(filename))
        with open(filename, "wb") as f:  # a partial file, then a crash
            f.write(b"\x1f\x8b partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_image(out, np.zeros(SHAPE, np.int16), affine=AFFINES["ras"])
    assert seen and os.path.dirname(seen[0]) == str(tmp_path) and seen[0] != str(out)
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["seg.nii.gz"]
    new = tmp_path / "new.nii.gz"
    with pytest.raises(RuntimeError):
        save_image(new, np.zeros(SHAPE, np.int16), affine=AFFINES["ras"])
    assert not new.exists() and os.listdir(tmp_path) == ["seg.nii.gz"]


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def test_normalize_intensity():
    x = _rng().gamma(2.0, 50.0, size=SHAPE)
    out = normalize_intensity(x, lower=1.0, upper=99.0)
    lo, hi = np.percentile(x, [1.0, 99.0])
    assert out.dtype == np.float32 and out.shape == SHAPE
    assert np.allclose(out, (np.clip(x, lo, hi) - lo) / (hi - lo), atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.isclose(np.mean(out == 0.0), 0.01, atol=0.002)
    # constant image -> zeros, never NaN
    const = normalize_intensity(np.full(SHAPE, 7.0))
    assert np.array_equal(const, np.zeros(SHAPE, np.float32))
    # the mask selects the voxels the percentiles come from
    mask = np.zeros(SHAPE, bool)
    mask[2:8, 2:10, 2:12] = True
    y = np.where(mask, x, 1e6)
    masked = normalize_intensity(y, lower=0.0, upper=100.0, mask=mask)
    lo, hi = x[mask].min(), x[mask].max()
    assert np.allclose(masked[mask], (x[mask] - lo) / (hi - lo), atol=1e-6)
    assert np.all(masked[~mask] == 1.0)
    # per-channel
    two = np.stack([x, 1000.0 * x + 5.0], axis=-1)
    per = normalize_intensity(two, channel_axis=-1)
    assert np.allclose(per[..., 0], per[..., 1], atol=1e-5)
    joint = normalize_intensity(two)
    assert joint[..., 0].max() < 0.01
    with pytest.raises(ValueError):
        normalize_intensity(x, lower=50, upper=10)


@pytest.mark.parametrize("name", ["lps", "oblique"])
def test_resample_preserves_world_positions(tmp_path, name):
    affine = AFFINES[name]
    coef, bias = np.array([0.3, -1.2, 0.7]), 5.0
    idx = np.indices(SHAPE).reshape(3, -1).T
    field = (apply_affine(affine, idx) @ coef + bias).reshape(SHAPE).astype(np.float32)
    vol = load_image(_write(tmp_path / "lin.nii.gz", field, affine))
    new = resample_to_spacing(vol, (2.0, 1.0, 3.0), order=1)
    assert np.allclose(new.spacing, (2.0, 1.0, 3.0))
    assert new.data.dtype == np.float32
    expected_shape = np.round(np.asarray(vol.shape) * np.asarray(vol.spacing) / (2.0, 1.0, 3.0))
    assert new.shape == tuple(int(n) for n in expected_shape)
    # the value at each new voxel centre is the linear field at that voxel's world position
    jdx = np.indices(new.shape).reshape(3, -1).T
    world = apply_affine(new.affine, jdx)
    old = apply_affine(np.linalg.inv(vol.affine), world)
    inside = np.all((old >= 0) & (old <= np.asarray(vol.shape) - 1), axis=1)
    assert inside.mean() > 0.5  # border centres fall up to half a voxel outside
    got = new.data.reshape(-1)[inside]
    assert np.allclose(got, world[inside] @ coef + bias, atol=1e-3)
    # the new grid is centred on the old one
    centre_old = apply_affine(vol.affine, (np.asarray(vol.shape) - 1) / 2)
    centre_new = apply_affine(new.affine, (np.asarray(new.shape) - 1) / 2)
    assert np.allclose(centre_old, centre_new)
    # a resampled volume is still a valid reference: the file overlays in world space
    save_image(tmp_path / "res.nii.gz", new.data, reference=new)
    back = load_image(tmp_path / "res.nii.gz")
    assert np.allclose(back.affine, new.affine) and np.array_equal(back.data, new.data)
    if name == "lps":
        assert nib.aff2axcodes(nib.load(tmp_path / "res.nii.gz").affine) == ("L", "P", "S")


def test_resample_labels_stay_integer():
    labels = np.zeros(SHAPE, np.int32)
    labels[2:6, 3:9, 4:10] = 3
    labels[6:9, 1:5, 8:13] = 7
    vol = Volume(labels, AFFINES["ras"], path="lab.nii.gz")
    for spacing in [(0.75, 1.0, 1.25), (3.0, 4.0, 5.0)]:
        new = resample_to_spacing(vol, spacing, order=0)
        assert new.data.dtype == np.int32
        assert set(np.unique(new.data)) == {0, 3, 7}
    fine = resample_to_spacing(vol, (0.75, 1.0, 1.25), order=0)
    # nearest neighbour: each new voxel has the label of the old voxel nearest to it
    jdx = np.indices(fine.shape).reshape(3, -1).T
    old = apply_affine(np.linalg.inv(vol.affine) @ fine.affine, jdx)
    near = np.clip(np.round(old).astype(int), 0, np.asarray(SHAPE) - 1)
    exact = np.all(np.abs(old - np.round(old)) != 0.5, axis=1)
    assert np.array_equal(fine.data.reshape(-1)[exact], labels[tuple(near[exact].T)])
    msg = _raises(resample_to_spacing, vol, 2.0, order=1)
    assert "lab.nii.gz" in msg and "order=0" in msg


def test_crop_or_pad_and_uncrop():
    x = _rng().normal(size=(*SHAPE, 2)).astype(np.float32)
    y, info = crop_or_pad(x, (7, 15, 14), value=-1)
    assert y.shape == (7, 15, 14, 2)
    assert info.crop == ((1, 8), (0, 12), (0, 14)) and info.pad == ((0, 0), (1, 2), (0, 0))
    assert np.all(y[:, 0] == -1) and np.all(y[:, -2:] == -1)
    assert np.array_equal(y[:, 1:13], x[1:8])
    # output voxel j is input voxel j + offset, which update_affine encodes
    a = AFFINES["oblique"]
    assert np.allclose(info.update_affine(a) @ [0, 1, 0, 1], a @ [1, 0, 0, 1])
    back = uncrop(y, info, x.shape)
    assert back.shape == x.shape
    assert np.array_equal(back[1:8], x[1:8]) and np.all(back[[0, 8, 9]] == 0)
    again, _ = crop_or_pad(back, (7, 15, 14))
    assert np.array_equal(again[:, 1:13], y[:, 1:13])
    # pure padding / pure cropping are exactly invertible
    z, zinfo = crop_or_pad(x, (16, 16, 16))
    assert np.array_equal(uncrop(z, zinfo), x)
    w, winfo = crop_or_pad(x, SHAPE)
    assert np.array_equal(w, x) and np.array_equal(uncrop(w, winfo), x)
    with pytest.raises(ValueError):
        uncrop(y[:5], info)
    with pytest.raises(ValueError):
        uncrop(y, info, (11, 12, 14))
