"""Parity of warp / integrate_velocity with torch grid_sample and MONAI, against values
committed in ``tests/reference/warp_reference.npz`` (made by ``make_warp_reference.py``), so
the check runs without torch."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.spatial import (
    from_grid_sample,
    integrate_velocity,
    to_grid_sample,
    warp,
)

REF = np.load(Path(__file__).parents[1] / "reference" / "warp_reference.npz")
PADDINGS = ("border", "zeros")


@functools.partial(jax.jit, static_argnames=("padding",))
def _warp(image, disp, padding):
    return warp(image, disp, padding=padding)


@functools.partial(jax.jit, static_argnames=("align_corners", "padding"))
def _warp_via_grid(image, disp, align_corners, padding):
    """Our sampler driven by a grid_sample grid (converted back to our displacement)."""
    grid = to_grid_sample(disp, align_corners=align_corners)
    back = from_grid_sample(grid, align_corners=align_corners)
    return warp(image, back, padding=padding)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding", PADDINGS)
def test_warp_matches_stored_grid_sample_align_corners_true(ndim, padding):
    img, disp = REF[f"image_{ndim}d"], REF[f"disp_{ndim}d"]
    want = REF[f"grid_sample_{ndim}d_{padding}_ac1"]
    got = _warp(jnp.asarray(img), jnp.asarray(disp), padding)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
    via_grid = _warp_via_grid(jnp.asarray(img), jnp.asarray(disp), True, padding)
    np.testing.assert_allclose(np.asarray(via_grid), want, atol=2e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding", PADDINGS)
def test_align_corners_false_grid_samples_the_same_voxel_positions(ndim, padding):
    """The generator encoded the voxel positions ``x + u(x)`` with torch's align_corners=False
    normalisation ``(2p + 1) / n - 1``; torch then samples those same voxel positions, and so
    does our warp after ``from_grid_sample(..., align_corners=False)``."""
    img, disp = jnp.asarray(REF[f"image_{ndim}d"]), jnp.asarray(REF[f"disp_{ndim}d"])
    want = REF[f"grid_sample_{ndim}d_{padding}_ac0"]
    got = _warp_via_grid(img, disp, False, padding)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
    # and the stored positions are not trivially the align_corners=True ones re-used
    grid_true = np.asarray(to_grid_sample(disp, align_corners=True))
    grid_false = np.asarray(to_grid_sample(disp, align_corners=False))
    assert np.abs(grid_true - grid_false).max() > 1e-2


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding", PADDINGS)
def test_warp_matches_stored_monai_warp(ndim, padding):
    img, disp = REF[f"image_{ndim}d"], REF[f"disp_{ndim}d"]
    got = _warp(jnp.asarray(img), jnp.asarray(disp), padding)
    np.testing.assert_allclose(np.asarray(got), REF[f"monai_warp_{ndim}d_{padding}"], atol=2e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integrate_velocity_matches_stored_monai_dvf2ddf(ndim):
    vel = jnp.asarray(REF[f"velocity_{ndim}d"])
    got = jax.jit(integrate_velocity)(vel)
    np.testing.assert_allclose(np.asarray(got), REF[f"monai_dvf2ddf_{ndim}d_border"], atol=5e-5)
