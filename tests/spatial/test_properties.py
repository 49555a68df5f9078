"""Property-based tests (hypothesis) of the coordinate contract.

Shapes are fixed per dimension so every jitted function compiles once; hypothesis draws the
translations, matrices, amplitudes, values and PRNG seeds.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi
from spatial_helpers import (
    SHAPES,
    affine_j,
    compose_j,
    inside_mask,
    integrate_j,
    jacdet_j,
    np_grid,
    random_image,
    smooth_field,
    smooth_velocity,
    warp_,
)

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ndims = st.sampled_from([2, 3])
seeds = st.integers(0, 2**31 - 1)


def _constant_field(shape, vec, batch=2):
    return jnp.broadcast_to(jnp.asarray(vec, jnp.float32), (batch, *shape, len(shape)))


@SETTINGS
@given(ndim=ndims, data=st.data(), seed=seeds)
def test_integer_translation_is_a_shift(ndim, data, seed):
    shape = SHAPES[ndim]
    t = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=ndim, max_size=ndim)))
    img = random_image(seed % 1000, shape, channels=3)
    out = np.asarray(warp_(jnp.asarray(img), _constant_field(shape, t)))
    # out[x] = img[x + t] wherever x + t is inside (np.roll by -t, without the wrap-around)
    rolled = np.roll(img, shift=tuple(-t), axis=tuple(range(1, ndim + 1)))
    grid = np_grid(shape)
    keep = inside_mask(grid + t, shape)
    np.testing.assert_array_equal(out[:, keep], rolled[:, keep])
    # elsewhere the border padding reads the clamped voxel
    idx = np.clip(grid + t, 0, np.asarray(shape) - 1).astype(int)
    clamped = img[(slice(None), *np.moveaxis(idx, -1, 0))]
    np.testing.assert_array_equal(out, clamped)


@SETTINGS
@given(ndim=ndims, data=st.data(), seed=seeds)
def test_fractional_translation_matches_scipy_shift(ndim, data, seed):
    shape = SHAPES[ndim]
    t = np.array(
        data.draw(
            st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=ndim, max_size=ndim)
        ),
        dtype=np.float32,
    )
    img = random_image(seed % 1000, shape, channels=3)
    out = np.asarray(warp_(jnp.asarray(img), _constant_field(shape, t)))
    for b in range(2):
        for c in range(3):
            ref = ndi.shift(
                img[b, ..., c].astype(np.float64), -t.astype(np.float64), order=1, mode="nearest"
            )
            np.testing.assert_allclose(out[b, ..., c], ref, atol=1e-5, rtol=1e-5)


@SETTINGS
@given(ndim=ndims, seed=seeds, amplitude=st.floats(0.1, 4.0))
def test_compose_with_zero_is_identity(ndim, seed, amplitude):
    shape = SHAPES[ndim]
    u = smooth_field(seed, shape, amplitude=amplitude, control_spacing=4)
    zero = jnp.zeros_like(u)
    np.testing.assert_array_equal(np.asarray(compose_j(u, zero)), np.asarray(u))
    np.testing.assert_array_equal(np.asarray(compose_j(zero, u)), np.asarray(u))


_BIG = float(np.float32(1e30))
# no subnormals: XLA on CPU flushes denormals to zero in arithmetic (1.0 * 1e-45 -> 0)
finite32 = st.floats(
    -_BIG, _BIG, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32
)


@SETTINGS
@given(
    img=hnp.arrays(np.float32, (2, *SHAPES[2], 2), elements=finite32),
    padding=st.sampled_from(["border", "zeros", "constant"]),
    order=st.sampled_from([0, 1]),
)
def test_warp_by_zero_is_exact_identity(img, padding, order):
    zero = jnp.zeros((2, *SHAPES[2], 2), jnp.float32)
    out = np.asarray(warp_(jnp.asarray(img), zero, order=order, padding=padding, cval=2.5))
    np.testing.assert_array_equal(out, img)


@SETTINGS
@given(
    ndim=ndims,
    seed=seeds,
    value=st.floats(-100, 100, allow_nan=False, width=32),
    amplitude=st.floats(0.1, 6.0),
)
def test_constant_image_stays_constant_with_border_padding(ndim, seed, value, amplitude):
    shape = SHAPES[ndim]
    u = smooth_field(seed, shape, amplitude=amplitude, control_spacing=4)
    img = jnp.full((2, *shape, 1), value, jnp.float32)
    out = np.asarray(warp_(img, u))
    np.testing.assert_allclose(out, np.float32(value), rtol=1e-6, atol=1e-6)


def _matrix(entries, ndim):
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] += np.asarray(entries[: ndim * ndim]).reshape(ndim, ndim)
    m[:ndim, ndim] = entries[ndim * ndim : ndim * ndim + ndim]
    return m


@SETTINGS
@given(
    ndim=ndims,
    a=st.lists(st.floats(-0.15, 0.15), min_size=12, max_size=12),
    b=st.lists(st.floats(-0.15, 0.15), min_size=12, max_size=12),
)
def test_jacobian_of_composed_affines_is_product_of_dets(ndim, a, b):
    shape = SHAPES[ndim]
    ma, mb = _matrix(a, ndim), _matrix(b, ndim)
    u = affine_j(jnp.asarray(ma[None], jnp.float32), shape=shape)
    v = affine_j(jnp.asarray(mb[None], jnp.float32), shape=shape)
    det = np.asarray(jacdet_j(compose_j(u, v)))[0]
    expect = np.linalg.det(ma[:ndim, :ndim]) * np.linalg.det(mb[:ndim, :ndim])
    # v is linear, so its interpolation is exact wherever x + u(x) is inside (no clamping);
    # the finite differences also read the neighbours: erode by one voxel
    inside = inside_mask(np_grid(shape) + np.asarray(u)[0], shape)
    keep = ndi.binary_erosion(inside, border_value=1)
    assert keep.sum() > 20  # at least 76 for the extreme matrices of the drawn range
    np.testing.assert_allclose(det[keep], expect, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(ndim=ndims, seed=seeds, amplitude=st.floats(0.05, 1.0))
def test_exp_of_v_and_minus_v_compose_to_zero(ndim, seed, amplitude):
    shape = SHAPES[ndim]
    v = smooth_velocity(seed, shape, amplitude=amplitude, control_spacing=8)
    a = np.asarray(integrate_j(v, steps=7))
    b = np.asarray(integrate_j(-v, steps=7))
    grid = np_grid(shape)
    for first, second in ((a, b), (b, a)):
        err = np.linalg.norm(np.asarray(compose_j(first, second)), axis=-1)
        keep = inside_mask(grid + first, shape)
        # interpolation error of the squarings grows like amplitude^2: worst of 30 seeds in 3-D
        # was 0.0034 / 0.017 / 0.038 / 0.043 voxel at amplitude 0.2 / 0.5 / 0.8 / 1.0
        assert err[keep].mean() < 0.08 * amplitude**2 + 0.003
