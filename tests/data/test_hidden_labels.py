"""Evaluation-only labels (:attr:`jrs_jax.data.Subject.hidden_labels`): written by
:func:`jrs_jax.data.write_learn2reg` into ``labelsHidden/`` and listed in
``jrs_jax.hidden_labels``, read back by :func:`jrs_jax.data.load_learn2reg` with the grid
checks of labels, absent unless given, and never seen by the training samplers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from jrs_jax.data import (
    DataError,
    Dataset,
    Subject,
    load_learn2reg,
    pair_batch,
    save_image,
    sequence_batch,
    sequence_windows,
    subject_batch,
    write_learn2reg,
)

SHAPES = {2: (12, 10), 3: (8, 8, 6)}
FRAMES = 3
# (sequence, held out); training labels at frame 0 only, hidden labels at every frame
PLAN = [("s0", False), ("s1", False), ("s2", True)]


def _toy(ndim: int, *, hidden: bool = True, multi: bool = False, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    shape = SHAPES[ndim]
    affine = np.diag([1.5, 2.0, 1.0 if ndim == 2 else 2.5, 1.0])
    subjects = []
    for sid, held in PLAN:
        for t in range(FRAMES):
            if multi:
                lab = (rng.random((*shape, 2)) > 0.5).astype(np.uint8)
            else:
                lab = rng.integers(0, 4, shape).astype(np.int32)
            subjects.append(
                Subject(
                    name=f"{sid}_f{t}",
                    image=rng.random((*shape, 1)).astype(np.float32),
                    labels=lab if t == 0 else None,
                    affine=affine,
                    spacing=(1.5, 2.0, 2.5)[:ndim],
                    image_path="",
                    held_out=held,
                    subject=sid,
                    time=t,
                    hidden_labels=lab if hidden else None,
                )
            )
    held = [i for i, s in enumerate(subjects) if s.held_out]
    return Dataset(
        subjects=tuple(subjects),
        val_pairs=tuple((held[0], i) for i in held[1:]),  # references every held-out frame
        label_format="multi" if multi else "integer",
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def written(request, tmp_path_factory):
    ds = _toy(request.param)
    root = tmp_path_factory.mktemp(f"hidden{request.param}d")
    return ds, write_learn2reg(root, ds)


def test_round_trip(written):
    ds, path = written
    root = os.path.dirname(path)
    block = json.load(open(path))["jrs_jax"]
    n = len(PLAN) * FRAMES
    assert sorted(os.listdir(os.path.join(root, "labelsHidden"))) == sorted(
        f"{s.name}.nii.gz" for s in ds.subjects
    )
    assert block["hidden_labels"] == [
        {"image": f"./imagesTr/{s.name}.nii.gz", "label": f"./labelsHidden/{s.name}.nii.gz"}
        for s in ds.subjects
    ]
    # only the frame-0 labels are training labels on disk
    assert len(os.listdir(os.path.join(root, "labelsTr"))) == len(PLAN)
    back = load_learn2reg(path, normalize=False)
    assert len(back) == n and back.has_hidden_labels
    for s, r in zip(ds.subjects, back.subjects, strict=True):
        assert (r.name, r.subject, r.time, r.held_out) == (s.name, s.subject, s.time, s.held_out)
        assert r.hidden_labels.dtype == np.int32 and r.hidden_labels.shape == ds.shape
        np.testing.assert_array_equal(r.hidden_labels, s.hidden_labels)
        assert r.hidden_label_path.endswith(os.path.join("labelsHidden", f"{s.name}.nii.gz"))
        assert r.has_labels == (s.time == 0)  # training labels untouched
        if r.has_labels:
            np.testing.assert_array_equal(r.labels, s.labels)


def test_absent_by_default(tmp_path):
    ds = _toy(2, hidden=False)
    assert not ds.has_hidden_labels
    path = write_learn2reg(tmp_path / "d", ds)
    assert "hidden_labels" not in json.load(open(path))["jrs_jax"]
    assert not os.path.exists(tmp_path / "d" / "labelsHidden")
    back = load_learn2reg(path)
    assert not back.has_hidden_labels
    assert all(s.hidden_labels is None and s.hidden_label_path is None for s in back.subjects)
    # the default of a hand-made Subject
    plain = Subject("a", np.zeros((4, 4, 1), np.float32), None, np.eye(4), (1.0, 1.0), "")
    assert plain.hidden_labels is None and plain.hidden_label_path is None


def test_multi_label_hidden_labels(tmp_path):
    ds = _toy(2, multi=True)
    back = load_learn2reg(write_learn2reg(tmp_path / "m", ds))
    for s, r in zip(ds.subjects, back.subjects, strict=True):
        assert r.hidden_labels.dtype == np.uint8 and r.hidden_labels.shape == (*ds.shape, 2)
        np.testing.assert_array_equal(r.hidden_labels, s.hidden_labels)


def _copy(written, tmp_path):
    _, path = written
    root = tmp_path / "copy"
    shutil.copytree(os.path.dirname(path), root)
    return root, str(root / "dataset.json")


@pytest.mark.parametrize("broken", ["shape", "affine"])
def test_grid_mismatch_names_the_file(written, tmp_path, broken):
    ds, _ = written
    root, path = _copy(written, tmp_path)
    bad = root / "labelsHidden" / "s1_f2.nii.gz"
    shape3 = ds.shape if ds.ndim == 3 else (*ds.shape, 1)
    affine = np.diag([1.5, 2.0, 1.0 if ds.ndim == 2 else 2.5, 1.0])
    if broken == "shape":
        shape3 = (shape3[0] + 1, *shape3[1:])
    else:
        affine[:3, 3] = [5.0, 0.0, 0.0]
    save_image(bad, np.zeros(shape3, np.int32), affine=affine)
    with pytest.raises(DataError, match="hidden label") as err:
        load_learn2reg(path)
    assert str(bad) in str(err.value)
    assert ("shape" if broken == "shape" else "affines differ") in str(err.value)


def test_missing_file_names_the_entry(written, tmp_path):
    root, path = _copy(written, tmp_path)
    os.remove(root / "labelsHidden" / "s2_f1.nii.gz")
    with pytest.raises(DataError, match=r"jrs_jax\.hidden_labels\[7\] label.*s2_f1"):
        load_learn2reg(path)


def test_training_samplers_never_see_them(written):
    """Every batch builder gives the same arrays with and without hidden labels: the
    unlabelled frames stay unlabelled (zeros, ``has_label`` False) and no key carries them;
    only ``sequence_batch(..., hidden_labels=True)`` (evaluation) returns them."""
    _, path = written
    ds = load_learn2reg(path)
    bare = dataclasses.replace(
        ds, subjects=tuple(s.replace(hidden_labels=None) for s in ds.subjects)
    )
    assert ds.has_hidden_labels and not bare.has_hidden_labels
    pairs = np.asarray([[0, 1], [2, 0], [4, 5]])
    windows = sequence_windows(0, ds, ds.training(), FRAMES, 4)
    for a, b in (
        (pair_batch(ds, pairs), pair_batch(bare, pairs)),
        (subject_batch(ds, [0, 1, 2]), subject_batch(bare, [0, 1, 2])),
        (ds.stack(range(len(ds))), bare.stack(range(len(ds)))),
        (sequence_batch(ds, windows), sequence_batch(bare, windows)),
    ):
        assert a.keys() == b.keys() and not any("hidden" in k for k in a)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    s = ds.stack(range(len(ds)))
    assert s["has_label"].tolist() == [sub.time == 0 for sub in ds.subjects]
    assert not s["labels"][~s["has_label"]].any()
    # evaluation asks for them explicitly
    ev = sequence_batch(ds, windows, hidden_labels=True)
    assert ev["sequence_has_hidden"].all() and ev["sequence_hidden_labels"].dtype == np.int32
    for b, row in enumerate(windows.tolist()):
        for t, i in enumerate(row):
            got = ev["sequence_hidden_labels"][b, t]
            np.testing.assert_array_equal(got, ds.subjects[i].hidden_labels)
    assert "sequence_hidden_labels" not in sequence_batch(bare, windows, hidden_labels=True)


def test_kept_by_split_labelled(written):
    _, path = written
    ds = load_learn2reg(path)
    split = ds.split_labelled(0, key_or_seed=0)
    assert not split.labelled()
    for s, r in zip(ds.subjects, split.subjects, strict=True):
        np.testing.assert_array_equal(r.hidden_labels, s.hidden_labels)
