"""Segmentation-informed 2-D registration: the two stages (segmentation first, then
registration with it frozen), the host-side post-processing between them, the cleaned
segmentations as registration inputs, the loss, the image-only baseline and the contact
metric."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import losses
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.evaluation import evaluate, warp_labels_nearest
from jrs_jax.metrics import contact_count
from jrs_jax.postprocess import largest_component
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "seg_informed_2d.py:smoke")
_build = functools.partial(build_on, SMOKE)  # (data, *overrides) -> (cfg, ds, method)


@pytest.fixture(scope="module")
def data(tmp_path_factory, paired_scans):
    root = tmp_path_factory.mktemp("seginf") / "data"
    return paired_scans(
        write_learn2reg_dataset(
            root, key=6, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
        )
    )


@pytest.fixture(scope="module")
def setup(data, perturbed):
    _, ds, method = _build(data, "loss.reg_weight=0.3", "loss.dice_weight=2.0")
    return ds, method, perturbed(method.init(jax.random.key(0), ds))


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_segmentation_first_then_registration_with_it_frozen(setup):
    ds, method, state = setup
    assert [method.phase(t) for t in range(4)] == ["seg", "seg", "reg", "reg"]
    assert set(method.sample_batch(ds, 0)) >= {"image", "labels"}
    assert set(method.sample_batch(ds, 2)) >= {"moving", "fixed", "moving_labels"}
    s0 = jax.tree.map(jnp.copy, state)
    s1, m1 = method.train_step(jax.tree.map(jnp.copy, s0), method.sample_batch(ds, 0), None, 0)
    assert not _same(s1["seg"].params, s0["seg"].params) and _same(
        s1["reg"].params, s0["reg"].params
    )
    s2, _ = method.train_step(jax.tree.map(jnp.copy, s1), method.sample_batch(ds, 2), None, 2)
    assert _same(s2["seg"].params, s1["seg"].params) and not _same(
        s2["reg"].params, s1["reg"].params
    )
    assert "seg" in m1


def test_prepare_cleans_the_segmentation_outside_jit_and_feeds_it_to_registration(setup):
    ds, method, state = setup
    v = variables(state)
    b = method.sample_batch(ds, 2)
    ready = method.prepare(v, {"moving": b["moving"], "fixed": b["fixed"]}, "register")
    raw = np.asarray(jnp.argmax(method.seg_net.apply(v["seg"], jnp.asarray(b["fixed"])), -1))
    want = largest_component(raw, num_classes=method.num_classes, batched=True)
    np.testing.assert_array_equal(ready["fixed_seg"], want)
    for k in range(1, method.num_classes):  # at most one component per class
        from scipy import ndimage

        for j in range(want.shape[0]):
            assert ndimage.label(ready["fixed_seg"][j] == k)[1] <= 1
    pred = method.run(v, {"moving": b["moving"], "fixed": b["fixed"]}, "register")
    np.testing.assert_allclose(pred["disp"], method.register(v, ready), atol=1e-6)
    np.testing.assert_array_equal(method.labels(pred), want)  # seg_probs: the cleaned map
    # the segmentation is an input: another segmentation, another field
    other = {**ready, "fixed_seg": np.zeros_like(ready["fixed_seg"])}
    assert float(jnp.abs(method.register(v, other) - method.register(v, ready)).max()) > 1e-6
    with pytest.raises(ValueError, match="prepare"):
        method.predict(v, {"moving": b["moving"], "fixed": b["fixed"]})


def test_loss_is_mse_grad_l2_and_dice_of_the_manual_labels(setup):
    ds, method, state = setup
    v = variables(state)
    b = method.prepare(v, method.sample_batch(ds, 2), "register")
    total, parts = jax.jit(method.loss)(v, b, None)
    disp = method.register(v, b)
    assert float(jnp.abs(disp).max()) > 0.05
    k = method.num_classes
    m, f = jnp.asarray(b["moving"]), jnp.asarray(b["fixed"])
    expected = (
        losses.mse(warp(m, disp), f)
        + 0.3 * losses.gradient_l2(disp)
        + 2.0
        * losses.soft_dice(
            warp_labels(b["moving_labels"], disp, num_classes=k),
            jax.nn.one_hot(b["fixed_labels"], k),
        )
    ).mean()
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"sim", "smooth", "dice"}


def test_image_only_baseline_has_no_segmentation_stage(data):
    _, ds, method = _build(data, "model.seg_inputs=False", "schedule.seg_steps=0")
    assert method.reg_channels == 1 and method.phase(0) == "reg"
    state = method.init(jax.random.key(0), ds)
    v = variables(state)
    b = method.sample_batch(ds, 0)
    assert "fixed_seg" not in method.prepare(v, b, "register")
    assert set(method.run(v, b, "register")) == {"disp", "warped"}
    with pytest.raises(ValueError, match="seg_steps=0"):
        _build(data, "model.seg_inputs=False", "schedule.seg_steps=2")


def test_contact_error_is_the_change_of_the_contact_count_after_warping(setup):
    ds, method, state = setup
    v = variables(state)
    ev = evaluate(method, v, ds, max_pairs=2)
    assert {"val/contact_error", "val/contact_kept", "val/seg_consistency"} <= set(ev.summary)
    row = ev.pairs[0]
    names = [s.name for s in ds.subjects]
    f, m = names.index(row["fixed"]), names.index(row["moving"])
    s = ds.stack([m, f])
    pred = method.run(v, {"moving": s["images"][:1], "fixed": s["images"][1:]}, "register")
    warped = np.asarray(warp_labels_nearest(jnp.asarray(s["labels"][:1]), pred["disp"]))[0]
    a, b = method.contact
    after, target = contact_count(warped, a, b), contact_count(s["labels"][1], a, b)
    assert row["contact_error"] == abs(after - target)
    assert row["contact_kept"] == float((after > 0) == (target > 0))
