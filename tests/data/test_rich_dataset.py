"""Round trip of a dataset with every optional piece (two modalities, K=3 overlapping label
channels, longitudinal subjects, region masks, ground-truth fields) through
:func:`jrs_jax.data.write_learn2reg` and :func:`jrs_jax.data.load_learn2reg`, the samplers on
it, and the one-line :class:`~jrs_jax.data.DataError` of each kind of broken file."""

from __future__ import annotations

import json
import os
import shutil
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import metrics
from jrs_jax.data import (
    DataError,
    Dataset,
    Subject,
    all_within_subject_pairs,
    load_learn2reg,
    pair_batch,
    sample_pairs,
    save_image,
    sequence_batch,
    sequence_windows,
    subject_batch,
    within_subject_pairs,
    write_learn2reg,
)
from jrs_jax.evaluation import evaluate

SHAPES = {2: (12, 10), 3: (8, 8, 6)}
# (subject, time points, held out)
PLAN = [("s0", (0, 1, 2), False), ("s1", (0, 4), False), ("s2", (3, 5, 7), True)]
K = 3
MODALITIES = ("T1", "T2")
LABEL_NAMES = {0: "liver", 1: "tumour", 2: "vessels"}


def _affine(ndim):
    a = np.diag([1.5, 2.0, 1.0 if ndim == 2 else 2.5, 1.0])
    a[:3, 3] = [10.0, -5.0, 3.0]
    return a


def _toy(ndim, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    shape = SHAPES[ndim]
    subjects = []
    for sid, times, held in PLAN:
        for t in times:
            name = f"{sid}_t{t}"
            unlabelled = name == "s0_t1"  # one unlabelled training scan
            no_mask = name == "s1_t4"  # one training scan without a mask
            no_field = name == "s1_t0"  # one scan without fields
            subjects.append(
                Subject(
                    name=name,
                    image=(rng.random((*shape, 2)) * [1.0, 300.0]).astype(np.float32),
                    labels=None if unlabelled else (rng.random((*shape, K)) > 0.5).astype(np.uint8),
                    affine=_affine(ndim),
                    spacing=(1.5, 2.0, 2.5)[:ndim],
                    image_path="",
                    held_out=held,
                    subject=sid,
                    time=t,
                    mask=None if no_mask else rng.integers(0, 4, shape).astype(np.int32),
                    field=None if no_field else rng.normal(size=(*shape, ndim)).astype(np.float32),
                    field_inv=None
                    if no_field
                    else rng.normal(size=(*shape, ndim)).astype(np.float32),
                )
            )
    held = [i for i, s in enumerate(subjects) if s.held_out]
    # first appearances in held-out order, so that the reader keeps the subject order
    val_pairs = ((held[0], held[1]), (held[2], held[0]), (held[1], held[2]))
    return Dataset(
        subjects=tuple(subjects),
        val_pairs=val_pairs,
        modalities=MODALITIES,
        label_format="multi",
        label_names=LABEL_NAMES,
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def written(request, tmp_path_factory):
    ndim = request.param
    ds = _toy(ndim)
    root = tmp_path_factory.mktemp(f"rich{ndim}d")
    path = write_learn2reg(root, ds, name="rich")
    return ds, path


def _copy(written, tmp_path):
    ds, path = written
    root = tmp_path / "copy"
    shutil.copytree(os.path.dirname(path), root)
    return ds, str(root / "dataset.json")


def _assert_same(a: Dataset, b: Dataset):
    assert len(a) == len(b)
    assert a.modalities == b.modalities == MODALITIES
    assert a.label_names == b.label_names == LABEL_NAMES
    assert a.label_format == b.label_format == "multi" and b.multi_label
    assert b.num_channels == 2 and b.num_label_channels == K
    assert a.val_pairs == b.val_pairs
    for s, r in zip(a.subjects, b.subjects, strict=True):
        assert (r.name, r.subject, r.time, r.held_out) == (s.name, s.subject, s.time, s.held_out)
        np.testing.assert_array_equal(r.image, s.image)
        assert r.image.dtype == np.float32 and r.image.shape == (*a.shape, 2)
        assert len(r.channel_paths) == 2
        for c, p in enumerate(r.channel_paths):
            assert p.endswith(f"{s.name}_{c:04d}.nii.gz") and os.path.isfile(p)
        for attr, dtype in (("labels", np.uint8), ("mask", np.int32)):
            want, got = getattr(s, attr), getattr(r, attr)
            if want is None:
                assert got is None, (s.name, attr)
            else:
                assert got.dtype == dtype
                np.testing.assert_array_equal(got, want)
        for attr in ("field", "field_inv"):
            want, got = getattr(s, attr), getattr(r, attr)
            if want is None:
                assert got is None and getattr(r, f"{attr}_path") is None
            else:
                assert got.dtype == np.float32 and got.shape == (*a.shape, a.ndim)
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(r.affine, s.affine)
        np.testing.assert_allclose(r.spacing, s.spacing)


def test_round_trip(written):
    ds, path = written
    meta = json.load(open(path))
    assert meta["modality"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"0": "liver", "1": "tumour", "2": "vessels"}
    assert meta["jrs_jax"]["label_format"] == "multi" and meta["jrs_jax"]["ndim"] == ds.ndim
    assert meta["training"][0] == {
        "image": "./imagesTr/s0_t0.nii.gz",
        "label": "./labelsTr/s0_t0.nii.gz",
        "mask": "./masksTr/s0_t0.nii.gz",
        "subject": "s0",
    }
    assert meta["jrs_jax"]["heldout"][0] == {
        "image": "./imagesTr/s2_t3.nii.gz",
        "subject": "s2",
        "time": 3,
    }
    root = os.path.dirname(path)
    assert not os.listdir(root) or not [f for f in os.listdir(root) if f.endswith(".tmp")]
    for fields in (True, "lazy"):
        back = load_learn2reg(path, normalize=False, fields=fields)
        _assert_same(ds, back)
    back = load_learn2reg(path, normalize=False, fields=False)
    assert all(s.field is None and s.field_path is None for s in back.subjects)
    # normalisation is per channel: both channels in [0, 1] although the second is x300
    normed = load_learn2reg(path)
    for s in normed.subjects:
        assert s.image.min(axis=tuple(range(ds.ndim))).tolist() == [0.0, 0.0]
        assert s.image.max(axis=tuple(range(ds.ndim))).tolist() == [1.0, 1.0]


def test_longitudinal_grouping(written):
    _, path = written
    back = load_learn2reg(path, normalize=False)
    assert back.subject_ids() == ["s0", "s1", "s2"]
    names = lambda idx: [back.subjects[i].name for i in idx]
    assert names(back.scans("s2")) == ["s2_t3", "s2_t5", "s2_t7"]
    assert names(back.scans("s0", indices=[2, 0])) == ["s0_t0", "s0_t2"]
    assert back.scans("s1", indices=[0, 1]) == []
    with pytest.raises(ValueError, match="no subject 'nobody'"):
        back.scans("nobody")
    assert back.has_masks and not back.has_fields  # s1_t0 has no fields


def test_image_path_forms(written, tmp_path):
    """A list of channel files and a ``case_0000`` path load like nnU-Net's ``case`` path."""
    ds, path = _copy(written, tmp_path)
    meta = json.load(open(path))
    for k, e in enumerate(meta["training"]):
        stem = e["image"][: -len(".nii.gz")]
        e["image"] = (
            [f"{stem}_0000.nii.gz", f"{stem}_0001.nii.gz"] if k % 2 else f"{stem}_0000.nii.gz"
        )
    with open(path, "w") as f:
        json.dump(meta, f)
    back = load_learn2reg(path, normalize=False)
    for s, r in zip(ds.subjects, back.subjects, strict=True):
        np.testing.assert_array_equal(r.image, s.image)
        assert r.name == (f"{s.name}_0000" if not s.held_out else s.name)
        np.testing.assert_array_equal(
            r.mask if s.mask is not None else 0, s.mask if s.mask is not None else 0
        )


def test_samplers(written):
    ds, path = written
    ds = load_learn2reg(path, normalize=False)
    subj = np.array([s.subject for s in ds.subjects])
    train = ds.training()

    p = within_subject_pairs(0, ds, train, 300)
    assert p.shape == (300, 2) and p.dtype == np.int64
    assert np.all(subj[p[:, 0]] == subj[p[:, 1]]) and np.all(p[:, 0] != p[:, 1])
    assert set(p.ravel().tolist()) <= set(train)
    assert len({tuple(r) for r in p.tolist()}) == 3 * 2 + 2 * 1  # every ordered pair drawn
    np.testing.assert_array_equal(p, within_subject_pairs(0, ds, train, 300))
    with pytest.raises(ValueError, match="no subject has 2 or more scans among the 2 indices"):
        within_subject_pairs(0, ds, [0, 3], 4)

    every = all_within_subject_pairs(ds, range(len(ds)))
    assert every.shape == (14, 2) and every.dtype == np.int64
    assert every[:6].tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert np.all(subj[every[:, 0]] == subj[every[:, 1]])
    assert all_within_subject_pairs(ds, [0, 3]).shape == (0, 2)

    w = sequence_windows(1, ds, range(len(ds)), 2, 100)
    assert w.shape == (100, 2) and w.dtype == np.int64
    for row in w.tolist():
        scans = ds.scans(ds.subjects[row[0]].subject)
        start = scans.index(row[0])
        assert row == scans[start : start + 2]  # consecutive in time, one subject
    w3 = sequence_windows(1, ds, range(len(ds)), 3, 20)
    assert {ds.subjects[r[0]].subject for r in w3.tolist()} == {"s0", "s2"}
    with pytest.raises(ValueError, match="no subject has 4 scans"):
        sequence_windows(0, ds, range(len(ds)), 4, 2)

    sb = sequence_batch(ds, w3[:4])
    shape = ds.shape
    assert sb["sequence"].shape == (4, 3, *shape, 2) and sb["sequence"].dtype == np.float32
    assert sb["sequence_labels"].shape == (4, 3, *shape, K)
    assert sb["sequence_labels"].dtype == np.uint8
    assert sb["sequence_has_label"].shape == (4, 3) and sb["sequence_has_label"].dtype == bool
    assert sb["sequence_masks"].shape == (4, 3, *shape) and sb["sequence_masks"].dtype == np.int32
    for b in range(4):
        times = [ds.subjects[i].time for i in w3[b]]
        assert sb["sequence_time"][b].tolist() == times == sorted(times)
        np.testing.assert_array_equal(sb["sequence"][b, 1], ds.subjects[w3[b, 1]].image)
        s = ds.subjects[w3[b, 2]]
        assert sb["sequence_has_label"][b, 2] == s.has_labels


def test_cross_modal_pair_batch(written):
    ds, path = written
    ds = load_learn2reg(path, normalize=False)
    shape, d = ds.shape, ds.ndim
    pairs = sample_pairs(0, range(len(ds)), 40, distinct=False)
    assert np.any(pairs[:, 0] == pairs[:, 1])  # a scan may pair with itself
    with_fields = [i for i, s in enumerate(ds.subjects) if s.has_field]
    pairs = np.array([[with_fields[0], with_fields[0]], [with_fields[1], with_fields[2]]])
    b = pair_batch(ds, pairs, moving_channel=0, fixed_channel=1, fields=True)
    assert b["moving"].shape == b["fixed"].shape == (2, *shape, 1)
    for r, (f, m) in enumerate(pairs):
        np.testing.assert_array_equal(b["moving"][r, ..., 0], ds.subjects[m].image[..., 0])
        np.testing.assert_array_equal(b["fixed"][r, ..., 0], ds.subjects[f].image[..., 1])
    assert b["fixed_labels"].shape == (2, *shape, K) and b["fixed_labels"].dtype == np.uint8
    assert b["fixed_mask"].shape == (2, *shape) and b["fixed_mask"].dtype == np.int32
    assert b["moving_has_mask"].dtype == bool and b["gt_disp"].shape == (2, *shape, d)
    assert b["gt_disp"].dtype == np.float32
    full = pair_batch(ds, pairs)
    assert full["moving"].shape == (2, *shape, 2) and "gt_disp" not in full
    with pytest.raises(ValueError, match="'s1_t0'"):
        pair_batch(ds, [[with_fields[0], ds.subjects.index(ds.subjects[3])]], fields=True)
    st = ds.stack([0, 1], channels=[1, 0])
    np.testing.assert_array_equal(st["images"][0], ds.subjects[0].image[..., ::-1])
    assert subject_batch(ds, [0], channels=1)["image"].shape == (1, *shape, 1)
    with pytest.raises(ValueError, match="out of range"):
        ds.stack([0], channels=2)


# --------------------------------------------------------------------------------------------
# broken files: one-line DataErrors naming the file and the entry
# --------------------------------------------------------------------------------------------


def _raises(path, match, **kw) -> str:
    with pytest.raises(DataError, match=match) as e:
        load_learn2reg(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _to_file(arr, ndim):
    return arr.reshape(*arr.shape[:2], 1, *arr.shape[2:]) if ndim == 2 else arr


def test_missing_channel_file(written, tmp_path):
    _, path = _copy(written, tmp_path)
    os.remove(os.path.join(os.path.dirname(path), "imagesTr", "s0_t2_0001.nii.gz"))
    msg = _raises(path, r"dataset\.json: training\[2\] image: channel 1 \(T2\) file")
    assert "imagesTr/s0_t2_0001.nii.gz" in msg and "not found" in msg


def test_non_binary_multilabel(written, tmp_path):
    ds, path = _copy(written, tmp_path)
    lab = ds.subjects[2].labels.copy()
    lab[(1, 2, *([0] * (ds.ndim - 2)), 1)] = 2
    p = os.path.join(os.path.dirname(path), "labelsTr", "s0_t2.nii.gz")
    save_image(p, _to_file(lab, ds.ndim), affine=_affine(ds.ndim))
    msg = _raises(path, r"s0_t2\.nii\.gz: multi-label map must be binary")
    assert "1 voxels are not" in msg and "channel 1" in msg and "(dataset.json training[2])" in msg


def test_mismatched_k(written, tmp_path):
    ds, path = _copy(written, tmp_path)
    p = os.path.join(os.path.dirname(path), "labelsTr", "s1_t0.nii.gz")
    save_image(p, _to_file(ds.subjects[3].labels[..., :2], ds.ndim), affine=_affine(ds.ndim))
    _raises(path, r"dataset\.json: training\[3\] label: 'labelsTr/s1_t0\.nii\.gz' has K=2 .*K=3")


def test_mask_of_wrong_shape(written, tmp_path):
    ds, path = _copy(written, tmp_path)
    p = os.path.join(os.path.dirname(path), "masksTr", "s0_t0.nii.gz")
    bad = np.zeros((*_to_file(ds.subjects[0].mask, ds.ndim).shape[:-1], 2), np.int32)
    save_image(p, bad, affine=_affine(ds.ndim))
    msg = _raises(path, r"s0_t0_0000\.nii\.gz / .*masksTr/s0_t0\.nii\.gz: .*mask shape")
    assert msg.endswith("(dataset.json training[0])")


def test_duplicate_subject_time(written, tmp_path):
    _, path = _copy(written, tmp_path)
    meta = json.load(open(path))
    meta["training"][1]["time"] = 0  # s0_t1 at the time of s0_t0
    with open(path, "w") as f:
        json.dump(meta, f)
    _raises(
        path, r"dataset\.json: training\[1\]: subject 's0' has two scans at time 0 .*training\[0\]"
    )


@pytest.mark.parametrize("fields", [True, "lazy"])
def test_field_of_wrong_shape(written, tmp_path, fields):
    ds, path = _copy(written, tmp_path)
    p = os.path.join(os.path.dirname(path), "fieldsTr", "s0_t1_disp_inv.nii.gz")
    u = np.zeros((*ds.shape, ds.ndim + 1), np.float32)  # one component too many
    save_image(p, _to_file(u, ds.ndim), affine=_affine(ds.ndim))
    msg = _raises(path, r"s0_t1_disp_inv\.nii\.gz: displacement field", fields=fields)
    assert msg.endswith("(dataset.json training[1])")


# ---------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def identity(predict_only):
    class Identity(predict_only):
        """Identity registration and a fixed-threshold multi-label segmenter: the evaluation
        of a rich dataset, read from predict's keys (``disp``, ``seg_sigmoid``)."""

        name = "identity_test_double"
        tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}

        def predict(self, variables, batch):
            out = {}
            if "moving" in batch:
                self.seen_channels = (batch["moving"].shape[-1], batch["fixed"].shape[-1])
                shape = batch["moving"].shape[:-1]
                out.update(disp=jnp.zeros((*shape, len(shape) - 1)), warped=batch["moving"])
            if "image" in batch:
                x = batch["image"][..., :1]
                out["seg_sigmoid"] = jnp.concatenate([x > 0.5, x > 0.2, x < 0.3], -1) * 1.0
            return out

    return Identity


@pytest.mark.parametrize("mode", ["within_subject", "cross_modal"])
def test_evaluation_of_the_rich_dataset(written, mode, identity):
    _, path = written
    ds = load_learn2reg(path)
    cfg = {"eval": {"mode": mode, "moving_channel": 0, "fixed_channel": 1}}
    method = identity(
        cfg, shape=ds.shape, num_classes=K, num_channels=ds.num_channels, multi_label=True
    )
    ev = evaluate(method, {}, ds)
    held = ds.held_out()
    if mode == "within_subject":  # s2's three scans: 6 ordered pairs, one subject each
        assert len(ev.pairs) == 6 and method.seen_channels == (2, 2)
        assert {r["fixed"][:2] for r in ev.pairs} == {r["moving"][:2] for r in ev.pairs} == {"s2"}
    else:  # the validation pairs, moving in channel 0 and fixed in channel 1
        assert len(ev.pairs) == len(ds.val_pairs) and method.seen_channels == (1, 1)
    for r in ev.pairs:  # identity field: Dice after = Dice before, per label channel
        assert r["dice"] == pytest.approx(r["dice_identity"])
        assert r["folding_percent"] == 0.0
    f, m = ds.val_pairs[0] if mode == "cross_modal" else all_within_subject_pairs(ds, held)[0]
    want = np.mean(
        [
            metrics.dice_per_channel(ds.subjects[m].labels, ds.subjects[f].labels)[k]
            for k in range(K)
        ]
    )
    assert ev.pairs[0]["dice"] == pytest.approx(want)
    # segmentation: the labelled held-out subjects, thresholded per label (no argmax)
    assert len(ev.subjects) == sum(ds.subjects[i].has_labels for i in held)
    img = ds.subjects[held[0]].image[..., 0]
    pred = np.stack([img > 0.5, img > 0.2, img < 0.3], -1).astype(np.uint8)
    want = np.mean(list(metrics.dice_per_channel(pred, ds.subjects[held[0]].labels).values()))
    assert ev.subjects[0]["dice"] == pytest.approx(want)
    assert "val/seg_dice" in ev.summary and "val/reg_dice" in ev.summary
