"""Hybrid U-Net: the loss composition, one shared network (every layer but the heads), the
separate-networks baseline, within-subject pairs, the consistency term on labels or on
predictions, multi-label (sigmoid) segmentation and the seg_consistency evaluation."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import losses
from jrs_jax.data import batch_rng, within_subject_pairs, write_learn2reg_dataset
from jrs_jax.evaluation import evaluate, label_dice, warp_labels_nearest
from jrs_jax.methods import HybridUNet
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "hybrid_unet.py:smoke")
_build = functools.partial(build_on, SMOKE)  # (data, *overrides) -> (cfg, ds, method)


@pytest.fixture(scope="module")
def data(tmp_path_factory, paired_scans):
    root = tmp_path_factory.mktemp("hybrid") / "data"
    return paired_scans(
        write_learn2reg_dataset(
            root, key=3, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
        )
    )


@pytest.fixture(scope="module")
def hybrid(data, perturbed):
    overrides = ["loss.seg_weight=0.7", "loss.reg_weight=0.3", "loss.consistency_weight=2.0"]
    _, ds, method = _build(data, *overrides)
    return ds, method, perturbed(method.init(jax.random.key(0), ds))


def test_training_pairs_are_two_scans_of_one_labelled_subject(hybrid):
    ds, method, _ = hybrid
    lab = [i for i in ds.training() if ds.subjects[i].has_labels]
    for step in range(3):
        pairs = within_subject_pairs(batch_rng(method.seed, step), ds, lab, 2)
        for f, m in pairs:
            assert f != m and ds.subjects[f].subject == ds.subjects[m].subject
        batch = method.sample_batch(ds, step)  # the batch is exactly these pairs
        np.testing.assert_array_equal(batch["fixed"], ds.stack(pairs[:, 0])["images"])
        np.testing.assert_array_equal(batch["moving"], ds.stack(pairs[:, 1])["images"])
    _, _, anywhere = _build(hybrid[0].source, "data.pairs='any'")
    assert anywhere.sample_batch(ds, 0)["fixed"].shape == batch["fixed"].shape


def test_loss_is_the_documented_composition(hybrid):
    ds, method, state = hybrid
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    total, parts = jax.jit(method.loss)(v, batch, None)
    m, f = jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"])
    out = method.net.apply(v["net"], m, f)  # one network reads both scans
    disp = out["disp"]
    assert float(jnp.abs(disp).max()) > 0.05  # a real field: the warp terms are exercised
    k = method.num_classes
    s_m, s_f = batch["moving_labels"], batch["fixed_labels"]
    expected = (
        0.7 * losses.dice_ce(out["seg_moving"], s_m)
        + 0.7 * losses.dice_ce(out["seg_fixed"], s_f)
        + losses.local_ncc(warp(m, disp), f, window=9, convention="voxelmorph")
        + 0.3 * losses.diffusion(disp)
        + 2.0
        * losses.soft_dice(
            warp_labels(s_m, disp, num_classes=k, mode="soft"), jax.nn.one_hot(s_f, k)
        )
    ).mean()
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"seg_moving", "seg_fixed", "sim", "smooth", "consistency"}


def _grads(method, state, batch, term):
    """Gradient of one named loss term w.r.t. every trained network's parameters."""

    def f(params):
        v = {**variables(state), **params}
        return method.loss(v, batch, None)[1][term]

    return jax.grad(f)({n: state[n].params for n in method.nets})


def _norm(tree) -> float:
    return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_one_network_every_task_trains_the_shared_unet(hybrid):
    ds, method, state = hybrid
    assert list(state) == ["net"] and set(state["net"].params["params"]) == {
        "unet",
        "head_seg_moving",
        "head_seg_fixed",
        "disp",
    }
    batch = method.sample_batch(ds, 0)
    for term in ("seg_fixed", "sim", "consistency"):
        g = _grads(method, state, batch, term)["net"]["params"]
        assert _norm(g["unet"]) > 0, term  # the shared trunk learns from every task
    g = _grads(method, state, batch, "seg_fixed")["net"]["params"]
    assert _norm(g["disp"]) == 0 and _norm(g["head_seg_moving"]) == 0


def test_separate_networks_do_not_share(data, perturbed):
    _, ds, method = _build(data, "model.arch='separate'")
    state = perturbed(method.init(jax.random.key(0), ds))
    assert set(state) == {"seg", "reg"}
    batch = method.sample_batch(ds, 0)
    g = _grads(method, state, batch, "seg_fixed")
    assert _norm(g["seg"]) > 0 and _norm(g["reg"]) == 0
    g = _grads(method, state, batch, "sim")
    assert _norm(g["reg"]) > 0 and _norm(g["seg"]) == 0
    _, metrics = method.train_step(state, batch, jax.random.key(1), 0)
    assert set(k for k in metrics if k.startswith("grad_norm")) == {
        "grad_norm/seg",
        "grad_norm/reg",
    }
    assert np.isfinite(float(metrics["loss"]))


def test_consistency_on_predictions_trains_the_segmentation_heads(data, perturbed):
    _, ds, method = _build(data, "loss.consistency_on='predictions'")
    state = perturbed(method.init(jax.random.key(0), ds))
    batch = method.sample_batch(ds, 0)
    g = _grads(method, state, batch, "consistency")["net"]["params"]
    assert _norm(g["head_seg_moving"]) > 0 and _norm(g["head_seg_fixed"]) > 0
    # on labels, the term cannot reach the segmentation heads
    _, _, labels = _build(data)
    g = _grads(labels, state, batch, "consistency")["net"]["params"]
    assert _norm(g["head_seg_moving"]) == 0 and _norm(g["disp"]) > 0
    # weight 0 drops the term
    _, _, off = _build(data, "loss.consistency_weight=0.0")
    assert "consistency" not in jax.jit(off.loss)(variables(state), batch, None)[1]


def test_evaluation_scores_segmentation_consistency(hybrid):
    ds, method, state = hybrid
    v = variables(state)
    ev = evaluate(method, v, ds, max_pairs=2)
    assert {"val/reg_dice", "val/seg_dice", "val/seg_consistency", "val/mean_dice"} <= set(
        ev.summary
    )
    # by hand on the first within-subject pair: Seg(moving)∘φ against Seg(fixed)
    row = ev.pairs[0]
    names = [s.name for s in ds.subjects]
    f, m = names.index(row["fixed"]), names.index(row["moving"])
    assert ds.subjects[f].subject == ds.subjects[m].subject
    s = ds.stack([m, f])
    pred = method.run(v, {"moving": s["images"][:1], "fixed": s["images"][1:]}, "register")
    seg_m = method.labels(pred, prefix="moving_")
    warped = np.asarray(warp_labels_nearest(jnp.asarray(seg_m), pred["disp"]))[0]
    assert row["seg_consistency"] == pytest.approx(label_dice(warped, method.labels(pred)[0]))


def test_multi_label_segments_with_sigmoids(data, perturbed, as_multilabel):
    cfg, ds, _ = _build(data)
    multi = as_multilabel(ds)
    k = multi.num_label_channels
    method = HybridUNet(cfg, shape=ds.shape, num_classes=k, multi_label=True)
    state = perturbed(method.init(jax.random.key(0), multi))
    batch = method.sample_batch(multi, 0)
    assert batch["fixed_labels"].shape == (*batch["fixed"].shape[:-1], k)
    total, parts = jax.jit(method.loss)(variables(state), batch, None)
    assert np.isfinite(float(total))
    out = method.net.apply(state["net"].params, batch["moving"], batch["fixed"])
    expected = losses.dice_bce(out["seg_fixed"], batch["fixed_labels"].astype(np.float32))
    np.testing.assert_allclose(float(parts["seg_fixed"]), float(expected.mean()), rtol=1e-5)
    pred = method.run(variables(state), batch, "register")
    assert "seg_sigmoid" in pred and "moving_seg_sigmoid" in pred and "seg_probs" not in pred
    assert method.labels(pred).shape == batch["fixed_labels"].shape
    ev = evaluate(method, variables(state), multi, max_pairs=2)
    assert 0.0 <= ev.summary["val/seg_consistency"] <= 1.0
