"""Otsu's threshold (:func:`jrs_jax.spatial.otsu_threshold`) against a NumPy transcription of
scikit-image's ``threshold_otsu`` (not installed here), its invariants, batching, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.spatial import otsu_threshold

otsu_j = jax.jit(otsu_threshold, static_argnames=("bins",))


def otsu_reference(image: np.ndarray, nbins: int = 256) -> float:
    """scikit-image's ``threshold_otsu`` for a float image, step by step (float64)."""
    image = np.asarray(image, np.float64).ravel()
    if np.all(image == image[0]):
        return float(image[0])
    counts, edges = np.histogram(image, bins=nbins, range=(image.min(), image.max()))
    bin_centers = (edges[:-1] + edges[1:]) / 2.0
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * bin_centers) / weight1
    mean2 = (np.cumsum((counts * bin_centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(bin_centers[np.argmax(variance12)])


def bimodal(seed: int, shape, *, batch: int, sep: float = 0.5) -> np.ndarray:
    """``[B, *S]`` float32: two Gaussian intensity classes in a random proportion."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        frac = rng.uniform(0.2, 0.7)
        fg = rng.random(shape) < frac
        lo, hi = rng.uniform(-1, 1), rng.uniform(-1, 1) + sep + 0.5
        s = rng.uniform(0.05, 0.2)
        out.append(np.where(fg, hi, lo) + s * rng.standard_normal(shape))
    return np.asarray(out, np.float32)


def _bin(x: np.ndarray, bins: int) -> float:
    return float((x.max() - x.min()) / bins)


@pytest.mark.parametrize("bins", [16, 64, 256])
@pytest.mark.parametrize("shape", [(32, 32), (12, 10, 8)], ids=["2d", "3d"])
def test_matches_reference(bins, shape):
    x = bimodal(bins, shape, batch=4)
    got = np.asarray(otsu_j(jnp.asarray(x), bins=bins))
    assert got.shape == (4,) and got.dtype == np.float32
    ref = np.array([otsu_reference(xi, bins) for xi in x])
    # the same bin: differences far below a bin width (float32 bin centres)
    tol = [1e-3 * _bin(xi, bins) + 1e-6 for xi in x]
    np.testing.assert_array_less(np.abs(got - ref), tol)


def test_channel_axis_and_overlapping_classes():
    # [B, *S, 1] gives the [B, *S] result; heavily overlapping classes (no empty gap)
    x = bimodal(7, (40, 40), batch=3, sep=-0.4)
    a = np.asarray(otsu_j(jnp.asarray(x)))
    b = np.asarray(otsu_j(jnp.asarray(x[..., None])))
    np.testing.assert_array_equal(a, b)
    ref = np.array([otsu_reference(xi) for xi in x])
    np.testing.assert_allclose(a, ref, atol=1e-3 * max(_bin(xi, 256) for xi in x))


def test_masked_equals_reference_of_selected_voxels():
    x = bimodal(3, (32, 32), batch=3)
    rng = np.random.default_rng(0)
    mask = rng.random(x.shape) < 0.4
    x[~mask] = 50.0  # outliers outside the mask must not matter
    got = np.asarray(otsu_j(jnp.asarray(x), bins=64, mask=jnp.asarray(mask)))
    ref = np.array([otsu_reference(x[i][mask[i]], 64) for i in range(3)])
    np.testing.assert_allclose(got, ref, atol=1e-3 * _bin(x[0][mask[0]], 64) + 1e-6)
    # a [B, *S] mask for a [B, *S, 1] image
    got1 = np.asarray(otsu_j(jnp.asarray(x[..., None]), bins=64, mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(got, got1)
    # an empty mask gives NaN for that example only
    mask[1] = False
    out = np.asarray(otsu_j(jnp.asarray(x), bins=64, mask=jnp.asarray(mask)))
    assert np.isnan(out[1]) and np.all(np.isfinite(out[[0, 2]]))


def test_two_level_image_threshold_between_levels():
    rng = np.random.default_rng(1)
    for lo, hi in [(0.0, 1.0), (-3.0, 7.5), (100.0, 101.0)]:
        x = np.where(rng.random((2, 20, 20)) < 0.3, hi, lo).astype(np.float32)
        t = np.asarray(otsu_j(jnp.asarray(x)))
        assert np.all((t >= lo) & (t < hi)), (lo, hi, t)
        assert np.all((x > t[:, None, None]) == (x == hi))


def test_affine_intensity_map_maps_threshold():
    x = bimodal(11, (32, 32), batch=2).astype(np.float64)
    t = np.asarray(otsu_j(jnp.asarray(x, jnp.float32)), np.float64)
    for a, b in [(2.0, 3.0), (0.25, -10.0), (-1.5, 0.0)]:
        y = (a * x + b).astype(np.float32)
        ty = np.asarray(otsu_j(jnp.asarray(y)), np.float64)
        if a > 0:  # the histogram maps bin to bin: the same bin centre, mapped
            np.testing.assert_allclose(ty, a * t + b, atol=1e-3 * abs(a) * _bin(x[0], 256))
        else:  # a reversed histogram: the same two classes (the foreground swaps sides)
            # the split is the same between bins; the two thresholds sit in the bins on
            # either side of it (a run of empty bins between classes: at its two ends), so
            # the classes differ only for voxels within a bin of a threshold.
            w = np.array([_bin(xi, 256) for xi in x])[:, None, None]
            diff = (y < ty[:, None, None]) != (x > t[:, None, None])
            ty_x = (ty[:, None, None] - b) / a
            near = (np.abs(x - t[:, None, None]) <= w) | (np.abs(x - ty_x) <= w)
            assert not np.any(diff & ~near)
            assert diff.mean() < 0.02


def test_jit_equals_eager_and_single_image():
    x = jnp.asarray(bimodal(5, (24, 24), batch=2))
    # the same bin; XLA's fusion may round the bin centre differently by an ulp
    np.testing.assert_allclose(np.asarray(otsu_j(x)), np.asarray(otsu_threshold(x)), rtol=1e-6)
    single = np.asarray(otsu_j(x[0][None]))
    assert single.shape == (1,)
    np.testing.assert_allclose(single[0], np.asarray(otsu_j(x))[0], rtol=1e-6)


def test_constant_and_integer_images():
    x = jnp.full((2, 8, 8), 3.25, jnp.float32).at[1].set(-1.0)
    np.testing.assert_array_equal(np.asarray(otsu_j(x)), [3.25, -1.0])
    ints = np.where(np.arange(64).reshape(1, 8, 8) % 3 == 0, 200, 10).astype(np.int32)
    t = np.asarray(otsu_j(jnp.asarray(ints)))
    assert t.dtype == np.float32 and 10 <= t[0] < 200


def test_no_gradient_through_threshold():
    x = jnp.asarray(bimodal(2, (16, 16), batch=2))

    def loss(img):
        t = otsu_threshold(img)
        return jnp.sum(t) + jnp.sum(jax.nn.sigmoid(img - t[:, None, None]))

    g = jax.jit(jax.grad(loss))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    # only the sigmoid term contributes: the threshold is a constant to autodiff
    t = otsu_threshold(x)
    expected = jax.grad(lambda img: jnp.sum(jax.nn.sigmoid(img - t[:, None, None])))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(expected), rtol=1e-6)


def test_bad_bins():
    with pytest.raises(ValueError, match="bins"):
        otsu_threshold(jnp.zeros((1, 4, 4)), bins=1)
    with pytest.raises(ValueError, match="mask"):
        otsu_threshold(jnp.zeros((1, 4, 4)), mask=jnp.ones((1, 4, 5), bool))
