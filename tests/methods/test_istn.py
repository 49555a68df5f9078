"""ISTN: each variant's loss is the documented composition of MSE terms, the STN sees the
ITN's structure maps (or the raw images without an ITN), one update steps exactly the
variant's networks, and test-time refinement moves only the STN along ‖M'∘φ − F'‖²."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.refinement import refine_variables
from jrs_jax.spatial import warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("istn") / "data"
    return write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=7, num_labelled=5, num_heldout=2
    )


def _setup(data, variants="", *sets):
    spec = os.path.join(ROOT, "configs", f"istn.py:smoke{',' if variants else ''}{variants}")
    cfg = apply_overrides(load_config(spec), [f"data.dataset={str(data)!r}", *sets])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    return ds, experiment.build_method(cfg)


def _state(method, ds, perturbed):
    return perturbed(method.init(jax.random.key(0), ds), scale=0.2)


def _mse(a, b):
    return losses.mse(a, b)


def _pieces(method, v, batch):
    m, f = jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"])
    k = method.num_classes
    s_m = jax.nn.one_hot(batch["moving_labels"], k)[..., 1:]
    s_f = jax.nn.one_hot(batch["fixed_labels"], k)[..., 1:]
    if method.uses_itn:
        mp, fp = method.itn.apply(v["itn"], m), method.itn.apply(v["itn"], f)
    else:
        mp, fp = m, f
    disp = method.stn.apply(v["stn"], mp, fp)["disp"]
    assert float(jnp.abs(disp).max()) > 0.05
    smooth = 0.01 * losses.diffusion(disp)
    return m, f, s_m, s_f, mp, fp, disp, smooth


CASES = {
    "": lambda m, f, s_m, s_f, mp, fp, u: _mse(mp, s_m) + _mse(fp, s_f) + _mse(warp(s_m, u), s_f),
    "implicit": lambda m, f, s_m, s_f, mp, fp, u: (
        _mse(warp(mp, u), s_f) + _mse(warp(s_m, u), fp) + _mse(warp(s_m, u), s_f)
    ),
    "implicit,seg_only": lambda m, f, s_m, s_f, mp, fp, u: _mse(warp(s_m, u), s_f),
    "stn_s": lambda m, f, s_m, s_f, mp, fp, u: _mse(warp(s_m, u), s_f),
    "stn_u": lambda m, f, s_m, s_f, mp, fp, u: _mse(warp(m, u), f),
}


@pytest.mark.parametrize("variants", list(CASES))
def test_loss_is_the_documented_composition(data, perturbed, variants):
    ds, method = _setup(data, variants)
    state = _state(method, ds, perturbed)
    assert set(state) == (
        {"itn", "stn"} if variants in ("", "implicit", "implicit,seg_only") else {"stn"}
    )
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    m, f, s_m, s_f, mp, fp, disp, smooth = _pieces(method, v, batch)
    if method.uses_itn:
        assert mp.shape == (*m.shape[:-1], method.num_classes - 1)
    expected = (CASES[variants](m, f, s_m, s_f, mp, fp, disp) + smooth).mean()
    total, _ = jax.jit(method.loss)(v, batch, jax.random.key(0))
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)


@pytest.mark.parametrize("variants", ["", "stn_s"])
def test_one_update_steps_the_variants_networks(data, perturbed, variants):
    ds, method = _setup(data, variants)
    state = _state(method, ds, perturbed)
    before = {k: jax.tree.map(np.asarray, s.params) for k, s in state.items()}
    new, metrics = method.train_step(state, method.sample_batch(ds, 0), jax.random.key(1), 0)
    assert np.isfinite(float(metrics["loss"]))
    for k, p in before.items():
        moved = any(
            not np.array_equal(a, np.asarray(b))
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(new[k].params))
        )
        assert moved, k


def test_refinement_moves_only_the_stn_on_the_structure_objective(data, perturbed):
    ds, method = _setup(data)
    v = variables(_state(method, ds, perturbed))
    batch = method.sample_batch(ds, 1)
    one = {k: np.asarray(batch[k])[:1] for k in ("moving", "fixed")}
    _, _, _, _, mp, fp, disp, smooth = _pieces(
        method,
        v,
        {
            **batch,
            **one,
            **{k: np.asarray(batch[k])[:1] for k in ("moving_labels", "fixed_labels")},
        },
    )
    total, _ = jax.jit(method.refine_loss)(v, one, jax.random.key(0))
    np.testing.assert_allclose(
        float(total), float((_mse(warp(mp, disp), fp) + smooth).mean()), rtol=1e-5
    )
    refined, losses_ = refine_variables(method, v, one, steps=10, lr=1e-3)
    assert losses_[-1] < losses_[0]
    for a, b in zip(jax.tree.leaves(v["itn"]), jax.tree.leaves(refined["itn"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(v["stn"]), jax.tree.leaves(refined["stn"]))
    )


def test_affine_stn_gives_an_affine_field(data, perturbed):
    ds, method = _setup(data, "affine")
    v = variables(_state(method, ds, perturbed))
    batch = method.sample_batch(ds, 0)
    out = method.run(v, batch, "register")
    d = np.asarray(out["disp"], np.float64)
    assert out["matrix"].shape == (2, 2, 3)
    assert np.abs(d).max() > 0.01
    np.testing.assert_allclose(np.diff(d, 2, axis=1), 0.0, atol=1e-4)  # linear in x
    np.testing.assert_allclose(np.diff(d, 2, axis=2), 0.0, atol=1e-4)


def test_bad_variant_is_an_error(data):
    with pytest.raises(ValueError, match=r"loss\.variant"):
        _setup(data, "", "loss.variant='bspline'")


def test_itn_dice_reads_the_structure_map_as_a_segmentation(data):
    ds, method = _setup(data)
    batch = method.sample_batch(ds, 0)
    s_f = jax.nn.one_hot(batch["fixed_labels"], method.num_classes)[..., 1:]
    perfect = method.pair_metrics({"fixed_structure": 0.9 * s_f}, batch)
    np.testing.assert_allclose(perfect["itn_dice"], 1.0)
    blank = method.pair_metrics({"fixed_structure": 0.4 * s_f}, batch)  # below 0.5: background
    np.testing.assert_allclose(blank["itn_dice"], 0.0)
