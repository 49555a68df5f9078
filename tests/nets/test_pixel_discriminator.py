"""PixelDiscriminator: full-resolution per-voxel logits, conditioning, 3-D, dtype, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import PatchDiscriminator, PixelDiscriminator


def test_full_resolution_logits_depend_on_both_images():
    disc = PixelDiscriminator(features=(4, 8, 8))
    kx, kf, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 16, 16, 1))
    f = jax.random.normal(kf, (2, 16, 16, 1))
    params = disc.init(kp, x, f)
    out = jax.jit(disc.apply)(params, x, f)
    assert out.shape == (2, 16, 16, 1) and out.dtype == jnp.float32
    # the conditioning image matters, and so does the first image
    assert not np.allclose(out, disc.apply(params, x, f[::-1]))
    assert not np.allclose(out, disc.apply(params, x[::-1], f))
    # examples are independent (no batch statistics): example 0 alone gives the same map
    np.testing.assert_allclose(disc.apply(params, x[:1], f[:1]), out[:1], rtol=1e-5, atol=1e-6)
    # unlike the PatchGAN, the map keeps the input grid
    patch = PatchDiscriminator(features=(4, 8, 8))
    xf = jnp.concatenate([x, f], -1)
    assert patch.apply(patch.init(kp, xf), xf).shape == (2, 4, 4, 1)


def test_3d_and_bfloat16_compute_keeps_float32_logits():
    disc = PixelDiscriminator(features=(4, 8), decoder_features=(4,), dtype=jnp.bfloat16)
    x = jnp.ones((1, 8, 8, 8, 1))
    params = disc.init(jax.random.key(1), x, x)
    out = disc.apply(params, x, x)
    assert out.shape == (1, 8, 8, 8, 1) and out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def test_shape_errors():
    disc = PixelDiscriminator(features=(4, 8))
    x = jnp.zeros((1, 16, 16, 1))
    with pytest.raises(ValueError, match="same batch and spatial shape"):
        disc.init(jax.random.key(0), x, jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="at least one input"):
        disc.init(jax.random.key(0))
    with pytest.raises(ValueError, match="divisible"):
        PixelDiscriminator(features=(4, 8, 8)).init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
