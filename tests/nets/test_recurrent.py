"""Tests for jrs_jax.nets.recurrent (tiny shapes: 2-D 8x8, 3-D 4x4x4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import ConvGRU, ConvGRUCell

SHAPES = {2: (8, 8), 3: (4, 4, 4)}
F = 3


def _init(net, *inputs):
    # rbg keys: threefry-based initialisers take seconds to compile on CPU
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(net.init)(key, *inputs)


def _seq(ndim, t=4, channels=2, batch=2, seed=0):
    # numpy data: eager jax.random calls compile per shape, which is slow on CPU
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((batch, t, *SHAPES[ndim], channels))
    h0 = rng.standard_normal((batch, *SHAPES[ndim], F)) * 0.5
    return jnp.asarray(xs, jnp.float32), jnp.asarray(h0, jnp.float32)


@pytest.mark.parametrize("ndim", [2, 3])
def test_conv_gru_scan_equals_manual_cell_loop(ndim):
    xs, h0 = _seq(ndim)
    gru = ConvGRU(features=F)
    params = _init(gru, xs)
    cell_params = params["params"]["cell"]
    assert cell_params["input"]["kernel"].shape == (*(3,) * ndim, 2, 3 * F)
    assert cell_params["hidden"]["kernel"].shape == (*(3,) * ndim, F, 2 * F)
    assert "bias" not in cell_params["hidden"]
    cell = ConvGRUCell(features=F)

    @jax.jit
    def run(params):
        hs, h_last = gru.apply(params, xs, h0)
        h, manual = h0, []
        for t in range(xs.shape[1]):
            h, y = cell.apply({"params": params["params"]["cell"]}, h, xs[:, t])
            manual.append(y)
        zeros_hs, _ = gru.apply(params, xs)  # default h0 = 0
        h1_from_zero, _ = cell.apply(
            {"params": params["params"]["cell"]}, jnp.zeros_like(h0), xs[:, 0]
        )
        return hs, h_last, jnp.stack(manual, axis=1), h, zeros_hs[:, 0], h1_from_zero

    hs, h_last, manual, h_manual, z0, z0_manual = run(params)
    assert hs.shape == (2, 4, *SHAPES[ndim], F) and hs.dtype == jnp.float32
    assert h_last.shape == (2, *SHAPES[ndim], F)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(manual), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(h_last), np.asarray(hs[:, -1]))
    np.testing.assert_allclose(np.asarray(h_last), np.asarray(h_manual), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(z0), np.asarray(z0_manual), rtol=1e-5, atol=1e-6)
    # the state really evolves and depends on h0
    assert float(jnp.max(jnp.abs(hs[:, 1] - hs[:, 0]))) > 1e-3
    assert float(jnp.max(jnp.abs(z0 - hs[:, 0]))) > 1e-3
    assert float(jnp.max(jnp.abs(hs))) < 1.0 + float(jnp.max(jnp.abs(h0)))


def test_conv_gru_update_gate():
    xs, h0 = _seq(2)
    gru = ConvGRU(features=F)
    params = _init(gru, xs)
    fwd = jax.jit(gru.apply)

    def with_gate(bias, zero_candidate_hidden=False):
        p = jax.tree.map(lambda v: np.array(v), params)
        cell = p["params"]["cell"]
        cell["input"]["kernel"][..., :F] = 0.0  # z = sigmoid(b_z)
        cell["hidden"]["kernel"][..., :F] = 0.0
        cell["input"]["bias"][:F] = bias
        if zero_candidate_hidden:
            cell["candidate"]["kernel"][...] = 0.0
        return jax.tree.map(jnp.asarray, p)

    # z = 1: the state is kept at h0 for every step
    hs, h_last = fwd(with_gate(100.0), xs, h0)
    np.testing.assert_array_equal(np.asarray(hs), np.broadcast_to(h0[:, None], hs.shape))
    np.testing.assert_array_equal(np.asarray(h_last), np.asarray(h0))
    # z = 0 and no recurrent candidate term: h_t = tanh(W_n * x_t + b_n), independent of h0
    p0 = with_gate(-100.0, zero_candidate_hidden=True)
    hs_a, _ = fwd(p0, xs, h0)
    hs_b, _ = fwd(p0, xs, -h0)
    np.testing.assert_allclose(np.asarray(hs_a), np.asarray(hs_b), atol=1e-6)
    assert float(jnp.max(jnp.abs(hs_a - h0[:, None]))) > 1e-2
    assert float(jnp.max(jnp.abs(hs_a))) < 1.0


def test_conv_gru_bf16_compute_float32_state():
    xs, _ = _seq(2, t=2)
    gru = ConvGRU(features=F, dtype=jnp.bfloat16)
    variables = jax.eval_shape(gru.init, jax.random.key(0), xs)
    assert set(variables) == {"params"}
    dtypes = set(jax.tree.leaves(jax.tree.map(lambda v: v.dtype, variables)))
    assert dtypes == {jnp.dtype(jnp.float32)}
    hs, h_last = jax.eval_shape(gru.apply, variables, xs)
    assert hs.dtype == h_last.dtype == jnp.float32
    assert hs.shape == (2, 2, 8, 8, F)
    # the convolutions really run in bf16
    jaxpr = str(jax.make_jaxpr(gru.apply)(variables, xs))
    assert "bf16" in jaxpr


def test_conv_gru_errors():
    def init(net, *xs):  # shape-only: the checks run at trace time
        return jax.eval_shape(net.init, jax.random.key(0), *xs)

    xs = jnp.zeros((1, 3, 8, 8, 2))
    with pytest.raises(ValueError, match=r"xs must have shape \[B, T, \*S, C\].*\(1, 8, 8, 2\)"):
        init(ConvGRU(features=F), xs[:, 0])
    with pytest.raises(ValueError, match=r"h0 must have shape.*\(1, 8, 8, 3\).*got \(1, 8, 8, 4\)"):
        init(ConvGRU(features=F), xs, jnp.zeros((1, 8, 8, 4)))
    with pytest.raises(ValueError, match=r"h must have shape.*\(1, 8, 8, 3\).*got \(1, 4, 8, 3\)"):
        init(ConvGRUCell(features=F), jnp.zeros((1, 4, 8, 3)), xs[:, 0])
    with pytest.raises(ValueError, match=r"x must have shape.*spatial axes.*\(1, 8, 2\)"):
        init(ConvGRUCell(features=F), jnp.zeros((1, 8, 3)), jnp.zeros((1, 8, 2)))
