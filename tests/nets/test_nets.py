"""Tests for jrs_jax.nets (tiny shapes: 2-D 16x16, 3-D 8x8x8)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrs_jax.nets import (
    AffineRegistrationNet,
    PatchDiscriminator,
    ProbabilisticRegistrationNet,
    RegistrationNet,
    SegmentationNet,
    UNet,
    norm_layer,
)
from jrs_jax.spatial import integrate_velocity, resize_field, warp

SHAPES = {2: (16, 16), 3: (8, 8, 8)}
TINY = dict(features=(4, 8))


def _images(ndim, channels=1, batch=2, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    shape = (batch, *SHAPES[ndim], channels)
    return jax.random.uniform(k1, shape), jax.random.uniform(k2, shape)


def _init(net, *inputs, **kw):
    # rbg keys: threefry-based initialisers take seconds to compile on CPU
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(functools.partial(net.init, **kw))(key, *inputs)


def _dtypes(params):
    return set(jax.tree.leaves(jax.tree.map(lambda p: p.dtype, params)))


@pytest.mark.parametrize(
    "ndim, cfg, f_last",
    [
        (2, dict(features=(4, 8, 8)), 4),
        (2, dict(features=(4, 8, 8), norm="group", downsample="maxpool", convs_per_level=2), 4),
        (2, dict(features=(6, 8), decoder_features=(8, 5, 3), upsample="transpose"), 3),
        (3, dict(features=(4, 8), norm="instance"), 4),
        (3, dict(features=(4, 8, 8), upsample="transpose"), 4),
    ],
)
def test_unet_shapes_and_dtypes(ndim, cfg, f_last):
    x, _ = _images(ndim, channels=2)
    net = UNet(**cfg)
    params = _init(net, x)
    y = jax.jit(net.apply)(params, x)
    assert y.shape == (2, *SHAPES[ndim], f_last)
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))


def test_bad_spatial_size_raises():
    x = jnp.zeros((1, 18, 16, 1))
    with pytest.raises(ValueError, match=r"\(18, 16\).*divisible by 4|divisible by 4.*\(18, 16\)"):
        UNet(features=(4, 8, 8)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(12, 8, 8\)"):
        m = jnp.zeros((1, 12, 8, 8, 1))
        RegistrationNet(features=(4, 8, 8, 8)).init(jax.random.key(0), m, m)
    with pytest.raises(ValueError, match="spatial axes"):
        UNet(features=(4,)).init(jax.random.key(0), jnp.zeros((1, 16, 1)))


def test_norm_layer_groups():
    assert norm_layer("none", 8) is None
    assert norm_layer("group", 16).num_groups == 8
    assert norm_layer("group", 12).num_groups == 6
    assert norm_layer("group", 5).num_groups == 5
    with pytest.raises(ValueError, match="batch"):
        norm_layer("batch", 8)


@pytest.mark.parametrize("ndim", [2, 3])
def test_registration_shapes_zero_head_identity(ndim):
    moving, fixed = _images(ndim)
    extra = jnp.ones((2, *SHAPES[ndim], 3))
    net = RegistrationNet(**TINY, zero_head=True)
    params = _init(net, moving, fixed, extra)
    # input channels = 1 + 1 + 3
    assert params["params"]["unet"]["encoder"]["enc0"]["conv0"]["kernel"].shape[-2] == 5
    out = jax.jit(net.apply)(params, moving, fixed, extra)
    assert set(out) == {"disp"}
    disp = out["disp"]
    assert disp.shape == (2, *SHAPES[ndim], ndim)
    assert disp.dtype == jnp.float32
    assert bool(jnp.all(disp == 0.0))
    np.testing.assert_array_equal(np.asarray(warp(moving, disp)), np.asarray(moving))


@pytest.mark.parametrize("zero_head", [False, True])
def test_head_init_small_field_nonzero_gradient(zero_head):
    moving, fixed = _images(2)
    net = RegistrationNet(**TINY, zero_head=zero_head)
    params = _init(net, moving, fixed)
    disp = jax.jit(net.apply)(params, moving, fixed)["disp"]
    assert float(jnp.max(jnp.abs(disp))) < 1e-3
    if not zero_head:
        assert float(jnp.max(jnp.abs(disp))) > 0.0  # N(0, 1e-5) head, not zeros

    @jax.jit
    def grads(p):
        def loss(p):
            u = net.apply(p, moving, fixed)["disp"]
            return jnp.mean((warp(moving, u) - fixed) ** 2)

        return jax.grad(loss)(p)

    g = grads(params)["params"]["flow"]["kernel"]
    assert float(jnp.max(jnp.abs(g))) > 1e-6


@pytest.mark.parametrize("ndim", [2])
def test_velocity_output_integrates(ndim):
    moving, fixed = _images(ndim)
    net = RegistrationNet(**TINY, output="velocity", integration_steps=5, head_init_std=0.05)
    params = _init(net, moving, fixed)
    out = jax.jit(net.apply)(params, moving, fixed)
    v = out["velocity"]
    assert v.shape == out["disp"].shape == (2, *SHAPES[ndim], ndim)
    assert float(jnp.max(jnp.abs(v))) > 1e-2  # non-trivial field
    expected = jax.jit(functools.partial(integrate_velocity, steps=5))(v)
    np.testing.assert_allclose(np.asarray(out["disp"]), np.asarray(expected), atol=1e-6)
    # not simply the velocity itself
    assert float(jnp.max(jnp.abs(out["disp"] - v))) > 1e-6


def test_velocity_int_downsize_full_resolution():
    moving, fixed = _images(2)
    net = RegistrationNet(**TINY, output="velocity", int_downsize=2, head_init_std=0.05)
    params = _init(net, moving, fixed)
    out = jax.jit(net.apply)(params, moving, fixed)
    assert out["disp"].shape == (2, 16, 16, 2)
    assert out["velocity"].shape == (2, 16, 16, 2)
    v = out["velocity"]
    expected = resize_field(integrate_velocity(resize_field(v, (8, 8))), (16, 16))
    np.testing.assert_allclose(np.asarray(out["disp"]), np.asarray(expected), atol=1e-5)
    full = integrate_velocity(v)
    assert float(jnp.max(jnp.abs(out["disp"] - full))) > 1e-6  # really integrated at half res


def test_probabilistic_sampling():
    moving, fixed = _images(2)
    net = ProbabilisticRegistrationNet(**TINY, integration_steps=4)
    params = _init(net, moving, fixed)
    assert set(params) == {"params"}
    fwd = jax.jit(net.apply)
    a = fwd(params, moving, fixed, rngs={"sample": jax.random.key(1)})
    b = fwd(params, moving, fixed, rngs={"sample": jax.random.key(1)})
    c = fwd(params, moving, fixed, rngs={"sample": jax.random.key(2)})
    assert set(a) == {"disp", "velocity", "mean", "log_var"}
    for k in a:
        assert a[k].shape == (2, 16, 16, 2), k
    np.testing.assert_array_equal(np.asarray(a["disp"]), np.asarray(b["disp"]))
    assert float(jnp.max(jnp.abs(a["velocity"] - c["velocity"]))) > 1e-4
    assert float(jnp.max(jnp.abs(a["velocity"] - a["mean"]))) > 1e-4
    # log-variance head: bias -10, weights ~ 0
    np.testing.assert_allclose(np.asarray(a["log_var"]), -10.0, atol=1e-3)
    # no rng / sample=False -> deterministic mean
    d = fwd(params, moving, fixed)
    e = jax.jit(functools.partial(net.apply, sample=False))(
        params, moving, fixed, rngs={"sample": jax.random.key(1)}
    )
    for out in (d, e):
        np.testing.assert_array_equal(np.asarray(out["velocity"]), np.asarray(out["mean"]))
        np.testing.assert_allclose(
            np.asarray(out["disp"]),
            np.asarray(integrate_velocity(out["mean"], steps=4)),
            atol=1e-7,
        )
    np.testing.assert_array_equal(np.asarray(d["mean"]), np.asarray(a["mean"]))


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_identity_at_init(ndim):
    moving, fixed = _images(ndim)
    net = AffineRegistrationNet(**TINY)
    params = _init(net, moving, fixed)
    out = jax.jit(net.apply)(params, moving, fixed)
    eye = np.concatenate([np.eye(ndim), np.zeros((ndim, 1))], axis=1)
    assert out["matrix"].shape == (2, ndim, ndim + 1)
    np.testing.assert_array_equal(np.asarray(out["matrix"]), np.broadcast_to(eye, (2, *eye.shape)))
    assert out["disp"].shape == (2, *SHAPES[ndim], ndim)
    assert bool(jnp.all(out["disp"] == 0.0))

    # zero-initialised dense layer still receives a gradient
    def loss(p):
        u = net.apply(p, moving, fixed)["disp"]
        return jnp.mean((warp(moving, u) - fixed) ** 2)

    g = jax.jit(jax.grad(loss))(params)["params"]["head"]["dense"]["kernel"]
    assert float(jnp.max(jnp.abs(g))) > 0.0


@pytest.mark.parametrize("ndim, multilabel", [(2, False), (3, False), (2, True)])
def test_segmentation_shapes(ndim, multilabel):
    image, _ = _images(ndim)
    net = SegmentationNet(num_classes=3, multilabel=multilabel, **TINY)
    params = _init(net, image)
    logits = jax.jit(net.apply)(params, image)
    assert logits.shape == (2, *SHAPES[ndim], 3)
    assert logits.dtype == jnp.float32


def test_segmentation_training_reduces_cross_entropy():
    image, _ = _images(2, batch=1)
    labels = (image[..., 0] > 0.5).astype(jnp.int32) + (image[..., 0] > 0.8).astype(jnp.int32)
    net = SegmentationNet(num_classes=3, **TINY)
    params = _init(net, image)
    opt = optax.adam(1e-2)

    def loss_fn(p):
        logits = net.apply(p, image)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = opt.init(params)
    first = float(loss_fn(params))
    for _ in range(15):
        params, state, _ = step(params, state)
    assert float(loss_fn(params)) < 0.8 * first


@pytest.mark.parametrize("ndim", [2, 3])
def test_patch_discriminator(ndim):
    image, _ = _images(ndim)
    net = PatchDiscriminator(features=(4, 8, 8))
    params = _init(net, image)
    score = jax.jit(net.apply)(params, image)
    assert score.ndim == ndim + 2
    assert score.shape[0] == 2 and score.shape[-1] == 1
    assert all(s < n for s, n in zip(score.shape[1:-1], SHAPES[ndim]))
    assert score.shape == (2, *(n // 4 for n in SHAPES[ndim]), 1)
    assert score.dtype == jnp.float32
    # instance norm params, but no running statistics
    assert set(params) == {"params"}
    assert "norm1" in params["params"]


def test_remat_same_outputs_and_gradients():
    moving, fixed = _images(2)
    cfg = dict(features=(4, 8, 8), norm="group", convs_per_level=2)
    plain = RegistrationNet(**cfg)
    remat = RegistrationNet(**cfg, remat=True)
    params = _init(plain, moving, fixed)
    shapes_r = jax.eval_shape(remat.init, jax.random.key(0), moving, fixed)
    assert jax.tree.structure(params) == jax.tree.structure(shapes_r)

    def loss(net, p):
        u = net.apply(p, moving, fixed)["disp"]
        return jnp.mean((warp(moving, u) - fixed) ** 2) + 1e3 * jnp.mean(u**2), u

    (_, u), g = jax.jit(jax.value_and_grad(functools.partial(loss, plain), has_aux=True))(params)
    (_, u_r), g_r = jax.jit(jax.value_and_grad(functools.partial(loss, remat), has_aux=True))(
        params
    )
    np.testing.assert_allclose(np.asarray(u), np.asarray(u_r), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_r)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-9)
    assert all(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(g["params"]["flow"]))
    # remat is really applied (checkpoint in the jaxpr of the gradient)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(remat, p)[0]))(params))
    assert "checkpoint" in jaxpr or "remat" in jaxpr


def test_bfloat16_compute_float32_params():
    moving, fixed = _images(2)
    net = RegistrationNet(features=(4, 8), norm="instance", dtype=jnp.bfloat16)
    params = _init(net, moving, fixed)
    assert _dtypes(params) == {jnp.dtype(jnp.float32)}
    out = jax.jit(net.apply)(params, moving, fixed)
    assert out["disp"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out["disp"])))
    unet = UNet(features=(4, 8), dtype=jnp.bfloat16)
    up = jax.eval_shape(unet.init, jax.random.key(0), moving)
    assert _dtypes(up) == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(unet.apply, up, moving).dtype == jnp.bfloat16


def test_no_batch_stats_anywhere():
    moving, fixed = _images(2)
    nets = [
        (UNet(features=(4, 8), norm="group"), (moving,)),
        (RegistrationNet(features=(4, 8), norm="instance"), (moving, fixed)),
        (ProbabilisticRegistrationNet(features=(4, 8), norm="group"), (moving, fixed)),
        (AffineRegistrationNet(features=(4, 8), norm="instance"), (moving, fixed)),
        (SegmentationNet(num_classes=2, features=(4, 8), norm="group"), (moving,)),
        (PatchDiscriminator(features=(4, 8)), (moving,)),
    ]
    for net, inputs in nets:
        variables = jax.eval_shape(net.init, jax.random.key(0), *inputs)
        assert set(variables) == {"params"}, type(net).__name__
        assert any("norm" in str(path) for path, _ in jax.tree.leaves_with_path(variables))
        # apply needs no mutable collections (would raise if a collection were mutated)
        jax.eval_shape(net.apply, variables, *inputs)
