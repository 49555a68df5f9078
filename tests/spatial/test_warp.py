"""``warp`` / ``sample`` / ``warp_labels`` against scipy and hand-computed references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from spatial_helpers import (
    CVAL,
    SCIPY_PADDING,
    SHAPES,
    forward_difference,
    map_coordinates_ref,
    np_grid,
    random_image,
    rng,
    sample_j,
    smooth_field,
    warp_,
    warp_labels_j,
)

from jrs_jax import spatial as sp

PADDINGS = ("border", "zeros", "constant")


def _coords(disp) -> np.ndarray:
    """Absolute sampling coordinates exactly as warp forms them (float32 ``grid + disp``)."""
    disp = np.asarray(disp)
    grid = np_grid(disp.shape[1:-1]).astype(disp.dtype)
    return grid + disp


def _no_tie(coords: np.ndarray) -> np.ndarray:
    """Mask of points with no component exactly halfway between two voxel centres.

    jnp.round rounds half to even, scipy's order-0 lookup rounds half up; the contract does not
    specify ties. They have measure zero for random float fields, so we exclude the (rare) exact
    ties and assert that they are rare.
    """
    frac = coords - np.floor(coords)
    return ~np.any(frac == 0.5, axis=-1)


# ------------------------------------------------------------------ warp vs scipy


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_matches_map_coordinates(ndim, order, padding, channels):
    shape = SHAPES[ndim]
    img = random_image(10 + ndim, shape, batch=2, channels=channels)
    disp = smooth_field(ndim + 7 * channels, shape, amplitude=3.0, control_spacing=4)
    coords = _coords(disp)
    # the field must send a good part of the samples outside, or padding is not exercised
    outside = ~np.all((coords >= 0) & (coords <= np.array(shape) - 1), axis=-1)
    assert outside.mean() > 0.05
    mode, cval = SCIPY_PADDING[padding]
    out = np.asarray(warp_(jnp.asarray(img), disp, order=order, padding=padding, cval=cval))
    ref = map_coordinates_ref(img, coords, order=order, mode=mode, cval=cval)
    assert out.shape == (2, *shape, channels)
    assert out.dtype == np.float32
    if order == 0:
        keep = _no_tie(coords)
        assert keep.mean() > 0.999
        np.testing.assert_array_equal(out[keep], ref[keep].astype(np.float32))
    else:
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("ndim", [2, 3])
def test_sample_output_grid_of_other_shape(ndim, order, padding):
    shape = SHAPES[ndim]
    out_shape = (7, 5) if ndim == 2 else (4, 6, 5)
    img = random_image(3, shape, batch=2, channels=2)
    r = rng(4)
    lo, hi = -2.5, np.array(shape) + 1.5
    coords = r.uniform(lo, hi, size=(2, *out_shape, ndim)).astype(np.float32)
    mode, cval = SCIPY_PADDING[padding]
    out = np.asarray(
        sample_j(jnp.asarray(img), jnp.asarray(coords), order=order, padding=padding, cval=cval)
    )
    assert out.shape == (2, *out_shape, 2)
    ref = map_coordinates_ref(img, coords, order=order, mode=mode, cval=cval)
    keep = _no_tie(coords)
    np.testing.assert_allclose(out[keep], ref[keep], atol=1e-5, rtol=1e-5)
    # a batch-1 coordinate array broadcasts over the image batch
    out1 = np.asarray(
        sample_j(jnp.asarray(img), jnp.asarray(coords[:1]), order=order, padding=padding, cval=cval)
    )
    ref1 = map_coordinates_ref(img, coords[:1], order=order, mode=mode, cval=cval)
    keep1 = np.broadcast_to(keep[:1], out1.shape[:-1])
    np.testing.assert_allclose(out1[keep1], ref1[keep1], atol=1e-5, rtol=1e-5)


def test_docstring_example():
    img = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 5, 4, 1))
    u = jnp.zeros((1, 5, 4, 2)).at[..., 0].set(1.0)
    np.testing.assert_array_equal(np.asarray(warp_(img, u)[0, :, 0, 0]), [1, 2, 3, 4, 4])


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
@pytest.mark.parametrize("order", [0, 1])
def test_integer_image(order, dtype):
    """Integer images (e.g. int16 CT from NIfTI) must be interpolated, not zeroed.

    Whatever the output dtype (the docstring promises the image dtype), every value must be
    within 1 of the float interpolation (rounding or truncation of the exact value).
    """
    shape = SHAPES[2]
    img = (rng(5).integers(-1000, 1000, size=(2, *shape, 1))).astype(dtype)
    disp = smooth_field(6, shape, amplitude=3.0, control_spacing=4)
    coords = _coords(disp)
    ref = map_coordinates_ref(img.astype(np.float64), coords, order=order, mode="nearest")
    out = np.asarray(warp_(jnp.asarray(img), disp, order=order)).astype(np.float64)
    keep = _no_tie(coords)
    bad = np.abs(out - ref)[keep] > 1.0
    assert not bad.any(), (
        f"{bad.mean():.0%} of the samples differ by more than 1 from linear interpolation; "
        f"e.g. got {out[keep][bad][:3]} instead of {ref[keep][bad][:3]}"
    )


# ------------------------------------------------------------------ translations (ij order)


def _constant_field(shape, vec, batch=2):
    return jnp.broadcast_to(jnp.asarray(vec, jnp.float32), (batch, *shape, len(shape)))


def _shifted_view(img, axis, lo, hi):
    """``img`` restricted to ``lo <= x_axis < hi`` along spatial ``axis`` (0-based)."""
    sl = [slice(None)] * img.ndim
    sl[axis + 1] = slice(lo, hi)
    return img[tuple(sl)]


@pytest.mark.parametrize("t", [1, 2, -3])
@pytest.mark.parametrize("ndim", [2, 3])
def test_integer_translation_moves_content_along_each_axis(ndim, t):
    shape = SHAPES[ndim]
    img = random_image(20, shape, channels=2)
    for k in range(ndim):
        vec = np.zeros(ndim)
        vec[k] = t
        out = np.asarray(warp_(jnp.asarray(img), _constant_field(shape, vec)))
        n = shape[k]
        # out[x] == img[x + t e_k] wherever x + t e_k is inside
        lo, hi = max(0, -t), min(n, n - t)
        np.testing.assert_array_equal(
            _shifted_view(out, k, lo, hi), _shifted_view(img, k, lo + t, hi + t)
        )
        # outside, border padding repeats the edge slice
        edge = 0 if t < 0 else n - 1
        rest = slice(0, lo) if t < 0 else slice(hi, n)
        expect = np.broadcast_to(
            _shifted_view(img, k, edge, edge + 1),
            _shifted_view(out, k, rest.start, rest.stop).shape,
        )
        np.testing.assert_array_equal(_shifted_view(out, k, rest.start, rest.stop), expect)


@pytest.mark.parametrize("t", [1.3, -0.6, 2.75])
@pytest.mark.parametrize("ndim", [2, 3])
def test_fractional_translation_is_linear_interpolation(ndim, t):
    shape = SHAPES[ndim]
    img = random_image(21, shape, channels=1).astype(np.float64)
    f = np.floor(t)
    a = t - f
    f = int(f)
    for k in range(ndim):
        vec = np.zeros(ndim)
        vec[k] = t
        out = np.asarray(warp_(jnp.asarray(img, jnp.float32), _constant_field(shape, vec)))
        n = shape[k]
        lo, hi = max(0, -f), min(n, n - f - 1)  # both taps x+f and x+f+1 inside
        expect = (1 - a) * _shifted_view(img, k, lo + f, hi + f) + a * _shifted_view(
            img, k, lo + f + 1, hi + f + 1
        )
        np.testing.assert_allclose(_shifted_view(out, k, lo, hi), expect, atol=1e-5, rtol=1e-5)


def test_translation_is_not_xy_swapped_on_non_square_image():
    # a field along axis 1 only must shift columns; content varying only along axis 1
    shape = (6, 9)
    col = np.arange(9, dtype=np.float32) ** 2
    img = np.broadcast_to(col[None, None, :, None], (1, *shape, 1))
    u = _constant_field(shape, [0.0, 2.0], batch=1)
    out = np.asarray(warp_(jnp.asarray(img), u))[0, :, :, 0]
    np.testing.assert_array_equal(out[:, :7], np.broadcast_to(col[2:], (6, 7)))
    u = _constant_field(shape, [2.0, 0.0], batch=1)
    out = np.asarray(warp_(jnp.asarray(img), u))[0, :, :, 0]
    np.testing.assert_array_equal(out, img[0, :, :, 0])


# ------------------------------------------------------------------ gradients


def _off_knot_field(seed, shape, dtype):
    """A smooth field rounded to integers plus a fraction in [0.15, 0.85]: no coordinate lies
    within 0.15 of a knot (or of a zeros/constant padding switch), so finite differences are
    valid; about a fifth of the samples fall outside."""
    base = np.asarray(smooth_field(seed, shape, batch=2, amplitude=2.5, control_spacing=4))
    frac = rng(seed).uniform(0.15, 0.85, size=base.shape)
    return jnp.asarray(np.round(base) + frac, dtype)


@pytest.mark.parametrize(
    ("ndim", "padding"),
    [(2, "border"), (2, "zeros"), (2, "constant"), (3, "zeros")],
)
def test_check_grads_float64(ndim, padding):
    """Custom VJP vs central finite differences in float64, image and displacement."""
    shape = SHAPES[ndim]
    with jax.enable_x64(True):
        img = jnp.asarray(random_image(30, shape, channels=2), jnp.float64)
        disp = _off_knot_field(31, shape, jnp.float64)
        cval = CVAL[padding]

        def f(i, u):
            return warp_(i, u, padding=padding, cval=cval)

        out = f(img, disp)
        assert out.dtype == jnp.float64
        check_grads(f, (img, disp), order=1, modes=("rev",))


def test_check_grads_float64_autodiff_forward_mode():
    """``autodiff=True`` is the path for forward mode: jvp and vjp vs finite differences."""
    shape = SHAPES[2]
    with jax.enable_x64(True):
        img = jnp.asarray(random_image(32, shape, channels=2), jnp.float64)
        disp = _off_knot_field(33, shape, jnp.float64)

        def f(i, u):
            return warp_(i, u, padding="constant", cval=2.5, autodiff=True)

        check_grads(f, (img, disp), order=1, modes=("fwd", "rev"))


def _both_grads(padding):
    """One compiled program: (image, disp) gradients of sum(warp * w), custom VJP and autodiff."""
    cval = CVAL[padding]

    def loss(img, disp, w, autodiff):
        return jnp.sum(warp_(img, disp, padding=padding, cval=cval, autodiff=autodiff) * w)

    def both(img, disp, w):
        custom = jax.grad(loss, argnums=(0, 1))(img, disp, w, False)
        plain = jax.grad(loss, argnums=(0, 1))(img, disp, w, True)
        return custom, plain

    return jax.jit(both)


_GRADS = {p: _both_grads(p) for p in PADDINGS}


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_custom_vjp_matches_autodiff(ndim, padding, channels):
    shape = SHAPES[ndim]
    img = jnp.asarray(random_image(40, shape, channels=channels))
    w = jnp.asarray(random_image(41, shape, channels=channels))
    disp = np.asarray(smooth_field(42, shape, amplitude=3.0, control_spacing=4))
    # put a third of the samples exactly on knots (integer coordinates)
    knots = rng(43).uniform(size=disp.shape) < 1 / 3
    disp = jnp.asarray(np.where(knots, np.round(disp), disp))
    (gi, gu), (gi_ad, gu_ad) = _GRADS[padding](img, disp, w)
    assert float(jnp.abs(gu).max()) > 0.1
    assert float(jnp.abs(gi).max()) > 0.1
    np.testing.assert_allclose(np.asarray(gi), np.asarray(gi_ad), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gu), np.asarray(gu_ad), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_displacement_gradient_at_zero_is_forward_difference(ndim, padding):
    """A zero-initialised flow head must get a gradient: at u = 0 (exact knots) the derivative
    of I(x + u) along axis k is I[x + e_k] - I[x] (corners floor(c) and floor(c) + 1), for
    the custom VJP and for plain autodiff."""
    shape = SHAPES[ndim]
    img = random_image(50, shape, channels=4)
    w = random_image(51, shape, channels=4)
    zeros = jnp.zeros((2, *shape, ndim), jnp.float32)
    (gi, gu), (gi_ad, gu_ad) = _GRADS[padding](jnp.asarray(img), zeros, jnp.asarray(w))
    expect = np.einsum("b...ck,b...c->b...k", forward_difference(img, padding), w)
    assert np.abs(expect).max() > 0.5
    np.testing.assert_allclose(np.asarray(gu), expect, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gu_ad), expect, atol=1e-5, rtol=1e-5)
    # non-zero at every interior voxel, along every axis
    interior = (slice(None),) + (slice(0, -1),) * ndim
    assert np.all(np.abs(np.asarray(gu)[interior]) > 0)
    # identity warp: the image gradient is w itself
    np.testing.assert_allclose(np.asarray(gi), w, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gi_ad), w, atol=1e-6)


def _second_order(padding):
    cval = CVAL[padding]

    def inner(img, disp, w, autodiff):
        return jnp.sum(warp_(img, disp, padding=padding, cval=cval, autodiff=autodiff) * w)

    def outer(img, disp, w, w2, autodiff):
        g = jax.grad(inner, argnums=1)(img, disp, w, autodiff)
        return jnp.sum(g * w2)

    def both(img, disp, w, w2):
        custom = jax.grad(outer, argnums=(0, 1))(img, disp, w, w2, False)
        plain = jax.grad(outer, argnums=(0, 1))(img, disp, w, w2, True)
        return custom, plain

    return jax.jit(both)


_SECOND = {p: _second_order(p) for p in ("border", "zeros")}


@pytest.mark.parametrize(("ndim", "padding"), [(2, "border"), (2, "zeros"), (3, "zeros")])
def test_second_order_reverse_over_reverse(ndim, padding):
    shape = SHAPES[ndim]
    img = jnp.asarray(random_image(60, shape, channels=2))
    w = jnp.asarray(random_image(61, shape, channels=2))
    w2 = jnp.asarray(random_image(62, shape, channels=ndim))
    disp = _off_knot_field(63, shape, jnp.float32)
    (gi, gu), (gi_ad, gu_ad) = _SECOND[padding](img, disp, w, w2)
    # d/dI of dL/du is non-zero (the mixed term); d2L/du2 exists for D >= 2 (bilinear cross terms)
    assert float(jnp.abs(gi).max()) > 0.1
    assert float(jnp.abs(gu).max()) > 0.1
    np.testing.assert_allclose(np.asarray(gi), np.asarray(gi_ad), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gu), np.asarray(gu_ad), atol=2e-5, rtol=1e-5)


def test_second_order_check_grads_float64():
    shape = SHAPES[2]
    with jax.enable_x64(True):
        img = jnp.asarray(random_image(64, shape, channels=1), jnp.float64)
        disp = _off_knot_field(65, shape, jnp.float64)

        def f(u):
            return warp_(img, u, padding="zeros")

        check_grads(f, (disp,), order=2, modes=("rev",))


# ------------------------------------------------------------------ warp_labels

K = 4


def _labels(seed, shape, batch=2):
    """Blocky integer labels (regions several voxels wide) ``[B, *S]``."""
    g = np_grid(shape)
    lab = np.floor(g[..., 0] / 4) + 2 * np.floor(g[..., 1] / 5)
    if len(shape) == 3:
        lab = lab + 3 * np.floor(g[..., 2] / 3)
    lab = lab.astype(np.int32) % K
    r = rng(seed)
    labs = [np.roll(lab, r.integers(0, 5), axis=0) for _ in range(batch)]
    return np.stack(labs).astype(np.int32)


@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_labels_soft_is_a_distribution(ndim, padding):
    shape = SHAPES[ndim]
    labels = jnp.asarray(_labels(70, shape))
    disp = smooth_field(71, shape, amplitude=3.0, control_spacing=4)
    soft = np.asarray(warp_labels_j(labels, disp, num_classes=K, mode="soft", padding=padding))
    assert soft.shape == (2, *shape, K)
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
    assert soft.min() >= -1e-6 and soft.max() <= 1 + 1e-6
    # soft == linear interpolation of the one-hot maps (scipy reference, background outside)
    onehot = np.eye(K)[np.asarray(labels)]
    mode = "nearest" if padding == "border" else "grid-constant"
    ref = map_coordinates_ref(onehot, _coords(disp), order=1, mode=mode)
    if padding == "zeros":
        ref[..., 0] = 1.0 - ref[..., 1:].sum(-1)
    np.testing.assert_allclose(soft, ref, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_labels_soft_identity_is_one_hot(ndim):
    shape = SHAPES[ndim]
    labels = _labels(72, shape)
    zeros = jnp.zeros((2, *shape, ndim))
    for padding in ("border", "zeros"):
        soft = np.asarray(
            warp_labels_j(jnp.asarray(labels), zeros, num_classes=K, mode="soft", padding=padding)
        )
        np.testing.assert_array_equal(soft, np.eye(K, dtype=np.float32)[labels])
        for mode in ("nearest", "argmax"):
            hard = warp_labels_j(
                jnp.asarray(labels), zeros, num_classes=K, mode=mode, padding=padding
            )
            assert hard.dtype == jnp.int32
            np.testing.assert_array_equal(np.asarray(hard), labels)


_soft_grad = jax.jit(
    jax.grad(lambda d, lab, w: jnp.sum(warp_labels_j(lab, d, num_classes=K, mode="soft") * w))
)


@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_labels_soft_gradient_at_zero_displacement(ndim):
    shape = SHAPES[ndim]
    labels = _labels(73, shape)
    w = random_image(74, shape, channels=K)
    zeros = jnp.zeros((2, *shape, ndim))
    g = np.asarray(_soft_grad(zeros, jnp.asarray(labels), jnp.asarray(w)))
    onehot = np.eye(K)[labels]
    expect = np.einsum("b...ck,b...c->b...k", forward_difference(onehot, "border"), w)
    np.testing.assert_allclose(g, expect, atol=1e-5)
    # non-zero exactly at the voxels in front of a label boundary, zero elsewhere
    for k in range(ndim):
        sl = [slice(None)] + [slice(None)] * ndim
        sl[k + 1] = slice(1, None)
        nxt = np.concatenate([labels[tuple(sl)], np.take(labels, [-1], axis=k + 1)], axis=k + 1)
        boundary = nxt != labels
        assert boundary.any()
        assert np.all(np.abs(g[..., k][boundary]) > 0)
        np.testing.assert_array_equal(g[..., k][~boundary], 0.0)


@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_labels_nearest_and_argmax(ndim, padding):
    shape = SHAPES[ndim]
    labels = _labels(75, shape)
    disp = smooth_field(76, shape, amplitude=3.0, control_spacing=4)
    coords = _coords(disp)
    near = np.asarray(
        warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode="nearest", padding=padding)
    )
    mode = "nearest" if padding == "border" else "grid-constant"
    ref = map_coordinates_ref(labels[..., None].astype(np.float64), coords, order=0, mode=mode)
    keep = _no_tie(coords)
    assert keep.mean() > 0.999
    np.testing.assert_array_equal(near[keep], ref[..., 0][keep].astype(np.int32))
    # soft one-hot input gives the same as the integer input
    onehot = jnp.asarray(np.eye(K, dtype=np.float32)[labels])
    near_soft = warp_labels_j(onehot, disp, num_classes=K, mode="nearest", padding=padding)
    np.testing.assert_array_equal(np.asarray(near_soft), near)
    # argmax == argmax of soft
    soft = np.asarray(
        warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode="soft", padding=padding)
    )
    amax = np.asarray(
        warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode="argmax", padding=padding)
    )
    np.testing.assert_array_equal(amax, np.argmax(soft, axis=-1))
    # and it mostly agrees with nearest (they differ only near boundaries)
    assert np.mean(amax == near) > 0.8


@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_labels_zeros_padding_reads_background(ndim):
    shape = SHAPES[ndim]
    labels = _labels(77, shape)
    labels = np.where(labels == 0, 1, labels)  # no background inside
    vec = np.zeros(ndim)
    vec[0] = 3.0  # the last 3 rows along axis 0 look outside
    disp = _constant_field(shape, vec)
    inside = (slice(None), slice(0, shape[0] - 3))
    outside = (slice(None), slice(shape[0] - 3, None))  # x + 3 >= n: every tap outside
    for mode in ("nearest", "argmax"):
        hard = np.asarray(
            warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode=mode, padding="zeros")
        )
        np.testing.assert_array_equal(hard[outside], 0)
        np.testing.assert_array_equal(hard[inside], labels[:, 3:])
    soft = np.asarray(
        warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode="soft", padding="zeros")
    )
    np.testing.assert_array_equal(soft[outside][..., 0], 1.0)
    np.testing.assert_array_equal(soft[inside][..., 0], 0.0)
    border = np.asarray(
        warp_labels_j(jnp.asarray(labels), disp, num_classes=K, mode="nearest", padding="border")
    )
    assert np.all(border[outside] > 0)


# ------------------------------------------------------------------ errors


def test_bad_choices_raise_value_error_naming_the_value():
    img = jnp.zeros((1, 6, 7, 1))
    u = jnp.zeros((1, 6, 7, 2))
    with pytest.raises(ValueError, match="'reflect'"):
        sp.warp(img, u, padding="reflect")
    with pytest.raises(ValueError, match="order=2"):
        sp.warp(img, u, order=2)
    with pytest.raises(ValueError, match="'cubic'"):
        sp.sample(img, u, padding="cubic")
    lab = jnp.zeros((1, 6, 7), jnp.int32)
    with pytest.raises(ValueError, match="'bilinear'"):
        sp.warp_labels(lab, u, num_classes=2, mode="bilinear")
    with pytest.raises(ValueError, match="'constant'"):
        sp.warp_labels(lab, u, num_classes=2, padding="constant")
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 3\)"):
        sp.warp_labels(jnp.zeros((1, 6, 7, 3)), u, num_classes=2)


def test_bad_shapes_raise_value_error_naming_the_shape():
    img = jnp.zeros((1, 6, 7, 1))
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 3\)"):
        sp.warp(img, jnp.zeros((1, 6, 7, 3)))
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 1\)"):
        sp.warp(img, jnp.zeros((1, 6, 7, 1)))
    with pytest.raises(ValueError, match=r"\(6, 7, 2\)"):
        sp.warp(img, jnp.zeros((6, 7, 2)))
    with pytest.raises(ValueError, match=r"\(6, 7, 1\)"):
        sp.warp(jnp.zeros((6, 7, 1)), jnp.zeros((1, 6, 7, 2)))
    with pytest.raises(ValueError, match=r"\(1, 6, 7, 2\)"):
        sp.warp(jnp.zeros((1, 6, 7, 2)), jnp.zeros((1, 6, 7, 2, 3)))
