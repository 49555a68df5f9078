"""Adversarial losses for (PatchGAN) discriminators / critics.

Scores are raw discriminator outputs (logits, never sigmoid-ed) of any shape ``[B, ...]``,
typically a PatchGAN map ``[B, *S', 1]`` or one score per example ``[B]`` / ``[B, 1]``. Every
loss averages over all non-batch axes (each patch is one real/fake decision) and returns
``[B]``; lower is better for the network being trained by that loss.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jrs_jax._checks import check_choice

__all__ = [
    "GAN_KINDS",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "gradient_penalty",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]

GAN_KINDS = ("nonsaturating", "lsgan", "hinge")
SCORE_REDUCTIONS = ("mean", "sum")


def _scores(x, name: str) -> jnp.ndarray:
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a leading batch axis [B, ...]; got a scalar")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mean(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over all non-batch axes (identity for ``[B]``)."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def gan_discriminator_loss(
    real_scores: jnp.ndarray, fake_scores: jnp.ndarray, *, kind: str = "nonsaturating"
) -> jnp.ndarray:
    """Discriminator loss on scores of real and generated samples.

    With ``r`` the real scores, ``f`` the fake scores (logits), ``softplus(z) = log(1 + e^z)``
    and means over each example's score map:

    * ``"nonsaturating"`` (the original GAN / binary cross-entropy on logits):
      ``mean softplus(−r) + mean softplus(f)`` ``= −log σ(r) − log(1 − σ(f))``; both at score 0
      give ``2 log 2``.
    * ``"lsgan"`` (Mao et al. 2017, targets 1 for real and 0 for fake):
      ``½ mean (r − 1)² + ½ mean f²``.
    * ``"hinge"`` (Lim & Ye 2017; Miyato et al. 2018):
      ``mean relu(1 − r) + mean relu(1 + f)``.

    Args:
      real_scores: ``[B, ...]`` scores of real samples.
      fake_scores: ``[B, ...]`` scores of generated samples (usually ``stop_gradient``-ed).
      kind: one of :data:`GAN_KINDS`.

    Returns:
      ``[B]``.

    Example:
      >>> gan_discriminator_loss(jnp.zeros((2, 4, 4, 1)), jnp.zeros((2, 4, 4, 1)))  # 2 log 2
      Array([1.3862944, 1.3862944], dtype=float32)

    Reference:
      Goodfellow et al., "Generative adversarial nets", NeurIPS 2014; Mao et al., "Least
      squares generative adversarial networks", ICCV 2017; Isola et al., "Image-to-image
      translation with conditional adversarial networks" (PatchGAN), CVPR 2017.
    """
    check_choice("kind", kind, GAN_KINDS)
    r = _scores(real_scores, "real_scores")
    f = _scores(fake_scores, "fake_scores")
    if kind == "nonsaturating":
        return _mean(jax.nn.softplus(-r)) + _mean(jax.nn.softplus(f))
    if kind == "lsgan":
        return 0.5 * _mean(jnp.square(r - 1.0)) + 0.5 * _mean(jnp.square(f))
    return _mean(jax.nn.relu(1.0 - r)) + _mean(jax.nn.relu(1.0 + f))


def gan_generator_loss(fake_scores: jnp.ndarray, *, kind: str = "nonsaturating") -> jnp.ndarray:
    """Generator loss on the discriminator's scores of generated samples.

    * ``"nonsaturating"``: ``mean softplus(−f) = −log σ(f)`` (Goodfellow's non-saturating
      heuristic; ``log 2`` at score 0).
    * ``"lsgan"``: ``½ mean (f − 1)²`` (target 1: the generator wants fakes scored as real).
    * ``"hinge"``: ``−mean f``.

    Args:
      fake_scores: ``[B, ...]`` discriminator scores of generated samples.
      kind: one of :data:`GAN_KINDS`.

    Returns:
      ``[B]``.

    Example:
      >>> gan_generator_loss(jnp.ones((2, 3)), kind="lsgan")
      Array([0., 0.], dtype=float32)

    Reference:
      Goodfellow et al., NeurIPS 2014; Mao et al., ICCV 2017; Miyato et al., "Spectral
      normalization for generative adversarial networks", ICLR 2018.
    """
    check_choice("kind", kind, GAN_KINDS)
    f = _scores(fake_scores, "fake_scores")
    if kind == "nonsaturating":
        return _mean(jax.nn.softplus(-f))
    if kind == "lsgan":
        return 0.5 * _mean(jnp.square(f - 1.0))
    return -_mean(f)


def wasserstein_critic_loss(real_scores: jnp.ndarray, fake_scores: jnp.ndarray) -> jnp.ndarray:
    """WGAN critic loss ``mean f − mean r`` (the negative Wasserstein-1 estimate).

    Args:
      real_scores: ``[B, ...]`` critic outputs on real samples.
      fake_scores: ``[B, ...]`` critic outputs on generated samples.

    Returns:
      ``[B]``; combine with :func:`gradient_penalty` (WGAN-GP) or weight clipping.

    Example:
      >>> wasserstein_critic_loss(jnp.ones((2, 1)), jnp.zeros((2, 1)))
      Array([-1., -1.], dtype=float32)

    Reference:
      Arjovsky, Chintala, Bottou, "Wasserstein GAN", ICML 2017.
    """
    r = _scores(real_scores, "real_scores")
    f = _scores(fake_scores, "fake_scores")
    return _mean(f) - _mean(r)


def wasserstein_generator_loss(fake_scores: jnp.ndarray) -> jnp.ndarray:
    """WGAN generator loss ``−mean f``.

    Args:
      fake_scores: ``[B, ...]`` critic outputs on generated samples.

    Returns:
      ``[B]``.

    Example:
      >>> wasserstein_generator_loss(jnp.full((2, 1), 3.0))
      Array([-3., -3.], dtype=float32)

    Reference:
      Arjovsky, Chintala, Bottou, "Wasserstein GAN", ICML 2017.
    """
    return -_mean(_scores(fake_scores, "fake_scores"))


def gradient_penalty(
    key: jax.Array,
    critic_fn: Callable[[jnp.ndarray], jnp.ndarray],
    real: jnp.ndarray,
    fake: jnp.ndarray,
    *,
    target_norm: float = 1.0,
    score_reduction: str = "mean",
) -> jnp.ndarray:
    """WGAN-GP gradient penalty ``(‖∇_x̂ D(x̂)‖₂ − 1)²`` per example (unweighted).

    .. math::

        \\hat x = \\alpha\\, x_{real} + (1 - \\alpha)\\, x_{fake},\\quad
        \\alpha \\sim U[0, 1)\\ \\text{per example},\\qquad
        L = \\big(\\lVert \\nabla_{\\hat x}\\, D(\\hat x) \\rVert_2 - \\text{target\\_norm}\\big)^2

    ``D(x̂)`` is the per-example critic value: the mean (``score_reduction="mean"``, matching
    :func:`wasserstein_critic_loss`) or the sum (``"sum"``: ``autograd.grad`` with
    ``grad_outputs=ones`` in PyTorch code) of ``critic_fn``'s output over its non-batch axes.
    The norm runs over all non-batch axes of the input. ``critic_fn`` must treat examples
    independently (no batch statistics), as WGAN-GP requires; gradients with respect to the
    critic's parameters (closed over in ``critic_fn``) flow through the input gradient. Gulrajani
    et al. add ``λ · L`` with ``λ = 10`` to the critic loss; the weight is left to the caller.

    Args:
      key: PRNG key for the interpolation weights ``α`` (one per example).
      critic_fn: maps ``[B, ...]`` inputs to ``[B, ...]`` scores.
      real: ``[B, ...]`` real samples (e.g. images ``[B, *S, C]``).
      fake: same shape, generated samples.
      target_norm: the norm the gradient is pulled towards (1 for 1-Lipschitz critics).
      score_reduction: ``"mean"`` or ``"sum"`` over a score map.

    Returns:
      ``[B]``.

    Example:
      >>> w = jnp.array([3.0, 4.0])
      >>> gp = gradient_penalty(jax.random.key(0), lambda x: x @ w, jnp.ones((2, 2)),
      ...                       jnp.zeros((2, 2)))  # (|w| - 1)^2 = 16
      >>> gp
      Array([16., 16.], dtype=float32)

    Reference:
      Gulrajani et al., "Improved training of Wasserstein GANs", NeurIPS 2017.
    """
    check_choice("score_reduction", score_reduction, SCORE_REDUCTIONS)
    real = _scores(real, "real")
    fake = jnp.asarray(fake).astype(real.dtype)
    if fake.shape != real.shape:
        raise ValueError(
            f"real and fake must have the same shape; got {tuple(real.shape)} and "
            f"{tuple(fake.shape)}"
        )
    batch = real.shape[0]
    alpha = jax.random.uniform(key, (batch,) + (1,) * (real.ndim - 1), dtype=real.dtype)
    x_hat = alpha * real + (1.0 - alpha) * fake

    def total_score(x):
        s = jnp.asarray(critic_fn(x))
        if s.ndim == 0 or s.shape[0] != batch:
            raise ValueError(
                f"critic_fn must return scores with a leading batch axis of size {batch}; got "
                f"shape {tuple(s.shape)}"
            )
        per_example = _mean(s) if score_reduction == "mean" else s.reshape(batch, -1).sum(-1)
        return jnp.sum(per_example)

    grads = jax.grad(total_score)(x_hat)
    sq = jnp.sum(jnp.square(grads).reshape(batch, -1), axis=-1)
    norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return jnp.square(norm - target_norm)
