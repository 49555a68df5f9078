"""The ``known_transform`` scenario (:mod:`jrs_jax.data.known_transform`): each source image
paired with itself moved by a recorded rigid + elastic transform. Tested on the data read
back through ``load_learn2reg``: scans grouped by subject and time, the recorded ground truth
maps the floating scan back onto the reference (image and labels), the rigid parameters lie
in their ranges, the rotation is a rotation, field and inverse are consistent, determinism,
the settings, the command line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.data import (
    load_learn2reg,
    make_known_transform_pairs,
    make_template,
    pair_batch,
    within_subject_pairs,
    write_known_transform_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.spatial import (
    affine_to_displacement,
    compose,
    identity_grid,
    jacobian_determinant,
    warp,
    warp_labels,
)

SHAPE = (48, 48)
N, H, LAB = 5, 2, 2
SETTINGS = dict(translation=6.0, rotation=10.0)
# voxels whose reference point p, floating point p + gt(p) and rigid image M(p) all lie this
# far inside the grid: off the padding that rotation / translation bring in, and off the
# border band where scaling and squaring clamps the elastic flow (its max is ~4 voxels).
MARGIN = 5


def _inside(points: np.ndarray, shape, margin: float) -> np.ndarray:
    hi = np.asarray(shape) - 1 - margin
    return np.all((points >= margin) & (points <= hi), axis=-1)


def _interior(gt: np.ndarray, rigid: np.ndarray, shape) -> np.ndarray:
    """``[B, *S]`` mask of the voxels where the ground truth is meaningful (see MARGIN)."""
    grid = np.asarray(identity_grid(shape))[None]
    m = grid + np.asarray(affine_to_displacement(jnp.asarray(rigid), shape))
    return _inside(grid, shape, MARGIN) & _inside(grid + gt, shape, MARGIN) & _inside(m, shape, 1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum((a == 1) & (b == 1)) / (np.sum(a == 1) + np.sum(b == 1)))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(dataset read back, the JSON's jrs_jax block, root)."""
    root = tmp_path_factory.mktemp("known") / "d"
    path = write_known_transform_dataset(
        root,
        key=4,
        shape=SHAPE,
        num_subjects=N,
        num_heldout=H,
        num_labelled=LAB,
        noise=0.0,  # noise-free sources: the measured errors are the transform's
        **SETTINGS,
    )
    ds = load_learn2reg(path, normalize=False, fields=True)
    return ds, json.load(open(path))["jrs_jax"], root


def _labels(ds, root) -> np.ndarray:
    from jrs_jax.data import load_labels

    out = []
    for s in ds.subjects:
        if s.has_labels:
            out.append(s.labels)
        else:
            out.append(load_labels(root / "labelsTr" / f"{s.name}.nii.gz").data[..., 0])
    return np.stack(out)


def test_round_trip_and_grouping(written):
    ds, block, _ = written
    assert ds.shape == SHAPE and ds.ndim == 2 and len(ds) == 2 * N
    ids = [f"sub_{s:04d}" for s in range(N)]
    assert ds.subject_ids() == ids
    for s, sid in enumerate(ids):
        scans = ds.scans(sid)
        assert [ds.subjects[i].name for i in scans] == [f"{sid}_t0", f"{sid}_t1"]
        assert [ds.subjects[i].time for i in scans] == [0, 1]
        assert all(ds.subjects[i].held_out == (s >= N - H) for i in scans)
        assert all(ds.subjects[i].has_labels == (s < LAB or s >= N - H) for i in scans)
        ref = ds.subjects[scans[0]]
        assert not np.any(ref.field) and not np.any(ref.field_inv)  # the reference frame
    assert ds.has_fields and len(ds.training()) == 2 * (N - H) and len(ds.labelled()) == 2 * LAB
    # one validation pair per held-out subject: (fixed = time 0, moving = time 1)
    assert [tuple(p) for p in ds.val_pairs] == [(2 * s, 2 * s + 1) for s in range(N - H, N)]
    assert ds.has_ground_truth(ds.val_pairs)
    assert block["generator"] == "jrs_jax.data.known_transform" and block["seed"] == 4
    assert block["num_scans"] == 2 * N and block["num_labels"] == 1
    info = block["known_transform"]
    assert set(info["subjects"]) == set(ids) and "warp(moving, gt) ~ fixed" in info["convention"]
    assert info["rotation"] == 10.0 and info["translation"] == [6.0, 6.0]
    # the files are the generator's arrays (same key split as the writer)
    key = jax.random.PRNGKey(4)
    k_template, k_subjects, k_transform = jax.random.split(key, 3)
    from jrs_jax.data import make_subjects

    template = make_template(k_template, SHAPE, num_labels=1)
    subj = make_subjects(k_subjects, template, num_subjects=N, noise=0.0)
    s = make_known_transform_pairs(k_transform, subj["images"], labels=subj["labels"], **SETTINGS)
    img = np.stack([x.image for x in ds.subjects])
    np.testing.assert_allclose(img, s["images"].reshape(2 * N, *SHAPE, 1), atol=1e-6)
    fields = np.stack([x.field_inv for x in ds.subjects])
    np.testing.assert_allclose(fields, s["disp_inv"].reshape(2 * N, *SHAPE, 2), atol=1e-5)
    for i, sid in enumerate(ids):
        np.testing.assert_allclose(info["subjects"][sid]["rotation"], s["rotation"][i], atol=1e-5)


def test_ground_truth_maps_floating_back_to_reference(written):
    """Every subject's pair (fixed = time 0, moving = time 1): ``pair_batch``'s ground truth
    warps the floating scan back onto the reference, image and labels. Measured (key 4,
    48^2, noise 0, on the interior: 43-52 % of the voxels): mean absolute image error
    0.0026-0.0031 (99th percentile <= 0.027; intensities in [0, 1]) against 0.049-0.079
    without the warp; label Dice 0.996-0.9995 against 0.81-0.89 (over the whole image
    0.958-0.9985: the object partly leaves the field of view)."""
    ds, block, root = written
    labels = _labels(ds, root)
    pairs = np.asarray([(2 * s, 2 * s + 1) for s in range(N)])
    assert ds.has_ground_truth(pairs)
    batch = pair_batch(ds, pairs, fields=True)
    gt = batch["gt_disp"]
    np.testing.assert_array_equal(gt, np.stack([ds.subjects[m].field_inv for _, m in pairs]))
    rigid = np.asarray(
        [block["known_transform"]["subjects"][f"sub_{s:04d}"]["rigid"] for s in range(N)]
    )
    inner = _interior(gt, rigid, SHAPE)
    assert inner.mean(axis=(1, 2)).min() > 0.3
    back = np.asarray(warp(jnp.asarray(batch["moving"]), jnp.asarray(gt)))[..., 0]
    fixed, moving = batch["fixed"][..., 0], batch["moving"][..., 0]
    for b in range(N):
        err = np.abs(back[b] - fixed[b])[inner[b]]
        raw = np.abs(moving[b] - fixed[b])[inner[b]]
        assert err.mean() < 0.006 and err.mean() < 0.1 * raw.mean(), (b, err.mean(), raw.mean())
        assert np.percentile(err, 99) < 0.05
    lab_back = np.asarray(
        warp_labels(
            jnp.asarray(labels[pairs[:, 1]]), jnp.asarray(gt), num_classes=2, mode="nearest"
        )
    )
    for b, (f, m) in enumerate(pairs):
        d_gt = _dice(np.where(inner[b], lab_back[b], 0), np.where(inner[b], labels[f], 0))
        d_raw = _dice(np.where(inner[b], labels[m], 0), np.where(inner[b], labels[f], 0))
        assert d_gt > 0.99 and d_gt > d_raw + 0.05, (b, d_gt, d_raw)
    # the reverse order has the time-1 field as its ground truth: warps reference -> floating
    rev = pair_batch(ds, pairs[:, ::-1], fields=True)["gt_disp"]
    np.testing.assert_array_equal(rev, np.stack([ds.subjects[m].field for _, m in pairs]))


def test_rigid_parameters_in_range_and_mean_displacement(written):
    ds, block, _ = written
    subjects = block["known_transform"]["subjects"]
    rot = np.asarray([subjects[f"sub_{s:04d}"]["rotation"] for s in range(N)])
    trans = np.asarray([subjects[f"sub_{s:04d}"]["translation"] for s in range(N)])
    assert np.all(np.abs(rot) <= SETTINGS["rotation"]) and np.ptp(rot) > 0
    assert np.all(np.abs(trans) <= SETTINGS["translation"]) and np.ptp(trans) > 0
    # the rotation part averages to 0 over the grid: the mean ground-truth vector is the
    # translation plus the elastic part's mean (4 x 4 control points of sd 1.5 at 48^2: sd
    # ~0.4 voxel). Measured: within 0.02-0.92 voxel of the translation.
    mean = np.stack([ds.subjects[2 * s + 1].field_inv.reshape(-1, 2).mean(0) for s in range(N)])
    np.testing.assert_allclose(mean, trans, atol=1.25)
    assert np.corrcoef(mean.ravel(), trans.ravel())[0, 1] > 0.95
    for s in range(N):  # the elastic part's largest displacement: the documented few voxels
        assert 0.5 < subjects[f"sub_{s:04d}"]["elastic_max"] < 6.0


@pytest.mark.parametrize("shape", [SHAPE, (16, 16, 16)], ids=["2d", "3d"])
def test_pure_rotation_is_the_analytic_rotation(shape):
    template = make_template(jax.random.PRNGKey(0), shape, num_labels=1)
    s = make_known_transform_pairs(
        jax.random.PRNGKey(2),
        template,
        num_subjects=N,  # 2-D: the shapes of the written dataset, compiled once
        translation=0.0,
        rotation=30.0,
        elastic_amplitude=0.0,
    )
    d = len(shape)
    x = np.asarray(identity_grid(shape), np.float64)
    c = (np.asarray(shape) - 1) / 2.0
    assert np.all(np.abs(s["rotation"]) <= 30.0) and np.all(s["translation"] == 0)
    for i in range(N):
        th = np.deg2rad(float(s["rotation"][i]))
        if d == 2:
            r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        else:
            a = s["axis"][i].astype(np.float64)
            assert abs(np.linalg.norm(a) - 1) < 1e-5
            k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
            r = np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k
        np.testing.assert_allclose(s["rigid"][i][:, :d], r, atol=1e-5)
        # pair ground truth R (x - c) + c - x; the time-1 field its inverse R^T (x - c) + c - x
        np.testing.assert_allclose(s["disp_inv"][i, 1], (x - c) @ r.T + c - x, atol=2e-4)
        np.testing.assert_allclose(s["disp"][i, 1], (x - c) @ r + c - x, atol=2e-4)
    assert not np.any(s["disp"][:, 0]) and not np.any(s["disp_inv"][:, 0])
    jac = np.asarray(jacobian_determinant(jnp.asarray(s["disp_inv"][:, 1])))
    np.testing.assert_allclose(jac, 1.0, atol=1e-4)


def test_field_and_inverse_are_consistent():
    """``compose`` of ``T`` and ``T^-1`` in both orders is ~0 in the interior. Measured (key 1,
    48^2, translation 6, the elastic defaults): max 0.11 voxel, mean 0.0065, on voxels 8 or
    more from the border (the band of ~translation + elastic voxels at the border is
    padding)."""
    shape = SHAPE
    template = make_template(jax.random.PRNGKey(0), shape, num_labels=1)
    s = make_known_transform_pairs(
        jax.random.PRNGKey(1), template, num_subjects=N, noise=0.0, **SETTINGS
    )
    t, t_inv = jnp.asarray(s["disp"][:, 1]), jnp.asarray(s["disp_inv"][:, 1])
    grid = np.asarray(identity_grid(shape))[None]
    a = np.linalg.norm(np.asarray(compose(t, t_inv)), axis=-1)  # phi_T^-1 o phi_T - id
    b = np.linalg.norm(np.asarray(compose(t_inv, t)), axis=-1)  # phi_T o phi_T^-1 - id
    inner = _inside(grid, shape, 8)
    assert np.abs(s["disp_inv"][:, 1]).max() > 3  # a real transform
    for err in (a, b):
        assert err[:, inner[0]].max() < 0.25 and err[:, inner[0]].mean() < 0.015
    # no folding: the elastic defaults keep det > 0 (measured min 0.58)
    assert np.asarray(jacobian_determinant(t_inv)).min() > 0.3


def test_deterministic_and_source_images():
    template = make_template(jax.random.PRNGKey(0), SHAPE, num_labels=1)
    a = make_known_transform_pairs(jax.random.PRNGKey(5), template, num_subjects=N)
    b = make_known_transform_pairs(jax.random.PRNGKey(5), template, num_subjects=N)
    c = make_known_transform_pairs(jax.random.PRNGKey(6), template, num_subjects=N)
    for k in ("images", "labels", "disp", "disp_inv", "rotation", "translation"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["disp_inv"], c["disp_inv"])
    # given images (no labels): the time-0 scans are the images, pair_noise only on time 1
    imgs = a["images"][:, 0]
    d = make_known_transform_pairs(jax.random.PRNGKey(7), imgs, pair_noise=0.1)
    assert d["labels"] is None and d["axis"] is None
    np.testing.assert_array_equal(d["images"][:, 0], imgs)
    e = make_known_transform_pairs(jax.random.PRNGKey(7), imgs)
    np.testing.assert_array_equal(d["disp"], e["disp"])
    assert 0.08 < np.std(d["images"][:, 1] - e["images"][:, 1]) < 0.12


def test_written_deterministic(tmp_path):
    kw = dict(key=1, shape=(32, 32), num_subjects=5, num_heldout=2)  # as the CLI test
    p1 = write_known_transform_dataset(tmp_path / "a", **kw)
    p2 = write_known_transform_dataset(tmp_path / "b", **kw)
    a, b = load_learn2reg(p1, fields=True), load_learn2reg(p2, fields=True)
    for x, y in zip(a.subjects, b.subjects, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.field_inv, y.field_inv)
    assert json.load(open(p1))["jrs_jax"] == json.load(open(p2))["jrs_jax"]


def test_settings_are_checked(tmp_path):
    template = make_template(jax.random.PRNGKey(0), (32, 32), num_labels=1)
    for bad, match in (
        ({"rotation": -1.0}, "rotation"),
        ({"rotation": 200.0}, "rotation"),
        ({"translation": -2.0}, "translation"),
        ({"translation": (1.0, 2.0, 3.0)}, "translation"),
        ({"elastic_amplitude": float("nan")}, "elastic_amplitude"),
        ({"control_spacing": 1}, "control_spacing"),
        ({"control_spacing": 2.5}, "control_spacing"),
        ({"pair_noise": -0.1}, "pair_noise"),
        ({"steps": -1}, "steps"),
    ):
        with pytest.raises(ValueError, match=match):
            make_known_transform_pairs(jax.random.PRNGKey(0), template, num_subjects=1, **bad)
    with pytest.raises(ValueError, match="num_subjects"):
        make_known_transform_pairs(jax.random.PRNGKey(0), template)
    with pytest.raises(ValueError, match="render settings"):
        make_known_transform_pairs(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1)), noise=0.1)
    for bad, match in (
        ({"rotation": "a lot"}, "rotation"),
        ({"num_val_pairs": -1}, "num_val_pairs"),
        ({"num_heldout": 6}, "num_heldout"),
        ({"translation": -1}, "translation"),
    ):
        with pytest.raises(ValueError, match=match):
            write_known_transform_dataset(
                tmp_path / "x", key=0, shape=(32, 32), num_subjects=6, **bad
            )


def test_sampler_draws_training_pairs_with_ground_truth(written):
    ds, _, _ = written
    pairs = within_subject_pairs(0, ds, ds.training(), 16)
    assert {(ds.subjects[f].time, ds.subjects[m].time) for f, m in pairs} == {(0, 1), (1, 0)}
    batch = pair_batch(ds, pairs, fields=True)
    for b, (f, m) in enumerate(pairs):
        assert ds.subjects[f].subject == ds.subjects[m].subject and not ds.subjects[f].held_out
        expected = ds.subjects[m].field_inv if ds.subjects[f].time == 0 else ds.subjects[f].field
        np.testing.assert_array_equal(batch["gt_disp"][b], expected)


def test_cli(run_cli, tmp_path):
    assert SCENARIOS["known_transform"] is write_known_transform_dataset
    out = tmp_path / "kt"
    argv = ["make-synthetic", "--scenario", "known_transform", "--out", out, "--subjects", 5]
    argv += ["--shape", 32, 32, "--heldout", 2, "--labels", 1, "--setting", "rotation=5"]
    rc, stdout, _ = run_cli(argv)
    assert rc == 0 and "scenario known_transform" in stdout
    ds = load_learn2reg(out / "dataset.json")
    block = json.load(open(out / "dataset.json"))["jrs_jax"]
    assert block["known_transform"]["rotation"] == 5.0
    assert all(abs(v["rotation"]) <= 5.0 for v in block["known_transform"]["subjects"].values())
    # the CLI asks for H (H - 1) pairs: capped at one per held-out subject
    assert len(ds) == 10 and len(ds.val_pairs) == 2 and ds.has_ground_truth(ds.val_pairs)
