"""The training loop: determinism, resume after SIGKILL, NaN stop, data parallelism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrs_jax import experiment
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.train import (
    Alternating,
    Checkpointer,
    NetState,
    TrainingDiverged,
    check_finite,
    fit,
    make_update,
    read_log,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "voxelmorph.py")


@pytest.fixture(scope="module")
def dataset_json(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return write_learn2reg_dataset(
        root, key=1, shape=(16, 16), num_subjects=8, num_labelled=4, num_heldout=2
    )


def _config(dataset_json, *overrides):
    cfg = load_config(CONFIG + ":smoke")
    return apply_overrides(cfg, [f"data.dataset={dataset_json}", *overrides])


def _params(state):
    return jax.tree.leaves(jax.device_get(state))


def _assert_same(a, b, **tol):
    la, lb = _params(a), _params(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if tol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- steps ----------------------------------------------------------------------------------


def test_make_update_trains_only_the_named_network():
    state = {
        "a": NetState.create(params=jnp.array([1.0, 2.0]), tx=optax.adam(0.1)),
        "b": NetState.create(params=jnp.array([3.0]), tx=optax.adam(0.1)),
        "const": jnp.array(5.0),
    }

    def loss_fn(v, batch, key):
        return jnp.sum(v["a"]) * v["b"][0] * v["const"], {"term": v["b"][0]}

    new, metrics = make_update(loss_fn, train="a")(state, None, jax.random.key(0))
    # adam's first step moves every coordinate by -lr * sign(grad)
    np.testing.assert_allclose(new["a"].params, [0.9, 1.9], rtol=1e-6)
    assert new["b"] is state["b"] or np.array_equal(new["b"].params, state["b"].params)
    assert int(new["b"].step) == 0 and int(new["a"].step) == 1
    assert float(metrics["loss"]) == pytest.approx(45.0)
    assert float(metrics["term"]) == 3.0
    assert float(metrics["grad_norm/a"]) == pytest.approx(15.0 * np.sqrt(2), rel=1e-6)
    with pytest.raises(TypeError, match="not a NetState"):
        make_update(loss_fn, train="const")(state, None, jax.random.key(0))
    with pytest.raises(KeyError, match="'zzz'"):
        make_update(loss_fn, train="zzz")(state, None, jax.random.key(0))


def test_alternating_schedule_and_check_finite():
    sched = Alternating((("reg", 20), ("seg", 1)))
    phases = [sched.phase(t) for t in range(42)]
    assert phases.count("seg") == 2 and phases[20] == "seg" and phases[41] == "seg"
    assert sched.count("reg", 42) == 40 and sched.count("seg", 43) == 2
    with pytest.raises(ValueError, match="positive total"):
        Alternating((("reg", 0),))
    check_finite({"loss": jnp.float32(1.0)}, step=3)
    with pytest.raises(FloatingPointError, match=r"step 7: sim=nan"):
        check_finite({"loss": jnp.float32(1.0), "sim": jnp.float32(np.nan)}, step=7)


# -- determinism and resume -----------------------------------------------------------------


def test_same_config_and_seed_give_identical_parameters(dataset_json, tmp_path):
    cfg = _config(dataset_json, "train.steps=3", "train.eval_every=0")
    a = experiment.train(cfg, workdir=tmp_path / "a", progress=False, figures=False)
    b = experiment.train(cfg, workdir=tmp_path / "b", progress=False, figures=False)
    _assert_same(a["state"], b["state"])
    c = experiment.train(
        apply_overrides(cfg, ["seed=1"]), workdir=tmp_path / "c", progress=False, figures=False
    )
    assert any(
        not np.array_equal(x, y) for x, y in zip(_params(a["state"]), _params(c["state"]))
    ), "a different seed must change the parameters"


def _strip_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resume_after_sigkill_matches_uninterrupted_run(dataset_json, tmp_path):
    steps = 150
    overrides = [
        f"train.steps={steps}",
        "train.ckpt_every=2",
        "train.eval_every=0",
        "train.log_every=2",
    ]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jrs_jax.cli", "train", CONFIG + ":smoke", "--no-progress"]
    cmd += ["--workdir", str(killed), "--set", f"data.dataset={dataset_json}"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_dir = killed / "checkpoints"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(ckpt_dir) if ckpt_dir.exists() else []
            done = [int(p) for p in names if p.isdigit()]
            if done and max(done) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    with Checkpointer(ckpt_dir) as ck:
        interrupted_at = ck.latest_step()
    assert interrupted_at is not None and 4 <= interrupted_at < steps

    cfg = _config(dataset_json, *overrides)
    resumed = experiment.train(cfg, workdir=killed, resume=True, progress=False, figures=False)
    straight = experiment.train(cfg, workdir=tmp_path / "straight", progress=False, figures=False)
    _assert_same(resumed["state"], straight["state"])
    assert resumed["evaluation"] == straight["evaluation"]
    log_resumed = _strip_seconds(read_log(str(killed / "metrics.jsonl")))
    log_straight = _strip_seconds(read_log(str(tmp_path / "straight" / "metrics.jsonl")))
    assert log_resumed == log_straight


# -- NaN stop -------------------------------------------------------------------------------


def _toy_fit(tmp_path, bad_step: int | None, **kw):
    state = {"w": NetState.create(params=jnp.ones(3), tx=optax.sgd(0.1))}

    def loss_fn(v, batch, key):
        return jnp.sum((v["w"] - batch["x"]) ** 2), {}

    update = make_update(loss_fn, train="w")

    def step(state, batch, key, t):
        state, metrics = update(state, batch, key)
        if bad_step is not None and t + 1 == bad_step:
            metrics = {**metrics, "loss": jnp.float32(np.nan)}
        return state, metrics

    return fit(
        step,
        state,
        sample_batch=lambda t: {"x": np.full((3,), float(t), np.float32)},
        workdir=tmp_path,
        progress=False,
        **kw,
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 5: loss=nan.*last good checkpoint is step 4"):
        _toy_fit(tmp_path, bad_step=5, steps=10, ckpt_every=2, log_every=1)
    with Checkpointer(tmp_path / "checkpoints") as ck:
        assert ck.latest_step() == 4
    log = read_log(str(tmp_path / "metrics.jsonl"))
    assert log[-1]["split"] == "error" and log[-1]["step"] == 5
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3, 4]


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint was saved"):
        _toy_fit(tmp_path, bad_step=1, steps=4, ckpt_every=2)


def test_workdir_with_checkpoints_needs_resume(tmp_path):
    _toy_fit(tmp_path, bad_step=None, steps=2, ckpt_every=1)
    with pytest.raises(FileExistsError, match="resume"):
        _toy_fit(tmp_path, bad_step=None, steps=2, ckpt_every=1)
    out = _toy_fit(tmp_path, bad_step=None, steps=4, ckpt_every=1, resume=True)
    assert int(out["state"]["w"].step) == 4


# -- data parallelism -----------------------------------------------------------------------


_DP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jrs_jax import experiment
    from jrs_jax.config import apply_overrides, load_config
    from jrs_jax.train import fit

    assert jax.device_count() == 4, jax.devices()
    cfg = apply_overrides(load_config(sys.argv[1] + ":smoke"),
                          [f"data.dataset={sys.argv[2]}", "data.batch_size=4"])
    dataset = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, dataset)
    out = {}
    for dp in (False, True):
        method = experiment.build_method(cfg)
        state = method.init(jax.random.key(0))
        seen = []
        def step(state, batch, key, t):
            seen.append(len(batch["fixed"].sharding.device_set) if dp else 1)
            return method.train_step(state, batch, key, t)
        res = fit(step, state, sample_batch=lambda t: method.sample_batch(dataset, t),
                  workdir=sys.argv[3] + f"/dp{int(dp)}", steps=3, progress=False,
                  data_parallel=dp)
        leaves = jax.tree.leaves(jax.device_get(res["state"]["reg"].params))
        out[str(dp)] = [np.asarray(x).ravel().tolist() for x in leaves]
        out[f"devices_{dp}"] = seen
        out[f"param_devices_{dp}"] = len(jax.tree.leaves(res["state"]["reg"].params)[0]
                                         .sharding.device_set)
    print(json.dumps(out))
    """
)


def test_data_parallel_over_four_cpu_devices_equals_single_device(dataset_json, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    res = subprocess.run(
        [sys.executable, "-c", _DP_SCRIPT, CONFIG, dataset_json, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices_True"] == [4, 4, 4], "batches must be split over the 4 devices"
    assert out["param_devices_True"] == 4
    for single, multi in zip(out["False"], out["True"]):
        np.testing.assert_allclose(multi, single, rtol=2e-4, atol=1e-6)
