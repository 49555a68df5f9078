"""Tests for jrs_jax.nets.multitask (tiny shapes: 2-D 16x16, 3-D 8x8x8)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import (
    CrossStitch,
    Decoder,
    Encoder,
    GatedCoAttention,
    SharedEncoderMultiDecoder,
    UNet,
)

SHAPES = {2: (16, 16), 3: (8, 8, 8)}
HEADS = (("seg", 3), ("flow", 2))


def _init(net, *inputs):
    # rbg keys: threefry-based initialisers take seconds to compile on CPU
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(net.init)(key, *inputs)


def _maps(ndim, n, channels=4, batch=2, spatial=None, seed=1):
    # numpy data: eager jax.random calls compile per shape, which is slow on CPU
    spatial = SHAPES[ndim] if spatial is None else spatial
    rng = np.random.default_rng(seed)
    return [
        jnp.asarray(rng.standard_normal((batch, *spatial, channels)), jnp.float32) for _ in range(n)
    ]


def _eval_init(net, *xs):  # shape-only: the checks run at trace time
    return jax.eval_shape(net.init, jax.random.key(0), *xs)


# ----------------------------------------------------------------------------- CrossStitch


def test_cross_stitch_init_and_identity():
    a, b = _maps(2, 2, spatial=(4, 4))
    params = _init(CrossStitch(), a, b)
    alpha = np.asarray(params["params"]["alpha"])
    assert alpha.shape == (2, 2, 4) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha[:, :, 0], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    maps3 = _maps(3, 3, channels=2, spatial=(4, 4, 4))
    alpha3 = np.asarray(_init(CrossStitch(self_weight=0.7), *maps3)["params"]["alpha"])
    np.testing.assert_allclose(
        alpha3[..., 1], [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]], rtol=1e-6
    )
    np.testing.assert_allclose(alpha3.sum(axis=1), 1.0, rtol=1e-6)
    # self_weight=1: identity (no sharing)
    unit = CrossStitch(self_weight=1.0)
    out = jax.jit(unit.apply)(_init(unit, *maps3), *maps3)
    assert isinstance(out, tuple) and len(out) == 3
    for x, y in zip(maps3, out):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


@pytest.mark.parametrize("ndim", [2, 3])
def test_cross_stitch_given_alpha_is_manual_sum(ndim):
    n, c = 3, 4
    maps = _maps(ndim, n, channels=c, spatial=(4,) * ndim)
    alpha = np.random.default_rng(7).standard_normal((n, n, c)).astype(np.float32)
    out = jax.jit(CrossStitch().apply)({"params": {"alpha": jnp.asarray(alpha)}}, *maps)
    xs = [np.asarray(m, np.float64) for m in maps]
    for i in range(n):
        manual = sum(alpha[i, j] * xs[j] for j in range(n))
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(manual), rtol=1e-5, atol=1e-6)


def test_cross_stitch_errors():
    a = jnp.zeros((1, 8, 8, 4))
    with pytest.raises(ValueError, match=r"equal shape.*maps\[1\] \(1, 8, 8, 3\)"):
        _eval_init(CrossStitch(), a, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="at least 2 feature maps, got 1"):
        _eval_init(CrossStitch(), a)
    with pytest.raises(ValueError, match=r"maps\[0\].*spatial axes.*\(8, 4\)"):
        _eval_init(CrossStitch(), jnp.zeros((8, 4)), jnp.zeros((8, 4)))


# ----------------------------------------------------------------------------- GatedCoAttention


@pytest.mark.parametrize("ndim", [2, 3])
def test_co_attention_formula(ndim):
    (a,) = _maps(ndim, 1, channels=4, spatial=(4,) * ndim)
    (b,) = _maps(ndim, 1, channels=6, spatial=(4,) * ndim)
    b = b + 1.0
    block = GatedCoAttention()
    params = _init(block, a, b)
    p = params["params"]
    assert p["gate_a"]["kernel"].shape == (*(1,) * ndim, 10, 4)
    assert p["gate_b"]["kernel"].shape == (*(1,) * ndim, 10, 6)
    # non-zero biases so the check covers them
    p["gate_a"]["bias"] = jnp.linspace(-1, 1, 4)
    p["gate_b"]["bias"] = jnp.linspace(1, -1, 6)
    fwd = jax.jit(block.apply)
    a2, b2 = fwd(params, a, b)
    # manual formula in float64 numpy (conv 1^D = per-voxel matrix product)
    an, bn = np.asarray(a, np.float64), np.asarray(b, np.float64)
    pn = jax.tree.map(lambda v: np.asarray(v, np.float64), p)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    g_a = sigmoid(
        np.concatenate([bn, an], -1) @ pn["gate_a"]["kernel"].reshape(10, 4) + pn["gate_a"]["bias"]
    )
    g_b = sigmoid(
        np.concatenate([an, bn], -1) @ pn["gate_b"]["kernel"].reshape(10, 6) + pn["gate_b"]["bias"]
    )
    np.testing.assert_allclose(np.asarray(a2), an * (1 + g_a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(b2), bn * (1 + g_b), rtol=1e-4, atol=1e-5)
    # the gate of a really depends on b
    a3, _ = fwd(params, a, b * 2.0)
    assert float(jnp.max(jnp.abs(a3 - a2))) > 1e-3


def test_co_attention_spatial_gate_and_errors():
    a, b = _maps(2, 2, spatial=(8, 8))
    block = GatedCoAttention(per_channel=False, dtype=jnp.bfloat16)
    params = _eval_init(block, a, b)
    assert params["params"]["gate_a"]["kernel"].shape == (1, 1, 8, 1)
    assert params["params"]["gate_a"]["kernel"].dtype == jnp.float32
    out = jax.eval_shape(block.apply, params, a, b)
    assert [o.shape for o in out] == [(2, 8, 8, 4)] * 2
    assert out[0].dtype == jnp.bfloat16
    with pytest.raises(
        ValueError, match=r"same batch and spatial shape.*\(2, 8, 8, 4\) vs b \(2, 8, 4, 4\)"
    ):
        _eval_init(GatedCoAttention(), a, b[:, :, :4])
    with pytest.raises(ValueError, match=r"b must have shape.*\(2, 8, 4\)"):
        _eval_init(GatedCoAttention(), a, b[:, 0])


# ------------------------------------------------------------------- Decoder / multi-decoder


@pytest.mark.parametrize("upsample", ["transpose"])
def test_decoder_matches_unet_decoder(upsample):
    (x,) = _maps(2, 1, channels=2)
    cfg = dict(features=(4, 8, 8), decoder_features=(8, 4, 3))
    unet = UNet(**cfg, upsample=upsample)
    params = _init(unet, x)["params"]
    dec = Decoder(features=(8, 4), final_features=(3,), upsample=upsample)
    dec_params = {k: v for k, v in params.items() if k != "encoder"}
    # same parameter names as UNet's decoder: the UNet's params drive the Decoder

    @jax.jit
    def both(params):
        skips = Encoder(features=(4, 8, 8)).apply({"params": params["encoder"]}, x)
        return dec.apply({"params": dec_params}, skips), unet.apply({"params": params}, x)

    y, ref = both(params)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-6)
    skips = jax.eval_shape(Encoder(features=(4, 8, 8)).apply, {"params": params["encoder"]}, x)
    with pytest.raises(ValueError, match=r"needs 3 skip maps.*got 2"):
        jax.eval_shape(dec.apply, {"params": dec_params}, skips[1:])


@pytest.mark.parametrize("ndim", [2, 3])
def test_multi_decoder_shapes_shared_encoder_and_gradients(ndim):
    moving, fixed = _maps(ndim, 2, channels=1)
    net = SharedEncoderMultiDecoder(heads=HEADS, features=(4, 8))
    # 3-D: shapes only (eval_shape); 2-D: real run and gradients
    params = _init(net, moving, fixed) if ndim == 2 else _eval_init(net, moving, fixed)
    assert set(params) == {"params"}
    assert set(params["params"]) == {
        "encoder",
        "decoder_seg",
        "decoder_flow",
        "head_seg",
        "head_flow",
    }
    # one encoder for both tasks, fed with concat(moving, fixed)
    assert params["params"]["encoder"]["enc0"]["conv0"]["kernel"].shape[-2] == 2
    out = (jax.jit(net.apply) if ndim == 2 else functools.partial(jax.eval_shape, net.apply))(
        params, moving, fixed
    )
    assert set(out) == {"seg", "flow"}
    assert out["seg"].shape == (2, *SHAPES[ndim], 3)
    assert out["flow"].shape == (2, *SHAPES[ndim], 2)
    assert all(v.dtype == jnp.float32 for v in out.values())
    if ndim == 3:
        return

    @jax.jit
    def grads(p):
        def head_loss(name):
            return lambda p: jnp.sum(net.apply(p, moving, fixed)[name] ** 2)

        return {name: jax.grad(head_loss(name))(p)["params"] for name, _ in HEADS}

    g = grads(params)
    for name, other in (("seg", "flow"), ("flow", "seg")):
        enc = jax.tree.leaves(g[name]["encoder"])
        assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in enc), name
        assert float(jnp.max(jnp.abs(g[name][f"decoder_{name}"]["dec0"]["conv0"]["kernel"]))) > 0
        # without cross-stitch the other task's decoder and head get nothing
        other_leaves = jax.tree.leaves((g[name][f"decoder_{other}"], g[name][f"head_{other}"]))
        assert all(float(jnp.max(jnp.abs(leaf))) == 0 for leaf in other_leaves), name


def test_multi_decoder_cross_stitch():
    moving, fixed = _maps(2, 2, channels=1)
    cfg = dict(heads=HEADS, features=(4, 8), decoder_features=(4, 4))
    plain = SharedEncoderMultiDecoder(**cfg)
    stitched = SharedEncoderMultiDecoder(**cfg, cross_stitch=True, stitch_self_weight=1.0)
    params = _init(stitched, moving, fixed)
    p = params["params"]
    assert {"stitch0", "stitch1"} <= set(p) and "stitch2" not in p
    assert p["stitch0"]["alpha"].shape == (2, 2, 4)
    mixed = jax.tree.map(lambda v: v, params)
    for name in ("stitch0", "stitch1"):
        mixed["params"][name]["alpha"] = jnp.full((2, 2, 4), 0.5)

    @jax.jit
    def run(params, mixed):
        out = stitched.apply(params, moving, fixed)
        plain_params = {k: v for k, v in params["params"].items() if not k.startswith("stitch")}
        ref = plain.apply({"params": plain_params}, moving, fixed)
        grads = jax.grad(lambda q: jnp.sum(stitched.apply(q, moving, fixed)["seg"] ** 2))(mixed)
        return out, ref, grads["params"]

    out, ref, g = run(params, mixed)
    # self_weight=1: identity stitches -> same as independent decoders with the same params
    for k in ref:
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(ref[k]), rtol=1e-6, atol=1e-6)
    # 0.5 / 0.5 mixing: the seg output now depends on the flow decoder and on the stitches
    assert float(jnp.max(jnp.abs(g["decoder_flow"]["dec0"]["conv0"]["kernel"]))) > 0
    assert float(jnp.max(jnp.abs(g["stitch1"]["alpha"]))) > 0


def test_multi_decoder_bf16_and_errors():
    x = jnp.zeros((1, 16, 16, 1))
    net = SharedEncoderMultiDecoder(
        heads=HEADS, features=(4, 8), dtype=jnp.bfloat16, cross_stitch=True
    )
    variables = _eval_init(net, x)
    assert set(jax.tree.leaves(jax.tree.map(lambda v: v.dtype, variables))) == {
        jnp.dtype(jnp.float32)
    }
    out = jax.eval_shape(net.apply, variables, x)
    assert {k: v.dtype for k, v in out.items()} == {"seg": jnp.float32, "flow": jnp.float32}
    widths = (("seg", 3, (8,)), ("flow", 2, (4,)))
    with pytest.raises(ValueError, match=r"equal decoder widths.*'seg': \(8,\), 'flow': \(4,\)"):
        _eval_init(SharedEncoderMultiDecoder(heads=widths, features=(4, 8), cross_stitch=True), x)
    # unequal widths are fine without cross-stitch
    ok = _eval_init(SharedEncoderMultiDecoder(heads=widths, features=(4, 8)), x)
    assert ok["params"]["decoder_seg"]["dec0"]["conv0"]["kernel"].shape[-1] == 8
    with pytest.raises(ValueError, match="at least 2 heads"):
        _eval_init(
            SharedEncoderMultiDecoder(heads=(("seg", 3),), features=(4, 8), cross_stitch=True), x
        )
    with pytest.raises(ValueError, match="unique"):
        _eval_init(SharedEncoderMultiDecoder(heads=(("a", 1), ("a", 2)), features=(4, 8)), x)
    with pytest.raises(ValueError, match=r"head 'seg'.*at least 2 entries"):
        _eval_init(SharedEncoderMultiDecoder(heads=(("seg", 2, (4,)),), features=(4, 8, 8)), x)
    with pytest.raises(ValueError, match=r"images\[1\].*\(1, 8, 16, 1\) vs \(1, 16, 16, 1\)"):
        _eval_init(
            SharedEncoderMultiDecoder(heads=HEADS, features=(4, 8)), x, jnp.zeros((1, 8, 16, 1))
        )
    with pytest.raises(ValueError, match=r"spatial axes.*\(1, 16, 1\)"):
        _eval_init(SharedEncoderMultiDecoder(heads=HEADS, features=(4, 8)), jnp.zeros((1, 16, 1)))
