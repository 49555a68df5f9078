"""Dropout in the conv blocks: off by default, active only with a "dropout" rng stream."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import ConvBlock, RegistrationNet, SegmentationNet

X = jax.random.normal(jax.random.key(3), (2, 16, 16, 1))


def _seg(rate, **kw):
    return SegmentationNet(num_classes=3, features=(8, 16), dropout_rate=rate, **kw)


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_rate_zero_is_the_network_without_dropout():
    default = SegmentationNet(num_classes=3, features=(8, 16))
    params = default.init(jax.random.key(0), X)
    _equal(_seg(0.0).init(jax.random.key(0), X), params)
    names = {"/".join(str(k.key) for k in path) for path, _ in jax.tree.leaves_with_path(params)}
    assert not any("dropout" in n for n in names)
    out = default.apply(params, X)
    _equal(_seg(0.0).apply(params, X, rngs={"dropout": jax.random.key(1)}), out)
    # dropout has no parameters: a rate > 0 network has the same tree and initial values
    _equal(_seg(0.5).init(jax.random.key(0), X), params)


def test_without_an_rng_the_network_is_deterministic():
    params = _seg(0.0).init(jax.random.key(0), X)
    ref = _seg(0.0).apply(params, X)
    _equal(_seg(0.5).apply(params, X), ref)
    _equal(jax.jit(_seg(0.5).apply)(params, X), jax.jit(_seg(0.0).apply)(params, X))


@pytest.mark.parametrize("remat", [False, True])
def test_an_rng_drops_activations_reproducibly(remat):
    net = _seg(0.5, remat=remat)
    params = net.init(jax.random.key(0), X)
    apply = jax.jit(lambda p, k: net.apply(p, X, rngs={"dropout": k}))
    a, b = apply(params, jax.random.key(1)), apply(params, jax.random.key(1))
    c = apply(params, jax.random.key(2))
    _equal(a, b)
    ref = net.apply(params, X)
    assert float(jnp.abs(a - ref).max()) > 1e-3
    assert float(jnp.abs(a - c).max()) > 1e-3
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, X, rngs={"dropout": jax.random.key(1)})))(
        params
    )
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_block_drops_a_fraction_and_rescales():
    block = ConvBlock(features=64, dropout_rate=0.25)
    x = jnp.ones((1, 16, 16, 2))
    params = block.init(jax.random.key(0), x)
    clean = block.apply(params, x)
    dropped = block.apply(params, x, rngs={"dropout": jax.random.key(5)})
    zero = np.asarray((dropped == 0) & (clean != 0))
    assert 0.2 < zero.sum() / np.asarray(clean != 0).sum() < 0.3
    kept = np.asarray(dropped != 0)
    np.testing.assert_allclose(np.asarray(dropped)[kept], np.asarray(clean)[kept] / 0.75, rtol=1e-5)


def test_other_unets_take_the_field_and_bad_rates_raise():
    net = RegistrationNet(features=(8, 16), dropout_rate=0.3)
    params = net.init(jax.random.key(0), X, X)
    a = net.apply(params, X, X, rngs={"dropout": jax.random.key(1)})["disp"]
    assert float(jnp.abs(a - net.apply(params, X, X)["disp"]).max()) > 0
    with pytest.raises(ValueError, match="dropout_rate"):
        _seg(1.0).init(jax.random.key(0), X)
