"""Tests for jrs_jax.losses.consistency: cycle L1 and inverse consistency."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jrs_jax.losses.consistency import cycle_l1, inverse_consistency

jcycle = jax.jit(cycle_l1)
jinv = jax.jit(inverse_consistency, static_argnames="symmetric")


def rnd(shape, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 6, 5, 2), (2, 4, 5, 3, 1)])
def test_cycle_l1_values_jit_and_grads(shape):
    x, y = rnd(shape, 0), rnd(shape, 1)
    out = jcycle(x, y)
    assert out.shape == (2,)
    axes = tuple(range(1, len(shape)))
    np.testing.assert_allclose(out, np.abs(x - y).mean(axes), rtol=1e-5)
    np.testing.assert_allclose(cycle_l1(x, y), out, rtol=1e-6)  # eager
    np.testing.assert_allclose(jcycle(x[::-1], y[::-1]), out[::-1], rtol=1e-6)
    np.testing.assert_array_equal(jcycle(x, x), [0.0, 0.0])
    np.testing.assert_allclose(jcycle(x, x + 0.25), [0.25, 0.25], rtol=1e-6)
    # mask: only the masked voxels count; [B, *S], [B, *S, 1] and [B, *S, C] masks agree
    mask = np.zeros(shape[:-1], bool)
    mask[:, :2] = True
    y2 = np.where(mask[..., None], y, 100.0)
    want = np.abs(x - y)[:, :2].mean(axes)
    for m in (mask, mask[..., None], np.broadcast_to(mask[..., None], shape)):
        np.testing.assert_allclose(jcycle(x, y2, mask=m), want, rtol=1e-5)
    # empty mask: 0 with finite gradients
    empty = np.zeros(shape[:-1], bool)
    np.testing.assert_array_equal(jcycle(x, y, mask=empty), [0.0, 0.0])
    g = jax.jit(jax.grad(lambda a: cycle_l1(a, y, mask=empty).sum()))(x)
    assert np.all(np.isfinite(g))
    with jax.enable_x64(True):
        args = (jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64) + 0.01)
        check_grads(jcycle, args, order=1, modes=("rev",))


@pytest.mark.parametrize("spatial", [(6, 7), (5, 4, 6)])
def test_inverse_consistency_values(spatial):
    d = len(spatial)
    t = np.arange(1, d + 1, dtype=np.float32) * 0.3
    u = np.broadcast_to(t, (2, *spatial, d)).copy()
    # constant translations: exact inverses compose to zero; otherwise |u + v|^2
    np.testing.assert_allclose(jinv(u, -u), [0.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(jinv(u, u), [4 * np.sum(t * t)] * 2, rtol=1e-5)
    np.testing.assert_allclose(jinv(u, np.zeros_like(u)), [np.sum(t * t)] * 2, rtol=1e-5)
    # random smooth-ish fields: jit == eager, per example, symmetric option, finite grads
    a, b = rnd((2, *spatial, d), 2, 0.5), rnd((2, *spatial, d), 3, 0.5)
    out = jinv(a, b)
    assert out.shape == (2,)
    if d == 2:  # eager dispatch of the sampler is slow on CPU: compare once
        np.testing.assert_allclose(inverse_consistency(a, b), out, rtol=1e-5)
    np.testing.assert_allclose(jinv(a[::-1], b[::-1]), out[::-1], rtol=1e-6)
    sym = jinv(a, b, symmetric=True)
    np.testing.assert_allclose(sym, 0.5 * (out + jinv(b, a)), rtol=1e-5)
    mask = np.zeros((2, *spatial), bool)
    mask[:, 1:3] = True
    assert not np.allclose(jinv(a, b, mask=mask), out)
    np.testing.assert_array_equal(jinv(a, b, mask=np.zeros_like(mask)), [0.0, 0.0])
    g = jax.jit(jax.grad(lambda x: jinv(x, b).sum()))(a)
    assert np.all(np.isfinite(g))


def test_inverse_consistency_check_grads():
    with jax.enable_x64(True):
        a = jnp.asarray(rnd((2, 5, 4, 2), 4, 0.4), jnp.float64)
        b = jnp.asarray(rnd((2, 5, 4, 2), 5, 0.4), jnp.float64)
        check_grads(jinv, (a, b), order=1, modes=("rev",))


def test_errors():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="x_cycled"):
        cycle_l1(x, x[:, :2])
    with pytest.raises(ValueError, match="mask"):
        cycle_l1(x, x, mask=np.ones((2, 4, 4, 3)))
    u = np.zeros((2, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        inverse_consistency(u, u[:, :3])
