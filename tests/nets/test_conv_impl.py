"""``conv_impl``: the depth-slice and im2col convolutions equal the native one (values and
gradients).

Tiny shapes (<= 12^3), float32 at HIGHEST precision; tolerance ~1e-5 relative.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.nets import RegistrationNet, UNet
from jrs_jax.nets.blocks import Conv, ConvBlock, conv_nd, resolve_conv_impl

RTOL = 2e-5


def _rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(b)), 1e-12)
    np.testing.assert_array_less(np.max(np.abs(a - b)) / scale, rtol)


def _reference(x, kernel, stride):
    """Direct 3-D convolution at HIGHEST precision (XLA's own op)."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride,) * 3,
        "SAME",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )


CASES = [
    # (spatial shape, c_in, c_out, kernel, stride)
    ((8, 8, 8), 3, 5, 3, 1),
    ((7, 9, 6), 2, 4, 3, 1),
    ((8, 10, 12), 3, 5, 3, 2),
    ((7, 9, 5), 4, 3, 3, 2),
    ((5, 6, 7), 2, 3, 1, 1),
    ((6, 5, 7), 2, 3, 5, 2),
    ((6, 6, 6), 3, 2, 2, 1),  # even kernel: asymmetric SAME padding
]


@pytest.mark.parametrize("shape, cin, cout, k, stride", CASES)
def test_depth_slices_equals_native(shape, cin, cout, k, stride):
    x = _rand((2, *shape, cin), 0)
    kernel = _rand((k, k, k, cin, cout), 1)
    ref = _reference(x, kernel, stride)
    with jax.default_matmul_precision("highest"):
        native = jax.jit(functools.partial(conv_nd, strides=stride, conv_impl="native"))
        sliced = jax.jit(functools.partial(conv_nd, strides=stride, conv_impl="depth_slices"))
        im2col = jax.jit(functools.partial(conv_nd, strides=stride, conv_impl="im2col"))
        y_native, y_sliced, y_im2col = native(x, kernel), sliced(x, kernel), im2col(x, kernel)
    assert y_sliced.shape == y_im2col.shape == ref.shape
    assert ref.shape == (2, *(-(-n // stride) for n in shape), cout)
    _close(y_native, ref)
    _close(y_sliced, ref)
    _close(y_im2col, ref)


@pytest.mark.parametrize("shape, cin, cout, k, stride", CASES[:4])
def test_depth_slices_gradients_equal_native(shape, cin, cout, k, stride):
    x = _rand((2, *shape, cin), 2)
    kernel = _rand((k, k, k, cin, cout), 3)
    target = _rand((2, *(-(-n // stride) for n in shape), cout), 4)

    def loss(x, kernel, impl):
        y = conv_nd(x, kernel, strides=stride, conv_impl=impl)
        return jnp.sum(jnp.sin(y) * target)

    grads = {}
    with jax.default_matmul_precision("highest"):
        for impl in ("native", "depth_slices", "im2col"):
            grads[impl] = jax.jit(jax.grad(functools.partial(loss, impl=impl), argnums=(0, 1)))(
                x, kernel
            )
    for impl in ("depth_slices", "im2col"):
        for g, g_native in zip(grads[impl], grads["native"], strict=True):
            _close(g, g_native)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_im2col_2d_equals_native_also_under_vmap(k, stride):
    """2-D too, and with a batched kernel under ``jax.vmap`` (one network per region): the
    native path becomes a grouped convolution there, im2col a batched matmul."""
    x = _rand((3, 2, 9, 7, 3), 5)
    kernel = _rand((3, k, k, 3, 4), 6)
    with jax.default_matmul_precision("highest"):
        out = {
            impl: jax.jit(jax.vmap(functools.partial(conv_nd, strides=stride, conv_impl=impl)))(
                x, kernel
            )
            for impl in ("native", "im2col")
        }
    assert out["im2col"].shape == (3, 2, -(-9 // stride), -(-7 // stride), 4)
    _close(out["im2col"], out["native"])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("impl", ["native", "depth_slices", "auto"])
def test_conv_module_matches_nn_conv(impl, stride):
    """Same parameter tree, same initial values and same outputs as ``nn.Conv``."""
    x = _rand((1, 7, 8, 9, 3), 5)
    ref_mod = nn.Conv(4, kernel_size=(3, 3, 3), strides=(stride,) * 3, padding="SAME")
    mod = Conv(features=4, strides=stride, conv_impl=impl)
    key = jax.random.key(0)
    p_ref = ref_mod.init(key, x)
    p = mod.init(key, x)
    assert jax.tree.structure(p) == jax.tree.structure(p_ref)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref), strict=True):
        np.testing.assert_array_equal(a, b)
    p = jax.tree.map(lambda a: a + 0.1, p_ref)  # non-zero bias
    with jax.default_matmul_precision("highest"):
        _close(mod.apply(p, x), ref_mod.apply(p, x))


def test_conv_module_2d_is_native_and_bad_impl_raises():
    x = _rand((2, 9, 8, 3), 6)
    mod = Conv(features=4, conv_impl="depth_slices")
    p = mod.init(jax.random.key(0), x)
    assert p["params"]["kernel"].shape == (3, 3, 3, 4)
    np.testing.assert_array_equal(
        mod.apply(p, x), nn.Conv(4, kernel_size=(3, 3), padding="SAME").apply(p, x)
    )
    with pytest.raises(ValueError, match="conv_impl"):
        Conv(features=4, conv_impl="fft").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="conv_impl"):
        resolve_conv_impl("fft", 3)


def test_auto_follows_backend():
    expected = "depth_slices" if jax.default_backend() == "cpu" else "native"
    assert resolve_conv_impl("auto", 3) == expected
    assert resolve_conv_impl("auto", 2) == "native"
    assert resolve_conv_impl("native", 3) == "native"


def _impl_outputs(net, inputs, impls=("native", "depth_slices")):
    params = jax.jit(net.clone(conv_impl="native").init)(jax.random.key(1), *inputs)
    # larger weights than the 1e-5 head init, so the flow head is exercised too
    params = jax.tree.map(lambda p: p * 3.0 + 0.01, params)
    outs, grads = {}, {}
    with jax.default_matmul_precision("highest"):
        for impl in impls:
            n = net.clone(conv_impl=impl)
            outs[impl] = jax.jit(n.apply)(params, *inputs)

            def loss(p, n=n):
                out = n.apply(p, *inputs)
                out = out["disp"] if isinstance(out, dict) else out
                # linear in the output: a nonlinearity here would amplify the (large)
                # outputs' rounding differences into the gradients
                return jnp.mean(out * _rand(out.shape, 11))

            grads[impl] = jax.jit(jax.grad(loss))(params)
    return outs, grads


def test_unet_depth_slices_equals_native():
    x = _rand((1, 8, 12, 8, 2), 7)
    net = UNet(features=(4, 8, 8), decoder_features=(8, 8, 6))
    outs, grads = _impl_outputs(net, (x,))
    _close(outs["depth_slices"], outs["native"])
    for a, b in zip(
        jax.tree.leaves(grads["depth_slices"]), jax.tree.leaves(grads["native"]), strict=True
    ):
        _close(a, b)


def test_registration_net_depth_slices_equals_native():
    m, f = _rand((1, 8, 8, 12, 1), 8), _rand((1, 8, 8, 12, 1), 9)
    net = RegistrationNet(features=(4, 8), decoder_features=(8, 4), downsample="conv")
    outs, grads = _impl_outputs(net, (m, f))
    _close(outs["depth_slices"]["disp"], outs["native"]["disp"])
    for a, b in zip(
        jax.tree.leaves(grads["depth_slices"]), jax.tree.leaves(grads["native"]), strict=True
    ):
        _close(a, b)


def test_conv_block_params_do_not_depend_on_impl():
    x = _rand((1, 6, 6, 6, 2), 10)
    trees = [
        jax.tree.map(jnp.shape, ConvBlock(features=3, conv_impl=i).init(jax.random.key(0), x))
        for i in ("native", "depth_slices", "auto")
    ]
    assert trees[0] == trees[1] == trees[2]
    assert trees[0]["params"]["conv0"]["kernel"] == (3, 3, 3, 2, 3)
