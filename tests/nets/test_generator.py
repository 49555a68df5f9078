"""Tests for jrs_jax.nets.generator (tiny shapes: 2-D 16x16, 3-D 8x8x8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import ImageGenerator

SHAPES = {2: (16, 16), 3: (8, 8, 8)}
TINY = dict(features=(4, 8))


def _init(net, *inputs):
    # rbg keys: threefry-based initialisers take seconds to compile on CPU
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(net.init)(key, *inputs)


def _image(ndim, channels=1, seed=0, batch=2):
    # numpy data: eager jax.random calls compile per shape, which is slow on CPU
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-1, 1, (batch, *SHAPES[ndim], channels)), jnp.float32)


def test_generator_shapes_activation_and_concat():
    src, cond = _image(2), _image(2, channels=3, seed=1)
    net = ImageGenerator(out_channels=1, output_activation="tanh", **TINY)
    params = _init(net, src, cond)
    # the two inputs are concatenated on channels: 1 + 3
    assert params["params"]["unet"]["encoder"]["enc0"]["conv0"]["kernel"].shape[-2] == 4
    assert params["params"]["head"]["kernel"].shape == (1, 1, 4, 1)
    fwd = jax.jit(net.apply)
    y = fwd(params, src, cond)
    assert y.shape == (2, 16, 16, 1)
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.max(jnp.abs(y))) < 1.0
    # the output depends on the conditioning image
    y2 = fwd(params, src, cond + 1.0)
    assert float(jnp.max(jnp.abs(y - y2))) > 0.0
    # 3-D: shapes only (a real 3-D run is in the residual test)
    src3, cond3 = _image(3), _image(3, channels=3)
    net3 = ImageGenerator(out_channels=2, output_activation="sigmoid", **TINY)
    v3 = jax.eval_shape(net3.init, jax.random.key(0), src3, cond3)
    assert v3["params"]["head"]["kernel"].shape == (1, 1, 1, 4, 2)
    y3 = jax.eval_shape(net3.apply, v3, src3, cond3)
    assert y3.shape == (2, 8, 8, 8, 2) and y3.dtype == jnp.float32


@pytest.mark.parametrize("ndim, activation", [(2, "none"), (3, "tanh")])
def test_generator_residual_zero_head_is_identity(ndim, activation):
    src = _image(ndim, channels=2)
    net = ImageGenerator(
        out_channels=2, residual=True, zero_head=True, output_activation=activation, **TINY
    )
    params = _init(net, src)
    fwd = jax.jit(net.apply)
    y = fwd(params, src)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(src))
    # a non-zero head gives src + act(bias)
    moved = jax.tree.map(lambda p: p, params)
    moved["params"]["head"]["bias"] = jnp.full((2,), 0.5)
    expected = src + (0.5 if activation == "none" else np.tanh(0.5))
    np.testing.assert_allclose(np.asarray(fwd(moved, src)), np.asarray(expected), atol=1e-6)
    if ndim == 3:
        return

    # the zero-initialised head still gets a gradient
    def loss(p):
        return jnp.mean((net.apply(p, src) - src[..., ::-1]) ** 2)

    g = jax.jit(jax.grad(loss))(params)["params"]["head"]["kernel"]
    assert float(jnp.max(jnp.abs(g))) > 0.0


def test_generator_bf16_compute_float32_output():
    src = _image(2)
    net = ImageGenerator(
        out_channels=3, output_activation="sigmoid", dtype=jnp.bfloat16, norm="instance", **TINY
    )
    params = _init(net, src)
    dtypes = set(jax.tree.leaves(jax.tree.map(lambda p: p.dtype, params)))
    assert dtypes == {jnp.dtype(jnp.float32)}
    assert set(params) == {"params"}
    y = jax.jit(net.apply)(params, src)
    assert y.shape == (2, 16, 16, 3)
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    assert 0.0 < float(jnp.min(y)) and float(jnp.max(y)) < 1.0


def test_generator_errors():
    def init(net, *xs):  # shape-only: the checks run at trace time
        return jax.eval_shape(net.init, jax.random.key(0), *xs)

    x1 = jnp.zeros((1, 16, 16, 1))
    x2 = jnp.zeros((1, 16, 16, 2))
    with pytest.raises(ValueError, match=r"residual=True needs images\[0\].*\(1, 16, 16, 2\)"):
        init(ImageGenerator(out_channels=1, residual=True, **TINY), x2)
    with pytest.raises(ValueError, match="sigmoid"):
        init(ImageGenerator(residual=True, output_activation="sigmoid", **TINY), x1)
    with pytest.raises(ValueError, match=r"output_activation='relu' is not one of"):
        init(ImageGenerator(output_activation="relu", **TINY), x1)
    with pytest.raises(ValueError, match=r"images\[1\].*\(1, 8, 16, 1\) vs \(1, 16, 16, 1\)"):
        init(ImageGenerator(**TINY), x1, jnp.zeros((1, 8, 16, 1)))
    with pytest.raises(ValueError, match=r"spatial axes.*\(1, 16, 1\)"):
        init(ImageGenerator(**TINY), jnp.zeros((1, 16, 1)))
    with pytest.raises(ValueError, match="at least one input image"):
        init(ImageGenerator(**TINY))
    with pytest.raises(ValueError, match=r"divisible by 2.*\(15, 16\)"):
        init(ImageGenerator(**TINY), jnp.zeros((1, 15, 16, 1)))
