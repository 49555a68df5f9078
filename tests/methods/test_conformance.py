"""The method protocol, checked the same way for every registered method.

Over ``METHODS`` x each method's ``configs/<name>.py:smoke``: two finite train steps; no
retracing once every phase has run; a checkpoint round trip that continues bit-identically;
``predict`` keys and shapes per declared task; evaluation; and ``jrs-jax train`` +
``register`` / ``segment`` through the CLI on the same smoke data. A method added to the
registry is checked here without a line of new test code.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import pair_batch, sequence_batch, subject_batch, write_learn2reg_dataset
from jrs_jax.evaluation import evaluate
from jrs_jax.methods import METHODS, TASKS, MissingInput
from jrs_jax.train import Checkpointer, variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = sorted(METHODS)


@pytest.fixture(scope="module")
def data(tmp_path_factory, paired_scans):
    """The anatomy scenario, its scans paired into subjects of two time points, so that
    methods training or evaluating on within-subject pairs run on it too; the others ignore
    the grouping."""
    root = tmp_path_factory.mktemp("conformance") / "data"
    return paired_scans(
        write_learn2reg_dataset(
            root, key=5, shape=(16, 16), num_subjects=8, num_labelled=5, num_heldout=2
        )
    )


def _setup(name: str, data: str):
    cfg = load_config(os.path.join(ROOT, "configs", f"{name}.py:smoke"))
    cfg = apply_overrides(cfg, [f"data.dataset={data!r}"])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    return cfg, ds, experiment.build_method(cfg)


def _steps(method, state, ds, steps):
    out = []
    for t in steps:
        state, metrics = method.train_step(
            state, method.sample_batch(ds, t), jax.random.fold_in(jax.random.key(0), t), t
        )
        out.append(jax.device_get(metrics))
    return state, out


def test_every_method_has_a_config_with_a_smoke_variant():
    for name in NAMES:
        assert load_config(os.path.join(ROOT, "configs", f"{name}.py:smoke"))["method"] == name
        assert set(METHODS[name].tasks) <= set(TASKS) and METHODS[name].tasks


@pytest.mark.parametrize("name", NAMES)
def test_two_finite_steps_and_no_retracing(name, data, caplog):
    cfg, ds, method = _setup(name, data)
    state = method.init(jax.random.key(0), ds)
    steps = range(int(cfg["train"]["steps"]))  # a smoke run visits every phase
    state, metrics = _steps(method, state, ds, steps[:2])
    for m in metrics:
        assert all(np.isfinite(v) for v in jax.tree.leaves(m)), m
    state, _ = _steps(method, state, ds, steps[2:])
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        _steps(method, state, ds, steps)  # every phase again: nothing may compile
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled[:3]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_continues_bit_identically(name, data, tmp_path):
    _cfg, ds, method = _setup(name, data)
    state, _ = _steps(method, method.init(jax.random.key(0), ds), ds, range(2))
    with Checkpointer(str(tmp_path / "ckpt")) as ck:
        ck.save(2, state, wait=True)
        restored, _, step = ck.restore(method.init(jax.random.key(1)), step="latest")
    assert step == 2
    a, _ = _steps(method, jax.tree.map(jnp.copy, state), ds, range(2, 4))
    b, _ = _steps(method, restored, ds, range(2, 4))
    for x, y in zip(jax.tree.leaves(variables(a)), jax.tree.leaves(variables(b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _task_batch(method, ds, task):
    if task == "register":
        return pair_batch(ds, np.asarray([[6, 7], [7, 6]]))
    if task == "sequence":  # the held-out subject's two scans, in both orders
        return {"sequence": sequence_batch(ds, np.asarray([[6, 7], [7, 6]]))["sequence"]}
    return subject_batch(ds, np.asarray([6, 7]))


@pytest.mark.parametrize("name", NAMES)
def test_predict_keys_shapes_and_missing_inputs(name, data):
    _cfg, ds, method = _setup(name, data)
    v = variables(method.init(jax.random.key(0), ds))
    s, k = method.shape, method.num_classes
    for task in method.tasks:
        batch = _task_batch(method, ds, task)
        out = method.run(v, batch, task)
        out2 = method.run(v, {key: x * 1 for key, x in batch.items()}, task)
        assert method._jit_predict._cache_size() >= 1
        assert set(out) == set(out2)
        if task == "register":
            assert out["disp"].shape == (2, *s, len(s))
            assert out["warped"].shape == batch["moving"].shape
        if task == "sequence":
            assert out["disp_sequence"].shape == (2, 1, *s, len(s))
            assert out["seg_sequence_probs"].shape == (2, 2, *s, k)
        has_seg = {"seg_probs", "seg_sigmoid"} & set(out)
        if task == "segment":
            assert has_seg
        if "seg_probs" in out:
            assert out["seg_probs"].shape == (2, *s, k)
            np.testing.assert_allclose(np.asarray(out["seg_probs"]).sum(-1), 1.0, rtol=1e-5)
        if "seg_sigmoid" in out:
            p = np.asarray(out["seg_sigmoid"])
            assert p.shape == (2, *s, k) and p.min() >= 0 and p.max() <= 1
        if has_seg:
            assert method.labels(out).shape[: -1 if method.multi_label else None] == (2, *s)
        for key in method.inputs(task):
            with pytest.raises(MissingInput, match=rf"{name} needs {key} to {task}"):
                method.run(v, {kk: x for kk, x in batch.items() if kk != key}, task)


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_runs(name, data):
    _cfg, ds, method = _setup(name, data)
    ev = evaluate(method, variables(method.init(jax.random.key(0), ds)), ds)
    expected = set()
    if "register" in method.tasks:
        expected |= {"val/reg_dice", "val/reg_dice_identity", "val/folding_percent", "val/epe"}
    if "segment" in method.tasks:
        expected |= {"val/seg_dice"}
    assert expected <= set(ev.summary), ev.summary
    assert all(np.isfinite(ev.summary[k]) for k in expected)
    assert method.best_metric in ev.summary


@pytest.mark.parametrize("name", NAMES)
def test_cli_train_then_register_or_segment(name, data, tmp_path, run_cli):
    run = tmp_path / "run"
    cfg_spec = os.path.join(ROOT, "configs", f"{name}.py:smoke")
    rc, _, err = run_cli(
        ["train", cfg_spec, "--workdir", run, "--set", f"data.dataset={data!r}", "--no-progress"]
    )
    assert rc == 0, err
    with open(run / "results.json") as f:
        results = json.load(f)
    assert results["method"] == name and results["steps"] > 0
    images = os.path.join(os.path.dirname(data), "imagesTr")
    labels = os.path.join(os.path.dirname(data), "labelsTr")
    img = lambda i: os.path.join(images, f"sub_{i:04d}_0000.nii.gz")
    lab = lambda i: os.path.join(labels, f"sub_{i:04d}_0000.nii.gz")
    method = METHODS[name]
    if "register" in method.tasks:
        out = tmp_path / "reg"
        argv = ["register", "--checkpoint", run, "--fixed", img(6), "--moving", img(7)]
        argv += ["--moving-labels", lab(7), "--fixed-labels", lab(6), "--out", out]
        # test-time refinement through the CLI, or its one-line refusal, then the plain call
        rc, _stdout, err = run_cli([*argv, "--refine", "2"])
        if rc == 2:
            assert "refine" in err and len(err.strip().splitlines()) == 1, err
            rc, _stdout, err = run_cli(argv)
        assert rc == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert 0 <= summary["dice_after"] <= 1 and (out / "warped.nii.gz").exists()
        if "refine" in summary:
            assert summary["refine"]["steps"] == 2
            assert summary["refine"]["dice_after"] == pytest.approx(summary["dice_after"])
    if "segment" in method.tasks:
        out = tmp_path / "seg"
        rc, _, err = run_cli(["segment", "--checkpoint", run, "--image", img(6), "--out", out])
        assert rc == 0, err
        assert (out / "labels.nii.gz").exists()
        assert json.loads((out / "summary.json").read_text())["voxels_per_label"]


@pytest.mark.parametrize("name", NAMES)
def test_test_time_refinement_or_a_one_line_refusal(name, data):
    """Every method either refines (its :attr:`refine_net` moves, every other state entry
    stays, the objective is finite) or refuses with a ``ValueError`` naming itself."""
    from jrs_jax.refinement import refine_variables

    _cfg, ds, method = _setup(name, data)
    v = variables(method.init(jax.random.key(0), ds))
    batch = (
        _task_batch(method, ds, method.refine_task) if method.refine_task in method.tasks else {}
    )
    one = {k: np.asarray(x)[:1] for k, x in batch.items()}
    try:
        refined, losses = refine_variables(method, v, one, steps=2, lr=1e-2)
    except ValueError as exc:
        assert name in str(exc) and "\n" not in str(exc)
        return
    assert losses.shape == (3,) and np.isfinite(losses).all()
    net = method.refine_net
    for k in v:
        same = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(v[k]), jax.tree.leaves(refined[k]))
        )
        assert same == (k != net), k
