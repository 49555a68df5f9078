"""DeepAtlas: schedule, the four segmentation cases, the anatomy term, frozen partners."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_state

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.methods import DeepAtlas, update_counts
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    path = write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
    )
    cfg = load_config(os.path.join(ROOT, "configs", "deepatlas.py:smoke"))
    cfg = apply_overrides(
        cfg,
        [f"data.dataset={path}", "loss.anatomy_weight=2.0", "loss.supervised_weight=3.0"],
    )
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    method = experiment.build_method(cfg)
    # non-trivial networks (perturbed parameters): fields, maps and scores are not ~0
    state = perturbed_state(method.init(jax.random.key(0)))
    return cfg, ds, method, state, path


def _batch(ds, method, cases):
    """One pair per requested case, built by hand from labelled subjects 0..3."""
    b = method.sample_batch(ds, 0)
    n = len(cases)
    idx = np.arange(n) % b["fixed"].shape[0]
    out = {k: np.asarray(v)[idx].copy() for k, v in b.items()}
    out["case"] = np.asarray(cases, np.int64)
    out["fixed_has_label"] = np.isin(out["case"], [0, 1])
    out["moving_has_label"] = np.isin(out["case"], [0, 2])
    return out


def test_schedule_pretrains_then_alternates(setup):
    cfg, _, method, _, _ = setup
    assert isinstance(method, DeepAtlas)
    phases = [method.phase(t) for t in range(cfg["train"]["steps"])]
    assert phases == ["reg_pretrain"] * 2 + ["seg_pretrain"] * 2 + ["reg", "reg", "seg", "reg"]


def test_schedule_longer_than_training_is_an_error(setup):
    cfg = apply_overrides(setup[0], ["train.steps=3"])
    with pytest.raises(ValueError, match=r"exceeds train\.steps"):
        DeepAtlas(cfg, shape=(16, 16), num_classes=5)


@pytest.mark.parametrize("supervised", ["dice_ce", "dice"])
def test_segmentation_loss_follows_the_four_cases(setup, supervised):
    cfg, ds, _, state, _ = setup
    assert cfg["loss"]["supervised"] == "dice_ce"  # the default
    method = experiment.build_method(apply_overrides(cfg, [f"loss.supervised={supervised!r}"]))
    batch = _batch(ds, method, [0, 1, 2, 3])
    v = variables(state)
    total, parts = method.seg_loss(v, batch, jax.random.key(0))
    k = method.num_classes
    m, f = jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"])
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]
    lm, lf = method.seg_net.apply(v["seg"], m), method.seg_net.apply(v["seg"], f)
    pm, pf = jax.nn.softmax(lm), jax.nn.softmax(lf)
    sm, sf = jax.nn.one_hot(batch["moving_labels"], k), jax.nn.one_hot(batch["fixed_labels"], k)

    def dice(a, b):
        return losses.soft_dice(a, b)

    def sup(logits, labels):  # L_sp: soft Dice (+ cross-entropy), per example
        loss = dice(jax.nn.softmax(logits), jax.nn.one_hot(labels, k))
        if supervised == "dice_ce":
            logp = jax.nn.log_softmax(logits)
            onehot = jax.nn.one_hot(labels, k)
            loss = loss - jnp.mean(jnp.sum(onehot * logp, -1), axis=tuple(range(1, labels.ndim)))
        return loss

    w = lambda p: warp_labels(p, disp, num_classes=k)
    ym, yf = batch["moving_labels"], batch["fixed_labels"]
    expected = [
        3.0 * sup(lm, ym)[0],  # both labelled: supervised on the moving image only
        2.0 * dice(w(pm), sf)[1] + 3.0 * sup(lf, yf)[1],  # moving unlabelled
        2.0 * dice(w(sm), pf)[2] + 3.0 * sup(lm, ym)[2],  # fixed unlabelled
        0.0,  # none labelled
    ]
    np.testing.assert_allclose(total, np.mean(expected), rtol=1e-5)
    assert float(parts["anatomy_seg"]) > 0 and float(parts["supervised"]) > 0


def test_none_labelled_pairs_give_no_segmentation_gradient(setup):
    _, ds, method, state, _ = setup
    batch = _batch(ds, method, [3, 3])
    grads = jax.grad(lambda p: method.seg_loss({**variables(state), "seg": p}, batch, None)[0])(
        state["seg"].params
    )
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_registration_anatomy_uses_predictions_only_for_unlabelled_sides(setup):
    _, ds, method, state, _ = setup
    loss_fn = method.reg_loss
    v = variables(state)
    other_seg = jax.tree.map(lambda p: -p, v["seg"])
    both = _batch(ds, method, [0, 0])
    a = loss_fn(v, both, None)[0]
    b = loss_fn({**v, "seg": other_seg}, both, None)[0]
    assert float(a) == pytest.approx(float(b))  # manual labels on both sides
    half = _batch(ds, method, [1, 2])
    a = loss_fn(v, half, None)[0]
    b = loss_fn({**v, "seg": other_seg}, half, None)[0]
    assert abs(float(a) - float(b)) > 1e-4  # predictions stand in for the missing side
    # the value: sim + λ_r reg + λ_a Dice(Ŝ_m∘φ, Ŝ_f), Ŝ = manual one-hot or prediction
    k = method.num_classes
    m, f = jnp.asarray(both["moving"]), jnp.asarray(both["fixed"])
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]
    expected = (
        losses.local_ncc(warp(m, disp), f, window=9, convention="voxelmorph")
        + 1.0 * losses.diffusion(disp)
        + 2.0
        * losses.soft_dice(
            warp_labels(both["moving_labels"], disp, num_classes=k),
            jax.nn.one_hot(both["fixed_labels"], k),
        )
    )
    np.testing.assert_allclose(loss_fn(v, both, None)[0], expected.mean(), rtol=1e-5)


def test_partner_is_frozen_in_every_phase(setup):
    _, ds, method, state, _ = setup
    state = jax.tree.map(jnp.array, state)  # a private copy (steps donate their input)
    for t in range(8):
        before = jax.device_get(state)
        phase = method.phase(t)
        state, metrics = method.train_step(state, method.sample_batch(ds, t), jax.random.key(t), t)
        trained = "seg" if "seg" in phase else "reg"
        frozen = "reg" if trained == "seg" else "seg"
        for x, y in zip(jax.tree.leaves(before[frozen]), jax.tree.leaves(state[frozen])):
            np.testing.assert_array_equal(x, y)
        assert int(state[trained].step) == int(before[trained].step) + 1
        assert np.isfinite(float(metrics["loss"])) and f"loss/{phase}" in metrics


def test_deepatlas_smoke_run_trains_both_networks(setup, tmp_path):
    cfg = setup[0]
    res = experiment.train(cfg, workdir=tmp_path, progress=False, figures=False)
    state = res["state"]
    assert int(state["reg"].step) == 5 and int(state["seg"].step) == 3
    for key in ("val/reg_dice", "val/seg_dice", "val/mean_dice", "val/folding_percent"):
        assert np.isfinite(res["evaluation"][key])


@pytest.mark.parametrize(
    "steps,pre,ratio", [(8, (2, 2), (2, 1)), (1290, (300, 150), (20, 1)), (97, (5, 0), (40, 5))]
)
def test_update_counts_match_the_schedule(setup, steps, pre, ratio):
    sched = [
        f"train.steps={steps}",
        f"schedule.reg_pretrain={pre[0]}",
        f"schedule.seg_pretrain={pre[1]}",
        f"schedule.reg_steps={ratio[0]}",
        f"schedule.seg_steps={ratio[1]}",
    ]
    cfg = apply_overrides(setup[0], sched)
    method = DeepAtlas(cfg, shape=(16, 16), num_classes=5)
    phases = [method.phase(t) for t in range(steps)]
    expected = {
        "reg": sum(p in ("reg", "reg_pretrain") for p in phases),
        "seg": sum(p in ("seg", "seg_pretrain") for p in phases),
    }
    assert update_counts(cfg) == expected
