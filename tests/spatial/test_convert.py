"""Tests for :mod:`jrs_jax.spatial.convert` (layouts, grid_sample coordinates, ITK/ANTs
physical fields; the ANTs warp files are tested in ``tests/data/test_ants.py``)."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nibabel.affines import apply_affine

from jrs_jax.spatial import integrate_velocity, random_velocity, warp
from jrs_jax.spatial.convert import (
    from_channels_first,
    from_grid_sample,
    from_normalized_displacement,
    from_physical_displacement,
    image_from_channels_first,
    image_to_channels_first,
    to_channels_first,
    to_grid_sample,
    to_normalized_displacement,
    to_physical_displacement,
)

SHAPES = {2: (9, 7), 3: (7, 6, 5)}


def _field(ndim, *, seed=0, batch=2, amplitude=1.5, spacing=3):
    """Smooth random field that reaches outside the volume near the borders."""
    return random_velocity(
        jax.random.PRNGKey(seed),
        SHAPES[ndim],
        batch_size=batch,
        amplitude=amplitude,
        control_spacing=spacing,
    )


def _image(ndim, *, seed=1, batch=2, channels=2):
    key = jax.random.PRNGKey(seed)
    return jax.random.normal(key, (batch, *SHAPES[ndim], channels), jnp.float32)


# ------------------------------------------------------------------ (a) channels first


@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_first_layout_and_round_trip(ndim):
    u = _field(ndim)
    cf = jax.jit(to_channels_first)(u)
    assert cf.shape == (u.shape[0], ndim, *SHAPES[ndim])
    # channel k of the channels-first field is component k (no flip, no scaling)
    for k in range(ndim):
        np.testing.assert_array_equal(cf[:, k], u[..., k])
    np.testing.assert_array_equal(jax.jit(from_channels_first)(cf), u)

    img = _image(ndim, channels=3)
    img_cf = jax.jit(image_to_channels_first)(img)
    assert img_cf.shape == (2, 3, *SHAPES[ndim])
    np.testing.assert_array_equal(img_cf[:, 1], img[..., 1])
    np.testing.assert_array_equal(jax.jit(image_from_channels_first)(img_cf), img)


def test_channels_first_rejects_bad_shapes():
    with pytest.raises(ValueError):
        to_channels_first(jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError):
        from_channels_first(jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError):
        image_to_channels_first(jnp.zeros((4, 4, 1)))


# ------------------------------------------------------------------ (b) grid_sample


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_round_trip(ndim, align_corners):
    u = _field(ndim)
    to = jax.jit(functools.partial(to_grid_sample, align_corners=align_corners))
    back = jax.jit(functools.partial(from_grid_sample, align_corners=align_corners))
    grid = to(u)
    assert grid.shape == u.shape
    np.testing.assert_allclose(back(grid), u, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_identity_values(align_corners):
    shape = (4, 6, 5)
    grid = np.asarray(to_grid_sample(jnp.zeros((1, *shape, 3)), align_corners=align_corners))
    # component 0 runs along the LAST axis, component 2 along the first
    for comp, axis in ((0, 2), (1, 1), (2, 0)):
        n = shape[axis]
        line = np.moveaxis(grid[0, ..., comp], axis, 0)[:, 0, 0]
        x = np.arange(n)
        want = 2 * x / (n - 1) - 1 if align_corners else (2 * x + 1) / n - 1
        np.testing.assert_allclose(line, want, atol=1e-6)
        # constant along the other axes
        assert np.ptp(np.moveaxis(grid[0, ..., comp], axis, 0)[1]) == 0


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align_corners", [True, False])
def test_normalized_displacement_round_trip(ndim, align_corners):
    u = _field(ndim)
    to = jax.jit(functools.partial(to_normalized_displacement, align_corners=align_corners))
    back = jax.jit(functools.partial(from_normalized_displacement, align_corners=align_corners))
    d = to(u)
    np.testing.assert_allclose(back(d), u, atol=1e-6)
    # relative + identity grid (normalised) == absolute grid
    identity = to_grid_sample(jnp.zeros_like(u), align_corners=align_corners)
    np.testing.assert_allclose(
        identity + d, to_grid_sample(u, align_corners=align_corners), atol=1e-5
    )
    # xy order and half-extent unit: last spatial axis first
    n_last = SHAPES[ndim][-1]
    unit = (n_last - 1) / 2 if align_corners else n_last / 2
    np.testing.assert_allclose(d[..., 0] * unit, u[..., -1], atol=1e-5)


def test_grid_sample_singleton_axis_align_corners():
    u = jnp.ones((1, 1, 5, 2))
    grid = to_grid_sample(u, align_corners=True)
    assert np.all(np.isfinite(np.asarray(grid)))
    np.testing.assert_allclose(grid[..., 1], 0.0)  # the size-1 axis maps to 0


# ------------------------------------------------------------------ torch / MONAI parity


def _torch(x):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.array(x, dtype=np.float32))


@pytest.mark.torch
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_parity_with_torch(ndim, padding, align_corners):
    torch = pytest.importorskip("torch")
    u = _field(ndim, seed=3, amplitude=2.0)
    img = _image(ndim)
    ours = jax.jit(functools.partial(warp, padding=padding))(img, u)
    grid = jax.jit(functools.partial(to_grid_sample, align_corners=align_corners))(u)
    out = torch.nn.functional.grid_sample(
        _torch(image_to_channels_first(img)),
        _torch(grid),
        mode="bilinear",
        padding_mode=padding,
        align_corners=align_corners,
    )
    theirs = np.asarray(image_from_channels_first(out.numpy()))
    # the field really leaves the volume, so the padding mode matters
    coords = np.asarray(u) + np.stack(np.meshgrid(*map(np.arange, SHAPES[ndim]), indexing="ij"), -1)
    assert (coords < 0).any() or (coords > np.array(SHAPES[ndim]) - 1).any()
    np.testing.assert_allclose(theirs, ours, atol=2e-5)


@pytest.mark.torch
def test_grid_sample_parity_fails_without_reversal():
    """Guard: feeding the ij-ordered normalised coordinates to torch is wrong."""
    torch = pytest.importorskip("torch")
    u = _field(2, seed=4, amplitude=2.0)
    img = _image(2)
    ours = warp(img, u)
    wrong = to_grid_sample(u)[..., ::-1]
    out = torch.nn.functional.grid_sample(
        _torch(image_to_channels_first(img)),
        _torch(wrong),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    assert np.abs(np.asarray(image_from_channels_first(out.numpy())) - ours).max() > 1e-2


def _monai_blocks():
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.networks.blocks import DVF2DDF, Warp
    return Warp, DVF2DDF


@pytest.mark.torch
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_monai_warp_parity(ndim, padding):
    Warp, _ = _monai_blocks()
    u = _field(ndim, seed=5, amplitude=2.0)
    img = _image(ndim)
    ours = jax.jit(functools.partial(warp, padding=padding))(img, u)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = Warp(mode="bilinear", padding_mode=padding)
        out = layer(_torch(image_to_channels_first(img)), _torch(jax.jit(to_channels_first)(u)))
    theirs = np.asarray(image_from_channels_first(out.numpy()))
    np.testing.assert_allclose(theirs, ours, atol=2e-5)


@pytest.mark.torch
@pytest.mark.parametrize("ndim", [2, 3])
def test_monai_dvf2ddf_parity(ndim):
    """MONAI's DVF2DDF squares with zeros padding by default; ours uses border padding.

    With ``padding_mode="border"`` the two agree everywhere. With MONAI's default (zeros) they
    agree wherever every squaring step samples inside the volume (interior voxels farther from
    the border than the largest displacement plus one), and differ near the border when the
    field points outwards there.
    """
    _, DVF2DDF = _monai_blocks()
    shape = {2: (24, 20), 3: (16, 14, 13)}[ndim]
    v = random_velocity(
        jax.random.PRNGKey(6), shape, batch_size=2, amplitude=0.6, control_spacing=4
    )
    ours = np.asarray(jax.jit(functools.partial(integrate_velocity, steps=7))(v))
    v_cf = _torch(to_channels_first(v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        border = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")(v_cf)
        zeros = DVF2DDF(num_steps=7)(v_cf)
    border = np.asarray(from_channels_first(border.numpy()))
    zeros = np.asarray(from_channels_first(zeros.numpy()))
    np.testing.assert_allclose(border, ours, atol=1e-4)

    # Zero-padding errors enter at the border and travel inwards by at most |u_i| per squaring
    # step; sum_i max|u_i| <= 2 max|v| for these mild fields (u_i ~ v / 2^(N - i)).
    margin = int(np.ceil(2 * np.abs(np.asarray(v)).max())) + 1
    interior = (slice(None), *(slice(margin, n - margin) for n in shape))
    assert ours[interior].size > 0
    np.testing.assert_allclose(zeros[interior], ours[interior], atol=1e-4)
    assert np.abs(zeros - ours).max() > 1e-3  # the border really differs


# ------------------------------------------------------------------ (c) physical / ANTs


@pytest.mark.parametrize("k", [0, 1, 2])
def test_physical_identity_orientation_signs(k):
    spacing = np.array([2.0, 3.0, 4.0])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]  # translation must not matter
    u = np.zeros((4, 5, 6, 3), np.float32)
    u[..., k] = 1.0
    d = np.asarray(jax.jit(to_physical_displacement)(u, affine))
    want = np.zeros(3)
    want[k] = spacing[k] * (-1.0 if k < 2 else 1.0)  # R -> L and A -> P flip, S stays
    np.testing.assert_allclose(d, np.broadcast_to(want, d.shape), atol=1e-6)


def test_physical_worked_example():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    d = to_physical_displacement(jnp.asarray([[[[1.0, 0.0, 0.0]]]]), affine)
    np.testing.assert_allclose(np.asarray(d).reshape(3), [-2.0, 0.0, 0.0])


def test_physical_matches_world_coordinates_oblique(oblique_affine):
    affine = oblique_affine(3, seed=1)
    u = np.asarray(_field(3, seed=7, batch=1)[0])
    x = np.stack(np.meshgrid(*map(np.arange, u.shape[:-1]), indexing="ij"), -1).astype(float)
    d_ras = apply_affine(affine, x + u) - apply_affine(affine, x)
    d_lps = np.asarray(jax.jit(to_physical_displacement)(u, affine))
    np.testing.assert_allclose(d_lps * np.array([-1.0, -1.0, 1.0]), d_ras, atol=1e-4)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("batched", [False, True])
def test_physical_round_trip_oblique(ndim, batched, oblique_affine):
    affine = oblique_affine(ndim, seed=2)
    u = _field(ndim, seed=8)
    if not batched:
        u = u[0]
    d = jax.jit(to_physical_displacement)(u, affine)
    assert d.shape == u.shape
    np.testing.assert_allclose(jax.jit(from_physical_displacement)(d, affine), u, atol=1e-4)


def test_physical_2d_uses_top_left_block(oblique_affine):
    affine = oblique_affine(3, seed=3)
    u = np.asarray(_field(2, seed=9, batch=1))
    d = np.asarray(to_physical_displacement(u, affine))
    want = -np.einsum("kl,...l->...k", affine[:2, :2], u)
    np.testing.assert_allclose(d, want, atol=1e-4)


def test_physical_rejects_bad_affine():
    with pytest.raises(ValueError):
        to_physical_displacement(jnp.zeros((4, 4, 4, 3)), np.eye(3))
