"""Segis-Net: the loss with the λ ramp, the coupling term (and the pipeline without it),
independent sigmoid sub-branches, within-subject pairs and both segmentations in the pair
prediction."""

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
from jrs_jax.methods import SegisNet
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "segis_net.py:smoke")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, paired_scans, as_multilabel, perturbed):
    root = tmp_path_factory.mktemp("segis") / "data"
    path = paired_scans(
        write_learn2reg_dataset(
            root, key=4, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
        )
    )
    overrides = [f"data.dataset={str(path)!r}", "schedule.ramp_steps=10", "loss.com_weight=1.5"]
    cfg = apply_overrides(load_config(SMOKE), overrides)
    cfg = experiment.resolve_config(cfg, experiment.load_dataset(cfg))
    ds = as_multilabel(experiment.load_dataset(cfg))  # overlapping "tracts"
    k = ds.num_label_channels
    method = SegisNet(cfg, shape=ds.shape, num_classes=k, multi_label=True)
    return cfg, ds, method, perturbed(method.init(jax.random.key(0), ds))


def _parts(method, state, batch, step):
    return jax.jit(method.loss)(variables(state), batch, None, jnp.int32(step))


def test_loss_is_the_documented_composition_with_the_ramp(setup):
    _, ds, method, state = setup
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    m, f = jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"])
    source = jax.nn.sigmoid(method.seg_net.apply(v["seg"], m))
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]
    assert float(jnp.abs(disp).max()) > 0.05
    s_s = batch["moving_labels"].astype(np.float32)
    s_t = batch["fixed_labels"].astype(np.float32)
    k = method.num_classes
    for step, lam in ((0, 10.0), (5, 55.0), (10, 100.0), (50, 100.0)):  # capped at 100
        expected = (
            losses.soft_dice(source, s_s)
            + lam * losses.mse(warp(m, disp), f)
            + 0.01 * lam * losses.gradient_l2(disp)
            + 1.5 * losses.soft_dice(warp_labels(source, disp, num_classes=k, mode="soft"), s_t)
        ).mean()
        total, parts = _parts(method, state, batch, step)
        np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"seg", "reg", "smooth", "com"}


def _grad_norms(method, state, batch, term):
    def f(params):
        v = {**variables(state), **params}
        return method.loss(v, batch, None, jnp.int32(0))[1][term]

    g = jax.grad(f)({n: state[n].params for n in ("seg", "reg")})
    return {n: float(sum(jnp.sum(x**2) for x in jax.tree.leaves(t))) for n, t in g.items()}


def test_the_coupling_term_trains_both_streams_and_the_pipeline_has_none(setup):
    cfg, ds, method, state = setup
    batch = method.sample_batch(ds, 0)
    com = _grad_norms(method, state, batch, "com")
    assert com["seg"] > 0 and com["reg"] > 0
    assert _grad_norms(method, state, batch, "seg")["reg"] == 0
    assert _grad_norms(method, state, batch, "reg")["seg"] == 0
    pipeline = SegisNet(
        apply_overrides(cfg, ["loss.com_weight=0.0"]),
        shape=ds.shape,
        num_classes=method.num_classes,
        multi_label=True,
    )
    _, parts = _parts(pipeline, state, batch, 0)
    assert "com" not in parts  # segment, then register: no shared term
    new, metrics = method.train_step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0), 0)
    assert metrics["grad_norm/seg"] > 0 and metrics["grad_norm/reg"] > 0
    assert int(new["seg"].step) == int(new["reg"].step) == 1


def test_sigmoid_sub_branches_are_independent(setup):
    _, ds, method, state = setup
    image = jnp.asarray(method.sample_batch(ds, 0)["moving"])
    v = variables(state)
    base = method.segment(v, image)
    assert float(base.sum(-1).max()) > 1.0 or method.num_classes == 1  # not a softmax
    head = v["seg"]["params"]["head"]
    bumped = {**head, "bias": head["bias"].at[1].add(3.0)}
    v2 = {**v, "seg": {"params": {**v["seg"]["params"], "head": bumped}}}
    out = method.segment(v2, image)
    changed = np.abs(np.asarray(out - base)).reshape(-1, method.num_classes).max(0)
    assert changed[1] > 0.01 and np.all(np.delete(changed, 1) == 0)


def test_predict_segments_both_scans_and_evaluation_scores_consistency(setup):
    _, ds, method, state = setup
    v = variables(state)
    batch = method.sample_batch(ds, 0)
    pred = method.run(v, batch, "register")
    assert {"disp", "warped", "seg_sigmoid", "moving_seg_sigmoid"} == set(pred)
    one = method.run(v, {"image": batch["moving"]}, "segment")
    np.testing.assert_allclose(one["seg_sigmoid"], pred["moving_seg_sigmoid"], atol=1e-6)
    ev = evaluate(method, v, ds, max_pairs=2)
    assert {"val/reg_dice", "val/seg_dice", "val/seg_consistency"} <= set(ev.summary)
    for row in ev.pairs:  # within-subject pairs
        names = {s.name: s.subject for s in ds.subjects}
        assert names[row["fixed"]] == names[row["moving"]]
