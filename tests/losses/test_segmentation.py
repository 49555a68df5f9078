"""Tests for jrs_jax.losses.segmentation: analytic values, MONAI/PyTorch parity, jit, grads."""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from regseg_parity import check_parity, generator, load_reference

from jrs_jax.losses.segmentation import (
    activate,
    binary_cross_entropy,
    centroid_distance,
    cross_entropy,
    dice_bce,
    dice_ce,
    dice_score,
    soft_dice,
    soft_kl,
)

K = 4

_JIT: dict = {}


def jf(fn, **kw):
    """``jax.jit(partial(fn, **kw))``, compiled once per configuration."""
    key = (fn, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if key not in _JIT:
        _JIT[key] = jax.jit(functools.partial(fn, **kw))
    return _JIT[key]


def logits_labels(spatial, seed=0, k=K, dtype=np.float32):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.normal(size=(2, *spatial, k))).astype(dtype)
    labels = rng.integers(0, k, size=(2, *spatial)).astype(np.int32)
    return logits, labels


def softmax(x):
    return np.asarray(jax.nn.softmax(jnp.asarray(x), axis=-1))


SHAPES = {"2d": (6, 5), "3d": (4, 5, 3)}

# (name, fn(logits, labels) -> [B]) for the generic tests
ALL = [
    ("dice", lambda lg, lb: soft_dice(jax.nn.softmax(lg), lb)),
    ("dice_nobg_sq", lambda lg, lb: soft_dice(jax.nn.softmax(lg), lb, include_background=False,
                                               squared_denominator=True)),
    ("dice_masked", lambda lg, lb: soft_dice(jax.nn.softmax(lg), lb, mask=lb > 0)),
    ("ce", lambda lg, lb: cross_entropy(lg, lb)),
    ("ce_probs_weights", lambda lg, lb: cross_entropy(jax.nn.softmax(lg), lb, from_logits=False,
                                                      class_weights=[1.0, 2.0, 0.5, 1.0])),
    ("ce_soft_smooth_mask", lambda lg, lb: cross_entropy(lg, jax.nn.softmax(lg[::-1]),
                                                         label_smoothing=0.1, mask=lb != 1)),
    ("dice_ce", lambda lg, lb: dice_ce(lg, lb, dice_weight=0.7, ce_weight=1.3,
                                       include_background=False)),
    ("bce", lambda lg, lb: binary_cross_entropy(lg, jax.nn.one_hot(lb, K)
                                                + jax.nn.one_hot((lb + 1) % K, K))),
    ("dice_bce_masked", lambda lg, lb: dice_bce(lg, jax.nn.one_hot(lb, K), bce_weight=0.5,
                                                mask=lb != 1)),
    ("kl", lambda lg, lb: soft_kl(jax.nn.softmax(lg[::-1]), jax.nn.softmax(lg))),
    ("kl_logits", lambda lg, lb: soft_kl(lg[::-1], lg, from_logits=True)),
    ("centroid_soft", lambda lg, lb: centroid_distance(jax.nn.softmax(lg), lb, num_classes=K,
                                                       spacing=(0.5, 2.0, 1.0)[: lb.ndim - 1])),
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# generic: shape [B], jit == eager, per-example, finite values and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fn", ALL, ids=[a[0] for a in ALL])
def test_shape_jit_eager_and_gradients(name, fn):
    for dim, spatial in SHAPES.items():
        lg, lb = logits_labels(spatial, 1)
        f = jax.jit(fn)
        out = f(lg, lb)
        assert out.shape == (2,) and out.dtype == jnp.float32
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(f(lg[::-1], lb[::-1]), out[::-1], rtol=1e-6)
        if dim == "2d":
            np.testing.assert_allclose(out, fn(lg, lb), rtol=1e-5, atol=1e-6)
        else:
            g = jax.jit(jax.grad(lambda x, lb=lb: jnp.sum(fn(x, lb))))(jnp.asarray(lg))
            assert g.shape == lg.shape and np.all(np.isfinite(g))
            assert np.any(np.asarray(g) != 0)


@pytest.mark.parametrize("name,fn", ALL, ids=[a[0] for a in ALL])
def test_check_grads_float64(name, fn):
    lg32, lb = logits_labels((4, 3), 2)
    with jax.enable_x64(True):
        lg = jnp.asarray(lg32, dtype=jnp.float64)
        check_grads(jax.jit(lambda x: fn(x, lb)), (lg,), order=1, modes=("rev",))


# --------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", list(SHAPES.values()))
def test_dice_identical_disjoint_and_absent_classes(spatial):
    _, lb = logits_labels(spatial, 3, k=3)  # labels 0..2 of K = 5: classes 3, 4 absent
    oh = np.asarray(jax.nn.one_hot(lb, 5))
    score, loss = jf(dice_score), jf(soft_dice)
    np.testing.assert_allclose(score(oh, lb), np.ones((2, 5)), rtol=1e-6)
    np.testing.assert_allclose(loss(oh, lb), [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(loss(oh, oh), [0.0, 0.0], atol=1e-6)  # one-hot target
    # disjoint: predict (label + 1) mod 5: every present class scores ~0, absent ones 1
    wrong = np.asarray(jax.nn.one_hot((lb + 1) % 5, 5))
    s = np.asarray(score(wrong, lb))
    assert np.all(s[:, :4] < 1e-4) and np.all(s[:, 4] == 1.0)  # class 3 predicted, 4 absent
    lb2 = lb % 2  # two present classes, disjoint prediction -> loss ~ 1
    swap = np.asarray(jax.nn.one_hot(1 - lb2, 2))
    np.testing.assert_allclose(loss(swap, lb2), [1.0, 1.0], atol=1e-4)
    # nothing anywhere (all-zero prediction and target): Dice 1, loss 0, finite gradient
    z = np.zeros((2, *spatial, 3), np.float32)
    np.testing.assert_allclose(loss(z, z), [0.0, 0.0], atol=1e-6)
    g = jax.jit(jax.grad(lambda p: soft_dice(p, z).sum()))(jnp.asarray(z))
    assert np.all(np.isfinite(g))


def test_dice_background_mask_and_squared():
    lg, lb = logits_labels((6, 5), 4)
    p = softmax(lg)
    s = np.asarray(jf(dice_score)(p, lb))
    np.testing.assert_allclose(jf(dice_score, include_background=False)(p, lb), s[:, 1:])
    np.testing.assert_allclose(
        jf(soft_dice, include_background=False)(p, lb), 1 - s[:, 1:].mean(-1), rtol=1e-6
    )
    # manual formula
    oh = np.eye(K)[lb]
    inter, den = (p * oh).sum((1, 2)), p.sum((1, 2)) + oh.sum((1, 2))
    np.testing.assert_allclose(s, (2 * inter + 1e-5) / (den + 1e-5), rtol=1e-5)
    den2 = (p * p).sum((1, 2)) + oh.sum((1, 2))
    np.testing.assert_allclose(
        jf(dice_score, squared_denominator=True)(p, lb),
        (2 * inter + 1e-5) / (den2 + 1e-5),
        rtol=1e-5,
    )
    # mask: voxels outside do not matter; an empty mask is finite (all classes "absent")
    mask = np.zeros((2, 6, 5), bool)
    mask[:, 1:4, 1:4] = True
    p2 = np.where(mask[..., None], p, softmax(lg[::-1]))
    masked = jf(soft_dice)
    np.testing.assert_allclose(masked(p, lb, mask=mask), masked(p2, lb, mask=mask), rtol=1e-6)
    np.testing.assert_allclose(
        masked(p, lb, mask=mask), masked(p, lb, mask=mask[..., None].astype(np.float32)), rtol=1e-6
    )
    assert not np.allclose(masked(p, lb, mask=mask), masked(p, lb))
    np.testing.assert_allclose(masked(p, lb, mask=np.zeros_like(mask)), [0.0, 0.0], atol=1e-6)


# --------------------------------------------------------------------------------------------
# cross-entropy, Dice + CE
# --------------------------------------------------------------------------------------------


def test_cross_entropy_values():
    _, lb = logits_labels((5, 6), 5)
    ce = jf(cross_entropy)
    uniform = np.zeros((2, 5, 6, K), np.float32)
    np.testing.assert_allclose(ce(uniform, lb), [math.log(K)] * 2, rtol=1e-6)
    np.testing.assert_allclose(
        jf(cross_entropy, label_smoothing=0.3)(uniform, lb), [math.log(K)] * 2, rtol=1e-6
    )
    perfect = 20.0 * np.asarray(jax.nn.one_hot(lb, K))
    assert np.all(np.asarray(ce(perfect, lb)) < 1e-7)
    # probabilities: same as logits, clipped at eps (one-hot probabilities are finite)
    lg, _ = logits_labels((5, 6), 6)
    probs_ce = jf(cross_entropy, from_logits=False)
    np.testing.assert_allclose(probs_ce(softmax(lg), lb), ce(lg, lb), rtol=1e-5)
    wrong = np.asarray(jax.nn.one_hot((lb + 1) % K, K))
    np.testing.assert_allclose(probs_ce(wrong, lb), [-math.log(1e-7)] * 2, rtol=1e-5)
    # manual value, one-hot target == integer target
    logp = np.log(softmax(lg))
    want = -(np.eye(K)[lb] * logp).sum(-1).mean((1, 2))
    np.testing.assert_allclose(ce(lg, lb), want, rtol=1e-5)
    np.testing.assert_allclose(ce(lg, np.eye(K, dtype=np.float32)[lb]), want, rtol=1e-5)
    # class weights: constant weights scale; per-class weights weight each voxel by its class
    w = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    np.testing.assert_allclose(
        jf(cross_entropy, class_weights=(2.0,) * K)(lg, lb), 2 * want, rtol=1e-5
    )
    want_w = -(w[lb] * (np.eye(K)[lb] * logp).sum(-1)).mean((1, 2))
    np.testing.assert_allclose(jf(cross_entropy, class_weights=tuple(w))(lg, lb), want_w, rtol=1e-5)
    # mask: mean over the masked voxels only; empty mask -> 0 with finite gradients
    mask = lb == 2
    per_voxel = -(np.eye(K)[lb] * logp).sum(-1)
    want_m = (per_voxel * mask).sum((1, 2)) / mask.sum((1, 2))
    np.testing.assert_allclose(ce(lg, lb, mask=mask), want_m, rtol=1e-5)
    empty = np.zeros_like(mask)
    np.testing.assert_array_equal(ce(lg, lb, mask=empty), [0.0, 0.0])
    g = jax.jit(jax.grad(lambda x: cross_entropy(x, lb, mask=empty).sum()))(jnp.asarray(lg))
    assert np.all(np.asarray(g) == 0.0)


def test_dice_ce_is_the_weighted_sum():
    lg, lb = logits_labels((5, 4, 3), 7)
    got = jf(dice_ce, dice_weight=0.25, ce_weight=2.0, include_background=False)(lg, lb)
    want = 0.25 * np.asarray(
        soft_dice(softmax(lg), lb, include_background=False)
    ) + 2.0 * np.asarray(cross_entropy(lg, lb))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_binary_cross_entropy_matches_the_definition_and_dice_bce_the_sum():
    lg, lb = logits_labels((5, 4, 3), 8)
    rng = np.random.default_rng(3)
    t = (rng.random(lg.shape) < 0.4).astype(np.float32)  # overlapping binary channels
    p = 1.0 / (1.0 + np.exp(-lg.astype(np.float64)))
    want = -(t * np.log(p) + (1 - t) * np.log1p(-p)).mean(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(jf(binary_cross_entropy)(lg, t), want, rtol=1e-5)
    # stable for large logits (the naive log(sigmoid) underflows)
    big = jf(binary_cross_entropy)(np.full((1, 2, 2, 1), 200.0, np.float32), np.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(big, [200.0], rtol=1e-6)
    mask = lb != 2
    got = jf(dice_bce, dice_weight=0.3, bce_weight=2.0)(lg, t, mask=mask)
    sig = np.asarray(activate(lg, multi_label=True))
    np.testing.assert_allclose(sig, p, rtol=1e-5)
    want = 0.3 * np.asarray(soft_dice(sig, t, mask=mask)) + 2.0 * np.asarray(
        binary_cross_entropy(lg, t, mask=mask)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(activate(lg)).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="logits' shape"):
        binary_cross_entropy(lg, lb)


# --------------------------------------------------------------------------------------------
# soft KL
# --------------------------------------------------------------------------------------------


def test_soft_kl_values_and_direction():
    lg, _ = logits_labels((5, 6), 8)
    p, q = softmax(lg), softmax(lg[::-1])
    kl = jf(soft_kl)
    np.testing.assert_array_equal(kl(p, p), [0.0, 0.0])
    np.testing.assert_allclose(jf(soft_kl, from_logits=True)(lg, lg), [0.0, 0.0], atol=1e-6)
    want = (p * (np.log(p) - np.log(q))).sum(-1).mean((1, 2))
    np.testing.assert_allclose(kl(p, q), want, rtol=1e-5)
    np.testing.assert_allclose(jf(soft_kl, from_logits=True)(lg, lg[::-1]), want, rtol=1e-4)
    assert np.all(want > 0)
    # direction: KL(p || q) with p = (1, 0), q = (1/2, 1/2) is log 2; the reverse is infinite
    # (floored at eps: log(0.5 / 1e-7) / 2 + log(0.5) / 2 ... just larger)
    a = np.zeros((1, 2, 2, 2), np.float32)
    a[..., 0] = 1.0
    b = np.full_like(a, 0.5)
    np.testing.assert_allclose(kl(a, b), [math.log(2.0)], rtol=1e-6)
    assert float(kl(b, a)[0]) > 5.0
    g = jax.jit(jax.grad(lambda x: soft_kl(x, b).sum()))(jnp.asarray(a))
    assert np.all(np.isfinite(g))
    # mask
    mask = np.zeros((2, 5, 6), bool)
    mask[:, :2] = True
    want_m = (p * (np.log(p) - np.log(q))).sum(-1)[:, :2].mean((1, 2))
    np.testing.assert_allclose(kl(p, q, mask=mask), want_m, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# centroid distance
# --------------------------------------------------------------------------------------------


def _blob_labels(spatial):
    lab = np.zeros((2, *spatial), np.int32)
    sl1 = tuple(slice(1, 3) for _ in spatial)
    sl2 = tuple(slice(3, 5) for _ in spatial)
    lab[(slice(None), *sl1)] = 1
    lab[(slice(None), *sl2)] = 2
    return lab


@pytest.mark.parametrize("spatial", [(10, 9), (10, 9, 9)])
def test_centroid_distance_of_shifted_maps(spatial):
    d = len(spatial)
    a = _blob_labels(spatial)
    cd = jf(centroid_distance, num_classes=3)
    np.testing.assert_array_equal(cd(a, a), [0.0, 0.0])
    for axis in range(d):
        for t in (1, 3):
            b = np.roll(a, t, axis=axis + 1)
            np.testing.assert_allclose(cd(a, b), [t, t], rtol=1e-6)
            h = (0.5, 2.0, 1.5)[:d]
            got = jf(centroid_distance, num_classes=3, spacing=h)(a, b)
            np.testing.assert_allclose(got, [t * h[axis]] * 2, rtol=1e-6)
    # diagonal shift by (3, 4): distance 5
    b = np.roll(np.roll(a, 3, axis=1), 4, axis=2)
    np.testing.assert_allclose(cd(a, b), [5.0, 5.0], rtol=1e-6)
    # background included: its centroid moves too, so the mean changes
    assert not np.allclose(jf(centroid_distance, num_classes=3, include_background=True)(a, b), 5)
    # soft (one-hot float) inputs give the same as hard labels
    oh_a, oh_b = (np.eye(3, dtype=np.float32)[x] for x in (a, b))
    np.testing.assert_allclose(cd(oh_a, oh_b), [5.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(cd(oh_a, b), [5.0, 5.0], rtol=1e-6)


def test_centroid_distance_absent_classes_and_gradients():
    spatial = (10, 9)
    a = _blob_labels(spatial)
    b = np.roll(a, 2, axis=1)
    b_no2 = np.where(b == 2, 0, b)  # class 2 absent from b: excluded from the mean
    cd = jf(centroid_distance, num_classes=4)  # class 3 absent from both
    np.testing.assert_allclose(cd(a, b), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(cd(a, b_no2), [2.0, 2.0], rtol=1e-6)
    a2 = a.copy()
    a2[1] = 0  # example 1: no foreground at all -> 0, not NaN
    np.testing.assert_allclose(cd(a2, b), [2.0, 0.0], rtol=1e-6)
    # gradients with respect to soft inputs are finite, also for coincident centroids
    soft = jnp.asarray(np.eye(4, dtype=np.float32)[a] * 0.9 + 0.025)
    grad = jax.jit(jax.grad(lambda s, o: centroid_distance(s, o, num_classes=4).sum()))
    exact = jnp.asarray(np.eye(4, dtype=np.float32)[a])  # same centroids as `a`: distance 0
    for s, other in ((soft, a), (soft, b), (exact, a)):
        g = grad(s, other)
        assert np.all(np.isfinite(g))


def test_errors():
    lg, lb = logits_labels((4, 4), 0)
    p = softmax(lg)
    with pytest.raises(ValueError, match="target"):
        soft_dice(p, lb[..., None])
    with pytest.raises(ValueError, match="K >= 2"):
        soft_dice(p[..., :1], lb * 0, include_background=False)
    with pytest.raises(ValueError, match="mask"):
        cross_entropy(lg, lb, mask=np.ones((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="class_weights"):
        cross_entropy(lg, lb, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="num_classes"):
        centroid_distance(p, lb, num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        soft_kl(p, p[:, :2])


# --------------------------------------------------------------------------------------------
# parity: committed references (MONAI DiceLoss / DiceCELoss, PyTorch cross_entropy) and live
# --------------------------------------------------------------------------------------------


def _ours(name: str, inputs: dict):
    parts = name.split("_")
    dim = next((p for p in parts if p in ("2d", "3d")), None)
    if dim is None or parts[0] not in ("dice", "dicece", "ce"):
        return None
    logits = jnp.asarray(inputs[f"logits_{dim}"])
    labels = jnp.asarray(inputs[f"labels_{dim}"]).astype(jnp.int32)
    if parts[0] == "dice" and parts[1] == "sq":
        onehot = jax.nn.one_hot(labels, K, dtype=logits.dtype)
        return jf(soft_dice, squared_denominator=True)(jax.nn.softmax(logits), onehot)
    if parts[0] == "dice":
        bg = parts[-1] == "bg1"
        return jf(soft_dice, include_background=bg)(jax.nn.softmax(logits), labels)
    if parts[0] == "dicece":
        return jf(dice_ce, include_background=parts[-1] == "bg1")(logits, labels)
    if parts[1] == "soft":
        return jf(cross_entropy)(logits, jnp.asarray(inputs[f"soft_target_{dim}"]))
    w = tuple(float(x) for x in inputs["ce_weights"])
    return jf(cross_entropy, class_weights=w, label_smoothing=0.1)(logits, labels)


N_SEG_REFS = 14  # dice bg0/bg1/sq, dicece bg0/bg1, ce, ce_soft; 2-D and 3-D


def test_parity_with_committed_reference():
    inputs, refs = load_reference()
    with jax.enable_x64(True):
        x64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
        assert len(check_parity(_ours, x64, refs, rtol=1e-10)) == N_SEG_REFS
    x32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    check_parity(_ours, x32, refs, rtol=2e-5)


@pytest.mark.torch
def test_parity_with_live_monai():
    pytest.importorskip("monai")
    pytest.importorskip("torch")
    mod = generator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs, refs = mod.compute_references(seed=4321)
    with jax.enable_x64(True):
        assert len(check_parity(_ours, inputs, refs, rtol=1e-10)) == N_SEG_REFS
