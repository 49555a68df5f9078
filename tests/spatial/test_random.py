"""Random smooth fields: determinism, shapes, amplitude, smoothness, invertibility."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from spatial_helpers import SHAPES, integrate_j, jacdet_j, rand_disp_j, rand_vel_j

KEY = jax.random.PRNGKey(1)


def vel(key, shape, *, batch=2, amplitude=2.0, control_spacing=8, dtype=jnp.float32):
    """``random_velocity`` through the jitted wrapper with every static argument passed."""
    return rand_vel_j(
        key,
        shape,
        batch_size=batch,
        amplitude=amplitude,
        control_spacing=control_spacing,
        dtype=dtype,
    )


def disp(key, shape, *, diffeomorphic=True, batch=2, amplitude=2.0, dtype=jnp.float32):
    return rand_disp_j(
        key,
        shape,
        batch_size=batch,
        amplitude=amplitude,
        control_spacing=8,
        diffeomorphic=diffeomorphic,
        steps=7,
        dtype=dtype,
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_same_key_same_field_different_key_different_field(ndim):
    shape = SHAPES[ndim]
    a = np.asarray(vel(KEY, shape))
    b = np.asarray(vel(KEY, shape))
    c = np.asarray(vel(jax.random.PRNGKey(2), shape))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5
    assert np.abs(a[0] - a[1]).mean() > 0.5  # batch elements are independent draws
    d1 = np.asarray(disp(KEY, shape))
    d2 = np.asarray(disp(KEY, shape))
    np.testing.assert_array_equal(d1, d2)
    assert np.abs(d1 - np.asarray(disp(jax.random.PRNGKey(2), shape))).mean() > 0.5


@pytest.mark.parametrize("ndim", [2, 3])
def test_shapes_and_dtypes(ndim):
    shape = SHAPES[ndim]
    v = vel(KEY, shape)
    assert v.shape == (2, *shape, ndim) and v.dtype == jnp.float32
    u = disp(KEY, shape)
    assert u.shape == (2, *shape, ndim) and u.dtype == jnp.float32
    u = disp(KEY, shape, diffeomorphic=False)
    assert u.shape == (2, *shape, ndim) and u.dtype == jnp.float32


def test_float64():
    shape = SHAPES[2]
    with jax.enable_x64(True):
        v64 = vel(KEY, shape, batch=1, dtype=jnp.float64)
        assert v64.dtype == jnp.float64 and v64.shape == (1, *shape, 2)
        u64 = disp(KEY, shape, batch=1, dtype=jnp.float64)
        assert u64.dtype == jnp.float64 and u64.shape == (1, *shape, 2)
        assert bool(jnp.all(jnp.isfinite(u64)))
        assert float(jnp.abs(u64).max()) > 0.5


@pytest.mark.parametrize("ndim", [2, 3])
def test_wiring_of_random_displacement(ndim):
    """diffeomorphic=False is the velocity itself; True is its scaling-and-squaring exp."""
    shape = SHAPES[ndim]
    v = vel(KEY, shape)
    plain = disp(KEY, shape, diffeomorphic=False)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(v))
    exp = disp(KEY, shape, diffeomorphic=True)
    np.testing.assert_allclose(np.asarray(exp), np.asarray(integrate_j(v, steps=7)), atol=1e-5)
    assert np.abs(np.asarray(exp) - np.asarray(v)).mean() > 0.01


def test_amplitude():
    shape = SHAPES[2]
    amp = 2.5
    v = np.asarray(vel(KEY, shape, batch=64, amplitude=amp))
    # the corners are control points: N(0, amp^2) exactly there (512 samples)
    corners = v[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert 0.85 * amp < corners.std() < 1.15 * amp
    assert abs(corners.mean()) < 0.2 * amp
    # between control points linear interpolation lowers the spread a little
    assert 0.5 * amp < v.std() < 1.1 * amp
    # amplitude is a pure scale
    v1 = np.asarray(vel(KEY, shape, batch=64, amplitude=1.0))
    np.testing.assert_allclose(v, amp * v1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_smoothness(ndim):
    shape = SHAPES[ndim]
    amp = 2.0
    smooth = np.asarray(vel(KEY, shape, amplitude=amp, control_spacing=8))
    rough = np.asarray(vel(KEY, shape, amplitude=amp, control_spacing=3))
    white_noise_diff = 2 / np.sqrt(np.pi) * smooth.std()  # E|X - Y| for iid N(0, s^2)

    def mean_neighbour_diff(f):
        return np.mean([np.abs(np.diff(f, axis=ax)).mean() for ax in range(1, ndim + 1)])

    assert mean_neighbour_diff(smooth) < 0.25 * amp
    assert mean_neighbour_diff(smooth) < 0.3 * white_noise_diff
    # finer control grid: rougher field
    assert mean_neighbour_diff(rough) > 1.3 * mean_neighbour_diff(smooth)
    # piecewise linear between control points: second differences vanish away from them
    # (last axis: 15 or 10 voxels, 3 control points, knots at 0, 7 / 4.5, 14 / 9)
    second = np.abs(np.diff(smooth, n=2, axis=ndim))
    assert np.median(second) < 1e-5
    assert second.max() > 0.01


@pytest.mark.parametrize("ndim", [2, 3])
def test_diffeomorphic_displacement_does_not_fold(ndim):
    shape = SHAPES[ndim]
    folds = 0
    for seed in (1, 3, 4):
        key = jax.random.PRNGKey(seed)
        det = np.asarray(jacdet_j(disp(key, shape, diffeomorphic=True)))
        assert det.min() > 0.05
        # the same velocity used directly as a displacement folds: the check is not vacuous
        folds += int((np.asarray(jacdet_j(disp(key, shape, diffeomorphic=False))) <= 0).sum())
    assert folds > 0


def test_singleton_spatial_axis_gives_finite_field():
    """A 3-D shape with one slice (e.g. (1, H, W)) must not produce NaN: the vector rescaling
    divides by (n - 1) / (c - 1) = 0 along the singleton axis."""
    shape = (1, 12, 15)
    v = np.asarray(vel(KEY, shape))
    assert v.shape == (2, *shape, 3)
    assert np.isfinite(v).all(), f"NaN per component: {np.isnan(v).sum(axis=(0, 1, 2, 3))}"
    u = np.asarray(disp(KEY, shape))
    assert np.isfinite(u).all(), f"{np.isnan(u).mean():.0%} of random_displacement is NaN"
