"""The ``longitudinal`` scenario (:mod:`jrs_jax.data.longitudinal`): several scans per
subject, each claimed property tested on the data read back through ``load_learn2reg``: the
grouping of scans by subject and time, the exactness of the within-subject ground truth,
within-subject scans far more alike than two subjects, the recorded growth or shrinkage of
the changing structure while the others hardly change, 2-D and 3-D, determinism, the
settings, the command line."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import (
    all_within_subject_pairs,
    load_labels,
    load_learn2reg,
    make_longitudinal_subjects,
    make_template,
    pair_batch,
    within_subject_pairs,
    write_longitudinal_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.spatial import warp_labels

SHAPES = {2: (64, 64), 3: (32, 32, 32)}
# 32^3: the organ's radius is ~4.5 voxels: a gentler subject motion and change there.
SETTINGS = {2: {}, 3: {"amplitude": 2.0, "change": (0.5, 1.0)}}
CHANGE = {2: (1.0, 2.0), 3: (0.5, 1.0)}
N, H, LAB, T = 6, 2, 3, 2  # the CLI tests write 6 subjects too: one compilation per shape
LABEL = 2  # the default changing label
K = 4  # foreground labels


def _labels(ds, root: str) -> np.ndarray:
    """Every scan's labels from the files (unlabelled training scans keep them on disk)."""
    out = []
    for s in ds.subjects:
        if s.has_labels:
            out.append(s.labels)
        else:
            data = load_labels(os.path.join(root, "labelsTr", f"{s.name}.nii.gz")).data
            out.append(data[..., 0] if ds.ndim == 2 else data)
    return np.stack(out)


def _dice(a: np.ndarray, b: np.ndarray, labels=range(1, K + 1)) -> float:
    return float(
        np.mean(
            [2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]
        )
    )


def _warp(labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    return np.asarray(
        warp_labels(jnp.asarray(labels), jnp.asarray(disp), num_classes=K + 1, mode="nearest")
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def written(request, tmp_path_factory):
    """(dimension, dataset read back, its labels [scans, *S], the JSON's jrs_jax block)."""
    d = request.param
    root = tmp_path_factory.mktemp(f"longitudinal{d}") / "d"
    path = write_longitudinal_dataset(
        root,
        key=3,
        shape=SHAPES[d],
        num_subjects=N,
        num_heldout=H,
        num_labelled=LAB,
        **SETTINGS[d],
    )
    ds = load_learn2reg(path, normalize=False)
    return d, ds, _labels(ds, str(root)), json.load(open(path))["jrs_jax"]


# --------------------------------------------------------------------------------------------
# scans of subjects
# --------------------------------------------------------------------------------------------


def test_scans_are_grouped_by_subject(written):
    d, ds, _, block = written
    assert ds.shape == SHAPES[d] and ds.ndim == d and len(ds) == N * T
    ids = [f"sub_{s:04d}" for s in range(N)]
    assert ds.subject_ids() == ids
    for s, sid in enumerate(ids):
        scans = ds.scans(sid)
        assert [ds.subjects[i].time for i in scans] == list(range(T))
        assert [ds.subjects[i].name for i in scans] == [f"{sid}_t{t}" for t in range(T)]
        assert all(ds.subjects[i].held_out == (s >= N - H) for i in scans)
        # labelled training subjects list labels for every scan; held-out ones find theirs
        assert all(ds.subjects[i].has_labels == (s < LAB or s >= N - H) for i in scans)
    assert len(ds.training()) == (N - H) * T and len(ds.labelled()) == LAB * T
    # validation: every within-subject ordered pair of the held-out subjects, both orders
    np.testing.assert_array_equal(
        np.asarray(ds.val_pairs), all_within_subject_pairs(ds, ds.held_out())
    )
    assert len(ds.val_pairs) == H * T * (T - 1)
    pairs = within_subject_pairs(0, ds, ds.training(), 32)
    for f, m in pairs.tolist():
        assert f != m and ds.subjects[f].subject == ds.subjects[m].subject
        assert not ds.subjects[f].held_out
    assert block["generator"] == "jrs_jax.data.longitudinal" and block["seed"] == 3
    assert block["num_subjects"] == N and block["num_scans"] == N * T
    assert block["num_timepoints"] == T and block["longitudinal"]["changing_label"] == LABEL


def test_files_dtypes_and_fields(written):
    d, ds, labels, _ = written
    assert ds.has_fields and labels.dtype == np.int32
    for s in ds.subjects:
        assert s.image.shape == (*SHAPES[d], 1) and s.image.dtype == np.float32
        assert s.field.shape == (*SHAPES[d], d) and np.isfinite(s.field).all()
    assert sorted(np.unique(labels).tolist()) == list(range(K + 1))
    img = np.stack([s.image for s in ds.subjects])
    assert -0.2 < img.min() and img.max() < 1.4  # [0, 1]-ish, unnormalised


# --------------------------------------------------------------------------------------------
# within-subject ground truth
# --------------------------------------------------------------------------------------------


def test_ground_truth_composes_within_subject(written):
    """``pair_batch(fields=True)`` composes the subject fields into the within-subject ground
    truth: warping the moving scan's labels with it reproduces the fixed scan's labels but for
    nearest-neighbour rounding on label boundaries, far better than no warp on the changing
    structure (whose boundary moves by ``change`` voxels)."""
    d, ds, labels, _ = written
    pairs = all_within_subject_pairs(ds, range(len(ds)))
    assert len(pairs) == N * T * (T - 1) and ds.has_ground_truth(pairs)
    gt = pair_batch(ds, pairs, fields=True)["gt_disp"]
    fixed, moving = labels[pairs[:, 0]], labels[pairs[:, 1]]
    warped = _warp(moving, gt)
    near = np.stack([ndimage.morphological_gradient(f, size=(3,) * d) > 0 for f in fixed])
    assert np.mean((warped != fixed) & ~near) < 1e-4  # exact off the label boundaries
    assert np.mean(warped != fixed) < 0.8 * np.mean(moving != fixed)
    gt_dice = [_dice(w, f) for w, f in zip(warped, fixed, strict=True)]
    # nearest rounding on boundaries: 2-D structures span ~20 voxels, 3-D ones ~8
    assert min(gt_dice) > (0.94 if d == 2 else 0.85)
    changed = np.array([_dice(w, f, [LABEL]) for w, f in zip(warped, fixed, strict=True)])
    raw = np.array([_dice(m, f, [LABEL]) for m, f in zip(moving, fixed, strict=True)])
    assert np.all(changed > raw) and changed.mean() > raw.mean() + 0.05
    # the ground truth is the growth (small) and the jitter difference: a few voxels at most
    assert np.percentile(np.linalg.norm(gt, axis=-1), 99) < 2.0 * CHANGE[d][1] + 1.0


def test_within_subject_scans_far_more_alike_than_subjects(written):
    """Raw (unregistered) mean foreground Dice: scans of one subject differ by the jitter
    (0.3 voxel) and the change of one structure (<= ``change`` voxels), two subjects by
    smooth motions of 3 (3-D: 2) voxels of control-point standard deviation. Measured (key
    3): within 0.90 / across 0.75 (2-D), 0.86 / 0.69 (3-D); required: a margin of 0.1."""
    _, ds, labels, _ = written
    within = [_dice(labels[f], labels[m]) for f, m in all_within_subject_pairs(ds, range(len(ds)))]
    first = [ds.scans(sid)[0] for sid in ds.subject_ids()]
    across = [_dice(labels[a], labels[b]) for a in first for b in first if a != b]
    assert np.mean(within) > np.mean(across) + 0.1
    assert np.min(within) > np.mean(across) + 0.05


# --------------------------------------------------------------------------------------------
# the change
# --------------------------------------------------------------------------------------------


def test_changing_structure_changes_by_the_recorded_amount(written):
    """Per subject the changing structure's volume goes from its first scan to the next by
    the recorded factor ``(1 + change / radius)^D`` (sign and magnitude: within 30 % of the
    change, for voxelisation and the jitter's volume change, measured up to 22 %), while
    every other structure changes by less than 40 % as much (measured up to 31 %: the
    neighbours pushed or pulled along)."""
    d, ds, labels, block = written
    info = block["longitudinal"]
    lo, hi = CHANGE[d]
    assert info["change"] == [lo, hi]
    for sid in ds.subject_ids():
        first, later = ds.scans(sid)
        names = [ds.subjects[i].name for i in (first, later)]
        vol = [int(np.sum(labels[i] == LABEL)) for i in (first, later)]
        assert vol == [info["volumes"][n] for n in names]  # as recorded
        sub = info["subjects"][sid]
        change, radius = sub["change"], sub["radius"]
        assert lo <= abs(change) <= hi
        factor = info["volume_factor"][names[1]]
        assert info["volume_factor"][names[0]] == 1.0
        assert factor == pytest.approx((1 + change / radius) ** d, rel=1e-4)
        ratio = vol[1] / vol[0]
        assert np.sign(ratio - 1) == np.sign(change)
        assert abs(ratio - factor) < 0.3 * abs(factor - 1)
        # the structure's radius in its first scan is the recorded one
        assert radius == pytest.approx(
            np.sqrt(vol[0] / np.pi) if d == 2 else np.cbrt(3 * vol[0] / (4 * np.pi)), rel=1e-4
        )
        for k in set(range(1, K + 1)) - {LABEL}:
            other = np.sum(labels[later] == k) / np.sum(labels[first] == k) - 1
            assert abs(other) < 0.4 * abs(ratio - 1)


def test_direction_and_more_timepoints():
    """``direction`` fixes the sign; with ``T`` time points the structure keeps changing in
    the same direction, its volume factor ``(1 + change / radius)^(D t)``."""
    template = make_template(jax.random.PRNGKey(0), SHAPES[2])
    for direction, sign in (("grow", 1), ("shrink", -1)):
        s = make_longitudinal_subjects(  # 4 x 3 scans: the fields of the 6 x 2 of `written`
            jax.random.PRNGKey(4), template, num_subjects=4, num_timepoints=3, direction=direction
        )
        assert s["labels"].shape == (4, 3, *SHAPES[2]) and np.all(np.sign(s["change"]) == sign)
        vol = s["volumes"]
        assert np.all(np.sign(np.diff(vol, axis=1)) == sign)  # monotone
        np.testing.assert_allclose(vol / vol[:, :1], s["scale"] ** 2, rtol=0.12)


# --------------------------------------------------------------------------------------------
# determinism, settings
# --------------------------------------------------------------------------------------------


def test_written_data_is_the_generators_and_deterministic(written):
    d, ds, labels, _ = written
    k_template, k_subjects, _ = jax.random.split(jax.random.PRNGKey(3), 3)
    template = make_template(k_template, SHAPES[d])
    kw = dict(num_subjects=N, **SETTINGS[d])
    s = make_longitudinal_subjects(k_subjects, template, **kw)
    np.testing.assert_array_equal(labels, s["labels"].reshape(N * T, *SHAPES[d]))
    images = np.stack([x.image for x in ds.subjects])
    np.testing.assert_array_equal(images, s["images"].reshape(N * T, *SHAPES[d], 1))
    field = np.stack([x.field for x in ds.subjects])
    np.testing.assert_array_equal(field, s["disp"].reshape(N * T, *SHAPES[d], d))
    other = make_longitudinal_subjects(jax.random.PRNGKey(9), template, **kw)
    for k in ("images", "labels", "disp", "change"):
        assert not np.array_equal(s[k], other[k])


def test_settings_are_checked(tmp_path):
    template = make_template(jax.random.PRNGKey(0), SHAPES[2])
    for bad, match in (
        ({"num_timepoints": 1}, "num_timepoints"),
        ({"changing_label": 7}, "changing_label"),
        ({"change": (2.0, 1.0)}, "change"),
        ({"change": 9.5}, "change"),  # the organ's radius is ~9 voxels
        ({"change": 6.0, "num_timepoints": 4}, "change"),
        ({"direction": "sideways"}, "direction"),
        ({"change_width": 0.0}, "change_width"),
    ):
        with pytest.raises(ValueError, match=match):
            make_longitudinal_subjects(jax.random.PRNGKey(0), template, num_subjects=1, **bad)
    for bad, match in (
        ({"num_labels": 1}, "changing_label"),
        ({"num_val_pairs": -1}, "num_val_pairs"),
        ({"num_heldout": 6}, "num_heldout"),
    ):
        with pytest.raises(ValueError, match=match):
            write_longitudinal_dataset(
                tmp_path / "x", key=0, shape=SHAPES[2], num_subjects=6, **bad
            )


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, shape",
    [(["--shape", "64", "64"], (64, 64)), (["--3d", "--shape", "32", "32", "32"], (32, 32, 32))],
    ids=["2d", "3d"],
)
def test_cli(run_cli, tmp_path, argv, shape):
    assert SCENARIOS["longitudinal"] is write_longitudinal_dataset
    out = tmp_path / "longitudinal"
    rc, stdout, _ = run_cli(
        ["make-synthetic", "--scenario", "longitudinal", "--out", out, "--subjects", N, *argv]
    )
    assert rc == 0 and "scenario longitudinal" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.shape == shape and len(ds.subject_ids()) == N
    # the CLI asks for H (H - 1) = 2 pairs of the 4: one per held-out subject, so that every
    # held-out scan is read back
    assert len(ds) == N * T and len(ds.val_pairs) == 2
    assert {ds.subjects[f].subject for f, _ in ds.val_pairs} == {"sub_0004", "sub_0005"}
    for f, m in ds.val_pairs:
        assert ds.subjects[f].subject == ds.subjects[m].subject and f != m
    gt = pair_batch(ds, ds.val_pairs, fields=True)["gt_disp"]
    assert gt.shape == (2, *shape, len(shape)) and np.isfinite(gt).all()
