"""The two baselines: their losses are the documented compositions, every variant trains."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.evaluation import evaluate
from jrs_jax.methods import UNetSeg, VoxelMorph, get_method
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def dataset_json(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return write_learn2reg_dataset(
        root, key=2, shape=(16, 16), num_subjects=7, num_labelled=3, num_heldout=2
    )


def _resolved(name, variants, dataset_json, *overrides):
    cfg = load_config(os.path.join(ROOT, "configs", f"{name}.py:{variants}"))
    cfg = apply_overrides(cfg, [f"data.dataset={dataset_json}", *overrides])
    ds = experiment.load_dataset(cfg)
    return experiment.resolve_config(cfg, ds), ds


def test_get_method_names_the_known_ones():
    assert get_method("voxelmorph") is VoxelMorph
    with pytest.raises(ValueError, match="known methods"):
        get_method("deepatlass")


@pytest.mark.parametrize("variants", ["smoke", "dice,smoke", "diffeo,smoke"])
def test_voxelmorph_loss_is_sim_plus_weighted_reg_plus_dice(dataset_json, variants):
    cfg, ds = _resolved("voxelmorph", variants, dataset_json, "loss.reg_weight=0.5")
    method = experiment.build_method(cfg)
    state = method.init(jax.random.key(0))
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    total, parts = method.loss(v, batch, jax.random.key(1))
    out = method.net.apply(v["reg"], batch["moving"], batch["fixed"])
    disp = out["disp"]
    if "diffeo" in variants:
        assert "velocity" in out and cfg["model"]["int_downsize"] == 2
    sim = losses.local_ncc(
        warp(batch["moving"], disp), batch["fixed"], window=9, convention="voxelmorph"
    )
    reg = losses.diffusion(disp)
    expected = sim + 0.5 * reg
    if "dice" in variants:
        k = cfg["data"]["num_classes"]
        dice = losses.soft_dice(
            warp_labels(batch["moving_labels"], disp, num_classes=k),
            jax.nn.one_hot(batch["fixed_labels"], k),
        )
        expected = expected + dice
        np.testing.assert_allclose(parts["dice"], dice.mean(), rtol=1e-5)
        # +Dice pairs come from labelled subjects only
        assert batch["fixed_has_label"].all() and batch["moving_has_label"].all()
    np.testing.assert_allclose(total, expected.mean(), rtol=1e-5, atol=1e-7)
    new, metrics = method.train_step(state, batch, jax.random.key(2), 0)
    assert int(new["reg"].step) == 1 and np.isfinite(float(metrics["loss"]))


def test_unet_seg_loss_is_dice_plus_ce_on_labelled_subjects(dataset_json):
    cfg, ds = _resolved("unet_seg", "smoke", dataset_json, "loss.ce_weight=2.0")
    method = experiment.build_method(cfg)
    assert isinstance(method, UNetSeg)
    state = method.init(jax.random.key(0))
    batch = method.sample_batch(ds, 3)
    assert batch["has_label"].all()
    v = variables(state)
    total, parts = method.loss(v, batch, jax.random.key(1))
    assert set(parts) == {"dice", "ce"}
    logits = method.net.apply(v["seg"], batch["image"])
    k = cfg["data"]["num_classes"]
    expected = losses.soft_dice(
        jax.nn.softmax(logits), jax.nn.one_hot(batch["labels"], k)
    ) + 2.0 * losses.cross_entropy(logits, batch["labels"])
    np.testing.assert_allclose(total, expected.mean(), rtol=1e-5)


def test_batches_are_a_pure_function_of_seed_and_step(dataset_json):
    cfg, ds = _resolved("voxelmorph", "smoke", dataset_json)
    m = experiment.build_method(cfg)
    a, b, c = m.sample_batch(ds, 5), m.sample_batch(ds, 5), m.sample_batch(ds, 6)
    np.testing.assert_array_equal(a["moving"], b["moving"])
    assert not all(np.array_equal(a[k], c[k]) for k in ("moving", "fixed"))


def test_evaluation_identity_field_gives_identity_dice(dataset_json):
    cfg, ds = _resolved("voxelmorph", "smoke", dataset_json)
    method = experiment.build_method(cfg)
    state = method.init(jax.random.key(0))
    zero = jax.tree.map(jnp.zeros_like, variables(state))  # zero network -> zero field
    ev = evaluate(method, zero, ds, surface=True)
    assert len(ev.pairs) == 2  # the 2 held-out subjects: both ordered pairs
    assert ev.summary["val/reg_dice"] == pytest.approx(ev.summary["val/reg_dice_identity"])
    assert ev.summary["val/folding_percent"] == 0.0
    assert np.isfinite(ev.summary["val/reg_hd95"])


def test_voxelmorph_dice_variant_needs_two_labelled_subjects(dataset_json):
    cfg, ds = _resolved("voxelmorph", "dice,smoke", dataset_json)
    method = experiment.build_method(cfg)
    one = ds.split_labelled(1, key_or_seed=0)
    with pytest.raises(ValueError, match="at least 2 labelled training subjects"):
        method.sample_batch(one, 0)


def test_bfloat16_compute_and_remat_from_the_config(dataset_json):
    cfg, ds = _resolved(
        "voxelmorph", "smoke", dataset_json, "model.dtype=bfloat16", "model.remat=true"
    )
    method = experiment.build_method(cfg)
    state = method.init(jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["reg"].params))
    new, metrics = method.train_step(state, method.sample_batch(ds, 0), jax.random.key(1), 0)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["reg"].params))
