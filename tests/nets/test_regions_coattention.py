"""Tests for the DDIR / SDDIR networks: RegionRegistrationNets, AffinityCoAttention,
CoSegmentationNet (tiny shapes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import (
    AffinityCoAttention,
    CoSegmentationNet,
    ProbabilisticRegistrationNet,
    RegionRegistrationNets,
)


def _init(net, *inputs):
    return jax.jit(net.init)(jax.random.key(0, impl="unsafe_rbg"), *inputs)


def _rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# ----------------------------------------------------------------------- RegionRegistrationNets


@pytest.mark.parametrize("ndim", [2, 3])
def test_region_nets_are_k_independent_networks(ndim):
    k, spatial = 3, (8,) * ndim
    net = RegionRegistrationNets(num_regions=k, features=(4, 8), int_downsize=2)
    m, f = _rand((k, 2, *spatial, 1), 1), _rand((k, 2, *spatial, 1), 2)
    params = _init(net, m, f)
    leaves = jax.tree.leaves(params)
    assert all(x.shape[0] == k for x in leaves)
    out = jax.jit(net.apply)(params, m, f)
    assert {n: v.shape for n, v in out.items()} == {
        n: (k, 2, *spatial, ndim) for n in ("disp", "velocity", "mean", "log_var")
    }
    # region j's slice of the stacked parameters drives a plain ProbabilisticRegistrationNet
    single = ProbabilisticRegistrationNet(features=(4, 8), int_downsize=2)
    for j in range(k):
        pj = {"params": jax.tree.map(lambda x, j=j: x[j], params["params"]["nets"])}
        ref = jax.jit(single.apply)(pj, m[j], f[j])
        np.testing.assert_allclose(out["disp"][j], ref["disp"], rtol=1e-5, atol=1e-7)
    # independent initialisation per region
    kern = params["params"]["nets"]["unet"]["encoder"]["enc0"]["conv0"]["kernel"]
    assert float(jnp.abs(kern[0] - kern[1]).max()) > 1e-3


def test_region_nets_sample_only_with_an_rng_and_check_shapes():
    net = RegionRegistrationNets(num_regions=2, features=(4, 8))
    x = _rand((2, 1, 8, 8, 1))
    params = _init(net, x, x)
    mean = jax.jit(net.apply)(params, x, x)
    assert np.array_equal(mean["velocity"], mean["mean"])
    s1 = net.apply(params, x, x, rngs={"sample": jax.random.key(1)})
    assert not np.array_equal(s1["velocity"], s1["mean"])
    with pytest.raises(ValueError, match=r"\[K=2, B, \*S, C\].*\(3, 1, 8, 8, 1\)"):
        net.init(jax.random.key(0), _rand((3, 1, 8, 8, 1)), _rand((3, 1, 8, 8, 1)))


# -------------------------------------------------------------------------- AffinityCoAttention


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("ndim", [2, 3])
def test_affinity_co_attention_matches_the_formula(ndim):
    spatial = (4,) * ndim
    a, b = _rand((2, *spatial, 6), 3), _rand((2, *spatial, 6), 4)
    block = AffinityCoAttention(features=5)
    params = _init(block, a, b)
    o_a, o_b = jax.jit(block.apply)(params, a, b)
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params["params"])
    an = np.asarray(a, np.float64).reshape(2, -1, 6)
    bn = np.asarray(b, np.float64).reshape(2, -1, 6)

    def conv(x, name):  # 1x1 conv
        return x @ p[name]["kernel"] + p[name]["bias"]

    aff = np.einsum("bnc,bmc->bnm", conv(an, "f"), conv(bn, "g"))
    att_a = _softmax(aff) @ conv(bn, "h2")
    att_b = _softmax(aff.transpose(0, 2, 1)) @ conv(an, "h1")
    sig = lambda z: 1 / (1 + np.exp(-z))
    ref_a = np.concatenate([an, sig(att_a) * att_a], -1).reshape(2, *spatial, 11)
    ref_b = np.concatenate([bn, sig(att_b) * att_b], -1).reshape(2, *spatial, 11)
    np.testing.assert_allclose(o_a, ref_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(o_b, ref_b, rtol=1e-4, atol=1e-5)


def test_affinity_co_attention_is_global():
    # changing one far-away position of the fixed map changes the moving output everywhere
    a, b = _rand((1, 4, 4, 3), 5), _rand((1, 4, 4, 3), 6)
    block = AffinityCoAttention()
    params = _init(block, a, b)
    o1, _ = block.apply(params, a, b)
    o2, _ = block.apply(params, a, b.at[0, 3, 3].add(5.0))
    changed = np.abs(np.asarray(o2 - o1))[0, ..., 3:].max(-1)
    assert (changed > 1e-6).all()
    assert np.array_equal(o1[..., :3], a)  # the input features pass through unchanged
    with pytest.raises(ValueError, match="equal shape"):
        block.init(jax.random.key(0), a, _rand((1, 4, 2, 3)))


# ---------------------------------------------------------------------------- CoSegmentationNet


def test_co_segmentation_net_shares_weights_and_couples_the_images():
    m, f = _rand((1, 16, 16, 1), 7), _rand((1, 16, 16, 1), 8)
    net = CoSegmentationNet(num_classes=3, features=(4, 8, 8))
    params = _init(net, m, f)
    assert set(params["params"]) == {"encoder", "co_attention", "decoder", "head"}
    lm, lf = jax.jit(net.apply)(params, m, f)
    assert lm.shape == lf.shape == (1, 16, 16, 3)
    # with co-attention the moving segmentation depends on the fixed image ...
    lm3, _ = net.apply(params, m, f * 2.0 + 1.0)
    assert float(jnp.abs(lm3 - lm).max()) > 1e-5
    # ... without it, it does not
    plain = CoSegmentationNet(num_classes=3, features=(4, 8, 8), co_attention=False)
    pp = _init(plain, m, f)
    assert "co_attention" not in pp["params"]
    a, a_f = plain.apply(pp, m, f)
    b, _ = plain.apply(pp, m, f * 2.0 + 1.0)
    np.testing.assert_array_equal(a, b)
    # one encoder-decoder for both images: swapping the inputs swaps the outputs
    s_m, s_f = plain.apply(pp, f, m)
    np.testing.assert_allclose(s_m, a_f, atol=1e-6)
    np.testing.assert_allclose(s_f, a, atol=1e-6)
