"""The ``speech`` scenario (:mod:`jrs_jax.data.speech`): vocal-tract frames of several
speakers, the tongue touching the soft palate in some frames and not in others. Every
claimed property is checked on the data read back through ``load_learn2reg``: the six
classes, the frames grouped by speaker, the recorded contact counts, about half of each
speaker's frames in contact and a clear gap in the others, small within-speaker and large
across-speaker change, the validation pairs' contact states, determinism, the command line
and the refusal of 3-D shapes."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import (
    SPEECH_LABELS,
    load_learn2reg,
    make_speech_subjects,
    write_speech_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.metrics import contact_count, mean_dice
from jrs_jax.postprocess import largest_component

SHAPE = (64, 64)
N = 6  # speakers; the CLI test writes 6 too: the jitted pieces compile once
F = 12  # the default frames per speaker
H = 2  # held-out speakers (the CLI's default for 6 subjects)
TONGUE, PALATE, AIR = 4, 2, 5
GAP = 2.0  # the default gap=(2, 5): every separated frame has at least 2 voxels
FRACTION = 0.5  # the default contact_fraction, jittered by +-0.1 per speaker


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(dataset.json, the loaded dataset, its jrs_jax block) of a written 2-D dataset."""
    root = tmp_path_factory.mktemp("speech") / "d"
    path = write_speech_dataset(root, key=3, shape=SHAPE, num_subjects=N, num_heldout=H)
    return path, load_learn2reg(path), json.load(open(path))["jrs_jax"]


def _gap(lab: np.ndarray) -> float:
    """Voxels between the tongue and the soft palate (nearest centres' distance - 1)."""
    return float(ndimage.distance_transform_edt(lab != PALATE)[lab == TONGUE].min()) - 1.0


def _by_speaker(ds) -> dict[str, list[int]]:
    return {sid: ds.scans(sid) for sid in ds.subject_ids()}


# --------------------------------------------------------------------------------------------
# classes, frames, contact
# --------------------------------------------------------------------------------------------


def test_classes_and_frames_per_speaker(written):
    _, ds, block = written
    assert ds.label_names == SPEECH_LABELS and ds.shape == SHAPE
    assert block["generator"] == "jrs_jax.data.speech" and block["num_labels"] == 5
    groups = _by_speaker(ds)
    assert list(groups) == [f"spk_{i:04d}" for i in range(N)]
    for i, (sid, idx) in enumerate(groups.items()):
        times = [ds.subjects[j].time for j in idx]
        if i < N - H:  # training speakers: every frame, in order, named spk_NNNN_fTT
            assert times == list(range(F))
            assert [ds.subjects[j].name for j in idx] == [f"{sid}_f{t:02d}" for t in range(F)]
            assert not any(ds.subjects[j].held_out for j in idx)
        else:  # held-out speakers: the frames in validation pairs
            assert len(set(times)) == len(times) >= 4 and set(times) <= set(range(F))
            assert all(ds.subjects[j].held_out for j in idx)
    for s in ds.subjects:
        lab = s.labels
        assert lab.dtype == np.int32 and s.image.shape == (*SHAPE, 1)
        assert sorted(np.unique(lab).tolist()) == list(range(6))  # 6 classes in every frame
        comps = [ndimage.label(lab == k)[1] for k in range(1, 6)]
        # one piece per tissue; the air is one piece, or two when the tongue closes the
        # passage under the velum (oral cavity cut off from the pharynx)
        in_contact = block["speech"]["contact"][s.name]["in_contact"]
        assert comps[:4] == [1, 1, 1, 1]
        assert comps[4] == 1 or (in_contact and comps[4] == 2)
        # largest_component leaves the tissues alone; the air is kept out of it
        np.testing.assert_array_equal(largest_component(lab, classes=[1, 2, 3, 4]), lab)


def test_recorded_contact_equals_the_labels_read_back(written):
    _, ds, block = written
    rec = block["speech"]["contact"]
    assert len(rec) == N * F and block["speech"]["contact_classes"] == [TONGUE, PALATE]
    for s in ds.subjects:
        count = contact_count(s.labels, TONGUE, PALATE)
        assert rec[s.name]["count"] == count
        assert rec[s.name]["in_contact"] == (count > 0)
        expect = 0.0 if count > 0 else _gap(s.labels)
        assert rec[s.name]["gap"] == pytest.approx(expect, abs=1e-3)


def test_about_half_in_contact_and_a_clear_gap_otherwise(written):
    _, ds, block = written
    for i, idx in enumerate(_by_speaker(ds).values()):
        labels = [ds.subjects[j].labels for j in idx]
        counts = np.asarray([contact_count(lab, TONGUE, PALATE) for lab in labels])
        touching = counts > 0
        if i < N - H:  # every frame loaded: 2 .. F - 2 in contact, about half
            assert 2 <= touching.sum() <= F - 2
            assert abs(touching.mean() - FRACTION) <= 0.1 + 0.5 / F
        assert touching.any() and not touching.all()
        for lab, c in zip(labels, counts, strict=True):
            if c == 0:  # separated: at least GAP voxels between tongue and soft palate
                assert _gap(lab) >= GAP - 1e-6
            else:  # touching, but thinly: a short edge, far under the velum's outline
                velum = lab == PALATE
                outline = int(np.sum(velum & ~ndimage.binary_erosion(velum)))
                assert 1 <= c <= outline / 3
    gaps = [v["gap"] for v in block["speech"]["contact"].values() if not v["in_contact"]]
    assert min(gaps) >= GAP and max(gaps) > GAP + 1  # the gaps spread over gap=(2, 5)


def test_images_are_mr_like(written):
    _, ds, _ = written
    for s in ds.subjects[::5]:
        img, lab = s.image[..., 0], s.labels
        means = [float(img[ndimage.binary_erosion(lab == k)].mean()) for k in range(6)]
        dark = max(means[0], means[AIR])  # background and air dark ...
        assert dark < 0.2 and min(means[1:5]) > dark + 0.15  # ... tissues mid-grey
        assert np.ptp([means[k] for k in (1, 2, 3, 4)]) > 0.15  # with different means


def test_change_within_a_speaker_is_local_and_smaller_than_across(written):
    _, ds, _ = written
    groups = [idx for i, idx in enumerate(_by_speaker(ds).values()) if i < N - H]
    lab = np.stack([[ds.subjects[j].labels for j in idx] for idx in groups])  # [N - H, F, *S]
    within = [mean_dice(x[a], x[b]) for x in lab for a in range(F) for b in range(a + 1, F)]
    across = [
        mean_dice(lab[i, t], lab[j, t])
        for i in range(len(lab))
        for j in range(i + 1, len(lab))
        for t in range(F)
    ]
    assert np.mean(within) > 0.85 > np.mean(across) + 0.1
    assert np.mean(within) > np.mean(across) + 0.2
    for x in lab:
        # the soft palate does not move; the head only changes around tongue and jaw
        assert all(np.array_equal(x[0] == PALATE, x[t] == PALATE) for t in range(F))
        moving = np.isin(x, (3, TONGUE)).any(0)
        near = ndimage.binary_dilation(moving, iterations=2)
        assert np.all(x[:, ~near] == x[0, ~near])


def test_validation_pairs_cover_the_contact_changes(written):
    _, ds, block = written
    pairs = np.asarray(ds.val_pairs)
    assert len(pairs) == 4 * H == block["num_val_pairs"]  # default: 4 per held-out speaker
    kinds = {}
    for (f, m), rec in zip(pairs.tolist(), block["speech"]["val_pairs"], strict=True):
        sf, sm = ds.subjects[f], ds.subjects[m]
        assert sf.subject == sm.subject and sf.held_out and sm.held_out and f != m
        assert (rec["fixed"], rec["moving"]) == (sf.name, sm.name)
        state = tuple(contact_count(s.labels, TONGUE, PALATE) > 0 for s in (sf, sm))
        kinds.setdefault(sf.subject, set()).add(state)
        names = {True: "contact", False: "separated"}
        assert rec["states"] == f"{names[state[0]]}->{names[state[1]]}"
    assert len(kinds) == H
    for found in kinds.values():  # each held-out speaker: every kind of contact change
        assert found == {(True, False), (False, True), (True, True), (False, False)}


# --------------------------------------------------------------------------------------------
# determinism, settings, command line
# --------------------------------------------------------------------------------------------


def test_deterministic_and_equal_to_the_generator(written):
    path, _, _ = written
    raw = load_learn2reg(path, normalize=False)
    k_subjects, _ = jax.random.split(jax.random.PRNGKey(3))
    s = make_speech_subjects(k_subjects, SHAPE, num_subjects=N)
    again = make_speech_subjects(k_subjects, SHAPE, num_subjects=N)
    other = make_speech_subjects(jax.random.PRNGKey(4), SHAPE, num_subjects=N)
    for k in ("images", "labels", "in_contact", "contact", "gap", "lift"):
        np.testing.assert_array_equal(s[k], again[k])
    assert not np.array_equal(s["labels"], other["labels"])
    assert not np.array_equal(s["in_contact"], other["in_contact"])
    for sub in raw.subjects:  # the files hold the generator's output
        i, t = int(sub.subject[4:]), sub.time
        np.testing.assert_array_equal(sub.labels, s["labels"][i, t])
        np.testing.assert_array_equal(sub.image[..., 0], s["images"][i, t, ..., 0])
    assert s["images"].dtype == np.float32 and s["labels"].dtype == np.int32
    assert sorted(np.unique(s["template"]).tolist()) == list(range(6))


def test_settings_are_checked(tmp_path):
    for bad, match in (
        ({"shape": (24, 24, 24)}, "shape must be 2-D"),
        ({"num_labels": 3}, "num_labels"),
        ({"num_frames": 3}, "num_frames"),
        ({"label_means": (0.1, 0.5, 0.6, 0.3, 0.7)}, "label_means"),
        ({"num_val_pairs": H * F * (F - 1) + 1}, "num_val_pairs"),
        ({"gap": (0.5, 3.0)}, "gap"),
    ):
        with pytest.raises(ValueError, match=match):
            write_speech_dataset(tmp_path / "x", key=0, num_subjects=N, **bad)
    assert SCENARIOS["speech"] is write_speech_dataset


def test_cli(run_cli, tmp_path):
    out = tmp_path / "speech"
    argv = ["make-synthetic", "--scenario", "speech", "--out", out, "--subjects", N]
    rc, stdout, _ = run_cli([*argv, "--shape", *SHAPE])
    assert rc == 0 and "scenario speech" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.shape == SHAPE and len(ds.subject_ids()) == N
    # the CLI asks for H (H - 1) = 2 pairs: raised to 3 per held-out speaker, the three kinds
    assert len(ds.val_pairs) == 3 * H
    states = {
        tuple(contact_count(ds.subjects[i].labels, TONGUE, PALATE) > 0 for i in p)
        for p in ds.val_pairs
    }
    assert {(True, False), (False, True), (True, True)} <= states
    # 3-D is refused with a clear message, nothing written
    rc, _, err = run_cli(
        [*argv[:4], tmp_path / "s3", "--subjects", N, "--3d", "--shape", 24, 24, 24]
    )
    assert rc == 2 and "shape must be 2-D" in err and not (tmp_path / "s3").exists()
