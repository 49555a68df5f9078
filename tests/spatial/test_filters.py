"""Separable filters against scipy.ndimage (spatial axes only: batch and channels untouched)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi
from spatial_helpers import SHAPES, box_j, filter1d_j, gauss_j, random_image

from jrs_jax import spatial as sp

# our padding -> scipy.ndimage mode
SCIPY_MODES = {
    "zeros": "constant",
    "edge": "nearest",
    "symmetric": "reflect",
    "reflect": "mirror",
    "wrap": "wrap",
}


def _x(ndim, seed=0):
    # distinct batches and channels, so mixing either up changes the result
    return random_image(seed, SHAPES[ndim], batch=2, channels=3)


def _spatial(values, ndim):
    """scipy per-axis argument that leaves batch and channel axes alone."""
    return (0, *values, 0) if isinstance(values[0], float) else (1, *values, 1)


@pytest.mark.parametrize(
    ("ndim", "size"),
    [(2, 3), (2, 5), (2, (3, 5)), (2, (1, 3)), (3, 3), (3, (5, 1, 3)), (3, (3, 5, 3))],
)
def test_box_filter_sum_and_mean(ndim, size):
    x = _x(ndim)
    sizes = (size,) * ndim if isinstance(size, int) else size
    ref_mean = ndi.uniform_filter(x.astype(np.float64), size=_spatial(sizes, ndim), mode="constant")
    out = np.asarray(box_j(jnp.asarray(x), size))
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref_mean * np.prod(sizes), rtol=1e-5, atol=1e-5)
    out_mean = np.asarray(box_j(jnp.asarray(x), size, normalize=True))
    np.testing.assert_allclose(out_mean, ref_mean, rtol=1e-5, atol=1e-6)


def test_box_filter_by_hand_and_even_size():
    x = _x(2)
    # window sum by hand, odd size 3 with zero padding
    p = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    n0, n1 = x.shape[1:3]
    hand = sum(p[:, i : i + n0, j : j + n1] for i in range(3) for j in range(3))
    np.testing.assert_allclose(np.asarray(box_j(jnp.asarray(x), 3)), hand, rtol=1e-5, atol=1e-5)
    # even size 4: documented window [i - 1, i + 2] (extra tap after the centre)
    p = np.pad(x.astype(np.float64), ((0, 0), (1, 2), (1, 2), (0, 0)))
    hand = sum(p[:, i : i + n0, j : j + n1] for i in range(4) for j in range(4))
    np.testing.assert_allclose(np.asarray(box_j(jnp.asarray(x), 4)), hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["edge", "symmetric", "reflect", "wrap"])
def test_box_filter_other_paddings(padding):
    x = _x(3, seed=1)
    out = np.asarray(box_j(jnp.asarray(x), 3, normalize=True, padding=padding))
    ref = ndi.uniform_filter(x.astype(np.float64), size=(1, 3, 3, 3, 1), mode=SCIPY_MODES[padding])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("sigma", "truncate"), [(1.0, 4.0), ((0.7, 1.6, 0.0), 4.0), ((2.0, 0.8, 1.2), 2.5)]
)
@pytest.mark.parametrize("ndim", [2, 3])
def test_gaussian_filter_matches_scipy(ndim, sigma, truncate):
    sig = (float(sigma),) * ndim if isinstance(sigma, float) else tuple(sigma[:ndim])
    x = _x(ndim, seed=2)
    for padding in ("zeros", "symmetric"):
        out = np.asarray(gauss_j(jnp.asarray(x), sig, truncate=truncate, padding=padding))
        ref = ndi.gaussian_filter(
            x.astype(np.float64),
            sigma=_spatial(sig, ndim),
            mode=SCIPY_MODES[padding],
            truncate=truncate,
        )
        assert out.shape == x.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", ["edge", "reflect", "wrap"])
def test_gaussian_filter_other_paddings_and_wide_kernel(padding):
    # sigma 3 -> radius 12, wider than the 8-voxel axis: the padding wraps more than once
    sig = (3.0, 1.0, 0.5)
    x = _x(3, seed=3)
    out = np.asarray(gauss_j(jnp.asarray(x), sig, truncate=4.0, padding=padding))
    ref = ndi.gaussian_filter(x.astype(np.float64), sigma=(0, *sig, 0), mode=SCIPY_MODES[padding])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("sigma", "truncate"), [(0.5, 4.0), (1.3, 4.0), (2.0, 3.0)])
def test_gaussian_kernel_matches_scipy_impulse_response(sigma, truncate):
    taps = sp.gaussian_kernel_1d(sigma, truncate=truncate)
    radius = int(truncate * sigma + 0.5)
    assert taps.shape == (2 * radius + 1,)
    delta = np.zeros(41)
    delta[20] = 1.0
    ref = ndi.gaussian_filter1d(delta, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(taps, ref[20 - radius : 21 + radius], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref.sum(), taps.sum())
    np.testing.assert_array_equal(sp.gaussian_kernel_1d(0.0), [1.0])


@pytest.mark.parametrize("axis", [1, 2, -2])
@pytest.mark.parametrize("padding", ["zeros", "edge", "symmetric", "reflect", "wrap"])
def test_filter_1d_asymmetric_taps(padding, axis):
    x = _x(3, seed=4)
    for taps in ((0.2, -1.0, 0.5), (0.1, 0.5, -0.3, 0.7)):
        out = np.asarray(filter1d_j(jnp.asarray(x), taps, axis, padding=padding))
        # odd length: centred (origin 0); even length: extra tap after the centre (origin -1)
        origin = 0 if len(taps) % 2 else -1
        ref = ndi.correlate1d(
            x.astype(np.float64), taps, axis=axis, mode=SCIPY_MODES[padding], origin=origin
        )
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_filter_1d_correlates_rather_than_convolves():
    x = jnp.zeros((1, 7, 1, 1)).at[0, 3, 0, 0].set(1.0)
    out = np.asarray(filter1d_j(x, (1.0, 2.0, 3.0), 1))[0, :, 0, 0]
    # out[i] = sum_t taps[t] x[i + t - 1]: the impulse at 3 shows the taps reversed
    np.testing.assert_array_equal(out, [0, 0, 3, 2, 1, 0, 0])


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_integer_input_is_not_truncated(dtype):
    """Non-unit taps on an integer image must not be cast to the integer dtype (-> 0).

    The output keeps the input dtype (as documented), so allow 1 of rounding/truncation.
    """
    x = rng_int(dtype)
    xf = x.astype(np.float64)
    cases = {
        "box mean": (
            box_j(jnp.asarray(x), 3, normalize=True),
            ndi.uniform_filter(xf, size=(1, 3, 3, 1), mode="constant"),
        ),
        "gaussian": (
            gauss_j(jnp.asarray(x), (1.0, 1.0), truncate=4.0, padding="zeros"),
            ndi.gaussian_filter(xf, sigma=(0, 1.0, 1.0, 0), mode="constant"),
        ),
        "filter_1d": (
            filter1d_j(jnp.asarray(x), (0.25, 0.5, 0.25), 1, padding="zeros"),
            ndi.correlate1d(xf, [0.25, 0.5, 0.25], axis=1, mode="constant"),
        ),
    }
    wrong = {
        name: float(np.abs(np.asarray(out).astype(np.float64) - ref).max())
        for name, (out, ref) in cases.items()
    }
    assert all(err <= 1.0 for err in wrong.values()), f"max abs error per filter: {wrong}"
    # the plain window sum (unit taps) of small integers is exact in float32
    np.testing.assert_allclose(
        np.asarray(box_j(jnp.asarray(x), 3)),
        ndi.uniform_filter(xf, (1, 3, 3, 1), mode="constant") * 9,
        rtol=1e-6,
    )


def rng_int(dtype):
    return np.random.default_rng(7).integers(0, 1000, size=(2, *SHAPES[2], 1)).astype(dtype)


def test_numpy_scalar_sigma_and_size():
    """A numpy scalar is a scalar: ``gaussian_filter(x, np.float32(1))`` must work like 1.0."""
    x = jnp.asarray(_x(2, seed=5))
    ref_g = np.asarray(sp.gaussian_filter(x, 1.0))
    ref_b = np.asarray(sp.box_filter(x, 3))
    failures = []
    for sigma in (np.float32(1.0), np.int64(1)):
        try:
            np.testing.assert_allclose(np.asarray(sp.gaussian_filter(x, sigma)), ref_g, atol=1e-6)
        except TypeError as e:
            failures.append(f"gaussian_filter(x, {sigma!r}): TypeError: {e}")
    for size in (np.int64(3), np.int32(3)):
        try:
            np.testing.assert_allclose(np.asarray(sp.box_filter(x, size)), ref_b, atol=1e-5)
        except TypeError as e:
            failures.append(f"box_filter(x, {size!r}): TypeError: {e}")
    assert not failures, "\n".join(failures)


def test_filter_errors():
    x = jnp.zeros((1, 6, 7, 1))
    with pytest.raises(ValueError, match="'mirror'"):
        sp.filter_1d(x, [1.0], 1, padding="mirror")
    with pytest.raises(ValueError, match="'nearest'"):
        sp.gaussian_filter(x, 1.0, padding="nearest")
    with pytest.raises(ValueError, match=r"\(3, 3, 3\)"):
        sp.box_filter(x, (3, 3, 3))
