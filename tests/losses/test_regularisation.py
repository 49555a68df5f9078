"""Tests for jrs_jax.losses.regularisation: analytic values, MONAI/VoxelMorph parity, jit, grads."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from regseg_parity import check_parity, generator, load_reference

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
    """``jax.jit(partial(fn, **kw))``, compiled once per configuration."""
    key = (fn, tuple(sorted(kw.items())))
    if key not in _JIT:
        _JIT[key] = jax.jit(functools.partial(fn, **kw))
    return _JIT[key]


def rand_field(shape, seed=0, scale=1.0, dtype=np.float32):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def coords(spatial, dtype=np.float64):
    """``[*S, D]`` voxel coordinates (component k = index along axis k)."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=dtype) for n in spatial], indexing="ij"), -1)


def field_from(fn, spatial, batch=2):
    """``[B, *S, D]`` float32 field with ``fn(coords) -> [*S, D]`` in every example."""
    f = fn(coords(spatial))
    return np.broadcast_to(f, (batch, *f.shape)).astype(np.float32)


ALL = [
    ("bending", bending_energy, {}),
    ("bending_nested", bending_energy, {"scheme": "nested"}),
    ("bending_norm", bending_energy, {"normalize": True}),
    ("bending_mm", bending_energy, {"spacing": (0.8, 1.5, 2.0)}),
    ("diff_fwd_l2", diffusion, {}),
    ("diff_fwd_l1", diffusion, {"penalty": "l1"}),
    ("diff_central_l2", diffusion, {"scheme": "central"}),
    ("diff_central_l1_norm", diffusion, {"scheme": "central", "penalty": "l1", "normalize": True}),
    ("diff_mm", diffusion, {"spacing": (0.8, 1.5, 2.0)}),
    ("grad_l1", gradient_l1, {}),
    ("grad_l2", gradient_l2, {}),
    ("huber", huber_smoothness, {"delta": 0.5}),
    ("folding", jacobian_folding, {}),
]
SHAPES = {"2d": (2, 7, 6, 2), "3d": (2, 6, 5, 7, 3)}


def _kw_for(kw, ndim):
    """Trim a 3-value spacing to the field's dimension."""
    if "spacing" in kw and not np.isscalar(kw["spacing"]):
        kw = {**kw, "spacing": tuple(kw["spacing"][:ndim])}
    return kw


# --------------------------------------------------------------------------------------------
# generic: shape [B], jit == eager, per-example, finite values and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", list(SHAPES))
@pytest.mark.parametrize("name,fn,kw", ALL, ids=[a[0] for a in ALL])
def test_shape_jit_equals_eager_per_example(name, fn, kw, dim):
    shape = SHAPES[dim]
    kw = _kw_for(kw, len(shape) - 2)
    u = rand_field(shape, 1, scale=1.5)
    out = jf(fn, **kw)(u)
    assert out.shape == (2,)
    assert out.dtype == jnp.float32
    if dim == "2d":  # eager dispatch is slow on CPU: compare once per configuration
        np.testing.assert_allclose(out, fn(u, **kw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jf(fn, **kw)(u[::-1]), out[::-1], rtol=1e-6)
    assert np.all(np.asarray(out) >= 0) and not np.allclose(out[0], out[1])


@pytest.mark.parametrize("name,fn,kw", ALL, ids=[a[0] for a in ALL])
def test_finite_gradients_including_zero_field(name, fn, kw):
    shape = SHAPES["3d"]
    kw = _kw_for(kw, 3)
    g = jax.jit(jax.grad(lambda u: jnp.sum(fn(u, **kw))))
    for u in (jnp.zeros(shape), jnp.asarray(rand_field(shape, 2, scale=2.0))):
        grad = g(u)
        assert grad.shape == shape
        assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(jf(fn, **kw)(jnp.zeros(shape))) == 0.0)


@pytest.mark.parametrize("name,fn,kw", ALL, ids=[a[0] for a in ALL])
def test_check_grads_float64(name, fn, kw):
    kw = _kw_for(kw, 2)
    with jax.enable_x64(True):
        u = jnp.asarray(rand_field((2, 5, 6, 2), 3, scale=1.2, dtype=np.float64))
        check_grads(jax.jit(functools.partial(fn, **kw)), (u,), order=1, modes=("rev",))


def test_velocity_kl_generic_and_check_grads():
    for shape in SHAPES.values():
        mu, lv = rand_field(shape, 4), rand_field(shape, 5, scale=0.3) - 2.0
        out = jf(velocity_kl, prior_lambda=7.0)(mu, lv)
        assert out.shape == (2,)
        if len(shape) == 4:
            np.testing.assert_allclose(out, velocity_kl(mu, lv, prior_lambda=7.0), rtol=1e-5)
        np.testing.assert_allclose(jf(velocity_kl, prior_lambda=7.0)(mu[::-1], lv[::-1]), out[::-1])
    with jax.enable_x64(True):
        mu = jnp.asarray(rand_field((2, 5, 4, 2), 6, dtype=np.float64))
        lv = jnp.asarray(rand_field((2, 5, 4, 2), 7, scale=0.3, dtype=np.float64))
        check_grads(jax.jit(velocity_kl), (mu, lv), order=1, modes=("rev",))


# --------------------------------------------------------------------------------------------
# analytic values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["compact", "nested"])
@pytest.mark.parametrize("spatial", [(7, 6), (6, 5, 7)])
def test_bending_quadratic_and_mixed_fields(scheme, spatial):
    d = len(spatial)
    a = 0.3
    fn = jf(bending_energy, scheme=scheme)
    for k in range(d):
        for i in range(d):
            # u_k = a x_i^2: d2u_k/dx_i^2 = 2a, nothing else; mean over the D components
            u = field_from(lambda x, k=k, i=i: np.eye(d)[k] * (a * x[..., i : i + 1] ** 2), spatial)
            np.testing.assert_allclose(fn(u), [4 * a * a / d] * 2, rtol=1e-5)
            j = (i + 1) % d
            # u_k = a x_i x_j: d2u_k/dx_i dx_j = a, counted twice (ij and ji)
            u = field_from(
                lambda x, k=k, i=i, j=j: np.eye(d)[k] * (a * x[..., i : i + 1] * x[..., j : j + 1]),
                spatial,
            )
            np.testing.assert_allclose(fn(u), [2 * a * a / d] * 2, rtol=1e-5)


@pytest.mark.parametrize("spatial", [(7, 6), (6, 5, 7)])
def test_bending_affine_field_is_zero(spatial):
    d = len(spatial)
    rng = np.random.default_rng(0)
    A, t = rng.normal(size=(d, d)), rng.normal(size=d)
    u = field_from(lambda x: x @ A.T + t, spatial)
    for kw in ({}, {"scheme": "nested"}, {"normalize": True}, {"spacing": 0.7}):
        np.testing.assert_allclose(jf(bending_energy, **kw)(u), [0.0, 0.0], atol=1e-9)


def test_bending_normalize_and_spacing_scaling():
    spatial = (8, 5, 6)
    n, d, a = np.array(spatial, float), 3, 0.25
    h = np.array([0.5, 1.25, 2.0])
    for k in range(d):
        for i in range(d):
            u = field_from(lambda x, k=k, i=i: np.eye(d)[k] * (a * x[..., i : i + 1] ** 2), spatial)
            # normalize: d2u_k/dx_i^2 * N_i^2 / N_k
            want = (2 * a * n[i] ** 2 / n[k]) ** 2 / d
            np.testing.assert_allclose(jf(bending_energy, normalize=True)(u), [want] * 2, rtol=1e-5)
            # spacing: (u_k h_k) differentiated per mm twice -> 2 a h_k / h_i^2 (mm^-1)
            want = (2 * a * h[k] / h[i] ** 2) ** 2 / d
            got = jf(bending_energy, spacing=tuple(h))(u)
            np.testing.assert_allclose(got, [want] * 2, rtol=1e-5)


@pytest.mark.parametrize("spatial", [(7, 6), (6, 5, 7)])
def test_diffusion_of_linear_and_constant_fields(spatial):
    d = len(spatial)
    A = np.random.default_rng(1).normal(size=(d, d))
    u = field_from(lambda x: x @ A.T + 3.0, spatial)  # u_c = sum_i A_ci x_i + 3
    expect = {
        ("forward", "l2"): np.sum(A**2) / d**2,  # VoxelMorph: mean over components and axes
        ("forward", "l1"): np.sum(np.abs(A)) / d**2,
        ("central", "l2"): np.sum(A**2) / d,  # MONAI: sum over axes, mean over components
        ("central", "l1"): np.sum(np.abs(A)) / d,
    }
    for (scheme, pen), want in expect.items():
        got = jf(diffusion, scheme=scheme, penalty=pen)(u)
        np.testing.assert_allclose(got, [want] * 2, rtol=1e-5)
        const = field_from(lambda x: np.ones_like(x) * 4.0, spatial)
        np.testing.assert_array_equal(jf(diffusion, scheme=scheme, penalty=pen)(const), [0, 0])
    np.testing.assert_allclose(gradient_l2(u), [expect["forward", "l2"]] * 2, rtol=1e-5)
    np.testing.assert_allclose(gradient_l1(u), [expect["forward", "l1"]] * 2, rtol=1e-5)


def test_diffusion_spacing_and_normalize_scaling():
    spatial = (8, 5, 6)
    n, d = np.array(spatial, float), 3
    A = np.random.default_rng(2).normal(size=(d, d))
    h = np.array([0.5, 1.25, 2.0])
    u = field_from(lambda x: x @ A.T, spatial)
    # physical displacement gradient: d(u_c h_c) / d(x_i h_i) = A_ci h_c / h_i
    a_mm = A * h[:, None] / h[None, :]
    got = jf(diffusion, scheme="central", spacing=tuple(h))(u)
    np.testing.assert_allclose(got, [np.sum(a_mm**2) / d] * 2, rtol=1e-5)
    got = jf(diffusion, spacing=tuple(h))(u)
    np.testing.assert_allclose(got, [np.sum(a_mm**2) / d**2] * 2, rtol=1e-5)
    a_norm = A * n[None, :] / n[:, None]  # MONAI: dU_c/dx_i * N_i / N_c
    got = jf(diffusion, scheme="central", normalize=True)(u)
    np.testing.assert_allclose(got, [np.sum(a_norm**2) / d] * 2, rtol=1e-5)


def test_normalize_makes_resolution_independent():
    # the same map on the unit square, u_c(p) = N_c * (B p)_c with p_i = x_i / N_i, sampled on
    # grids of different resolution and aspect ratio: normalized penalties agree
    B = np.array([[0.3, -0.2], [0.1, 0.4]])
    vals = {"diff": [], "bend": []}
    for spatial in [(6, 9), (12, 7), (20, 20)]:
        n = np.array(spatial, float)
        lin = field_from(lambda x, n=n: ((x / n) @ B.T) * n, spatial)
        quad = field_from(lambda x, n=n: ((x / n) ** 2 @ B.T) * n, spatial)
        vals["diff"].append(np.asarray(jf(diffusion, scheme="central", normalize=True)(lin))[0])
        vals["bend"].append(np.asarray(jf(bending_energy, normalize=True)(quad))[0])
    np.testing.assert_allclose(vals["diff"], np.sum(B**2) / 2, rtol=1e-5)
    np.testing.assert_allclose(vals["bend"], np.sum((2 * B) ** 2) / 2, rtol=1e-4)


def test_huber_smoothness_regimes():
    spatial = (6, 7)
    # small gradients: Huber = 0.5 * squared -> half of VoxelMorph's l2
    u = rand_field((2, *spatial, 2), 3, scale=0.01)
    np.testing.assert_allclose(
        jf(huber_smoothness, delta=1.0)(u), 0.5 * np.asarray(gradient_l2(u)), rtol=1e-5
    )
    # large uniform strain a > delta on one component/axis: delta * (a - delta / 2) / D^2
    a, delta = 2.0, 0.5
    u = field_from(lambda x: np.stack([a * x[..., 0], 0 * x[..., 0]], -1), spatial)
    np.testing.assert_allclose(
        jf(huber_smoothness, delta=delta)(u), [delta * (a - delta / 2) / 4] * 2, rtol=1e-6
    )
    # spacing: strain a * h_0 / h_1 along axis 1 of component 0
    u = field_from(lambda x: np.stack([a * x[..., 1], 0 * x[..., 0]], -1), spatial)
    got = jf(huber_smoothness, delta=delta, spacing=(2.0, 0.5))(u)
    np.testing.assert_allclose(got, [delta * (a * 4 - delta / 2) / 4] * 2, rtol=1e-6)


@pytest.mark.parametrize("spatial", [(7, 6), (5, 6, 4)])
def test_jacobian_folding_values(spatial):
    d = len(spatial)
    fn = jf(jacobian_folding)
    np.testing.assert_array_equal(fn(np.zeros((2, *spatial, d), np.float32)), [0, 0])
    # reflection along axis 0: phi_0 = -x_0 -> J = -1 everywhere
    refl = field_from(lambda x: np.eye(d)[0] * (-2.0 * x[..., :1]), spatial)
    np.testing.assert_allclose(fn(refl), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(jf(jacobian_folding, eps=0.5)(refl), [1.5, 1.5], rtol=1e-6)
    # compression by half: J = 0.5, not folded, but below eps = 1
    comp = field_from(lambda x: np.eye(d)[0] * (-0.5 * x[..., :1]), spatial)
    np.testing.assert_allclose(fn(comp), [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(jf(jacobian_folding, eps=1.0)(comp), [0.5, 0.5], rtol=1e-6)
    # one example folded, the other not
    mixed = np.concatenate([refl[:1], comp[:1]])
    np.testing.assert_allclose(fn(mixed), [1.0, 0.0], atol=1e-7)
    # the determinant of a voxel-unit field does not depend on the voxel size
    u = rand_field((2, *spatial, d), 8, scale=1.5)
    np.testing.assert_allclose(
        jf(jacobian_folding, spacing=(0.5, 2.0, 3.0)[:d])(u), fn(u), rtol=1e-6
    )
    assert np.all(np.asarray(fn(u)) > 0)


def test_velocity_kl_analytic():
    lam = 10.0
    spatial = (4, 5)
    # constant mean, unit variance: 0.5 * D * lam * mean(degree); mean degree = sum_i (2N_i-2)/N_i
    mu = np.full((1, *spatial, 2), 0.7, np.float32)
    want = 0.5 * 2 * lam * (6 / 4 + 8 / 5)
    kl = jf(velocity_kl, prior_lambda=lam)
    np.testing.assert_allclose(kl(mu, np.zeros_like(mu)), [want], rtol=1e-6)
    # linear mean mu_c = x_0 on both components: the precision term is
    # 0.5 * D * lam * 0.5 / D * mean(1) (only axis 0 differs) = lam / 4
    mu = field_from(lambda x: np.repeat(x[..., :1], 2, -1), spatial, batch=1)
    lv = np.full_like(mu, -50.0)  # sigma^2 ~ 0: sigma term = -log_var = 50
    np.testing.assert_allclose(kl(mu, lv), [0.5 * 2 * 50.0 + lam / 4], rtol=1e-5)
    # the optimal variance is 1 / (lam * degree): zero gradient with respect to log_var there
    from jrs_jax.losses.regularisation import _degree

    opt = -np.log(lam * _degree(spatial))[None, ..., None] * np.ones((1, 1, 1, 2))
    g = jax.jit(jax.grad(lambda lv: kl(mu, lv).sum()))(jnp.asarray(opt))
    np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_errors():
    u = np.zeros((2, 6, 6, 2), np.float32)
    with pytest.raises(ValueError, match="'upwind'"):
        diffusion(u, scheme="upwind")
    with pytest.raises(ValueError, match="'l3'"):
        diffusion(u, penalty="l3")
    with pytest.raises(ValueError, match="'wide'"):
        bending_energy(u, scheme="wide")
    with pytest.raises(ValueError, match="normalize"):
        bending_energy(u, normalize=True, spacing=1.0)
    with pytest.raises(ValueError, match="spacing"):
        diffusion(u, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[B, \*S, D\]"):
        bending_energy(np.zeros((2, 6, 6, 3), np.float32))
    with pytest.raises(ValueError, match=">= 5"):
        bending_energy(np.zeros((2, 4, 6, 2), np.float32), scheme="nested")
    with pytest.raises(ValueError, match="log_var"):
        velocity_kl(u, u[:, :3])


# --------------------------------------------------------------------------------------------
# parity: committed references (MONAI, VoxelMorph transcriptions) and live MONAI
# --------------------------------------------------------------------------------------------


def _ours(name: str, inputs: dict) -> jnp.ndarray | None:
    """Our value for a reference entry of the regularisation family (None: not ours)."""
    parts = name.split("_")
    if parts[0] in ("bending", "diffusion"):
        kind, scheme, dim, norm = parts
        field = jnp.asarray(inputs[f"field_{dim}"])
        kw = {"normalize": norm == "norm1"}
        if kind == "bending":
            return jf(bending_energy, scheme=scheme, **kw)(field)
        return jf(diffusion, scheme=scheme, **kw)(field)
    if parts[0] == "grad":
        _, pen, dim = parts
        return jf(diffusion, scheme="forward", penalty=pen)(jnp.asarray(inputs[f"field_{dim}"]))
    if parts[0] == "kl":
        dim = parts[1]
        mu, lv = (jnp.asarray(inputs[f"{k}_{dim}"]) for k in ("field", "logvar"))
        return jf(velocity_kl, prior_lambda=10.0)(mu, lv)
    return None


def test_parity_with_committed_reference():
    inputs, refs = load_reference()
    with jax.enable_x64(True):
        x64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
        checked = check_parity(_ours, x64, refs, rtol=1e-10)
    assert len(checked) == 18  # bending 2x2x2, diffusion 2x2, grad 2x2, kl 2
    x32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    check_parity(_ours, x32, refs, rtol=2e-5)


@pytest.mark.torch
def test_parity_with_live_monai():
    pytest.importorskip("monai")
    pytest.importorskip("torch")
    mod = generator()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs, refs = mod.compute_references(seed=4321)
    with jax.enable_x64(True):
        checked = check_parity(_ours, inputs, refs, rtol=1e-10)
    assert len(checked) == 18
    assert math.isfinite(sum(float(np.sum(refs[n])) for n in checked))
