"""JRSS: schedule and round boundaries, the pseudo-label pool, both losses by hand, which
network each phase steps, the mean teacher at inference."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.methods import JRSS
from jrs_jax.methods.jrss import round_ends, self_training_pairs, update_counts
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import ema_update, pseudo_labels, variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = ["loss.ce_weight=2.0", "loss.kl_weight=3.0", "loss.dice_weight=0.5"]
REG_WEIGHTS = ["loss.reg_weight=0.7", "loss.reg_dice_weight=1.5"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    path = write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
    )
    cfg = load_config(os.path.join(ROOT, "configs", "jrss.py:smoke"))
    cfg = apply_overrides(
        cfg, [f"data.dataset={path}", "self_training.threshold=0.5", *WEIGHTS, *REG_WEIGHTS]
    )
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    method = experiment.build_method(cfg)
    state = method.init(jax.random.key(0))
    # non-trivial, distinct networks: teacher, pool and student differ, fields are not ~0
    keys = iter(jax.random.split(jax.random.key(1), 1000))

    def perturb(p, scale=0.3):
        return jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape), p)

    state = {
        "reg": state["reg"].replace(params=perturb(state["reg"].params)),
        "student": state["student"].replace(params=perturb(state["student"].params)),
        "teacher": perturb(state["teacher"]),
        "pool": perturb(state["pool"]),
    }
    return cfg, ds, method, state


def _pair_batch(method, ds, step):
    b = method.sample_batch(ds, step)
    assert "moving" in b
    b = {k: np.asarray(v) for k, v in b.items()}
    b["moving_has_label"] = np.array([True, False])  # one labelled, one pseudo-labelled row
    b["fixed_has_label"] = np.array([False, True])
    return b


def _same(a, b):
    """Equal pytrees, leaf by leaf (optimiser state and step counts included)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_schedule_round_ends_and_budgets(setup):
    cfg, _, method, _ = setup
    assert isinstance(method, JRSS)
    phases = [method.phase(t) for t in range(cfg["train"]["steps"])]
    assert phases == ["teacher_pretrain"] * 2 + ["reg", "reg", "seg"] * 2
    assert [t for t in range(8) if method.round_start(t)] == [2, 5]
    assert round_ends(cfg) == [2, 5, 8]
    assert update_counts(cfg) == {"reg": 4, "seg": 4}
    for steps, sched in [(800, (200, 100, 100)), (97, (10, 7, 3)), (10, (10, 4, 4))]:
        c = apply_overrides(
            cfg,
            [f"train.steps={steps}"]
            + [
                f"schedule.{k}={v}"
                for k, v in zip(("teacher_pretrain", "reg_steps", "seg_steps"), sched)
            ],
        )
        m = JRSS(c, shape=(16, 16), num_classes=5)
        ph = [m.phase(t) for t in range(steps)]
        assert update_counts(c) == {"reg": ph.count("reg"), "seg": steps - ph.count("reg")}
        ends = round_ends(c)
        assert ends[0] == sched[0] and ends[-1] == steps
        starts = [t for t in range(steps) if m.round_start(t)]
        assert starts == ends[:-1]
    with pytest.raises(ValueError, match=r"exceeds train\.steps"):
        JRSS(apply_overrides(cfg, ["train.steps=1"]), shape=(16, 16), num_classes=5)


def test_targets_come_from_the_pool_only_where_unlabelled(setup):
    _, ds, method, state = setup
    b = _pair_batch(method, ds, 4)
    v = variables(state)
    k = method.num_classes
    fn = jax.jit(method.targets, static_argnames="threshold")
    target, mask = fn(v, b["moving"], b["moving_labels"], b["moving_has_label"], threshold=0.5)
    probs = jax.nn.softmax(method.seg_net.apply(v["pool"], b["moving"]))
    pl, conf = pseudo_labels(probs, threshold=0.5)
    np.testing.assert_array_equal(target[0], jax.nn.one_hot(b["moving_labels"][0], k))
    np.testing.assert_array_equal(mask[0], 1.0)
    np.testing.assert_array_equal(target[1], jax.nn.one_hot(pl[1], k))
    np.testing.assert_array_equal(mask[1], conf[1])
    assert 0 < float(conf[1].mean()) < 1  # the threshold keeps some voxels, not all
    # the teacher and the student do not label the pool: only "pool" does
    other = {**v, "teacher": v["student"], "student": v["pool"]}
    t2, m2 = fn(other, b["moving"], b["moving_labels"], b["moving_has_label"], threshold=0.5)
    np.testing.assert_array_equal(t2, target)
    np.testing.assert_array_equal(m2, mask)


def test_student_loss_is_the_documented_composition(setup):
    _, ds, method, state = setup
    b = _pair_batch(method, ds, 4)
    v = variables(state)
    key = jax.random.key(7)
    total, parts = jax.jit(method.student_loss, static_argnames="threshold")(
        v, b, key, threshold=0.5
    )
    k = method.num_classes
    m, f = jnp.asarray(b["moving"]), jnp.asarray(b["fixed"])
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]
    pl, conf = pseudo_labels(jax.nn.softmax(method.seg_net.apply(v["pool"], m)), threshold=0.5)
    lab = jnp.asarray(b["moving_has_label"])[:, None, None]
    t = jnp.where(lab[..., None], jax.nn.one_hot(b["moving_labels"], k), jax.nn.one_hot(pl, k))
    mask = jnp.where(lab, 1.0, conf)
    x = jnp.concatenate([m, warp(m, disp)], 0)
    targets = jnp.concatenate([t, warp_labels(t, disp, num_classes=k)], 0)
    masks = jnp.concatenate([mask, warp(mask[..., None], disp)[..., 0]], 0)
    k_noise, k_drop = jax.random.split(key)
    noisy = x + 0.05 * jax.random.normal(k_noise, x.shape)
    logits = method.seg_net.apply(v["student"], noisy, rngs={"dropout": k_drop})
    teacher = method.seg_net.apply(v["teacher"], x)
    ce = losses.cross_entropy(logits, targets, mask=masks)
    kl = losses.soft_kl(teacher, logits, from_logits=True)  # KL(softmax ‖ softmax)
    dice = losses.soft_dice(jax.nn.softmax(logits), targets, mask=masks)
    np.testing.assert_allclose(total, jnp.mean(2.0 * ce + 3.0 * kl + 0.5 * dice), rtol=1e-4)
    for name, value in (("ce", ce), ("kl", kl), ("dice", dice)):
        np.testing.assert_allclose(parts[name], value.mean(), rtol=1e-4, atol=1e-6)
    # dropout and noise: another key, another loss; the same key, the same loss
    again, _ = jax.jit(method.student_loss, static_argnames="threshold")(v, b, key, threshold=0.5)
    other, _ = jax.jit(method.student_loss, static_argnames="threshold")(
        v, b, jax.random.key(8), threshold=0.5
    )
    assert float(again) == float(total) and float(other) != float(total)


def test_registration_loss_is_the_documented_composition(setup):
    _, ds, method, state = setup
    b = _pair_batch(method, ds, 2)
    v = variables(state)
    total, parts = jax.jit(method.reg_loss)(v, b, jax.random.key(0))
    k = method.num_classes
    m, f = jnp.asarray(b["moving"]), jnp.asarray(b["fixed"])
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]

    def side(img, labels, has):
        pl, conf = pseudo_labels(
            jax.nn.softmax(method.seg_net.apply(v["pool"], img)), threshold=0.5
        )
        has = jnp.asarray(has)[:, None, None]
        return (
            jnp.where(has[..., None], jax.nn.one_hot(labels, k), jax.nn.one_hot(pl, k)),
            jnp.where(has, 1.0, conf),
        )

    s_m, m_m = side(m, b["moving_labels"], b["moving_has_label"])
    s_f, m_f = side(f, b["fixed_labels"], b["fixed_has_label"])
    w = m_f * warp(m_m[..., None], disp)[..., 0]
    expected = (
        losses.local_ncc(warp(m, disp), f, window=9, convention="voxelmorph")
        + 0.7 * losses.diffusion(disp)
        + 1.5 * losses.soft_dice(warp_labels(s_m, disp, num_classes=k), s_f, mask=w)
    )
    np.testing.assert_allclose(total, expected.mean(), rtol=1e-5)
    assert float(parts["label_dice"]) > 0


def test_each_phase_steps_only_its_network(setup):
    cfg, ds, method, state = setup
    state = jax.tree.map(jnp.array, state)  # a private copy (steps donate their input)
    decay = cfg["self_training"]["ema_decay"]
    for t in range(8):
        before = jax.device_get(state)
        phase = method.phase(t)
        state, metrics = method.train_step(state, method.sample_batch(ds, t), jax.random.key(t), t)
        after = jax.device_get(state)
        assert np.isfinite(float(metrics["loss"])) and f"loss/{phase}" in metrics
        pool = before["teacher"] if method.round_start(t) else before["pool"]
        _same(after["pool"], pool)
        if phase == "reg":
            assert int(after["reg"].step) == int(before["reg"].step) + 1
            _same(after["student"], before["student"])
            _same(after["teacher"], before["teacher"])
        else:
            _same(after["reg"], before["reg"])
            assert int(after["student"].step) == int(before["student"].step) + 1
            d = 0.0 if phase == "teacher_pretrain" else decay
            expected = ema_update(before["teacher"], after["student"].params, decay=d)
            for x, y in zip(jax.tree.leaves(after["teacher"]), jax.tree.leaves(expected)):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
            if phase == "teacher_pretrain":  # decay 0: the teacher is the pretrained net
                _same(after["teacher"], after["student"].params)


def test_predict_segments_with_the_deterministic_mean_teacher(setup):
    _, ds, method, state = setup
    v = variables(state)
    image = method.sample_batch(ds, 0)["image"][:1]
    out = method.run(v, {"image": image}, "segment")["seg_probs"]
    ref = jax.nn.softmax(method.seg_net.apply(v["teacher"], image))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    same = method.run({**v, "student": v["pool"]}, {"image": image}, "segment")["seg_probs"]
    np.testing.assert_array_equal(same, out)
    moved = method.run({**v, "teacher": v["pool"]}, {"image": image}, "segment")["seg_probs"]
    assert float(jnp.abs(moved - out).max()) > 1e-3


def test_self_training_pairs():
    lab, unl = [0, 1], [2, 3, 4, 5, 6, 7]
    pairs = self_training_pairs(0, lab, unl, 4000, labelled_fraction=0.25)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert abs(np.isin(pairs[:, 1], lab).mean() - 0.25) < 0.03
    assert set(pairs[:, 0]) == set(lab + unl)
    only = self_training_pairs(1, lab, [], 50, labelled_fraction=0.1)
    assert np.isin(only, lab).all()
    with pytest.raises(ValueError, match="labelled_fraction"):
        self_training_pairs(0, lab, unl, 4, labelled_fraction=1.5)


def test_a_run_validates_at_every_round_end(setup, tmp_path):
    cfg = apply_overrides(
        setup[0],
        [
            "train.steps=6",
            "train.eval_every=3",
            "train.ckpt_every=6",
            "schedule.teacher_pretrain=3",
        ],
    )
    assert round_ends(cfg) == [3, 6]
    res = experiment.train(cfg, workdir=tmp_path, progress=False, figures=False)
    assert int(res["state"]["reg"].step) == 2 and int(res["state"]["student"].step) == 4
    with open(tmp_path / "metrics.jsonl") as f:
        val = [r for r in map(json.loads, f) if r.get("split") == "val"]
    assert sorted({r["step"] for r in val}) == [3, 6]
    for r in val:
        assert np.isfinite(r["val/seg_dice"]) and np.isfinite(r["val/reg_dice"])
