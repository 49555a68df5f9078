"""Cardiac motion + segmentation: the loss (softmax once, the warped term on the labelled
target), the recurrent unit's causality, the separate-networks ablation, whole-cycle
windows from end-diastole, the sequence evaluation against the hidden labels, and
``jrs-jax register --series`` (4-D NIfTI or a folder of frames) with its bad inputs."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import load_image, save_image, sequence_batch
from jrs_jax.data.cardiac import write_cardiac_dataset
from jrs_jax.evaluation import evaluate, label_dice
from jrs_jax.spatial import warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "cardiac_motion.py:smoke")
_build = functools.partial(build_on, SMOKE)  # (data, *overrides) -> (cfg, ds, method)
FRAMES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cardiac") / "data"
    return write_cardiac_dataset(
        root, key=1, shape=(32, 32), num_subjects=5, num_heldout=2, num_frames=FRAMES
    )


@pytest.fixture(scope="module")
def setup(data, perturbed):
    overrides = ["loss.smooth_weight=0.3", "loss.warped_ce_weight=0.2", "loss.seg_ce_weight=0.7"]
    cfg, ds, method = _build(data, *overrides)
    return cfg, ds, method, perturbed(method.init(jax.random.key(0), ds))


def test_windows_are_whole_cycles_from_the_labelled_end_diastole(setup):
    _, ds, method, _ = setup
    b = method.sample_batch(ds, 0)
    assert b["sequence"].shape[:2] == (2, FRAMES)
    np.testing.assert_array_equal(b["sequence_time"], np.tile(np.arange(FRAMES), (2, 1)))
    assert b["sequence_has_label"][:, 0].all() and not b["sequence_has_label"].all()
    assert "sequence_hidden_labels" not in b  # evaluation-only labels never reach training


def test_loss_is_the_documented_composition(setup):
    _, ds, method, state = setup
    b = method.sample_batch(ds, 0)
    v = variables(state)
    total, parts = jax.jit(method.loss)(v, b, None)
    seq = jnp.asarray(b["sequence"])
    out = method.net.apply(v["net"], seq[:, 0], seq[:, 1:])
    logits, disp = out["seg"], out["disp"]
    assert float(jnp.abs(disp).max()) > 0.05
    lab, has = b["sequence_labels"], b["sequence_has_label"]
    sim, smooth, warped_ce = [], [], []
    for k in range(1, FRAMES):
        u = disp[:, k - 1]
        sim.append(losses.mse(warp(seq[:, k], u), seq[:, 0]))
        smooth.append(losses.huber_smoothness(u, delta=0.01))
        p = warp(jax.nn.softmax(logits[:, k]), u)  # the prediction, softmax once
        warped_ce.append(losses.cross_entropy(p, lab[:, 0], from_logits=False))
    ce = [losses.cross_entropy(logits[:, t], lab[:, t]) for t in range(FRAMES)]
    seg = sum(float((c * has[:, t]).sum()) for t, c in enumerate(ce)) / has.sum()
    expected = (
        float(jnp.mean(jnp.stack(sim)))
        + 0.3 * float(jnp.mean(jnp.stack(smooth)))
        + 0.7 * seg
        + 0.2 * float(jnp.mean(jnp.stack(warped_ce)))
    )
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert set(parts) == {"sim", "smooth", "seg", "warped_ce"}


def _disp(method, v, seq):
    return np.asarray(method.track(v, jnp.asarray(seq))[1])


def test_the_recurrent_unit_carries_motion_forward_in_time_only(setup, data, perturbed):
    _, ds, method, state = setup
    seq = method.sample_batch(ds, 0)["sequence"][:1].copy()
    bumped = seq.copy()
    bumped[:, 1] = bumped[:, 1][..., ::-1, :]  # change frame 1 only
    v = variables(state)
    a, b = _disp(method, v, seq), _disp(method, v, bumped)
    assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-6  # frame 1's own field
    assert np.abs(a[:, 1:] - b[:, 1:]).max() > 1e-7  # later frames see it (the GRU)
    later = seq.copy()
    later[:, -1] = later[:, -1][..., ::-1, :]
    c = _disp(method, v, later)
    np.testing.assert_array_equal(a[:, :-1], c[:, :-1])  # causal: the past is unchanged
    _, _, flat = _build(data, "model.recurrent=False")
    fs = perturbed(flat.init(jax.random.key(0), ds))
    a, b = _disp(flat, variables(fs), seq), _disp(flat, variables(fs), bumped)
    np.testing.assert_allclose(a[:, 1:], b[:, 1:], atol=1e-6)  # frame by frame, no memory


def test_separate_networks_share_nothing(data, perturbed):
    _, ds, method = _build(data, "model.arch='separate'")
    state = perturbed(method.init(jax.random.key(0), ds))
    assert set(state) == {"motion", "seg"}
    b = method.sample_batch(ds, 0)

    def grads(term):
        def f(params):
            return method.loss({**variables(state), **params}, b, None)[1][term]

        g = jax.grad(f)({n: state[n].params for n in ("motion", "seg")})
        return {n: float(sum(jnp.sum(x**2) for x in jax.tree.leaves(t))) for n, t in g.items()}

    assert grads("sim")["seg"] == 0 and grads("sim")["motion"] > 0
    assert grads("seg")["motion"] == 0 and grads("seg")["seg"] > 0
    assert "warped_ce" not in method.loss(variables(state), b, None)[1]


def test_sequence_evaluation_scores_the_unlabelled_frames_against_the_hidden_labels(setup):
    _, ds, method, state = setup
    v = variables(state)
    ev = evaluate(method, v, ds)
    keys = {"val/seg_dice_unlabelled", "val/seg_dice_labelled", "val/reg_dice"}
    keys |= {"val/temporal_diff2", "val/temporal_diff2_truth", "val/epe", "val/mean_dice"}
    assert keys <= set(ev.summary)
    row = ev.pairs[0]
    w = ds.scans(row["sequence"])
    b = sequence_batch(ds, np.asarray([w]), hidden_labels=True)
    pred = method.run(v, {"sequence": b["sequence"]}, "sequence")
    seg = method.labels({"seg_probs": pred["seg_sequence_probs"]})[0]
    unl = [t for t in range(len(w)) if not b["sequence_has_label"][0, t]]
    assert unl and all(b["sequence_has_hidden"][0, t] for t in unl)
    want = np.mean([label_dice(seg[t], b["sequence_hidden_labels"][0, t]) for t in unl])
    assert row["seg_dice_unlabelled"] == pytest.approx(float(want))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory, run_cli):
    d = tmp_path_factory.mktemp("cardiac_cli")
    argv = ["train", SMOKE, "--workdir", d / "run", "--set", f"data.dataset={str(data)!r}"]
    rc, _, err = run_cli([*argv, "--no-progress"])
    assert rc == 0, err
    cfg = apply_overrides(load_config(SMOKE), [f"data.dataset={str(data)!r}"])
    ds = experiment.load_dataset(cfg)
    held = ds.scans(ds.subjects[ds.held_out()[0]].subject)
    paths = [ds.subjects[i].image_path for i in held]
    vols = [load_image(p) for p in paths]
    series = d / "cine.nii.gz"
    save_image(series, np.stack([v.data for v in vols], -1), affine=vols[0].affine)
    return d, series, paths, ds.subjects[held[0]].label_path


def test_register_series_writes_a_field_per_frame_and_the_propagated_labels(trained, run_cli):
    d, series, paths, labels0 = trained
    out = d / "series"
    argv = ["register", "--checkpoint", d / "run", "--series", series, "--fixed-labels", labels0]
    rc, _, err = run_cli([*argv, "--out", out])
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == FRAMES and len(summary["folding_percent"]) == FRAMES - 1
    for k in range(FRAMES):
        assert (out / f"labels_f{k:02d}.nii.gz").exists() and (
            out / f"seg_f{k:02d}.nii.gz"
        ).exists()
        assert (out / f"disp_f{k:02d}.nii.gz").exists() == (k > 0)
    assert nib.load(str(out / "disp_f01.nii.gz")).shape == (32, 32, 1, 2)
    np.testing.assert_array_equal(  # frame 0's labels are frame 0's
        np.asarray(nib.load(str(out / "labels_f00.nii.gz")).dataobj),
        np.asarray(nib.load(str(labels0)).dataobj),
    )
    assert (out / "frames.png").stat().st_size > 0
    # a folder of frames gives the same fields
    folder = d / "frames"
    folder.mkdir()
    for k, p in enumerate(paths):
        os.symlink(p, folder / f"frame_{k:02d}.nii.gz")
    rc, _, err = run_cli(
        ["register", "--checkpoint", d / "run", "--series", folder, "--out", d / "f"]
    )
    assert rc == 0, err
    np.testing.assert_allclose(
        np.asarray(nib.load(str(d / "f" / "disp_f02.nii.gz")).dataobj),
        np.asarray(nib.load(str(out / "disp_f02.nii.gz")).dataobj),
        atol=1e-5,
    )


def test_series_bad_inputs_are_one_line_naming_the_file(trained, run_cli, tmp_path):
    d, series, paths, _ = trained
    base = ["register", "--checkpoint", d / "run", "--out", tmp_path / "o"]
    rc, _, err = run_cli([*base, "--series", paths[0]])  # one frame, not a series
    assert rc == 2 and err.count("\n") == 1 and paths[0] in err and "not a series" in err
    rc, _, err = run_cli([*base, "--fixed", series, "--moving", paths[1]])  # series as image
    assert rc == 2 and err.count("\n") == 1 and str(series) in err and "--series" in err
    folder = tmp_path / "frames"
    folder.mkdir()
    os.symlink(paths[0], folder / "a.nii.gz")
    small = load_image(paths[1])
    save_image(folder / "b.nii.gz", small.data[:16], affine=small.affine)
    rc, _, err = run_cli([*base, "--series", folder])
    assert rc == 2 and err.count("\n") == 1 and "b.nii.gz" in err and "one grid" in err
    assert not (tmp_path / "o").exists()
