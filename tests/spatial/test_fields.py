"""Field algebra: compose, integrate_velocity, invert, Jacobians, affine fields, resizing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage as ndi
from spatial_helpers import (
    SHAPES,
    affine_j,
    compose_j,
    dispgrad_j,
    inside_mask,
    integrate_j,
    invert_j,
    jacdet_j,
    np_grid,
    np_jacobian_det,
    random_affine,
    resize_j,
    smooth_field,
    smooth_image,
    smooth_velocity,
    warp_,
)

from jrs_jax import spatial as sp

NDIMS = [2, 3]


def _constant_field(shape, vec, batch=2):
    return jnp.broadcast_to(jnp.asarray(vec, jnp.float32), (batch, *shape, len(shape)))


def _valid_cells(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Voxels x where x + u(x) is inside and every interpolation corner y around it has
    y + v(y) inside: there neither warp(warp(I, v), u) nor warp(I, compose(u, v)) clamps."""
    shape = u.shape[1:-1]
    ndim = len(shape)
    grid = np_grid(shape)
    c = grid + u
    ok = inside_mask(c, shape)
    v_ok = inside_mask(grid + v, shape)
    base = np.floor(c).astype(int)
    for bits in np.ndindex(*(2,) * ndim):
        corner = np.clip(base + np.array(bits), 0, np.array(shape) - 1)
        b = np.arange(u.shape[0]).reshape(-1, *([1] * ndim))
        ok &= v_ok[(b, *np.moveaxis(corner, -1, 0))]
    return ok


# ------------------------------------------------------------------ compose


@pytest.mark.parametrize("ndim", NDIMS)
def test_compose_with_zero_is_identity(ndim):
    shape = SHAPES[ndim]
    u = smooth_field(1, shape, amplitude=3.0, control_spacing=4)
    zero = jnp.zeros_like(u)
    np.testing.assert_array_equal(np.asarray(compose_j(u, zero)), np.asarray(u))
    np.testing.assert_array_equal(np.asarray(compose_j(zero, u)), np.asarray(u))


@pytest.mark.parametrize("ndim", NDIMS)
def test_compose_of_translations_adds(ndim):
    shape = SHAPES[ndim]
    t1 = np.linspace(-1.3, 0.8, ndim)
    t2 = np.linspace(0.6, -2.1, ndim)
    out = compose_j(_constant_field(shape, t1), _constant_field(shape, t2))
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(t1 + t2, out.shape), atol=1e-6)


@pytest.mark.parametrize("ndim", NDIMS)
def test_composition_law_is_exact_for_a_linear_image(ndim):
    """With I(x) = x (the coordinate image) linear interpolation is exact, so
    warp(I, compose(u, v)) == warp(warp(I, v), u) to rounding wherever nothing clamps."""
    shape = SHAPES[ndim]
    u = smooth_field(2, shape, amplitude=2.0, control_spacing=6, diffeomorphic=True)
    v = smooth_field(3, shape, amplitude=2.0, control_spacing=6, diffeomorphic=True)
    img = jnp.asarray(np.broadcast_to(np_grid(shape), (2, *shape, ndim)), jnp.float32)
    ref = np.asarray(warp_(warp_(img, v), u))
    good = np.asarray(warp_(img, compose_j(u, v)))
    swapped = np.asarray(warp_(img, compose_j(v, u)))
    mask = _valid_cells(np.asarray(u), np.asarray(v))
    assert mask.mean() > 0.2
    np.testing.assert_allclose(good[mask], ref[mask], atol=2e-5)
    assert np.abs(swapped - ref)[mask].mean() > 0.1


@pytest.mark.parametrize("ndim", NDIMS)
def test_composition_law_smooth_image(ndim):
    shape = SHAPES[ndim]
    img = jnp.asarray(smooth_image(shape))
    u = smooth_field(4, shape, amplitude=2.0, control_spacing=6, diffeomorphic=True)
    v = smooth_field(5, shape, amplitude=2.0, control_spacing=6, diffeomorphic=True)
    ref = np.asarray(warp_(warp_(img, v), u))
    err = np.abs(np.asarray(warp_(img, compose_j(u, v))) - ref)[..., 0]
    err_swapped = np.abs(np.asarray(warp_(img, compose_j(v, u))) - ref)[..., 0]
    mask = _valid_cells(np.asarray(u), np.asarray(v))
    # the right order differs only by interpolation error (one vs two resamplings)
    assert err.mean() < 0.04
    assert err[mask].mean() < 0.03
    assert err_swapped.mean() > 3 * err.mean()


# ------------------------------------------------------------------ integrate_velocity


@pytest.mark.parametrize("ndim", NDIMS)
def test_integrate_zero_and_constant_velocity(ndim):
    shape = SHAPES[ndim]
    zero = jnp.zeros((2, *shape, ndim), jnp.float32)
    np.testing.assert_array_equal(np.asarray(integrate_j(zero, steps=7)), 0.0)
    # dyadic translation: every intermediate is exactly representable -> exact result
    t = np.array([0.75, -1.25, 2.5][:ndim])
    out = np.asarray(integrate_j(_constant_field(shape, t), steps=7))
    np.testing.assert_array_equal(out, np.broadcast_to(t, out.shape).astype(np.float32))
    t = np.array([1.37, -0.61, 2.03][:ndim])
    out = np.asarray(integrate_j(_constant_field(shape, t), steps=7))
    np.testing.assert_allclose(out, np.broadcast_to(t, out.shape), atol=1e-5)


@pytest.mark.parametrize("ndim", NDIMS)
def test_integrate_steps_definition(ndim):
    shape = SHAPES[ndim]
    v = smooth_velocity(6, shape, amplitude=1.5, control_spacing=4)
    np.testing.assert_array_equal(np.asarray(integrate_j(v, steps=0)), np.asarray(v))
    half = v / 2.0
    np.testing.assert_allclose(
        np.asarray(integrate_j(v, steps=1)), np.asarray(compose_j(half, half)), atol=1e-6
    )
    quarter = v / 4.0
    two = compose_j(quarter, quarter)
    np.testing.assert_allclose(
        np.asarray(integrate_j(v, steps=2)), np.asarray(compose_j(two, two)), atol=1e-5
    )


def test_integrate_velocity_gradient_float64():
    """Scaling and squaring is reverse-differentiable (fori_loop + custom VJP inside):
    its VJP matches central finite differences in float64."""
    shape = SHAPES[2]
    with jax.enable_x64(True):
        v = jnp.asarray(np.asarray(smooth_velocity(14, shape, amplitude=1.0, control_spacing=4)))
        v = v.astype(jnp.float64) + 0.37  # keep the first sampling positions off the knots
        w = jnp.asarray(np.random.default_rng(15).normal(size=v.shape))

        def f(vel):
            return jnp.sum(integrate_j(vel, steps=3) * w)

        check_grads(f, (v,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
        assert float(jnp.abs(jax.grad(f)(v)).max()) > 0.1


@pytest.mark.parametrize("ndim", NDIMS)
def test_more_squaring_steps_fewer_folds(ndim):
    shape = SHAPES[ndim]
    v = smooth_velocity(7, shape, amplitude=2.0 if ndim == 2 else 1.5, control_spacing=3)
    folds0 = int((np.asarray(jacdet_j(integrate_j(v, steps=0))) <= 0).sum())
    folds7 = int((np.asarray(jacdet_j(integrate_j(v, steps=7))) <= 0).sum())
    assert folds0 > 20  # the plain displacement folds
    assert folds7 < folds0 / 4


@pytest.mark.parametrize("ndim", NDIMS)
def test_exp_v_and_exp_minus_v_are_inverse(ndim):
    shape = SHAPES[ndim]
    v = smooth_velocity(8, shape, amplitude=1.0, control_spacing=8)
    a = np.asarray(integrate_j(v, steps=7))
    b = np.asarray(integrate_j(-v, steps=7))
    assert np.abs(a).max() > 1.0
    grid = np_grid(shape)
    for first, second in ((a, b), (b, a)):
        err = np.linalg.norm(np.asarray(compose_j(first, second)), axis=-1)
        mask = inside_mask(grid + first, shape)
        assert mask.mean() > 0.25
        assert err[mask].mean() < 0.03
        assert err.mean() < 0.07
        # a wrong inverse (the field itself) is far off
        wrong = np.linalg.norm(np.asarray(compose_j(first, first)), axis=-1)
        assert wrong[mask].mean() > 10 * err[mask].mean()


@pytest.mark.parametrize("ndim", NDIMS)
def test_invert_displacement_round_trip(ndim):
    shape = SHAPES[ndim]
    u = np.asarray(smooth_field(9, shape, amplitude=1.0, control_spacing=8, diffeomorphic=True))
    assert 1.5 < np.abs(u).max() < 3.0
    w = np.asarray(invert_j(jnp.asarray(u), iterations=20))
    grid = np_grid(shape)
    # compose(w, u) = w(x) + u(x + w(x)) is the fixed-point residual
    e_wu = np.linalg.norm(np.asarray(compose_j(w, u)), axis=-1)
    m_w = inside_mask(grid + w, shape)
    assert e_wu[m_w].mean() < 0.01
    # compose(u, w) = u(x) + w(x + u(x)): small where x + u(x) stays inside
    e_uw = np.linalg.norm(np.asarray(compose_j(u, w)), axis=-1)
    m_u = inside_mask(grid + u, shape)
    assert m_u.mean() > 0.25
    assert e_uw[m_u].mean() < 0.05
    # the starting guess -u is a much worse inverse
    e_naive = np.linalg.norm(np.asarray(compose_j(-u, u)), axis=-1)
    assert e_naive[m_w].mean() > 5 * e_wu[m_w].mean() + 0.05


# ------------------------------------------------------------------ Jacobians


@pytest.mark.parametrize("ndim", NDIMS)
def test_jacobian_determinant_of_affine_is_det(ndim):
    shape = SHAPES[ndim]
    mats = np.stack([random_affine(10 + b, ndim, scale=0.15) for b in range(2)])
    disp = affine_j(jnp.asarray(mats, jnp.float32), shape=shape)
    det = np.asarray(jacdet_j(disp))
    assert det.shape == (2, *shape)
    for b in range(2):
        expect = np.linalg.det(mats[b, :ndim, :ndim])
        assert abs(expect - 1) > 0.01
        np.testing.assert_allclose(det[b], expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ndim", NDIMS)
def test_jacobian_determinant_matches_numpy_gradient(ndim):
    shape = SHAPES[ndim]
    u = smooth_field(11, shape, amplitude=2.0, control_spacing=3)
    det = np.asarray(jacdet_j(u))
    expect = np_jacobian_det(np.asarray(u))
    assert expect.min() < 0.5 and expect.max() > 1.5  # a field with real variation
    np.testing.assert_allclose(det, expect, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(jacdet_j(jnp.zeros_like(u))), 1.0)


@pytest.mark.parametrize("ndim", NDIMS)
def test_displacement_gradient_matches_numpy(ndim):
    shape = SHAPES[ndim]
    spacing = (0.8, 1.5, 2.0)[:ndim]
    u = np.asarray(smooth_field(12, shape, amplitude=2.0, control_spacing=3))
    g = np.asarray(dispgrad_j(jnp.asarray(u), spacing=spacing))
    assert g.shape == (2, *shape, ndim, ndim)
    for k in range(ndim):
        grads = np.gradient(u[..., k], *spacing, axis=tuple(range(1, ndim + 1)))
        for ell in range(ndim):
            np.testing.assert_allclose(g[..., k, ell], grads[ell], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", NDIMS)
def test_jacobian_determinant_with_spacing_on_physical_field(ndim):
    shape = SHAPES[ndim]
    spacing = (0.8, 1.5, 2.0)[:ndim]
    u_vox = np.asarray(smooth_field(13, shape, amplitude=2.0, control_spacing=3))
    u_mm = u_vox * np.asarray(spacing)
    det_mm = np.asarray(jacdet_j(jnp.asarray(u_mm, jnp.float32), spacing=spacing))
    np.testing.assert_allclose(det_mm, np_jacobian_det(u_mm, spacing), rtol=1e-4, atol=1e-4)
    # a physical field on its grid has the same determinant as the voxel field
    np.testing.assert_allclose(det_mm, np.asarray(jacdet_j(jnp.asarray(u_vox))), atol=1e-4)
    # ... which is not what one gets by forgetting the spacing
    assert np.abs(np.asarray(jacdet_j(jnp.asarray(u_mm, jnp.float32))) - det_mm).max() > 0.1


# ------------------------------------------------------------------ affine fields


@pytest.mark.parametrize("ndim", NDIMS)
def test_affine_identity_and_translation(ndim):
    shape = SHAPES[ndim]
    eye = np.eye(ndim + 1, dtype=np.float32)
    for m in (eye, eye[:ndim], eye[None], np.stack([eye, eye])):
        out = np.asarray(affine_j(jnp.asarray(m), shape=shape))
        assert out.shape == (m.shape[0] if m.ndim == 3 else 1, *shape, ndim)
        np.testing.assert_array_equal(out, 0.0)
    t = np.array([1.5, -2.0, 0.25][:ndim], np.float32)
    m = eye.copy()
    m[:ndim, ndim] = t
    out = np.asarray(affine_j(jnp.asarray(m), shape=shape))
    np.testing.assert_allclose(out, np.broadcast_to(t, out.shape), atol=1e-6)


@pytest.mark.parametrize("ndim", NDIMS)
def test_affine_matches_formula(ndim):
    shape = SHAPES[ndim]
    mats = np.stack([random_affine(20 + b, ndim, scale=0.2) for b in range(2)])
    out = np.asarray(affine_j(jnp.asarray(mats, jnp.float32), shape=shape))
    c = (np.asarray(shape) - 1) / 2.0
    x = np_grid(shape)
    for b in range(2):
        a, t = mats[b, :ndim, :ndim], mats[b, :ndim, ndim]
        phi = (x - c) @ a.T + t + c
        np.testing.assert_allclose(out[b], phi - x, atol=1e-5)


@pytest.mark.parametrize("shape", [(9, 11), (7, 9, 11)])
def test_rotation_about_centre_keeps_centre_fixed(shape):
    ndim = len(shape)
    theta = 0.4
    rot = np.eye(ndim + 1, dtype=np.float32)
    rot[0, 0] = rot[1, 1] = np.cos(theta)
    rot[0, 1], rot[1, 0] = -np.sin(theta), np.sin(theta)
    out = np.asarray(affine_j(jnp.asarray(rot), shape=shape))[0]
    centre = tuple((n - 1) // 2 for n in shape)
    np.testing.assert_allclose(out[centre], 0.0, atol=1e-6)
    # and rotates a point at distance r from it by theta
    p = list(centre)
    p[1] += 3
    np.testing.assert_allclose(
        out[tuple(p)][:2], [-3 * np.sin(theta), 3 * np.cos(theta) - 3], atol=1e-5
    )
    # nothing else is fixed
    assert (np.linalg.norm(out, axis=-1) < 1e-4).sum() == (1 if ndim == 2 else shape[2])


@pytest.mark.parametrize("ndim", NDIMS)
def test_warp_by_affine_matches_scipy_affine_transform(ndim):
    shape = SHAPES[ndim]
    m = random_affine(30, ndim, scale=0.15, shift=1.5)
    a, t = m[:ndim, :ndim], m[:ndim, ndim]
    c = (np.asarray(shape) - 1) / 2.0
    offset = c + t - a @ c
    img = smooth_image(shape, batch=1, channels=ndim) + np.random.default_rng(0).normal(
        scale=0.3, size=(1, *shape, ndim)
    ).astype(np.float32)
    disp = affine_j(jnp.asarray(m, jnp.float32), shape=shape)
    out = np.asarray(warp_(jnp.asarray(img, jnp.float32), disp))
    for ch in range(ndim):
        ref = ndi.affine_transform(
            img[0, ..., ch].astype(np.float64), a, offset=offset, order=1, mode="nearest"
        )
        np.testing.assert_allclose(out[0, ..., ch], ref, atol=2e-5)


def test_affine_bad_matrix_shape_raises():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        sp.affine_to_displacement(jnp.eye(4), (12, 15))


# ------------------------------------------------------------------ resize_field


@pytest.mark.parametrize(
    ("shape_in", "shape_out"), [((12, 15), (7, 29)), ((8, 9, 10), (15, 5, 10))]
)
def test_resize_constant_field_scales_vectors(shape_in, shape_out):
    ndim = len(shape_in)
    t = np.array([1.5, -2.0, 0.7][:ndim])
    out = np.asarray(resize_j(_constant_field(shape_in, t), shape=shape_out))
    assert out.shape == (2, *shape_out, ndim)
    ratio = (np.asarray(shape_out) - 1) / (np.asarray(shape_in) - 1)
    np.testing.assert_allclose(out, np.broadcast_to(t * ratio, out.shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape_in", "shape_out"), [((12, 15), (7, 29)), ((8, 9, 10), (15, 5, 10))]
)
def test_resize_affine_field_stays_affine(shape_in, shape_out):
    """phi_out(y) = R phi_in(R^-1 y): the matrix becomes R A R^-1 and t becomes R t."""
    ndim = len(shape_in)
    mats = np.stack([random_affine(40 + b, ndim, scale=0.2, shift=1.0) for b in range(2)])
    r = np.diag((np.asarray(shape_out) - 1) / (np.asarray(shape_in) - 1))
    mats_out = mats.copy()
    for b in range(2):
        mats_out[b, :ndim, :ndim] = r @ mats[b, :ndim, :ndim] @ np.linalg.inv(r)
        mats_out[b, :ndim, ndim] = r @ mats[b, :ndim, ndim]
    disp_in = affine_j(jnp.asarray(mats, jnp.float32), shape=shape_in)
    out = np.asarray(resize_j(disp_in, shape=shape_out))
    expect = np.asarray(affine_j(jnp.asarray(mats_out, jnp.float32), shape=shape_out))
    np.testing.assert_allclose(out, expect, atol=2e-4)


@pytest.mark.parametrize("ndim", NDIMS)
def test_resize_round_trip(ndim):
    shape = SHAPES[ndim]
    u = np.asarray(smooth_field(50, shape, amplitude=2.0, control_spacing=8))
    # same shape: identity
    np.testing.assert_allclose(np.asarray(resize_j(jnp.asarray(u), shape=shape)), u, atol=1e-6)
    # exact 2x (n -> 2n - 1): the fine grid contains the coarse knots, round trip is exact
    fine = tuple(2 * n - 1 for n in shape)
    up = resize_j(jnp.asarray(u), shape=fine)
    np.testing.assert_allclose(np.asarray(resize_j(up, shape=shape)), u, atol=1e-5)
    assert np.abs(np.asarray(up)).max() > 1.5 * np.abs(u).max()  # vectors doubled
    # generic ratio: close, within interpolation error of a smooth field
    other = tuple(n + 5 for n in shape)
    back = np.asarray(resize_j(resize_j(jnp.asarray(u), shape=other), shape=shape))
    err = np.abs(back - u)
    # (the largest errors sit at the kinks of the piecewise-linear field)
    assert err.mean() < 0.03 * np.abs(u).mean()
    assert err.max() < 0.2 * np.abs(u).max()


def test_resize_bad_shape_raises():
    with pytest.raises(ValueError, match=r"\(5, 6, 7\)"):
        sp.resize_field(jnp.zeros((1, 6, 7, 2)), (5, 6, 7))


def test_field_errors_name_the_shape():
    bad = jnp.zeros((1, 6, 7, 3))
    for fn in (sp.jacobian_determinant, sp.integrate_velocity, sp.invert_displacement):
        with pytest.raises(ValueError, match=r"\(1, 6, 7, 3\)"):
            fn(bad)
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 3\)"):
        sp.compose(bad, jnp.zeros((1, 6, 7, 2)))
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 3\)"):
        sp.compose(jnp.zeros((1, 6, 7, 2)), bad)
    with pytest.raises(ValueError, match="-1"):
        sp.integrate_velocity(jnp.zeros((1, 6, 7, 2)), steps=-1)
