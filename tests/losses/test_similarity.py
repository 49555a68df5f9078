"""Tests for jrs_jax.losses.similarity (analytic values, peers' parity, jit, gradients)."""

from __future__ import annotations

import functools
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jrs_jax.losses import Objective, similarity_term
from jrs_jax.losses.similarity import (
    _local_cc,
    _masked_local_cc,
    l1,
    local_ncc,
    mse,
    mutual_information,
    ncc,
    ssim,
)

REF = pathlib.Path(__file__).parents[1] / "reference" / "similarity_reference.npz"

_JIT: dict = {}


def jf(fn, **kw):
    """``jax.jit(partial(fn, **kw))``, compiled once per configuration."""
    key = (fn, tuple(sorted(kw.items())))
    if key not in _JIT:
        _JIT[key] = jax.jit(functools.partial(fn, **kw))
    return _JIT[key]


def rand(shape, seed=0, lo=0.0, hi=1.0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)


# (name, fn, kwargs) of every loss, for the generic shape/jit/finiteness tests
ALL = [
    ("mse", mse, {}),
    ("l1", l1, {}),
    ("ncc", ncc, {}),
    ("lncc", local_ncc, {"window": 5}),
    ("lncc_vxm_gauss_signed", local_ncc,
     {"window": 5, "kernel": "gaussian", "squared": False, "convention": "voxelmorph"}),
    ("mi", mutual_information, {}),
    ("nmi", mutual_information, {"normalized": True}),
    ("ssim", ssim, {"window": 5}),
]  # fmt: skip
SHAPES = {"2d": (2, 10, 9, 2), "3d": (2, 8, 7, 6, 1)}


# --------------------------------------------------------------------------------------------
# generic: shape [B], jit == eager, finite values and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", ALL, ids=[a[0] for a in ALL])
def test_shape_and_jit_equals_eager(name, fn, kw, dim):
    shape = SHAPES[dim]
    a, b = rand(shape, 1), rand(shape, 2)
    out = jf(fn, **kw)(a, b)
    assert out.shape == (shape[0],)
    assert out.dtype == jnp.float32
    if dim == "2d":  # eager (op by op) is slow on CPU: once is enough
        np.testing.assert_allclose(out, fn(a, b, **kw), rtol=1e-5, atol=1e-6)
    # per example: permuting the batch permutes the output
    np.testing.assert_allclose(jf(fn, **kw)(a[::-1], b[::-1]), out[::-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,fn,kw", ALL, ids=[a[0] for a in ALL])
def test_finite_values_and_gradients_on_degenerate_images(name, fn, kw):
    shape = SHAPES["2d"]
    rnd = jnp.asarray(rand(shape, 3))
    cases = {
        "zeros": (jnp.zeros(shape), jnp.zeros(shape)),
        "constant": (jnp.full(shape, 0.3), jnp.full(shape, 0.7)),
        "constant_vs_random": (jnp.full(shape, 0.5), rnd),
        "zeros_vs_random": (jnp.zeros(shape), rnd),
    }
    f = jf(fn, **kw)
    vg = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(f(a, b)), argnums=(0, 1)))
    for case, (a, b) in cases.items():
        v, (ga, gb) = vg(a, b)
        assert np.all(np.isfinite(v)), (case, v)
        assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb)), case


GRAD_CASES = [
    (mse, {}),
    (ncc, {}),
    (local_ncc, {"window": 3}),
    (local_ncc, {"window": 3, "kernel": "gaussian", "squared": False, "convention": "voxelmorph"}),
    (mutual_information, {"num_bins": 8, "normalized": True, "chunk_size": 7}),
    (ssim, {"window": 3}),
]


@pytest.mark.parametrize("fn,kw", GRAD_CASES, ids=[f"{f.__name__}{kw}" for f, kw in GRAD_CASES])
def test_check_grads_float64(fn, kw):
    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        a = jnp.asarray(rng.uniform(0.05, 0.95, (2, 5, 4, 1)))
        b = jnp.asarray(0.5 * np.asarray(a) + rng.uniform(0.0, 0.45, (2, 5, 4, 1)))
        assert a.dtype == jnp.float64
        f = jax.jit(lambda x, y: fn(x, y, **kw))
        assert f(a, b).dtype == jnp.float64
        check_grads(f, (a, b), order=1, modes=("rev",))


# --------------------------------------------------------------------------------------------
# MSE / L1
# --------------------------------------------------------------------------------------------


def test_mse_l1_hand_values_and_masks():
    a = np.zeros((2, 2, 2, 1), np.float32)
    b = np.array([1.0, -2.0, 3.0, 0.0, 2.0, 2.0, 2.0, 2.0], np.float32).reshape(2, 2, 2, 1)
    np.testing.assert_allclose(jf(mse)(a, b), [(1 + 4 + 9) / 4, 4.0])
    np.testing.assert_allclose(jf(l1)(a, b), [(1 + 2 + 3) / 4, 2.0])
    mask = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], np.float32)  # [B, *S]; empty for b=1
    np.testing.assert_allclose(jf(mse)(a, b, mask=mask), [2.5, 0.0])
    np.testing.assert_allclose(jf(l1)(a, b, mask=mask[..., None]), [1.5, 0.0])
    soft = np.full((2, 2, 2), 0.25, np.float32)  # soft weights: same mean
    np.testing.assert_allclose(jf(mse)(a, b, mask=soft), jf(mse)(a, b), rtol=1e-6)
    # mask over channels: [B, *S] broadcasts over C
    a2, b2 = rand((2, 3, 3, 2), 1), rand((2, 3, 3, 2), 2)
    m = (rand((2, 3, 3), 3) > 0.5).astype(np.float32)
    want = [((a2[i] - b2[i]) ** 2 * m[i][..., None]).sum() / (2 * m[i].sum()) for i in range(2)]
    np.testing.assert_allclose(jf(mse)(a2, b2, mask=m), want, rtol=1e-5)
    g = jax.grad(lambda x: jnp.sum(mse(x, b, mask=np.zeros((2, 2, 2)))))(jnp.asarray(a))
    assert np.all(np.isfinite(g)) and np.all(g == 0)
    with pytest.raises(ValueError, match="mask must have shape"):
        mse(a, b, mask=np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="same shape"):
        l1(a, b[:, :1])


# --------------------------------------------------------------------------------------------
# NCC / local NCC
# --------------------------------------------------------------------------------------------


def test_global_ncc_affine_and_constant():
    a = rand(SHAPES["3d"], 4)
    f = jf(ncc)
    np.testing.assert_allclose(f(a, 2.5 * a + 0.3), [-1.0, -1.0], atol=1e-5)
    np.testing.assert_allclose(f(a, -0.7 * a + 4.0), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(f(a, np.full_like(a, 0.4)), [0.0, 0.0], atol=1e-6)
    b = rand(a.shape, 5)
    x, y = a.reshape(2, -1), b.reshape(2, -1)
    want = [-np.corrcoef(x[i], y[i])[0, 1] for i in range(2)]
    np.testing.assert_allclose(f(a, b), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_local_ncc_of_scaled_image_is_minus_one(kernel):
    a = rand(SHAPES["2d"], 6, lo=0.1)
    sq = jf(local_ncc, window=5, kernel=kernel)
    signed = jf(local_ncc, window=5, kernel=kernel, squared=False)
    # b = alpha * a: zero padding maps to zero padding, so cc = +-1 everywhere
    np.testing.assert_allclose(sq(a, 3.0 * a), [-1.0, -1.0], atol=1e-4)
    np.testing.assert_allclose(sq(a, -0.5 * a), [-1.0, -1.0], atol=1e-4)
    np.testing.assert_allclose(signed(a, 3.0 * a), [-1.0, -1.0], atol=1e-4)
    np.testing.assert_allclose(signed(a, -0.5 * a), [1.0, 1.0], atol=1e-4)
    # VoxelMorph clamps cross at eps: anti-correlation scores ~0, not 1
    vxm = jf(local_ncc, window=5, kernel=kernel, convention="voxelmorph")
    np.testing.assert_allclose(vxm(a, 3.0 * a), [-1.0, -1.0], atol=1e-4)
    np.testing.assert_allclose(vxm(a, -0.5 * a), [0.0, 0.0], atol=1e-4)


def test_local_ncc_affine_interior_map():
    """b = alpha a + beta: cc = 1 (squared) / sign(alpha) (signed) away from the border."""
    a = jnp.asarray(rand((1, 12, 11, 1), 7))
    for alpha, beta in [(2.0, 0.5), (-1.5, 3.0)]:
        b = alpha * a + beta
        kw = dict(window=5, kernel="box", sigma=None, eps=1e-5, convention="monai")
        cc2 = _local_cc(a, b, squared=True, **kw)[0, 2:-2, 2:-2, 0]
        cc1 = _local_cc(a, b, squared=False, **kw)[0, 2:-2, 2:-2, 0]
        np.testing.assert_allclose(cc2, 1.0, atol=2e-4)
        np.testing.assert_allclose(cc1, np.sign(alpha), atol=2e-4)
        border = _local_cc(a, b, squared=True, **kw)[0, 0, :, 0]
        assert np.all(np.abs(border - 1.0) > 1e-3)  # zero padding breaks the affine relation


def test_local_ncc_constant_patch_is_zero_and_bf16_upcast():
    a = np.zeros((1, 12, 12, 1), np.float32)
    a[:, :, 6:] = rand((1, 12, 6, 1), 8)  # left half constant
    b = a.copy()
    cc = _local_cc(a, b, window=3, kernel="box", sigma=None, squared=True, eps=1e-5,
                   convention="monai")  # fmt: skip
    np.testing.assert_allclose(cc[0, :, :4, 0], 0.0, atol=1e-6)  # constant windows: cc = 0
    np.testing.assert_allclose(cc[0, 1:-1, 7:-1, 0], 1.0, atol=1e-4)
    x, y = rand(SHAPES["2d"], 9), rand(SHAPES["2d"], 10)
    f = jf(local_ncc, window=5)
    out16 = f(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16))
    assert out16.dtype == jnp.float32
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    yb = np.asarray(jnp.asarray(y, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(out16, f(xb, yb), rtol=1e-6)  # same as the upcast input


def test_local_ncc_bad_arguments():
    a = rand((1, 8, 8, 1))
    with pytest.raises(ValueError, match="kernel"):
        local_ncc(a, a, kernel="triangle")
    with pytest.raises(ValueError, match="convention"):
        local_ncc(a, a, convention="deepreg")
    with pytest.raises(ValueError, match="spatial axes"):
        local_ncc(a[0], a[0])
    with pytest.raises(ValueError, match="window"):
        local_ncc(a, a, window=0)


# --------------------------------------------------------------------------------------------
# masked local NCC
# --------------------------------------------------------------------------------------------


def masked_lncc_np(a, b, m, *, window, kernel="box", sigma=None, squared=True, eps=1e-5,
                   convention="monai"):  # fmt: skip
    """Brute force, float64: per voxel, the weighted correlation over its window explicitly.

    Window of voxel ``x``: the in-image voxels ``q`` with ``x - lo <= q <= x + hi`` per axis
    (``lo = (window - 1) // 2``), each weighted ``m(q) * prod_i taps[q_i - x_i + lo]``;
    centred (two-pass) moments. Returns ``(loss [B], cc [B, *S, C'])``."""
    a, b, m = (np.asarray(v, np.float64) for v in (a, b, m))
    lo = (window - 1) // 2
    if kernel == "box":
        taps = np.ones(window)
    else:
        s = window / 3.0 if sigma is None else sigma
        taps = np.exp(-0.5 * ((np.arange(window) - lo) / s) ** 2)
    bsz, *spatial, nch = a.shape
    pooled = convention == "voxelmorph"
    cc = np.zeros((bsz, *spatial, 1 if pooled else nch))
    for bi in range(bsz):
        for x in np.ndindex(*spatial):
            rng = [range(max(0, xi - lo), min(n, xi - lo + window)) for xi, n in zip(x, spatial)]
            qs = list(itertools.product(*rng))
            w = np.array([m[(bi, *q)] * np.prod([taps[qi - xi + lo] for qi, xi in zip(q, x)])
                          for q in qs])  # fmt: skip
            va = np.array([a[(bi, *q)] for q in qs])  # [n, C]
            vb = np.array([b[(bi, *q)] for q in qs])
            groups = (
                [(va.ravel(), vb.ravel(), np.repeat(w, nch))]
                if pooled
                else [(va[:, c], vb[:, c], w) for c in range(nch)]
            )
            for c, (xa, xb, ww) in enumerate(groups):
                big_w = ww.sum()
                if big_w > 0:
                    da, db = xa - (ww * xa).sum() / big_w, xb - (ww * xb).sum() / big_w
                    cross = (ww * da * db).sum()
                    var_a, var_b = (ww * da * da).sum(), (ww * db * db).sum()
                else:
                    cross = var_a = var_b = 0.0
                var_a, var_b = max(var_a, eps), max(var_b, eps)
                if pooled:
                    cross = max(cross, eps)
                    val = (
                        cross**2 / (var_a * var_b)
                        if squared
                        else cross / np.sqrt(var_a * var_b + eps)
                    )
                else:
                    val = cross**2 / (var_a * var_b) if squared else cross / np.sqrt(var_a * var_b)
                cc[(bi, *x, c)] = val
    mm = np.broadcast_to(m[..., None], cc.shape)
    axes = tuple(range(1, cc.ndim))
    den = mm.sum(axis=axes)
    loss = -np.where(den > 0, (mm * cc).sum(axis=axes) / np.where(den > 0, den, 1), 0.0)
    return loss, cc


def _test_mask(shape, seed, soft):
    """Binary or soft ``[B, *S]`` mask with a block of exact zeros and an empty corner."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.0, 1.0, shape) if soft else (rng.uniform(size=shape) > 0.3).astype(float)
    m[(slice(None), slice(0, 2), slice(1, 4))] = 0.0
    return m.astype(np.float32)


MASKED_CASES = [
    ("2d", (2, 7, 6, 2), {"window": 3}, False),
    ("2d_soft_even", (2, 7, 6, 2), {"window": 4}, True),
    ("2d_signed_gauss", (2, 7, 6, 1), {"window": 5, "kernel": "gaussian", "squared": False}, True),
    ("2d_vxm", (2, 6, 7, 2), {"window": 3, "convention": "voxelmorph"}, False),
    ("2d_vxm_signed", (1, 6, 7, 2), {"window": 3, "convention": "voxelmorph", "squared": False},
     True),
    ("3d", (1, 5, 4, 6, 1), {"window": 3}, False),
    ("3d_soft_signed", (2, 4, 5, 3, 2), {"window": 3, "squared": False}, True),
]  # fmt: skip


@pytest.mark.parametrize("name,shape,kw,soft", MASKED_CASES, ids=[c[0] for c in MASKED_CASES])
def test_masked_local_ncc_matches_brute_force(name, shape, kw, soft):
    a = rand(shape, 31)
    b = (0.6 * a + 0.4 * rand(shape, 32)).astype(np.float32)
    b[:, : shape[1] // 2] = 1.0 - b[:, : shape[1] // 2]  # anti-correlated half
    m = _test_mask(shape[:-1], 33, soft)
    want_loss, want_cc = masked_lncc_np(a, b, m, **kw)
    got = jf(local_ncc, **kw)(a, b, mask=m)
    assert got.shape == (shape[0],) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want_loss, rtol=1e-4, atol=2e-5)
    assert not np.allclose(got, jf(local_ncc, **kw)(a, b), atol=1e-3)  # the mask matters
    full = dict(kernel="box", sigma=None, squared=True, eps=1e-5, convention="monai") | kw
    with jax.enable_x64(True):  # float64: the whole cc map to rounding
        cc, _ = jax.jit(lambda x, y, w: _masked_local_cc(x, y, w, **full))(
            jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64), jnp.asarray(m, jnp.float64)
        )
        np.testing.assert_allclose(cc, want_cc, rtol=1e-9, atol=1e-10)
        a64, b64, m64 = (jnp.asarray(v, jnp.float64) for v in (a, b, m[..., None]))
        loss64 = jf(local_ncc, **kw)(a64, b64, mask=m64)
        assert loss64.dtype == jnp.float64
        np.testing.assert_allclose(loss64, want_loss, rtol=1e-9, atol=1e-12)


def test_masked_local_ncc_ones_mask_is_unmasked_away_from_the_border():
    shape = (2, 12, 11, 2)
    a = rand(shape, 41)
    b = (0.5 * a + 0.5 * rand(shape, 42)).astype(np.float32)
    kw = dict(window=5, kernel="box", sigma=None, squared=True, eps=1e-5, convention="monai")
    ones = np.ones(shape[:-1], np.float32)
    cc_m, _ = _masked_local_cc(a, b, ones, **kw)
    cc_u = _local_cc(a, b, **kw)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # windows entirely inside the image
    np.testing.assert_allclose(cc_m[inner], cc_u[inner], rtol=1e-5, atol=1e-6)
    # at the border the unmasked form counts the zero padding as samples, the masked one not
    assert np.abs(np.asarray(cc_m)[:, 0] - np.asarray(cc_u)[:, 0]).max() > 1e-3
    # hence an affine pair scores -1 up to the border with a mask of ones, not without
    f = jf(local_ncc, window=5)
    np.testing.assert_allclose(f(a, 2.0 * a + 0.5, mask=ones), [-1.0, -1.0], atol=1e-4)
    assert np.all(f(a, 2.0 * a + 0.5) > -0.99)
    # [B, *S] and [B, *S, 1] masks are the same; a constant factor cancels (cc is a ratio)
    np.testing.assert_allclose(f(a, b, mask=ones[..., None]), f(a, b, mask=ones), rtol=1e-6)
    m = _test_mask(shape[:-1], 43, soft=True)
    np.testing.assert_allclose(f(a, b, mask=0.25 * m), f(a, b, mask=m), rtol=1e-4)
    # an empty mask gives 0 with finite gradients
    zero = np.zeros(shape[:-1], np.float32)
    np.testing.assert_array_equal(f(a, b, mask=zero), [0.0, 0.0])
    g = jax.jit(jax.grad(lambda x, y: jnp.sum(f(x, y, mask=zero)), argnums=(0, 1)))(a, b)
    assert all(np.all(np.isfinite(gi)) for gi in g)


@pytest.mark.parametrize("convention", ["monai", "voxelmorph"])
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_masked_local_ncc_ignores_what_is_masked_out(dim, convention):
    shape = SHAPES[dim]
    a = rand(shape, 51)
    b = (0.7 * a + 0.3 * rand(shape, 52)).astype(np.float32)
    m = np.ones(shape[:-1], np.float32)
    block = (slice(None), slice(3, 6), slice(2, 5))
    m[block] = 0.0
    a2, b2 = a.copy(), b.copy()
    rng = np.random.default_rng(53)
    a2[block] = rng.uniform(-50, 50, a2[block].shape)  # corrupt a and b under the mask
    b2[block] = rng.uniform(-50, 50, b2[block].shape)
    f = jf(local_ncc, window=5, convention=convention)
    np.testing.assert_allclose(f(a2, b2, mask=m), f(a, b, mask=m), rtol=1e-6, atol=1e-7)
    assert np.all(np.abs(f(a2, b2) - f(a, b)) > 1e-3)  # unmasked, the corruption counts
    # voxel by voxel (neighbours' windows included): the same map wherever m > 0
    kw = dict(window=5, kernel="box", sigma=None, squared=True, eps=1e-5, convention=convention)
    cc1, _ = _masked_local_cc(a, b, m, **kw)
    cc2, _ = _masked_local_cc(a2, b2, m, **kw)
    keep = np.broadcast_to(m[..., None] > 0, cc1.shape)
    np.testing.assert_allclose(np.asarray(cc2)[keep], np.asarray(cc1)[keep], rtol=1e-5, atol=1e-6)
    # and no gradient flows into the masked-out voxels
    ga, gb = jax.jit(jax.grad(lambda x, y: jnp.sum(f(x, y, mask=m)), argnums=(0, 1)))(a2, b2)
    np.testing.assert_array_equal(np.asarray(ga)[block], 0.0)
    np.testing.assert_array_equal(np.asarray(gb)[block], 0.0)
    assert np.all(np.isfinite(ga)) and np.any(np.asarray(ga) != 0)


MASKED_GRAD_CASES = [
    ({"window": 3}, False),
    ({"window": 3, "squared": False}, True),
    ({"window": 3, "kernel": "gaussian", "convention": "voxelmorph", "squared": False}, True),
    ({"window": 4, "convention": "voxelmorph"}, False),
]


@pytest.mark.parametrize("kw,soft", MASKED_GRAD_CASES, ids=[str(c) for c in MASKED_GRAD_CASES])
def test_masked_local_ncc_check_grads_float64(kw, soft):
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        a = jnp.asarray(rng.uniform(0.05, 0.95, (2, 5, 4, 1)))
        b = jnp.asarray(0.5 * np.asarray(a) + rng.uniform(0.0, 0.45, (2, 5, 4, 1)))
        m = np.asarray(_test_mask((2, 5, 4), 9, soft), np.float64)
        f = jax.jit(lambda x, y: local_ncc(x, y, mask=m, **kw))
        assert f(a, b).dtype == jnp.float64
        check_grads(f, (a, b), order=1, modes=("rev",))


def test_masked_local_ncc_bad_mask():
    a = rand((2, 8, 8, 2))
    with pytest.raises(ValueError, match="mask"):
        local_ncc(a, a, mask=np.ones((2, 8, 8, 2)))  # per-channel masks: not supported
    with pytest.raises(ValueError, match="mask"):
        local_ncc(a, a, mask=np.ones((2, 8, 7)))


def test_similarity_term_passes_the_mask_input():
    loss = {"similarity": "local_ncc", "similarity_kwargs": {"window": 5}}
    t = similarity_term(loss, mask="sim_mask", weight=2.0)
    assert t.required_inputs() == ("warped", "fixed", "sim_mask")
    a, b = rand((2, 10, 9, 1), 61), rand((2, 10, 9, 1), 62)
    m = _test_mask((2, 10, 9), 63, soft=False)
    total, parts = jax.jit(lambda x, y, w: Objective({"sim": t})(warped=x, fixed=y, sim_mask=w))(
        a, b, m
    )
    np.testing.assert_allclose(parts["sim"], jf(local_ncc, window=5)(a, b, mask=m).mean(),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(total, 2.0 * parts["sim"], rtol=1e-6)
    assert not np.allclose(parts["sim"], jf(local_ncc, window=5)(a, b).mean())
    assert similarity_term(loss).required_inputs() == ("warped", "fixed")
    with pytest.raises(ValueError, match="takes no mask"):
        similarity_term({"similarity": "ncc"}, mask="sim_mask")


# --------------------------------------------------------------------------------------------
# mutual information
# --------------------------------------------------------------------------------------------


def parzen_np(x, num_bins, sigma_ratio, lo=0.0, hi=1.0):
    """Independent float64 Parzen weights [B, N, bins] (MONAI's gaussian windowing)."""
    x = np.clip(x.reshape(x.shape[0], -1).astype(np.float64), lo, hi)
    c = np.linspace(lo, hi, num_bins)
    sigma = sigma_ratio * (c[1] - c[0])
    w = np.exp(-((x[..., None] - c) ** 2) / (2 * sigma**2))
    return w / w.sum(-1, keepdims=True)


def entropy_np(p):
    p = p[p > 0]
    return -np.sum(p * np.log(p))


def test_mi_of_image_with_itself_hard_bins_is_entropy_and_nmi_two():
    nb = 8
    centres = np.linspace(0.0, 1.0, nb)
    idx = np.random.default_rng(11).integers(0, nb, (2, 20, 18, 1))
    idx[1] = np.minimum(idx[1], 3)  # a different histogram for the second example
    a = centres[idx].astype(np.float32)
    h = [entropy_np(np.bincount(idx[i].ravel(), minlength=nb) / idx[i].size) for i in range(2)]
    mi = jf(mutual_information, num_bins=nb, sigma_ratio=0.1)(a, a)  # ~hard binning
    np.testing.assert_allclose(mi, -np.array(h), rtol=1e-5, atol=1e-5)
    nmi = jf(mutual_information, num_bins=nb, sigma_ratio=0.1, normalized=True)(a, a)
    np.testing.assert_allclose(nmi, [-2.0, -2.0], atol=1e-5)


def test_mi_and_nmi_match_numpy_parzen_estimate():
    """MI and NMI as a float64 numpy transcription; MI(a, a) ~ 2 H(a) - H(a, a) <= H(a)."""
    a, b = rand(SHAPES["2d"], 12), rand(SHAPES["2d"], 13)
    b = 0.6 * a + 0.4 * b
    eps = 1e-7
    wa, wb = parzen_np(a, 23, 0.5), parzen_np(b, 23, 0.5)
    for x, wx, y, wy in [(a, wa, a, wa), (a, wa, b, wb)]:
        pab = np.einsum("bni,bnj->bij", wx, wy) / wx.shape[1]
        pa, pb = pab.sum(2), pab.sum(1)
        papb = pa[:, :, None] * pb[:, None, :]
        mi = np.sum(pab * np.log((pab + eps) / (papb + eps)), axis=(1, 2))
        ha = -np.sum(pa * np.log(pa + eps), axis=1)
        hb = -np.sum(pb * np.log(pb + eps), axis=1)
        hab = -np.sum(pab * np.log(pab + eps), axis=(1, 2))
        np.testing.assert_allclose(jf(mutual_information)(x, y), -mi, atol=2e-6)
        nmi = jf(mutual_information, normalized=True)(x, y)
        np.testing.assert_allclose(nmi, -(ha + hb) / hab, atol=2e-6)
        # exact-entropy identity, up to the eps smoothing (~ eps * bins^2)
        h = [entropy_np(p) for p in pa], [entropy_np(p) for p in pb], [entropy_np(p) for p in pab]
        np.testing.assert_allclose(-mi, -(np.add(h[0], h[1]) - h[2]), atol=1e-4)
        if x is y:
            assert np.all(mi <= ha + 1e-6)  # MI(a, a) <= H(a) for soft windows
            assert np.all(-nmi < 2.0)


def test_mi_of_independent_images_is_small():
    a, b = rand((2, 48, 48, 1), 14), rand((2, 48, 48, 1), 15)
    mi8 = -jf(mutual_information, num_bins=8)(a, b)
    assert np.all(mi8 >= -1e-6) and np.all(mi8 < 0.01), mi8
    mi23 = -jf(mutual_information)(a, b)
    self23 = -jf(mutual_information)(a, a)
    assert np.all(mi23 < 0.05) and np.all(self23 > 1.5), (mi23, self23)


def test_mi_chunked_equals_unchunked():
    a, b = rand(SHAPES["3d"], 16, -0.1, 1.1), rand(SHAPES["3d"], 17)  # N = 336 per example
    for normalized, chunk in [(False, 37), (False, 336), (True, 50)]:
        full = jf(mutual_information, normalized=normalized)
        part = jf(mutual_information, normalized=normalized, chunk_size=chunk)
        np.testing.assert_allclose(part(a, b), full(a, b), rtol=1e-5, atol=1e-6)
    full, part = jf(mutual_information), jf(mutual_information, chunk_size=37)
    g_full, g_part = (jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x, b))))(a) for f in (full, part))
    assert np.abs(g_full).max() > 0
    np.testing.assert_allclose(g_part, g_full, rtol=1e-4, atol=1e-8)


def test_mi_bad_arguments():
    a = rand((1, 8, 8, 1))
    with pytest.raises(ValueError, match="num_bins"):
        mutual_information(a, a, num_bins=1)
    with pytest.raises(ValueError, match="maxval"):
        mutual_information(a, a, minval=1.0, maxval=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        mutual_information(a, a, chunk_size=0)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------


def test_ssim_identical_is_zero_and_ordering():
    a = rand(SHAPES["2d"], 18)
    f = jf(ssim)
    np.testing.assert_allclose(f(a, a), [0.0, 0.0], atol=1e-6)
    noisy = f(a, a + 0.05 * rand(a.shape, 19, -1, 1))
    noisier = f(a, a + 0.2 * rand(a.shape, 19, -1, 1))
    assert np.all(noisy > 1e-3) and np.all(noisier > noisy)
    np.testing.assert_allclose(jf(ssim, kernel="box", window=3)(a, a), [0.0, 0.0], atol=1e-6)
    # constant images: luminance term only
    c1 = (0.01) ** 2
    want = 1 - (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    np.testing.assert_allclose(f(np.full(a.shape, 0.2), np.full(a.shape, 0.6)), [want] * 2,
                               rtol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="window"):
        ssim(a, a, window=10)
    with pytest.raises(ValueError, match="kernel"):
        ssim(a, a, kernel="triangle")


# --------------------------------------------------------------------------------------------
# parity with MONAI / VoxelMorph: committed reference values
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ref():
    with np.load(REF) as z:
        data = {k: z[k] for k in z.files}
    names = [str(n) for n in data["names"]]
    inputs = {
        "3d": (data["a3"].astype(np.float32) / 255, data["b3"].astype(np.float32) / 255),
        "2d": (data["a2"].astype(np.float32) / 255, data["b2"].astype(np.float32) / 255),
    }
    refs = {"3d": dict(zip(names, data["ref3d"])), "2d": dict(zip(names, data["ref2d"]))}
    return inputs, refs


def _outside(x):  # as the generator: float32 map of [0, 1] to [-0.1, 1.1]
    return x * np.float32(1.2) - np.float32(0.1)


# reference name -> (our function, kwargs, input transform); float32 tolerance
PARITY = {
    "monai_lncc_box_k3": (local_ncc, {"window": 3}, None, 2e-6),
    "monai_lncc_gaussian_k3": (local_ncc, {"window": 3, "kernel": "gaussian"}, None, 2e-6),
    "monai_lncc_box_k9": (local_ncc, {"window": 9}, None, 2e-6),
    "monai_lncc_gaussian_k9": (local_ncc, {"window": 9, "kernel": "gaussian"}, None, 2e-6),
    "vxm_ncc_w5": (local_ncc, {"window": 5, "convention": "voxelmorph"}, None, 2e-6),
    "vxm_ncc_signed_w5": (
        local_ncc,
        {"window": 5, "convention": "voxelmorph", "squared": False},
        None,
        2e-6,
    ),
    "vxm_ncc_w9": (local_ncc, {"convention": "voxelmorph"}, None, 2e-6),
    "vxm_ncc_signed_w9": (local_ncc, {"convention": "voxelmorph", "squared": False}, None, 2e-6),
    "monai_mi": (mutual_information, {}, None, 2e-6),
    "monai_mi_clip": (mutual_information, {}, _outside, 2e-6),
    # MONAI computes SSIM in float32 (off by up to 1.4e-5 from float64 here; ours by 4e-7)
    "monai_ssim_w7": (ssim, {"window": 7}, None, 3e-5),
    "monai_ssim_w11": (ssim, {"window": 11}, None, 3e-5),
}


@pytest.mark.parametrize("dim", ["3d", "2d"])
def test_parity_with_committed_references(dim):
    inputs, refs = _ref()
    assert set(refs[dim]) == set(PARITY)
    a, b = inputs[dim]
    for name, (fn, kw, transform, tol) in PARITY.items():
        x, y = (a, b) if transform is None else (transform(a), transform(b))
        np.testing.assert_allclose(jf(fn, **kw)(x, y), refs[dim][name], rtol=0, atol=tol,
                                   err_msg=f"{dim} {name}")  # fmt: skip


def test_parity_float64_formulas():
    """In float64 the LNCC conventions match the peers' float64 values to rounding."""
    inputs, refs = _ref()
    with jax.enable_x64(True):
        for dim in ("3d", "2d"):
            a, b = (jnp.asarray(x, jnp.float64) for x in inputs[dim])
            for name in ("monai_lncc_box_k9", "vxm_ncc_signed_w9"):
                fn, kw, _, _ = PARITY[name]
                out = jf(fn, **kw)(a, b)
                assert out.dtype == jnp.float64
                np.testing.assert_allclose(out, refs[dim][name], rtol=0, atol=1e-12)
            # MONAI's extra eps inside the log and float32 bin centres: ~1e-7
            out = jf(mutual_information)(a, b)
            np.testing.assert_allclose(out, refs[dim]["monai_mi"], rtol=0, atol=1e-6)


def test_voxelmorph_and_monai_differ_where_documented():
    """Single channel: the conventions differ only by the cross clamp; 2 channels: pooling."""
    inputs, refs = _ref()
    a3 = inputs["3d"][0]
    diff = np.abs(refs["3d"]["vxm_ncc_w9"] - refs["3d"]["monai_lncc_box_k9"])
    assert np.all(diff > 1e-4)  # the anti-correlated half: clamped by VoxelMorph
    # identical images: cross = var >= 0 everywhere, so the clamp changes nothing
    m = jf(local_ncc)(a3, a3)
    v = jf(local_ncc, convention="voxelmorph")(a3, a3)
    np.testing.assert_allclose(m, v, atol=1e-6)
    # two channels: MONAI averages per-channel maps, VoxelMorph pools the channels
    assert np.all(np.abs(refs["2d"]["vxm_ncc_w9"] - refs["2d"]["monai_lncc_box_k9"]) > 1e-3)


# --------------------------------------------------------------------------------------------
# live parity with MONAI on fresh inputs (needs torch + monai)
# --------------------------------------------------------------------------------------------


@pytest.mark.torch
def test_live_parity_with_monai():
    monai_losses = pytest.importorskip("monai.losses")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2024)  # fresh inputs, the reference shapes (jit cache reuse)

    def cf(x):
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))

    for shape in [(1, 12, 14, 16, 1), (2, 24, 20, 2)]:
        nd = len(shape) - 2
        a = rng.random(shape).astype(np.float32)
        b = (0.5 * a + 0.5 * rng.random(shape)).astype(np.float32)
        b[:, : shape[1] // 3] = 1 - b[:, : shape[1] // 3]
        for k, kt in [(3, "rectangular"), (9, "rectangular"), (3, "gaussian"), (9, "gaussian")]:
            ours = jf(local_ncc, window=k, **({"kernel": "gaussian"} if kt == "gaussian" else {}))
            theirs = monai_losses.LocalNormalizedCrossCorrelationLoss(
                spatial_dims=nd, kernel_size=k, kernel_type=kt
            )(cf(a), cf(b))  # MONAI: batch mean
            np.testing.assert_allclose(float(jnp.mean(ours(a, b))), float(theirs), atol=1e-5)
        x, y = _outside(a), b  # some values outside [0, 1]: clipped by both
        theirs = monai_losses.GlobalMutualInformationLoss()(cf(x), cf(y))
        np.testing.assert_allclose(float(jnp.mean(jf(mutual_information)(x, y))), float(theirs),
                                   atol=1e-5)  # fmt: skip
        theirs = monai_losses.SSIMLoss(spatial_dims=nd, win_size=7)(cf(a), cf(b))
        np.testing.assert_allclose(float(jnp.mean(jf(ssim, window=7)(a, b))), float(theirs),
                                   atol=3e-5)  # fmt: skip
