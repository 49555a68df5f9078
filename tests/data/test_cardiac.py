"""The ``cardiac`` scenario (:mod:`jrs_jax.data.cardiac`): beating-heart sequences labelled at
end-diastole and end-systole only, every claimed property checked on the data read back by
:func:`jrs_jax.data.load_learn2reg`: the labelled frames and the evaluation-only labels of
every frame, the contraction of the pool and the kept myocardium, the periodic cycle, the
ground-truth motion, sequence sampling, 2-D and 3-D, determinism and the command line."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.data import (
    CARDIAC_LABELS,
    cardiac_cycle,
    cardiac_template,
    load_learn2reg,
    make_cardiac_sequences,
    pair_batch,
    sequence_batch,
    sequence_windows,
    write_cardiac_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.spatial import compose, warp_labels

SHAPES = {2: (64, 64), 3: (32, 32, 32)}
N, H, T, ES = 4, 2, 10, 4  # sequences, held out, frames, ES frame (round(0.4 T))
LABELLED = 1  # training sequence 0 has ED / ES labels, sequence 1 none


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def heart(request, tmp_path_factory):
    """(dataset read back, its dataset.json, the jrs_jax block)."""
    d = request.param
    root = tmp_path_factory.mktemp(f"cardiac{d}d") / "d"
    path = write_cardiac_dataset(
        root, key=0, shape=SHAPES[d], num_subjects=N, num_heldout=H, num_labelled=LABELLED
    )
    return load_learn2reg(path), path, json.load(open(path))["jrs_jax"]


def _areas(ds, sid: str) -> dict[int, np.ndarray]:
    """Voxel counts of classes 1..3 over the frames of sequence ``sid`` (hidden labels)."""
    lab = np.stack([ds.subjects[i].hidden_labels for i in ds.scans(sid)])
    ax = tuple(range(1, lab.ndim))
    return {k: np.sum(lab == k, axis=ax).astype(np.float64) for k in (1, 2, 3)}


def _dice(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    ax = tuple(range(1, a.ndim))
    a, b = a == k, b == k
    return 2 * np.sum(a & b, axis=ax) / (np.sum(a, axis=ax) + np.sum(b, axis=ax))


# --------------------------------------------------------------------------------------------
# labels: ED / ES only for training, every frame hidden
# --------------------------------------------------------------------------------------------


def test_training_labels_only_at_ed_and_es(heart):
    ds, path, block = heart
    assert len(ds) == N * T and ds.has_hidden_labels and ds.has_fields
    assert ds.subject_ids() == [f"seq_{i:04d}" for i in range(N)]
    assert ds.label_names == {k: CARDIAC_LABELS[k] for k in range(4)}
    for i, sid in enumerate(ds.subject_ids()):
        scans = ds.scans(sid)
        subs = [ds.subjects[j] for j in scans]
        assert [s.time for s in subs] == list(range(T))
        assert [s.name for s in subs] == [f"{sid}_f{t:02d}" for t in range(T)]
        assert all(s.held_out == (i >= N - H) for s in subs)
        labelled = i < LABELLED or i >= N - H
        assert [s.has_labels for s in subs] == [labelled and t in (0, ES) for t in range(T)]
        for s in subs:  # every frame has hidden labels, equal to the training ones where given
            assert s.hidden_labels.dtype == np.int32 and s.hidden_labels.shape == ds.shape
            assert sorted(np.unique(s.hidden_labels).tolist()) == [0, 1, 2, 3]
            if s.has_labels:
                np.testing.assert_array_equal(s.labels, s.hidden_labels)
    # the training labels: ED and ES of the labelled training sequence only
    assert [ds.subjects[i].name for i in ds.labelled()] == ["seq_0000_f00", "seq_0000_f04"]
    root = os.path.dirname(path)
    assert len(os.listdir(os.path.join(root, "labelsTr"))) == 2 * (LABELLED + H)
    assert len(os.listdir(os.path.join(root, "labelsHidden"))) == N * T
    assert len(block["hidden_labels"]) == N * T


def test_json_block(heart):
    ds, path, block = heart
    c = block["cardiac"]
    assert block["generator"] == "jrs_jax.data.cardiac" and block["seed"] == 0
    assert block["ndim"] == ds.ndim and block["num_subjects"] == N
    assert (c["num_frames"], c["ed_frame"], c["es_frame"]) == (T, 0, ES)
    assert c["labelled_frames"] == [0, ES]
    np.testing.assert_allclose(c["cycle"], cardiac_cycle(T, ES), atol=1e-6)
    assert c["cycle"][0] == 0.0 and c["cycle"][ES] == 1.0 and max(c["cycle"]) == 1.0
    assert set(c["sequences"]) == set(ds.subject_ids())
    for p in c["sequences"].values():
        assert 0.45 <= p["contraction"] <= 0.65 and 0.35 <= p["rv_contraction"] <= 0.55
        assert 3.0 <= p["twist_deg"] <= 8.0 and len(p["scale"]) == len(p["shift"]) == ds.ndim
    # the canonical heart, which every subject field pulls onto its frame, is written too
    assert os.path.isfile(os.path.join(os.path.dirname(path), block["template"][2:]))
    assert SCENARIOS["cardiac"] is write_cardiac_dataset


# --------------------------------------------------------------------------------------------
# the motion: contraction, kept wall, periodic cycle
# --------------------------------------------------------------------------------------------


def test_pool_shrinks_by_the_contraction_and_the_wall_keeps_its_area(heart):
    """Per sequence and frame (hidden labels read back): LV pool area / ED area = ``1 -
    cycle[t] contraction`` (the configured fraction at ES), the RV likewise with
    ``rv_contraction``, the myocardium area constant. Tolerances: measured deviations are
    <= 0.025 (2-D) / 0.04 (3-D) for the pools (voxel counting of a ~200-1000 voxel region
    plus the non-affine shape field) and <= 0.055 for the wall."""
    ds, _, block = heart
    cycle = np.asarray(block["cardiac"]["cycle"])
    tol = 0.04 if ds.ndim == 2 else 0.055
    lost, wanted, wall = [], [], []
    for sid in ds.subject_ids():
        p = block["cardiac"]["sequences"][sid]
        a = _areas(ds, sid)
        pool, rv, myo = a[1] / a[1][0], a[3] / a[3][0], a[2] / a[2][0]
        np.testing.assert_allclose(pool, 1 - cycle * p["contraction"], atol=tol)
        np.testing.assert_allclose(rv, 1 - cycle * p["rv_contraction"], atol=tol)
        lost.append(1 - pool[ES])
        wanted.append(p["contraction"])
        wall.append(myo)
        # the myocardium thickens: same area on a smaller ring
        assert np.all(np.abs(myo - 1) < 0.08)
    assert np.mean(np.abs(np.subtract(lost, wanted))) < 0.02
    assert np.mean(np.abs(np.concatenate(wall) - 1)) < 0.025
    # a pure scaling of the heart would shrink the wall with the pool (the test can fail)
    assert np.mean(wanted) > 0.4


def test_motion_is_periodic(heart):
    """The last frame is close to ED again: its ground-truth motion relative to ED is a small
    fraction of the ES motion (the cycle curve) and its labels overlap ED's far more."""
    ds, _, block = heart
    cycle = np.asarray(block["cardiac"]["cycle"])
    assert cycle[-1] < 0.1 and cycle[ES] == 1.0
    for sid in ds.subject_ids():
        scans = ds.scans(sid)
        ed, es, last = scans[0], scans[ES], scans[-1]
        gt = pair_batch(ds, [(es, ed), (last, ed)], fields=True)["gt_disp"]
        motion = np.linalg.norm(gt, axis=-1).max(axis=tuple(range(1, gt.ndim - 1)))
        assert motion[0] > 1.5 and motion[1] < 0.25 * motion[0]
        lab = np.stack([ds.subjects[i].hidden_labels for i in (ed, es, last)])
        pool = _dice(lab[1:], lab[:1], 1)
        assert pool[1] > 0.9 and pool[1] > pool[0] + 0.1


# --------------------------------------------------------------------------------------------
# the ground truth
# --------------------------------------------------------------------------------------------


def test_ground_truth_warps_ed_labels_onto_every_frame(heart):
    """``pair_batch(fields=True)`` of (fixed = frame t, moving = ED), composed through the
    canonical heart, maps every voxel of frame t to the ED point of the same tissue: composed
    with ED's field it gives frame t's field (measured 99th percentile in the heart 0.024
    voxel in 2-D, 0.044 in 3-D; 0.1 / 0.21 anywhere). Warping the ED labels with it gives
    frame t's hidden labels up to the resampling of a label map (measured mean Dice per class
    over the frames: 2-D 64^2 nearest 0.964 / 0.943 / 0.941, soft-then-argmax 0.973 / 0.955 /
    0.954; 3-D 32^3, a 2-voxel wall, argmax 0.95 / 0.938 / 0.93), far above no motion."""
    ds, _, _ = heart
    modes = ("nearest", "argmax") if ds.ndim == 2 else ("argmax",)  # one compile in 3-D
    dice = {m: [] for m in modes}
    still, errs = [], []
    for sid in ds.subject_ids():
        scans = ds.scans(sid)
        ed = scans[0]
        pairs = [(i, ed) for i in scans[1:]]
        gt = pair_batch(ds, pairs, fields=True)["gt_disp"]
        fields = np.stack([ds.subjects[i].field for i in scans[1:]])
        ed_field = np.broadcast_to(ds.subjects[ed].field, fields.shape)
        back = np.asarray(compose(jnp.asarray(gt), jnp.asarray(ed_field)))
        err = np.linalg.norm(back - fields, axis=-1)
        fixed = np.stack([ds.subjects[i].hidden_labels for i in scans[1:]])
        errs.append((np.percentile(err[fixed > 0], 99), err.max(), np.median(err)))
        moving = np.broadcast_to(ds.subjects[ed].hidden_labels, fixed.shape)
        for mode in modes:
            w = np.asarray(
                warp_labels(jnp.asarray(moving), jnp.asarray(gt), num_classes=4, mode=mode)
            )
            dice[mode].append([_dice(w, fixed, k) for k in (1, 2, 3)])
        still.append([_dice(moving, fixed, k) for k in (1, 2, 3)])
    heart_err, max_err, median_err = np.max(errs, axis=0)
    assert heart_err < (0.05 if ds.ndim == 2 else 0.1) and median_err < 0.01
    assert max_err < (0.2 if ds.ndim == 2 else 0.4)
    # [sequences, classes (pool, wall, RV), frames]
    soft, still = np.stack(dice["argmax"]), np.stack(still)
    mean = soft.mean(axis=(0, 2))
    if ds.ndim == 2:
        assert np.stack(dice["nearest"]).mean(axis=(0, 2)).min() > 0.93
        assert mean.min() > 0.95 and mean[0] > 0.965
    else:  # thin 3-D structures lose more to the resampling
        assert mean.min() > 0.92 and mean[0] > 0.94
    assert soft.min() > 0.88
    # without the motion, ES is far from ED (the check can fail)
    assert np.all(still[:, :, ES - 1].mean(0) < soft[:, :, ES - 1].mean(0) - 0.1)


def test_val_pairs_are_ed_to_every_held_out_frame(heart):
    ds, _, _ = heart
    want = []
    for sid in ds.subject_ids()[N - H :]:
        scans = ds.scans(sid)
        want += [(scans[0], i) for i in scans[1:]]
    assert list(ds.val_pairs) == want and ds.has_ground_truth(ds.val_pairs)
    assert all(ds.subjects[f].time == 0 for f, _ in ds.val_pairs)


# --------------------------------------------------------------------------------------------
# sequence sampling
# --------------------------------------------------------------------------------------------


def test_sequence_sampling(heart):
    ds, _, _ = heart
    windows = sequence_windows(0, ds, ds.training(), T, 3)
    assert windows.shape == (3, T)
    for row in windows.tolist():
        assert len({ds.subjects[i].subject for i in row}) == 1
        assert [ds.subjects[i].time for i in row] == list(range(T))
    b = sequence_batch(ds, windows)
    assert b["sequence"].shape == (3, T, *ds.shape, 1)
    assert b["sequence_labels"].shape == (3, T, *ds.shape)
    assert not any("hidden" in k for k in b)
    for r, row in enumerate(windows.tolist()):
        labelled = ds.subjects[row[0]].subject == "seq_0000"
        assert b["sequence_has_label"][r].tolist() == [labelled and t in (0, ES) for t in range(T)]
        assert not b["sequence_labels"][r][~b["sequence_has_label"][r]].any()
    ev = sequence_batch(ds, windows, hidden_labels=True)
    assert ev["sequence_has_hidden"].all()
    for r, row in enumerate(windows.tolist()):
        for t, i in enumerate(row):
            got = ev["sequence_hidden_labels"][r, t]
            np.testing.assert_array_equal(got, ds.subjects[i].hidden_labels)
    short = sequence_windows(1, ds, ds.held_out(), 4, 5)  # windows inside held-out cycles
    assert all(np.all(np.diff([ds.subjects[i].time for i in row]) == 1) for row in short.tolist())


# --------------------------------------------------------------------------------------------
# determinism, settings, command line
# --------------------------------------------------------------------------------------------


def test_deterministic_and_key_dependent(heart):
    """The written data is ``make_cardiac_sequences`` of the key; sequence ``i`` depends on the
    key and ``i`` only (not on how many are drawn)."""
    ds, path, _ = heart
    raw = load_learn2reg(path, normalize=False)
    key = jax.random.PRNGKey(0)
    a = make_cardiac_sequences(key, shape=ds.shape, num_sequences=2)
    b = make_cardiac_sequences(key, shape=ds.shape, num_sequences=2)
    other = make_cardiac_sequences(jax.random.PRNGKey(1), shape=ds.shape, num_sequences=2)
    for k in ("images", "labels", "disp", "disp_inv", "contraction", "scale"):
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], other[k])
    for i in range(2):
        for t in range(T):
            s = raw.subjects[i * T + t]
            np.testing.assert_array_equal(s.hidden_labels, a["labels"][i, t])
            np.testing.assert_array_equal(s.image, a["images"][i, t])
    np.testing.assert_array_equal(a["template"], cardiac_template(ds.shape))


def test_settings_are_checked(tmp_path):
    for bad, match in (
        ({"num_labels": 5}, "num_labels"),
        ({"es_frame": 0}, "es_frame"),
        ({"es_frame": T}, "es_frame"),
        ({"shape": (16, 16)}, "shape"),
        ({"num_val_pairs": -1}, "num_val_pairs"),
        ({"num_val_pairs": 10_000}, "num_val_pairs"),
        ({"contraction": (0.7, 0.5)}, "contraction"),
        ({"label_means": (0.1, 0.2)}, "label_means"),
    ):
        kwargs = {"shape": (48, 48), "num_subjects": 3, **bad}
        with pytest.raises(ValueError, match=match):
            write_cardiac_dataset(tmp_path / "x", key=0, **kwargs)
    assert not os.path.exists(tmp_path / "x")


def test_cli(run_cli, tmp_path):
    """The command line's standard settings (num_labels 4, num_val_pairs H (H - 1)) give the
    tissue as label 4 and H (H - 1) consecutive-frame pairs after the ED pairs."""
    out = tmp_path / "heart"
    argv = ["make-synthetic", "--scenario", "cardiac", "--out", out, "--subjects", 3]
    rc, stdout, _ = run_cli([*argv, "--shape", 64, 64])
    assert rc == 0 and "scenario cardiac" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.shape == (64, 64) and len(ds) == 3 * T and len(ds.subject_ids()) == 3
    h = 2
    assert len(ds.val_pairs) == h * (T - 1) + h * (h - 1)
    extra = [(ds.subjects[f].time, ds.subjects[m].time) for f, m in ds.val_pairs[h * (T - 1) :]]
    assert extra == [(1, 2), (1, 2)]
    assert ds.has_ground_truth(ds.val_pairs)
    assert sorted(np.unique(ds.subjects[0].hidden_labels).tolist()) == [0, 1, 2, 3, 4]
    assert [s.time for s in ds.subjects if s.has_labels] == [0, ES, 0, ES, 0, ES]
