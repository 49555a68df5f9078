"""The ``tracts`` scenario (:mod:`jrs_jax.data.tracts`): crossing tubes with multi-label
maps, each claimed property tested on the data read back through ``load_learn2reg``: binary
multi-label maps with one channel per tract, every pair of tracts overlapping, the overlaps
exactly where the image is brightest, each tract one connected tube, 2-D and 3-D,
determinism, the longitudinal combination (a tract thickening or thinning between scans),
the settings and the command line."""

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
    load_image,
    load_learn2reg,
    make_tract_subjects,
    make_tract_template,
    pair_batch,
    write_tracts_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.data.tracts import _min_overlap
from jrs_jax.spatial import warp

SHAPES = {2: (64, 64), 3: (32, 32, 32)}
N, H, LAB, K = 6, 2, 3, 3  # the CLI tests write 6 subjects with 3 tracts too
NAMES = {0: "tract_1", 1: "tract_2", 2: "tract_3"}


def _written(root, d: int, **kw):
    path = write_tracts_dataset(
        root, key=5, shape=SHAPES[d], num_subjects=N, num_heldout=H, num_labelled=LAB, **kw
    )
    return load_learn2reg(path, normalize=False), json.load(open(path))


def _all_labels(ds, root) -> np.ndarray:
    """Every scan's tracts ``[scans, *S, K]`` from the files (unlabelled training scans keep
    theirs on disk)."""
    out = []
    for s in ds.subjects:
        if s.has_labels:
            out.append(s.labels)
        else:
            data = load_image(os.path.join(root, "labelsTr", f"{s.name}.nii.gz"), channels=True)
            out.append(data.data[:, :, 0] if ds.ndim == 2 else data.data)
    return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def written(request, tmp_path_factory):
    """(dimension, dataset read back, its tracts [scans, *S, K], the JSON) of a
    cross-sectional tract dataset."""
    d = request.param
    root = tmp_path_factory.mktemp(f"tracts{d}") / "d"
    ds, meta = _written(root, d)
    return d, ds, _all_labels(ds, str(root)), meta


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-channel Dice of ``[..., K]`` binary maps: ``[K]``."""
    axes = tuple(range(a.ndim - 1))
    return 2 * np.sum(a & b, axis=axes) / np.sum(a.astype(int) + b, axis=axes)


def _warp_tracts(tracts: np.ndarray, disp: np.ndarray) -> np.ndarray:
    out = warp(jnp.asarray(tracts, jnp.float32), jnp.asarray(disp), order=0)
    return np.asarray(out).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# multi-label maps, overlaps, tubes
# --------------------------------------------------------------------------------------------


def test_labels_are_binary_multi_label_maps(written):
    d, ds, tracts, meta = written
    assert ds.multi_label and ds.num_label_channels == K and ds.label_names == NAMES
    assert meta["jrs_jax"]["label_format"] == "multi" and meta["labels"] == {
        str(k): v for k, v in NAMES.items()
    }
    assert len(ds) == N and len(ds.labelled()) == LAB and ds.has_fields
    for s in ds.subjects:
        assert s.image.shape == (*SHAPES[d], 1) and s.image.dtype == np.float32
        if s.has_labels:
            assert s.labels.shape == (*SHAPES[d], K) and s.labels.dtype == np.uint8
    assert set(np.unique(tracts).tolist()) == {0, 1}
    root = os.path.dirname(ds.source)
    template = load_image(os.path.join(root, "template", "template_0000.nii.gz"), channels=True)
    assert template.data.shape == ((*SHAPES[d], 1, K) if d == 2 else (*SHAPES[d], K))
    block = meta["jrs_jax"]["tracts"]
    for s, t in zip(ds.subjects, tracts, strict=True):  # recorded volumes
        assert block["volumes"][s.name] == t.sum(axis=tuple(range(d))).tolist()


def test_every_pair_of_tracts_overlaps(written):
    """Two crossing tubes of radii ``r_i <= r_j`` share at least half the continuous
    ``4 r_i r_j`` voxels (2-D; 3-D: ``16 r_i^3 / 3``) in every scan; three tracts cross
    pairwise at three places, so no voxel has all three."""
    d, _, tracts, meta = written
    radii = meta["jrs_jax"]["tracts"]["radii"]
    assert len(radii) == K and all((1.5 if d == 3 else 2.0) < r < 4.0 for r in radii)
    for t in tracts:
        for i in range(K):
            for j in range(i + 1, K):
                shared = int(np.sum(t[..., i] & t[..., j]))
                assert shared >= _min_overlap([radii[i], radii[j]], d)
        assert t.sum(-1).max() == 2


def test_overlap_is_exactly_where_the_image_shows_it(written):
    """Around each crossing the overlap is brighter than either tract alone by about the
    other's contrast (single tracts 0.68-0.72, overlaps 0.93-0.97, over white matter 0.45;
    per-subject jitter 0.03 per class, a smooth bias of ~10 %): on voxels off label
    boundaries (partial volume), thresholding the image halfway between the brighter tract
    alone and the overlap there finds the overlap voxels and no voxel of a tract alone."""
    d, ds, tracts, _ = written
    face = ndimage.generate_binary_structure(d, 1)
    for s, t in zip(ds.subjects, tracts, strict=True):
        img = s.image[..., 0]
        code = np.tensordot(t.astype(int), 2 ** np.arange(K), axes=1)  # which tracts
        inner = ndimage.minimum_filter(code, footprint=face) == ndimage.maximum_filter(
            code, footprint=face
        )
        for i in range(K):
            for j in range(i + 1, K):
                two = inner & (code == 2**i + 2**j)
                near = inner & ndimage.binary_dilation(code == 2**i + 2**j, iterations=5)
                alone = [near & (code == 2**i), near & (code == 2**j)]
                assert two.sum() >= 1 and min(a.sum() for a in alone) >= 1
                level = max(img[a].mean() for a in alone)
                assert 0.1 < img[two].mean() - level < 0.4
                shown = img > (level + img[two].mean()) / 2
                assert shown[two].all()  # the overlap shows
                assert not shown[alone[0] | alone[1]].any()  # the tracts alone do not


def test_each_tract_is_one_tube(written):
    """Every channel is one face-connected component, elongated (the principal extent over
    the thinnest) and as thick as its radius (the largest distance to its boundary)."""
    _, _, tracts, meta = written
    radii = meta["jrs_jax"]["tracts"]["radii"]
    for t in tracts:
        for k in range(K):
            m = t[..., k].astype(bool)
            assert ndimage.label(m)[1] == 1
            pts = np.argwhere(m).astype(float)
            sd = np.sqrt(np.linalg.eigvalsh(np.cov(pts.T)))
            assert sd[-1] > 2.5 * sd[0]
            thick = ndimage.distance_transform_edt(m).max()
            assert 0.6 * radii[k] < thick < 1.8 * radii[k] + 1


def test_ground_truth_registers_the_tracts(written):
    d, ds, tracts, _ = written
    pairs = np.asarray(ds.val_pairs)
    assert len(pairs) == H and ds.has_ground_truth(pairs)
    gt = pair_batch(ds, pairs, fields=True)["gt_disp"]
    warped = _warp_tracts(tracts[pairs[:, 1]], gt)
    exact = _dice(warped, tracts[pairs[:, 0]])
    raw = _dice(tracts[pairs[:, 1]], tracts[pairs[:, 0]])
    assert exact.min() > (0.9 if d == 2 else 0.8) and exact.mean() > raw.mean() + 0.15


def test_deterministic_and_key_dependent(written):
    d, ds, tracts, _ = written
    k_template, k_subjects, _ = jax.random.split(jax.random.PRNGKey(5), 3)
    template = make_tract_template(k_template, SHAPES[d], num_tracts=K)
    again = make_tract_template(k_template, SHAPES[d], num_tracts=K)
    np.testing.assert_array_equal(template["tracts"], again["tracts"])
    s = make_tract_subjects(k_subjects, template, num_subjects=N)
    np.testing.assert_array_equal(tracts, s["tracts"][:, 0])
    np.testing.assert_array_equal(np.stack([x.image for x in ds.subjects]), s["images"][:, 0])
    other = make_tract_subjects(jax.random.PRNGKey(8), template, num_subjects=N)
    for key in ("images", "tracts", "disp"):
        assert not np.array_equal(s[key], other[key])
    assert not np.array_equal(
        template["tracts"], make_tract_template(k_subjects, SHAPES[d], num_tracts=K)["tracts"]
    )


# --------------------------------------------------------------------------------------------
# longitudinal combination
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def longitudinal(tmp_path_factory):
    """A 2-D tract dataset of 3 subjects x 2 scans (the fields of the 6 scans of
    `written`), tract 1 thickening or thinning."""
    root = tmp_path_factory.mktemp("tracts_long") / "d"
    path = write_tracts_dataset(
        root, key=6, shape=SHAPES[2], num_subjects=3, num_heldout=2, num_timepoints=2
    )
    ds = load_learn2reg(path, normalize=False)
    return ds, _all_labels(ds, str(root)), json.load(open(path))["jrs_jax"]


def test_longitudinal_scans_change_slightly(longitudinal):
    """Scans of a subject are grouped by subject and time; between them the changing tract's
    radius changes by the recorded factor (its area by about that factor: the cross-section
    scales, the end caps too), the other tracts by far less."""
    ds, tracts, block = longitudinal
    assert (
        ds.multi_label and len(ds) == 6 and ds.subject_ids() == ["sub_0000", "sub_0001", "sub_0002"]
    )
    assert block["num_timepoints"] == 2 and block["num_scans"] == 6
    info = block["tracts"]
    c = info["changing_tract"]
    r = info["radii"][c]
    assert c == 0 and info["change"] == pytest.approx([0.15 * r, 0.3 * r], rel=1e-4)
    np.testing.assert_array_equal(
        np.asarray(ds.val_pairs), all_within_subject_pairs(ds, ds.held_out())
    )
    assert len(ds.val_pairs) == 4
    for sid in ds.subject_ids():
        first, later = ds.scans(sid)
        assert [ds.subjects[i].name for i in (first, later)] == [f"{sid}_t0", f"{sid}_t1"]
        vol = tracts[[first, later]].sum(axis=(1, 2))  # [2, K]
        change = info["subject_change"][sid]
        factor = info["radius_factor"][f"{sid}_t1"]
        assert factor == pytest.approx(1 + change / r, rel=1e-4)
        ratio = vol[1, c] / vol[0, c]
        assert np.sign(ratio - 1) == np.sign(change)
        assert abs(ratio - factor) < 0.35 * abs(factor - 1)
        others = np.abs(vol[1] / vol[0] - 1)[np.arange(K) != c]
        assert others.max() < 0.3 * abs(ratio - 1)
        # every tract still overlaps the others and is one tube
        for t in tracts[[first, later]]:
            assert all(ndimage.label(t[..., k])[1] == 1 for k in range(K))
            assert all(np.sum(t[..., i] & t[..., j]) > 0 for i in range(K) for j in range(i))


def test_longitudinal_ground_truth_is_the_change(longitudinal):
    ds, tracts, _ = longitudinal
    pairs = np.asarray(ds.val_pairs)
    gt = pair_batch(ds, pairs, fields=True)["gt_disp"]
    fixed, moving = tracts[pairs[:, 0]], tracts[pairs[:, 1]]
    raw, exact = _dice(moving, fixed), _dice(_warp_tracts(moving, gt), fixed)
    assert raw.min() > 0.8  # a small change
    assert exact[0] > raw[0] + 0.05 and exact.min() > 0.88


# --------------------------------------------------------------------------------------------
# settings, command line
# --------------------------------------------------------------------------------------------


def test_settings_are_checked(tmp_path):
    template = make_tract_template(jax.random.PRNGKey(0), SHAPES[2], num_tracts=K)
    for bad, match in (
        ({"label_means": (0.4, 0.6)}, "label_means"),
        ({"num_timepoints": 2, "changing_tract": 3}, "changing_tract"),
        ({"num_timepoints": 2, "change": 3.5}, "change"),
        ({"num_timepoints": 0}, "num_timepoints"),
    ):
        with pytest.raises(ValueError, match=match):
            make_tract_subjects(jax.random.PRNGKey(0), template, num_subjects=1, **bad)
    for k in (1, 7):
        with pytest.raises(ValueError, match="num_labels"):
            write_tracts_dataset(
                tmp_path / "x", key=0, shape=SHAPES[2], num_subjects=6, num_labels=k
            )


@pytest.mark.parametrize(
    "argv, shape",
    [(["--shape", "64", "64"], (64, 64)), (["--3d", "--shape", "32", "32", "32"], (32, 32, 32))],
    ids=["2d", "3d"],
)
def test_cli(run_cli, tmp_path, argv, shape):
    assert SCENARIOS["tracts"] is write_tracts_dataset
    out = tmp_path / "tracts"
    rc, stdout, _ = run_cli(
        [
            "make-synthetic",
            "--scenario",
            "tracts",
            "--out",
            out,
            "--subjects",
            N,
            "--labels",
            K,
            *argv,
        ]
    )
    assert rc == 0 and "scenario tracts" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.shape == shape and len(ds) == N and len(ds.val_pairs) == 2
    assert ds.multi_label and ds.num_label_channels == K and ds.label_names == NAMES
    batch = pair_batch(ds, ds.val_pairs, fields=True)
    assert batch["fixed_labels"].shape == (2, *shape, K) and batch["fixed_labels"].dtype == np.uint8
    assert batch["gt_disp"].shape == (2, *shape, len(shape))
