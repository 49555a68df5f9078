"""Multi-label maps end to end through the files and the command line: a sigmoid method
trained on overlapping labels segments to a multi-channel NIfTI carrying the label names,
registers multi-channel label maps (nearest neighbour, channel by channel) and scores them
per channel; a map that is not binary, or has the wrong number of channels, is one line
naming the file (exit 2)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from jrs_jax import experiment
from jrs_jax.config import apply_overrides, load_config, save_config
from jrs_jax.data import (
    Dataset,
    load_multilabel,
    read_label_names,
    save_image,
    write_learn2reg,
    write_learn2reg_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {0: "tract_a", 1: "tract_b", 2: "tract_c"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, run_cli, paired_scans, as_multilabel):
    d = tmp_path_factory.mktemp("multilabel")
    src = paired_scans(
        write_learn2reg_dataset(d / "src", key=7, shape=(16, 16), num_subjects=8, num_heldout=2)
    )
    cfg = load_config(os.path.join(ROOT, "configs", "segis_net.py:smoke"))
    cfg = apply_overrides(cfg, [f"data.dataset={str(src)!r}"])
    multi = as_multilabel(experiment.load_dataset(cfg))
    assert multi.num_label_channels == len(NAMES)
    multi = Dataset(
        subjects=multi.subjects,
        val_pairs=multi.val_pairs,
        label_format="multi",
        label_names=NAMES,
    )
    data = write_learn2reg(d / "data", multi)
    cfg = apply_overrides(cfg, [f"data.dataset={str(data)!r}"])
    save_config(cfg, str(d / "config.json"))
    rc, _, err = run_cli(["train", d / "config.json", "--workdir", d / "run", "--no-progress"])
    assert rc == 0, err
    s = [x for x in experiment.load_dataset(cfg).subjects if x.held_out]
    files = {"fixed": s[0], "moving": s[1]}
    return d, files


def test_segment_writes_a_named_multi_channel_map(run, run_cli):
    d, files = run
    out = d / "seg"
    rc, _, err = run_cli(
        ["segment", "--checkpoint", d / "run", "--image", files["fixed"].image_path, "--out", out]
    )
    assert rc == 0, err
    img = nib.load(str(out / "labels.nii.gz"))
    assert img.shape == (16, 16, 1, 3) and img.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}
    assert read_label_names(out / "labels.nii.gz") == NAMES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label_names"] == {str(k): v for k, v in NAMES.items()}
    assert set(summary["voxels_per_label"]) == {"0", "1", "2"}


def test_register_warps_and_scores_multi_channel_label_maps(run, run_cli):
    d, files = run
    f, m = files["fixed"], files["moving"]
    out = d / "reg"
    argv = ["register", "--checkpoint", d / "run", "--fixed", f.image_path, "--moving"]
    argv += [m.image_path, "--moving-labels", m.label_path, "--fixed-labels", f.label_path]
    rc, _, err = run_cli([*argv, "--out", out])
    assert rc == 0, err
    warped = load_multilabel(out / "warped_labels.nii.gz")
    assert warped.data.shape == (16, 16, 1, 3)
    assert read_label_names(out / "warped_labels.nii.gz") == NAMES
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["dice_after"] <= 1.0 and 0.0 <= summary["dice_before"] <= 1.0
    assert "fixed_seg.nii.gz" in summary["files"]
    assert nib.load(str(out / "fixed_seg.nii.gz")).shape == (16, 16, 1, 3)


def _bad_copy(path, tmp_path, change) -> str:
    vol = load_multilabel(path, canonical=False)
    arr = change(np.asarray(vol.data).copy())
    bad = str(tmp_path / "bad.nii.gz")
    save_image(bad, arr, affine=vol.affine)
    return bad


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: np.where(a == 1, 2, a).astype(np.uint8), "must be binary"),
        (lambda a: a[..., :2], "has 2 channels; the model segments 3 labels"),
    ],
    ids=["not_binary", "channels"],
)
def test_bad_multi_label_map_is_one_line_naming_the_file(run, run_cli, tmp_path, change, message):
    d, files = run
    f, m = files["fixed"], files["moving"]
    bad = _bad_copy(m.label_path, tmp_path, change)
    argv = ["register", "--checkpoint", d / "run", "--fixed", f.image_path, "--moving"]
    argv += [m.image_path, "--moving-labels", bad, "--out", tmp_path / "out"]
    rc, _, err = run_cli(argv)
    assert rc == 2
    assert err.count("\n") == 1 and bad in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_label_names_round_trip_through_a_file(tmp_path):
    p = tmp_path / "x.nii.gz"
    save_image(p, np.zeros((4, 4, 2, 3), np.uint8), affine=np.eye(4), label_names=NAMES)
    assert read_label_names(p) == NAMES
    save_image(tmp_path / "y.nii.gz", np.zeros((4, 4, 2), np.uint8), affine=np.eye(4))
    assert read_label_names(tmp_path / "y.nii.gz") is None


def test_soft_warping_of_overlapping_channels_is_per_channel_and_exact_on_shifts():
    import jax.numpy as jnp

    from jrs_jax.evaluation import warp_labels_nearest
    from jrs_jax.spatial import warp, warp_labels

    rng = np.random.default_rng(0)
    lab = (rng.random((1, 12, 10, 3)) < 0.4).astype(np.uint8)  # overlapping binary channels
    disp = jnp.asarray(rng.normal(scale=1.5, size=(1, 12, 10, 2)), jnp.float32)
    soft = warp_labels(jnp.asarray(lab, jnp.float32), disp, num_classes=3, mode="soft")
    for k in range(3):  # channel k alone, warped linearly
        np.testing.assert_allclose(
            soft[..., k],
            warp(jnp.asarray(lab[..., k : k + 1], jnp.float32), disp)[..., 0],
            atol=1e-6,
        )
    shift = jnp.zeros((1, 12, 10, 2)).at[..., 0].set(2.0)  # an integer shift: exact
    soft = np.asarray(warp_labels(jnp.asarray(lab, jnp.float32), shift, num_classes=3))
    hard = np.asarray(warp_labels_nearest(jnp.asarray(lab), shift))
    np.testing.assert_array_equal((soft >= 0.5).astype(np.uint8), hard)
    np.testing.assert_array_equal(hard[0, :-2], lab[0, 2:])
