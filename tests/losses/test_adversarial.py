"""Tests for jrs_jax.losses.adversarial: known values, per-example reduction, jit, gradients."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jrs_jax.losses.adversarial import (
    GAN_KINDS,
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

LOG2 = math.log(2.0)
MAP_2D, MAP_3D = (2, 5, 4, 1), (2, 3, 4, 3, 1)


def scores(shape, seed, scale=1.5):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


@functools.cache
def jd(kind):
    return jax.jit(functools.partial(gan_discriminator_loss, kind=kind))


@functools.cache
def jg(kind):
    return jax.jit(functools.partial(gan_generator_loss, kind=kind))


def test_known_values():
    zero, one = np.zeros(MAP_2D, np.float32), np.ones(MAP_2D, np.float32)
    # non-saturating (BCE on logits): D at scores 0 -> 2 log 2; G at 0 -> log 2
    np.testing.assert_allclose(jd("nonsaturating")(zero, zero), [2 * LOG2] * 2, rtol=1e-6)
    np.testing.assert_allclose(jg("nonsaturating")(zero), [LOG2] * 2, rtol=1e-6)
    # a confident, correct discriminator: -log sigmoid(10) - log(1 - sigmoid(-10)) ~ 2 e^-10
    np.testing.assert_allclose(
        jd("nonsaturating")(10 * one, -10 * one), [2 * math.log1p(math.exp(-10))] * 2, rtol=1e-5
    )
    # LSGAN (Mao et al., targets 1/0, factor 1/2): perfect D -> 0; G at fake = 1 -> 0
    np.testing.assert_array_equal(jd("lsgan")(one, zero), [0.0, 0.0])
    np.testing.assert_allclose(jd("lsgan")(zero, one), [1.0, 1.0])  # 0.5 * 1 + 0.5 * 1
    np.testing.assert_array_equal(jg("lsgan")(one), [0.0, 0.0])
    np.testing.assert_allclose(jg("lsgan")(zero), [0.5, 0.5])
    # hinge: margins satisfied -> 0; at 0 -> 2; G = -mean(f)
    np.testing.assert_array_equal(jd("hinge")(one, -one), [0.0, 0.0])
    np.testing.assert_allclose(jd("hinge")(zero, zero), [2.0, 2.0])
    np.testing.assert_allclose(jg("hinge")(2 * one), [-2.0, -2.0])
    # Wasserstein
    np.testing.assert_allclose(wasserstein_critic_loss(3 * one, one), [-2.0, -2.0])
    np.testing.assert_allclose(wasserstein_generator_loss(3 * one), [-3.0, -3.0])


@pytest.mark.parametrize("kind", GAN_KINDS)
def test_formulas_per_example_jit_and_shapes(kind):
    r, f = scores(MAP_3D, 1), scores(MAP_3D, 2)
    sp = jax.nn.softplus
    want_d = {
        "nonsaturating": sp(-r).mean((1, 2, 3, 4)) + sp(f).mean((1, 2, 3, 4)),
        "lsgan": 0.5 * ((r - 1) ** 2).mean((1, 2, 3, 4)) + 0.5 * (f**2).mean((1, 2, 3, 4)),
        "hinge": np.maximum(1 - r, 0).mean((1, 2, 3, 4)) + np.maximum(1 + f, 0).mean((1, 2, 3, 4)),
    }[kind]
    want_g = {
        "nonsaturating": sp(-f).mean((1, 2, 3, 4)),
        "lsgan": 0.5 * ((f - 1) ** 2).mean((1, 2, 3, 4)),
        "hinge": -f.mean((1, 2, 3, 4)),
    }[kind]
    d, g = jd(kind)(r, f), jg(kind)(f)
    assert d.shape == g.shape == (2,)
    np.testing.assert_allclose(d, want_d, rtol=1e-5)
    np.testing.assert_allclose(g, want_g, rtol=1e-5)
    np.testing.assert_allclose(gan_discriminator_loss(r, f, kind=kind), d, rtol=1e-6)  # eager
    np.testing.assert_allclose(gan_generator_loss(f, kind=kind), g, rtol=1e-6)
    np.testing.assert_allclose(jd(kind)(r[::-1], f[::-1]), d[::-1], rtol=1e-6)
    # any trailing shape: 2-D maps and one score per example
    assert jd(kind)(scores(MAP_2D, 3), scores(MAP_2D, 4)).shape == (2,)
    flat = scores((2,), 5)
    np.testing.assert_allclose(gan_generator_loss(flat, kind=kind), jg(kind)(flat[:, None]))
    # gradients: finite, and float64 numerical check
    gr = jax.jit(jax.grad(lambda a, b: jd(kind)(a, b).sum(), argnums=(0, 1)))(r, f)
    assert all(np.all(np.isfinite(x)) for x in gr)
    with jax.enable_x64(True):
        r64, f64 = (jnp.asarray(x, jnp.float64) + 0.05 for x in (r, f))  # off the hinge kinks
        check_grads(jd(kind), (r64, f64), order=1, modes=("rev",))
        check_grads(jg(kind), (f64,), order=1, modes=("rev",))


def test_wasserstein_jit_per_example_and_grads():
    r, f = scores(MAP_2D, 6), scores(MAP_2D, 7)
    c = jax.jit(wasserstein_critic_loss)(r, f)
    np.testing.assert_allclose(c, f.mean((1, 2, 3)) - r.mean((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(wasserstein_generator_loss)(f), -f.mean((1, 2, 3)))
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in (r, f))
        check_grads(jax.jit(wasserstein_critic_loss), args, order=1, modes=("rev",))


def test_gradient_penalty_linear_critic():
    key = jax.random.key(0)
    real, fake = scores((2, 6, 5, 2), 8), scores((2, 6, 5, 2), 9)
    w = jnp.asarray(scores((6, 5, 2), 10, scale=0.3))
    lin = lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # f(x) = <w, x>, one score per example
    want = (float(jnp.linalg.norm(w)) - 1.0) ** 2
    gp = jax.jit(functools.partial(gradient_penalty, critic_fn=lin))
    got = gp(key, real=real, fake=fake)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [want, want], rtol=1e-5)
    np.testing.assert_allclose(gradient_penalty(key, lin, real, fake), got, rtol=1e-6)  # eager
    np.testing.assert_allclose(gradient_penalty(jax.random.key(5), lin, real, fake), got, rtol=1e-5)
    # target norm
    np.testing.assert_allclose(
        gradient_penalty(key, lin, real, fake, target_norm=0.0),
        [float(jnp.sum(w * w))] * 2,
        rtol=1e-5,
    )
    # PatchGAN-style map output: D = mean (default) or sum of the patch scores
    patch = lambda x: x * w  # [B, 6, 5, 2] "score map": gradient of the mean is w / 60
    np.testing.assert_allclose(
        gradient_penalty(key, patch, real, fake),
        [(float(jnp.linalg.norm(w)) / 60 - 1.0) ** 2] * 2,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        gradient_penalty(key, patch, real, fake, score_reduction="sum"), [want] * 2, rtol=1e-5
    )
    # constant critic: zero gradient -> penalty 1 with finite gradients
    const = lambda x: jnp.zeros((x.shape[0],)) + 0.0 * jnp.sum(x, axis=(1, 2, 3))
    np.testing.assert_allclose(gradient_penalty(key, const, real, fake), [1.0, 1.0])
    g = jax.jit(jax.grad(lambda r: gradient_penalty(key, const, r, fake).sum()))(real)
    assert np.all(np.isfinite(g))


def test_gradient_penalty_interpolation_and_parameter_gradients():
    key = jax.random.key(3)
    real, fake = scores((2, 4, 3, 1), 11), scores((2, 4, 3, 1), 12)
    # quadratic critic 0.5 * |x|^2: gradient x_hat, penalty (|x_hat| - 1)^2 with per-example
    # alpha in [0, 1): the value lies between the endpoint values' extremes
    quad = lambda x: 0.5 * jnp.sum(x * x, axis=(1, 2, 3))
    got = np.asarray(gradient_penalty(key, quad, real, fake))
    alpha = np.asarray(jax.random.uniform(key, (2, 1, 1, 1)))
    x_hat = alpha * real + (1 - alpha) * fake
    want = (np.sqrt((x_hat**2).sum((1, 2, 3))) - 1.0) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(alpha[0], alpha[1])

    # double backprop into critic parameters (what the critic update needs)
    def penalty_of_params(w, r, f):
        return gradient_penalty(key, lambda x: jnp.sum(jnp.tanh(x * w), axis=(1, 2, 3)), r, f)

    with jax.enable_x64(True):
        w = jnp.asarray(scores((4, 3, 1), 13, scale=0.5), jnp.float64)
        r64, f64 = jnp.asarray(real, jnp.float64), jnp.asarray(fake, jnp.float64)
        fn = jax.jit(lambda w: penalty_of_params(w, r64, f64))
        check_grads(fn, (w,), order=1, modes=("rev",))


def test_errors():
    s = np.zeros(MAP_2D, np.float32)
    with pytest.raises(ValueError, match="'wgan'"):
        gan_discriminator_loss(s, s, kind="wgan")
    with pytest.raises(ValueError, match="'bce'"):
        gan_generator_loss(s, kind="bce")
    with pytest.raises(ValueError, match="'max'"):
        gradient_penalty(jax.random.key(0), lambda x: x, s, s, score_reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(jax.random.key(0), lambda x: x, s, s[:1])
    with pytest.raises(ValueError, match="leading batch axis"):
        gradient_penalty(jax.random.key(0), lambda x: jnp.sum(x), s, s)
