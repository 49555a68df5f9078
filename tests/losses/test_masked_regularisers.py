"""The ``mask=`` option of the regularisers (jrs_jax.losses.regularisation).

Every loss is called jitted (mask as a traced argument). Checked for each: a mask of ones gives
the unmasked value; the gradient with respect to the field where the mask is 0 is exactly 0; a
box mask gives the unmasked loss of the field cropped to the box (jacobian_folding: a numpy
reference of the full field's determinant); scaling a soft mask changes nothing; an empty mask
gives 0 with a finite gradient; a soft mask matches a per-voxel numpy reference.
"""

from __future__ import annotations

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jrs_jax.losses import Objective, regulariser_term
from jrs_jax.losses.regularisation import (
    bending_energy,
    diffusion,
    gradient_l1,
    gradient_l2,
    huber_smoothness,
    jacobian_folding,
    velocity_kl,
)

_JIT: dict = {}


def jf(fn, **kw):
    """``jax.jit(partial(fn, **kw))``, compiled once per configuration; ``mask`` is traced."""
    key = (fn, tuple(sorted(kw.items())))
    if key not in _JIT:
        _JIT[key] = jax.jit(functools.partial(fn, **kw))
    return _JIT[key]


def rand(shape, seed, scale=1.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


# name, fn, kw, uses (mean, log_var)
CASES = [
    ("bending", bending_energy, {}),
    ("bending_nested", bending_energy, {"scheme": "nested"}),
    ("bending_norm", bending_energy, {"normalize": True}),
    ("bending_mm", bending_energy, {"spacing": (0.8, 1.5, 2.0)}),
    ("diff_fwd_l2", diffusion, {}),
    ("diff_fwd_l1", diffusion, {"penalty": "l1"}),
    ("diff_central_l2", diffusion, {"scheme": "central"}),
    ("diff_central_l1", diffusion, {"scheme": "central", "penalty": "l1"}),
    ("diff_mm", diffusion, {"spacing": (0.8, 1.5, 2.0)}),
    ("grad_l2", gradient_l2, {}),
    ("grad_l1", gradient_l1, {"spacing": 1.5}),
    ("huber", huber_smoothness, {"delta": 0.5}),
    ("folding", jacobian_folding, {"eps": 0.5}),
    ("kl", velocity_kl, {"prior_lambda": 7.0}),
]
IDS = [c[0] for c in CASES]
SHAPES = {"2d": (2, 9, 10), "3d": (2, 7, 6, 8)}


def _kw(kw, ndim):
    if "spacing" in kw and not np.isscalar(kw["spacing"]):
        kw = {**kw, "spacing": tuple(kw["spacing"][:ndim])}
    return kw


def _inputs(fn, grid, seed=0):
    """The loss's array arguments on ``grid = (B, *S)``: the field (and a log-variance)."""
    shape = (*grid, len(grid) - 1)
    args = (jnp.asarray(rand(shape, seed, scale=0.8)),)
    if fn is velocity_kl:
        args += (jnp.asarray(rand(shape, seed + 1, scale=0.3) - 1.0),)
    return args


def _call(fn, kw, args, mask=None):
    return np.asarray(jf(fn, **kw)(*args, mask=mask)) if mask is not None else jf(fn, **kw)(*args)


# --------------------------------------------------------------------------------------------
# a mask of ones is the unmasked loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_ones_mask_equals_unmasked(name, fn, kw, dim):
    grid = SHAPES[dim]
    kw = _kw(kw, len(grid) - 1)
    with jax.enable_x64(True):
        args = _inputs(fn, grid, seed=1)
        ref = np.asarray(_call(fn, kw, args))
        assert ref.dtype == np.float64 and np.all(ref > 0)
        for ones in (np.ones(grid), np.ones((*grid, 1), bool)):
            np.testing.assert_allclose(_call(fn, kw, args, ones), ref, rtol=1e-13, atol=0)
    # float32 too (the dtype of training)
    args32 = tuple(a.astype(np.float32) for a in _inputs(fn, grid, seed=1))
    out = _call(fn, kw, args32, np.ones(grid, np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _call(fn, kw, args32), rtol=2e-6)


# --------------------------------------------------------------------------------------------
# no gradient outside the mask
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_gradient_outside_mask_is_exactly_zero(name, fn, kw, dim):
    grid = SHAPES[dim]
    kw = _kw(kw, len(grid) - 1)
    args = tuple(a.astype(np.float32) for a in _inputs(fn, grid, seed=2))
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=grid) < 0.92  # a few holes: nested 3-D stencils read 19 voxels
    soft = mask * rng.uniform(0.2, 1.0, size=grid)
    n = len(args)
    grad = jax.jit(
        jax.grad(lambda *a: jnp.sum(fn(*a[:n], mask=a[n], **kw)), argnums=tuple(range(n)))
    )
    for m in (mask, soft.astype(np.float32)):
        for g in grad(*args, m):
            g = np.asarray(g)
            assert np.all(np.isfinite(g))
            assert np.all(g[~mask] == 0.0), f"{np.abs(g[~mask]).max()} outside the mask"
            assert np.abs(g[mask]).max() > 0


# --------------------------------------------------------------------------------------------
# a box mask is the unmasked loss of the cropped field
# --------------------------------------------------------------------------------------------

BOXES = {"2d": (slice(2, 8), slice(1, 9)), "3d": (slice(1, 7), slice(0, 5), slice(2, 8))}
BOX_CASES = [c for c in CASES if c[0] not in ("bending_norm", "folding")]


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", BOX_CASES, ids=[c[0] for c in BOX_CASES])
def test_box_mask_equals_cropped_field(name, fn, kw, dim):
    """Every stencil here reads ``x`` and neighbours on both sides (forward differences: ``x``
    and ``x + e_i``), so the weights of a box are 1 exactly at the stencil positions of the
    field cropped to the box."""
    grid = SHAPES[dim]
    kw = _kw(kw, len(grid) - 1)
    box = (slice(None), *BOXES[dim])
    with jax.enable_x64(True):
        args = _inputs(fn, grid, seed=4)
        mask = np.zeros(grid)
        mask[box] = 1.0
        cropped = tuple(a[box] for a in args)
        np.testing.assert_allclose(
            _call(fn, kw, args, mask), _call(fn, kw, cropped), rtol=1e-12, atol=0
        )


def _np_jacobian(u: np.ndarray) -> np.ndarray:
    """``det(I + ∇u)`` of ``[*S, D]`` by ``numpy.gradient`` (central, one-sided at borders)."""
    d = u.shape[-1]
    grad = np.stack([np.stack(np.gradient(u[..., c]), -1) for c in range(d)], -2)
    return np.linalg.det(grad + np.eye(d))


@pytest.mark.parametrize(
    "grid,box",
    [
        ((2, 9, 10), (slice(2, 8), slice(1, 9))),
        ((2, 9, 10), (slice(0, 6), slice(3, 10))),  # touches two image borders
        ((2, 7, 6, 8), (slice(1, 7), slice(0, 5), slice(2, 8))),
    ],
)
def test_folding_box_mask_is_the_full_determinant_inside_the_box(grid, box):
    """The weight of ``J(x)`` is 1 where ``x`` and every neighbour its differences read lie in
    the box: the box less its faces inside the image (its faces on the image border stay)."""
    eps = 0.6
    with jax.enable_x64(True):
        (u,) = _inputs(jacobian_folding, grid, seed=5)
        mask = np.zeros(grid)
        mask[(slice(None), *box)] = 1.0
        out = _call(jacobian_folding, {"eps": eps}, (u,), mask)
    inner = tuple(
        slice(s.start + (s.start > 0), s.stop - (s.stop < n))
        for s, n in zip(box, grid[1:], strict=True)
    )
    ref = [np.maximum(eps - _np_jacobian(np.asarray(ub)), 0)[inner].mean() for ub in u]
    assert min(ref) > 0
    np.testing.assert_allclose(out, ref, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# soft masks: scale invariance, per-voxel reference; empty masks
# --------------------------------------------------------------------------------------------


def _soft_mask(grid, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, size=grid) * (rng.uniform(size=grid) < 0.97)


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_soft_mask_scale_invariance(name, fn, kw, dim):
    grid = SHAPES[dim]
    kw = _kw(kw, len(grid) - 1)
    with jax.enable_x64(True):
        args = _inputs(fn, grid, seed=6)
        mask = _soft_mask(grid, 7)
        ref = _call(fn, kw, args, mask)
        assert np.all(ref > 0)
        for c in (0.3, 4.0):
            np.testing.assert_allclose(_call(fn, kw, args, mask * c), ref, rtol=1e-12)
        # differs from the unmasked value (the weights do something)
        assert not np.allclose(ref, _call(fn, kw, args), rtol=1e-3)


@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_empty_mask_gives_zero_and_finite_gradient(name, fn, kw):
    grid = SHAPES["2d"]
    kw = _kw(kw, 2)
    args = tuple(a.astype(np.float32) for a in _inputs(fn, grid, seed=8))
    mask = np.zeros(grid, np.float32)
    mask[1, 1:8, 2:9] = 1.0  # example 0 empty, example 1 not
    out = _call(fn, kw, args, mask)
    assert out[0] == 0.0 and out[1] > 0
    n = len(args)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a[:n], mask=a[n], **kw)), range(n)))(
        *args, mask
    )
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[0] == 0.0)
    np.testing.assert_array_equal(_call(fn, kw, args, np.zeros(grid, np.float32)), [0.0, 0.0])


# per-voxel numpy reference on one 2-D example ---------------------------------------------


def _weights(m: np.ndarray, taps, positions, *, edge=False) -> np.ndarray:
    """``Π_t m[x + t]`` for every ``x`` of ``positions`` (loops; ``edge``: clip to the grid)."""
    out = np.zeros(len(positions))
    for k, x in enumerate(positions):
        w = 1.0
        for t in taps:
            y = np.add(x, t)
            if edge:
                y = np.clip(y, 0, np.asarray(m.shape) - 1)
            w *= m[tuple(y)]
        out[k] = w
    return out


def _wmean(values, weights):
    return np.sum(values * weights) / np.sum(weights)


def _reference(name, u, lv, m):
    """The masked loss of ``u [H, W, 2]`` (``lv``: log-variance) with mask ``m [H, W]``."""
    h, w = m.shape
    e = [(1, 0), (0, 1)]
    neg = lambda t: tuple(-a for a in t)
    at = lambda x, t: u[x[0] + t[0], x[1] + t[1]]
    if name in ("diff_fwd_l2", "diff_fwd_l1", "kl_prec"):
        f = np.square if name != "diff_fwd_l1" else np.abs
        per_axis = []
        for i in range(2):
            pos = [x for x in itertools.product(range(h), range(w)) if x[i] < m.shape[i] - 1]
            vals = np.array([f(at(x, e[i]) - at(x, (0, 0))).sum() / 2 for x in pos])
            per_axis.append(_wmean(vals, _weights(m, [(0, 0), e[i]], pos)))
        return np.mean(per_axis)
    if name == "diff_central_l2":
        pos = list(itertools.product(range(1, h - 1), range(1, w - 1)))
        vals = [sum(((at(x, t) - at(x, neg(t))) ** 2 / 4).sum() for t in e) / 2 for x in pos]
        taps = [(0, 0), *e, *map(neg, e)]
        return _wmean(np.array(vals), _weights(m, taps, pos))
    if name in ("bending", "bending_nested"):
        s, c = (1, 1.0) if name == "bending" else (2, 0.25)
        pos = list(itertools.product(range(s, h - s), range(s, w - s)))
        corners = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
        vals = []
        for x in pos:
            d00 = c * (at(x, (s, 0)) - 2 * at(x, (0, 0)) + at(x, (-s, 0)))
            d11 = c * (at(x, (0, s)) - 2 * at(x, (0, 0)) + at(x, (0, -s)))
            d01 = sum(a * b * at(x, (a, b)) for a, b in corners) / 4
            vals.append((d00**2 + d11**2 + 2 * d01**2).sum() / 2)
        taps = [(0, 0), (s, 0), (-s, 0), (0, s), (0, -s), *corners]
        return _wmean(np.array(vals), _weights(m, taps, pos))
    if name == "folding":
        pos = list(itertools.product(range(h), range(w)))
        jac = _np_jacobian(u)
        vals = np.array([max(0.5 - jac[x], 0.0) for x in pos])
        taps = [(0, 0), *e, *map(neg, e)]
        return _wmean(vals, _weights(m, taps, pos, edge=True))
    if name == "kl":
        lam = 7.0
        support = np.pad(m > 0, 1)
        deg = sum(np.roll(support, s, a)[1:-1, 1:-1] for a in (0, 1) for s in (1, -1))
        sigma = _wmean((lam * deg[..., None] * np.exp(lv) - lv).sum(-1) / 2, m)
        prec = 0.5 * _reference("kl_prec", u, lv, m)
        return 0.5 * 2 * (sigma + lam * prec)
    raise KeyError(name)


@pytest.mark.parametrize(
    "name,fn,kw",
    [
        ("diff_fwd_l2", gradient_l2, {}),
        ("diff_fwd_l1", diffusion, {"penalty": "l1"}),
        ("diff_central_l2", diffusion, {"scheme": "central"}),
        ("bending", bending_energy, {}),
        ("bending_nested", bending_energy, {"scheme": "nested"}),
        ("folding", jacobian_folding, {"eps": 0.5}),
        ("kl", velocity_kl, {"prior_lambda": 7.0}),
    ],
    ids=["fwd_l2", "fwd_l1", "central_l2", "bending", "bending_nested", "folding", "kl"],
)
def test_soft_mask_matches_per_voxel_reference(name, fn, kw):
    grid = (2, 8, 7)
    with jax.enable_x64(True):
        args = _inputs(fn, grid, seed=9)
        mask = _soft_mask(grid, 10)
        out = _call(fn, kw, args, mask[..., None])
    lv = np.asarray(args[-1])
    for b in range(2):
        ref = _reference(name, np.asarray(args[0][b]), lv[b], mask[b])
        np.testing.assert_allclose(out[b], ref, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# float64 gradients, errors, the registry term
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,kw",
    [(bending_energy, {}), (diffusion, {"scheme": "central"}), (velocity_kl, {})],
    ids=["bending", "diff_central", "kl"],
)
def test_check_grads_float64_soft_mask(fn, kw):
    with jax.enable_x64(True):
        args = _inputs(fn, (2, 6, 5), seed=11)
        mask = jnp.asarray(_soft_mask((2, 6, 5), 12))
        loss = jax.jit(lambda *a: fn(*a, mask=mask, **kw))
        check_grads(loss, args, order=1, modes=("rev",))


def test_mask_shape_errors_name_both_shapes():
    u = np.zeros((2, 6, 5, 2), np.float32)
    for bad in (np.ones((2, 6, 4)), np.ones((1, 6, 5)), np.ones((2, 6, 5, 2))):
        for fn in (bending_energy, diffusion, huber_smoothness, jacobian_folding):
            with pytest.raises(ValueError, match=r"\(2, 6, 5\).*got " + re.escape(str(bad.shape))):
                fn(u, mask=bad)
        with pytest.raises(ValueError, match=r"\(2, 6, 5, 1\)"):
            velocity_kl(u, u, mask=bad)


def test_regulariser_term_reads_the_mask_input():
    loss = {"regulariser": "diffusion", "reg_weight": 0.5, "regulariser_kwargs": {}}
    t = regulariser_term(loss, "disp_k", mask="region_k")
    assert t.required_inputs() == ("disp_k", "region_k")
    u = jnp.asarray(rand((2, 9, 10, 2), 13), jnp.float32)
    mask = jnp.asarray(_soft_mask((2, 9, 10), 14), jnp.float32)
    total, parts = jax.jit(lambda u, m: Objective({"reg": t})(disp_k=u, region_k=m))(u, mask)
    np.testing.assert_allclose(parts["reg"], jf(diffusion)(u, mask=mask).mean(), rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * parts["reg"], rtol=1e-6)
    assert regulariser_term(loss).required_inputs() == ("disp",)
