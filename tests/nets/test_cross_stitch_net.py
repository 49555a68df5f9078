"""CrossStitchNet (two stitched U-Net paths), Encoder.stage and per-level CrossStitch α."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import CrossStitch, CrossStitchNet, Encoder, RegistrationNet, SegmentationNet

SMALL = {"features": (4, 8), "decoder_features": (8, 4)}


def _init(net, *inputs):
    # rbg keys: threefry-based initialisers take seconds to compile on CPU
    return jax.jit(net.init)(jax.random.key(0, impl="unsafe_rbg"), *inputs)


def _x(shape, channels=3, seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((2, *shape, channels)), jnp.float32)


def _perturb(params, scale=0.3, seed=2):
    """Non-trivial weights (the flow head starts at ~1e-5: its output would be ~0)."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    leaves = [p + scale * jnp.asarray(rng.standard_normal(p.shape), p.dtype) for p in leaves]
    return jax.tree.unflatten(tree, leaves)


def _identity_alpha(params):
    out = jax.tree_util.tree_map_with_path(
        lambda path, p: (
            jnp.broadcast_to(jnp.eye(2)[:, :, None], p.shape)
            if any(getattr(k, "key", None) == "alpha" for k in path)
            else p
        ),
        params,
    )
    return out


def test_encoder_stages_equal_the_encoder():
    enc = Encoder(features=(4, 8, 8))
    x = _x((16, 16))
    params = _init(enc, x)
    assert sorted(params["params"]) == ["down1", "down2", "enc0", "enc1", "enc2"]
    full = enc.apply(params, x)
    y, staged = x, []
    for i in range(3):
        y = enc.apply(params, i, y, method=Encoder.stage)
        staged.append(y)
    for a, b in zip(full, staged):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="out of range"):
        enc.apply(params, 3, y, method=Encoder.stage)


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 8)])
def test_shapes_parameters_and_alpha_init(shape):
    ndim = len(shape)
    net = CrossStitchNet(num_classes=3, **SMALL)
    x_s, x_r = _x(shape), _x(shape, channels=2)
    params = _init(net, x_s, x_r)
    p = params["params"]
    assert sorted(p) == sorted(
        [
            "seg_encoder",
            "reg_encoder",
            "seg_decoder",
            "reg_decoder",
            "seg_head",
            "flow",
            "stitch_enc0",
            "stitch_enc1",
            "stitch_dec0",
            "stitch_dec1",
        ]
    )
    widths = {"stitch_enc0": 4, "stitch_enc1": 8, "stitch_dec0": 8, "stitch_dec1": 4}
    for name, c in widths.items():
        alpha = np.asarray(p[name]["alpha"])
        assert alpha.shape == (2, 2, c)
        np.testing.assert_allclose(alpha[0, 0], 0.9, rtol=1e-6)
        np.testing.assert_allclose(alpha[0, 1], 0.1, rtol=1e-6)
        np.testing.assert_allclose(alpha[1, 0], 0.1, rtol=1e-6)
        np.testing.assert_allclose(alpha[1, 1], 0.9, rtol=1e-6)
    out = jax.jit(net.apply)(params, x_s, x_r)
    assert out["seg"].shape == (2, *shape, 3) and out["seg"].dtype == jnp.float32
    assert out["disp"].shape == (2, *shape, ndim)
    assert float(jnp.abs(out["disp"]).max()) < 1e-2  # N(0, 1e-5) head: near-identity field
    level = _init(CrossStitchNet(num_classes=3, stitch="level", **SMALL), x_s, x_r)
    assert level["params"]["stitch_dec0"]["alpha"].shape == (2, 2, 1)


def test_separate_paths_are_a_segmentation_and_a_registration_net():
    shape = (16, 16)
    net = CrossStitchNet(num_classes=3, stitch="none", **SMALL)
    x = _x(shape, channels=2)
    params = _perturb(_init(net, x, x))
    p = params["params"]
    assert not [k for k in p if k.startswith("stitch")]
    out = jax.jit(net.apply)(params, x, x)

    def unet(path):
        return {"encoder": p[f"{path}_encoder"], **p[f"{path}_decoder"]}

    seg = SegmentationNet(num_classes=3, **SMALL).apply(
        {"params": {"unet": unet("seg"), "head": p["seg_head"]}}, x
    )
    reg = RegistrationNet(**SMALL).apply(
        {"params": {"unet": unet("reg"), "flow": p["flow"]}}, x[..., :1], x[..., 1:]
    )
    np.testing.assert_allclose(np.asarray(out["seg"]), np.asarray(seg), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out["disp"]), np.asarray(reg["disp"]), rtol=1e-5, atol=1e-6
    )


def _cross_grads(net, params, x_s, x_r):
    """|d sum(seg) / d reg_input| and |d sum(disp) / d seg_input|, summed."""
    g_seg_r = jax.grad(lambda r: net.apply(params, x_s, r)["seg"].sum())(x_r)
    g_disp_s = jax.grad(lambda s: net.apply(params, s, x_r)["disp"].sum())(x_s)
    return float(jnp.abs(g_seg_r).sum()), float(jnp.abs(g_disp_s).sum())


def test_identity_alpha_means_no_interaction_and_stitching_means_gradient_flow():
    shape = (16, 16)
    net = CrossStitchNet(num_classes=3, **SMALL)
    x_s, x_r = _x(shape), _x(shape, seed=3)
    params = _perturb(_init(net, x_s, x_r))
    # α = identity: each path ignores the other's input, and equals the unstitched network
    ident = _identity_alpha(params)
    assert _cross_grads(net, ident, x_s, x_r) == (0.0, 0.0)
    plain = {"params": {k: v for k, v in ident["params"].items() if not k.startswith("stitch")}}
    a = net.apply(ident, x_s, x_r)
    b = CrossStitchNet(num_classes=3, stitch="none", **SMALL).apply(plain, x_s, x_r)
    for k in ("seg", "disp"):
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=1e-6)
    # 0.9 / 0.1: information and gradients cross between the paths
    g_seg_r, g_disp_s = _cross_grads(net, params, x_s, x_r)
    assert g_seg_r > 1e-3 and g_disp_s > 1e-3
    grads = jax.grad(lambda q: net.apply(q, x_s, x_r)["seg"].sum())(params)["params"]
    reg_enc = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["reg_encoder"]))
    assert reg_enc > 1e-3  # the segmentation output trains the registration encoder
    assert float(jnp.abs(grads["stitch_enc0"]["alpha"]).sum()) > 0  # and the α
    ident_grads = jax.grad(lambda q: net.apply(q, x_s, x_r)["seg"].sum())(ident)["params"]
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(ident_grads["flow"]))


def test_per_level_alpha_is_one_scalar_per_pair_of_maps():
    a, b = _x((4, 4), channels=3), _x((4, 4), channels=3, seed=5)
    unit = CrossStitch(per_channel=False)
    alpha = jnp.asarray([[[0.7], [0.2]], [[-0.4], [1.3]]], jnp.float32)
    out_a, out_b = unit.apply({"params": {"alpha": alpha}}, a, b)
    np.testing.assert_allclose(np.asarray(out_a), np.asarray(0.7 * a + 0.2 * b), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out_b), np.asarray(-0.4 * a + 1.3 * b), rtol=1e-5)


def test_errors():
    x = jnp.zeros((1, 16, 16, 2))
    with pytest.raises(ValueError, match="stitch='diag'"):
        jax.eval_shape(
            CrossStitchNet(num_classes=3, stitch="diag", **SMALL).init, jax.random.key(0), x, x
        )
    with pytest.raises(ValueError, match="same batch and spatial shape"):
        jax.eval_shape(
            CrossStitchNet(num_classes=3, **SMALL).init,
            jax.random.key(0),
            x,
            jnp.zeros((1, 8, 16, 2)),
        )
    with pytest.raises(ValueError, match="divisible by 2"):
        jax.eval_shape(
            CrossStitchNet(num_classes=3, **SMALL).init,
            jax.random.key(0),
            jnp.zeros((1, 15, 16, 2)),
            jnp.zeros((1, 15, 16, 2)),
        )
