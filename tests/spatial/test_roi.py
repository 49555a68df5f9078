"""Region-of-interest layer (soft centroid, crop, paste) against numpy / scipy.ndimage."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage as ndi

from jrs_jax import spatial as sp

centroid_j = jax.jit(sp.soft_centroid, static_argnames=("spacing",))
crop_j = jax.jit(sp.crop_around, static_argnames=("size",))
paste_j = jax.jit(sp.paste)
paste_back_j = jax.jit(sp.paste_back, static_argnames=("shape", "fill"))

SHAPES = {2: (11, 14), 3: (7, 8, 9)}


def _image(shape, batch=2, channels=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape, channels)).astype(np.float32)


def _soft_masks(shape, k, seed=0):
    """``[2, *S, k]`` non-negative weights: blobs of different mass and position."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, (2, *shape, k)) ** 4
    w[..., 0] *= np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)) >= shape[0] // 2
    return w.astype(np.float32)


# --------------------------------------------------------------------------------------------
# soft_centroid
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("spacing", [None, 2.0, "per_axis"])
def test_soft_centroid_matches_scipy_center_of_mass(ndim, spacing):
    shape = SHAPES[ndim]
    h = (0.5, 2.0, 1.25)[:ndim] if spacing == "per_axis" else spacing
    w = _soft_masks(shape, 3, seed=ndim)
    cents, mass = centroid_j(w, spacing=h)
    assert cents.shape == (2, 3, ndim) and mass.shape == (2, 3)
    scale = np.ones(ndim) if h is None else np.broadcast_to(np.asarray(h, float), (ndim,))
    for b in range(2):
        for k in range(3):
            want = np.asarray(ndi.center_of_mass(w[b, ..., k].astype(np.float64))) * scale
            np.testing.assert_allclose(cents[b, k], want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(mass[b, k], w[b, ..., k].sum(dtype=np.float64), rtol=1e-5)


def test_soft_centroid_hand_value_and_zero_mass_channel():
    w = np.zeros((2, 6, 5, 3), np.float32)
    w[0, 1, 1, 0] = 1.0
    w[0, 3, 3, 0] = 3.0  # centroid (2.5, 2.5)
    w[:, 4, 0:3, 1] = 0.5  # centroid (4, 1), mass 1.5
    # channel 2 and example 1's channel 0 are empty: centroid 0, mass 0
    cents, mass = centroid_j(w)
    np.testing.assert_allclose(cents[0], [[2.5, 2.5], [4.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(cents[1], [[0.0, 0.0], [4.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(mass, [[4.0, 1.5, 0.0], [0.0, 1.5, 0.0]], atol=1e-6)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(sp.soft_centroid(x)[0] ** 2)))(jnp.asarray(w))
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[..., 2], 0.0)  # an empty channel has no gradient
    # hard labels through one_hot give the integer centroid of each class
    lab = np.zeros((1, 6, 5), np.int32)
    lab[0, 1:4, 1:4] = 1
    cents, _ = centroid_j(jax.nn.one_hot(lab, 2))
    np.testing.assert_allclose(cents[0, 1], [2.0, 2.0], atol=1e-6)


def test_soft_centroid_check_grads_float64():
    with jax.enable_x64(True):
        w = jnp.asarray(_soft_masks((5, 4), 2, seed=3).astype(np.float64) + 0.05)
        h = (1.5, 0.5)

        def f(x):
            c, m = sp.soft_centroid(x, spacing=h)
            return jnp.sum(jnp.sin(c)) + jnp.sum(jnp.sqrt(m))

        check_grads(jax.jit(f), (w,), order=1, modes=("rev",))
        assert jax.jit(f)(w).dtype == jnp.float64


def test_soft_centroid_bad_arguments():
    with pytest.raises(ValueError, match="spatial axes"):
        sp.soft_centroid(np.ones((2, 5, 1)))
    with pytest.raises(ValueError, match="spacing"):
        sp.soft_centroid(np.ones((1, 4, 4, 1)), spacing=(1.0, 2.0, 3.0))


# --------------------------------------------------------------------------------------------
# crop_around
# --------------------------------------------------------------------------------------------

# (spatial shape, size, centre, expected start): written out by hand. Odd size k: the centre
# voxel is the crop's middle (start = c - k // 2); even k: start = c - (k / 2 - 1); fractional
# centres round to the nearest window; windows crossing a border are shifted inside.
CROP_CASES = [
    ((11, 14), 5, (5.0, 6.0), (3, 4)),  # interior, odd
    ((11, 14), 4, (5.0, 6.0), (4, 5)),  # interior, even: extra voxel after the centre
    ((11, 14), (3, 6), (5.4, 6.6), (4, 4)),  # 5.4 -> 5 (start 4), 6.6 -> window 4..9
    ((11, 14), 5, (0.0, 13.0), (0, 9)),  # clamped at both ends
    ((11, 14), 5, (-7.0, 40.0), (0, 9)),  # centre outside the image
    ((11, 14), (11, 1), (5.0, 13.0), (0, 13)),  # full extent along axis 0, one voxel along 1
    ((7, 8, 9), 3, (3.0, 4.0, 4.0), (2, 3, 3)),
    ((7, 8, 9), (4, 5, 2), (0.2, 7.9, 4.5), (0, 3, 4)),
]


@pytest.mark.parametrize("shape,size,centre,want", CROP_CASES)
def test_crop_around_matches_numpy_slicing(shape, size, centre, want):
    ndim = len(shape)
    x = _image(shape, seed=len(shape))
    sizes = (size,) * ndim if isinstance(size, int) else size
    # example 1 gets a different centre (the image centre): windows are per example
    mid = tuple(float(n // 2) for n in shape)
    centres = np.asarray([centre, mid], np.float32)
    crop, start = crop_j(x, centres, size=size)
    assert start.dtype == jnp.int32 and start.shape == (2, ndim)
    assert crop.shape == (2, *sizes, x.shape[-1])
    np.testing.assert_array_equal(start[0], want)
    for b in range(2):
        st = [int(s) for s in start[b]]
        assert all(0 <= s and s + k <= n for s, k, n in zip(st, sizes, shape))
        ref = x[(b, *(slice(s, s + k) for s, k in zip(st, sizes)), slice(None))]
        np.testing.assert_array_equal(crop[b], ref)
    # the image centre of example 1 is the window's middle voxel (odd) / middle-left (even)
    np.testing.assert_array_equal(start[1], [n // 2 - (k - 1) // 2 for n, k in zip(shape, sizes)])


def test_crop_around_shared_centre_and_traced_position():
    x = _image((11, 14))
    crop_b, start_b = crop_j(x, np.asarray([[4.0, 5.0], [4.0, 5.0]]), size=3)
    crop_s, start_s = crop_j(x, np.asarray([4.0, 5.0]), size=3)  # [D]: shared by the batch
    np.testing.assert_array_equal(crop_s, crop_b)
    np.testing.assert_array_equal(start_s, start_b)
    # the same compiled function at another centre (the position is traced, not static)
    crop2, _ = crop_j(x, np.asarray([8.0, 2.0]), size=3)
    np.testing.assert_array_equal(crop2, x[:, 7:10, 1:4])


def test_crop_around_gradients():
    with jax.enable_x64(True):
        x = jnp.asarray(_image((6, 7), channels=1).astype(np.float64))
        centre = jnp.asarray([[2.2, 4.0], [5.0, 0.0]])

        def f(img):
            crop, _ = sp.crop_around(img, centre, size=(3, 4))
            return jnp.sum(jnp.sin(crop) * jnp.arange(1.0, 13.0).reshape(1, 3, 4, 1))

        check_grads(jax.jit(f), (x,), order=1, modes=("rev",))
        # the gradient lives in the window only
        g = np.asarray(jax.jit(jax.grad(f))(x))
        _, start = sp.crop_around(x, centre, size=(3, 4))
        for b in range(2):
            inside = np.zeros((6, 7), bool)
            inside[start[b, 0] : start[b, 0] + 3, start[b, 1] : start[b, 1] + 4] = True
            assert np.all(g[b, ~inside] == 0) and np.all(g[b, inside] != 0)

        # the centre is not differentiated (stop_gradient): exactly zero, not NaN
        def h(c):
            crop, _ = sp.crop_around(x, c, size=3)
            return jnp.sum(crop)

        gc = jax.jit(jax.grad(h))(centre)
        np.testing.assert_array_equal(gc, 0.0)


def test_crop_around_bad_arguments():
    x = _image((11, 14))
    with pytest.raises(ValueError, match=r"axis 1.*exceeds"):
        sp.crop_around(x, np.zeros((2, 2)), size=(5, 15))
    with pytest.raises(ValueError, match=r"axis 0.*exceeds"):
        sp.crop_around(x, np.zeros((2, 2)), size=12)
    with pytest.raises(ValueError, match="centre"):
        sp.crop_around(x, np.zeros((3, 2)), size=3)
    with pytest.raises(ValueError, match="size"):
        sp.crop_around(x, np.zeros((2, 2)), size=(3, 3, 3))
    with pytest.raises(ValueError, match="size"):
        sp.crop_around(x, np.zeros((2, 2)), size=0)
    with pytest.raises(ValueError, match="spatial axes"):
        sp.crop_around(x[..., 0], np.zeros((2, 1)), size=3)


# --------------------------------------------------------------------------------------------
# paste / paste_back
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("fill", [0.0, -2.5])
def test_paste_back_of_crop_is_image_in_window_and_fill_outside(ndim, fill):
    shape = SHAPES[ndim]
    x = _image(shape, seed=5)
    size = (4, 3, 5)[:ndim]
    centres = np.asarray([[1.0] * ndim, [n - 3.0 for n in shape]], np.float32)
    crop, start = crop_j(x, centres, size=size)
    full = paste_back_j(crop, start, shape=shape, fill=fill)
    assert full.shape == x.shape
    inside = np.zeros(x.shape, bool)
    for b in range(2):
        inside[(b, *(slice(int(s), int(s) + k) for s, k in zip(start[b], size)))] = True
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(np.asarray(full)[inside], x[inside])
    np.testing.assert_array_equal(np.asarray(full)[~inside], fill)


def test_paste_into_canvas_matches_numpy_assignment():
    rng = np.random.default_rng(3)
    canvas = rng.normal(size=(2, 7, 8, 6, 2)).astype(np.float32)
    crop = rng.normal(size=(2, 3, 2, 4, 2)).astype(np.float32)
    start = np.asarray([[0, 6, 2], [4, 1, 0]], np.int32)
    out = paste_j(crop, start, canvas)
    want = canvas.copy()
    for b in range(2):
        i, j, k = start[b]
        want[b, i : i + 3, j : j + 2, k : k + 4] = crop[b]
    np.testing.assert_array_equal(out, want)
    # round trip: the crop at the same start reads back what was pasted
    back, _ = crop_j(out, start.astype(np.float32) + np.asarray([1.0, 0.0, 1.0]), size=(3, 2, 4))
    np.testing.assert_array_equal(back, crop)


def test_paste_gradients_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        canvas = jnp.asarray(rng.normal(size=(2, 5, 6, 1)))
        crop = jnp.asarray(rng.normal(size=(2, 2, 3, 1)))
        start = jnp.asarray([[3, 0], [1, 2]], jnp.int32)
        weight = jnp.asarray(rng.normal(size=(1, 5, 6, 1)))

        def f(cr, cv):
            return jnp.sum(jnp.sin(sp.paste(cr, start, cv)) * weight)

        check_grads(jax.jit(f), (crop, canvas), order=1, modes=("rev",))

        def g(cr):
            return jnp.sum(jnp.sin(sp.paste_back(cr, start, shape=(5, 6), fill=1.0)) * weight)

        check_grads(jax.jit(g), (crop,), order=1, modes=("rev",))
        # the canvas gets no gradient under the window
        gcv = jax.jit(jax.grad(f, argnums=1))(crop, canvas)
        np.testing.assert_array_equal(gcv[0, 3:5, 0:3], 0.0)
        assert np.all(gcv[0, :3] != 0)


def test_paste_bad_arguments():
    canvas = np.zeros((2, 5, 6, 1), np.float32)
    with pytest.raises(ValueError, match="exceeds"):
        sp.paste(np.zeros((2, 6, 2, 1)), np.zeros((2, 2), np.int32), canvas)
    with pytest.raises(ValueError, match="share"):
        sp.paste(np.zeros((2, 2, 2, 3)), np.zeros((2, 2), np.int32), canvas)
    with pytest.raises(ValueError, match="integer"):
        sp.paste(np.zeros((2, 2, 2, 1)), np.zeros((2, 2), np.float32), canvas)
    with pytest.raises(ValueError, match="start"):
        sp.paste(np.zeros((2, 2, 2, 1)), np.zeros((3, 2), np.int32), canvas)
    with pytest.raises(ValueError, match="shape"):
        sp.paste_back(np.zeros((2, 2, 2, 1)), np.zeros((2, 2), np.int32), shape=(5, 6, 7))
