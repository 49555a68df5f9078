"""Consistency losses: image cycle consistency and inverse consistency of displacement pairs.

All return per-example values ``[B]``, lower is better.
"""

from __future__ import annotations

import jax.numpy as jnp

from jrs_jax.spatial.fields import compose

from ._reduce import as_float, masked_mean, voxel_mask

__all__ = ["cycle_l1", "inverse_consistency"]


def cycle_l1(
    x: jnp.ndarray, x_cycled: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Cycle-consistency L1: mean absolute difference between an image and its round trip.

    .. math:: L = \\frac{\\sum_{x,c} m(x)\\, |I_c(x) - \\tilde I_c(x)|}{\\sum_{x,c} m(x)}

    i.e. the mean over voxels and channels (CycleGAN's ``‖G_B(G_A(x)) − x‖₁``, normalised per
    element). A mask restricts / weights the voxels; an empty mask gives 0.

    Args:
      x: ``[B, *S, C]`` original images.
      x_cycled: ``[B, *S, C]`` images after the forward and backward mapping.
      mask: optional ``[B, *S]``, ``[B, *S, 1]`` or ``[B, *S, C]`` weights.

    Returns:
      ``[B]``.

    Example:
      >>> cycle_l1(jnp.ones((2, 4, 4, 1)), jnp.zeros((2, 4, 4, 1)))
      Array([1., 1.], dtype=float32)

    Reference:
      Zhu, Park, Isola, Efros, "Unpaired image-to-image translation using cycle-consistent
      adversarial networks", ICCV 2017.
    """
    x = as_float(x)
    y = jnp.asarray(x_cycled).astype(x.dtype)
    if x.ndim < 3 or y.shape != x.shape:
        raise ValueError(
            f"x and x_cycled must both have shape [B, *S, C]; got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    m = None if mask is None else voxel_mask(mask, x)
    return masked_mean(jnp.abs(x - y), m)


def inverse_consistency(
    u: jnp.ndarray,
    v: jnp.ndarray,
    *,
    mask: jnp.ndarray | None = None,
    symmetric: bool = False,
) -> jnp.ndarray:
    """Inverse consistency of two displacement fields: ``u`` followed by ``v`` should be identity.

    .. math::

        w(x) = u(x) + v(x + u(x)),\\qquad L = \\operatorname{mean}_x \\lVert w(x) \\rVert_2^2

    ``w = compose(u, v)`` (:func:`jrs_jax.spatial.fields.compose`, linear interpolation of
    ``v`` with border padding) is the displacement of ``φ_v ∘ φ_u``; it vanishes when
    ``φ_v = φ_u⁻¹``. The squared norm sums the ``D`` components (voxels²) and the mean runs over
    the (masked) voxels. ``symmetric=True`` averages both orders,
    ``(‖compose(u, v)‖² + ‖compose(v, u)‖²) / 2``, as in ICNet / SYMNet-style bidirectional
    training.

    Args:
      u: ``[B, *S, D]`` displacement in voxels (e.g. fixed → moving).
      v: ``[B, *S, D]`` displacement in voxels (e.g. moving → fixed).
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights (empty mask gives 0).
      symmetric: also penalise ``compose(v, u)``.

    Returns:
      ``[B]`` mean squared residual displacement (voxels²).

    Example:
      >>> u = jnp.full((1, 4, 4, 2), 0.5)
      >>> inverse_consistency(u, -u)
      Array([0.], dtype=float32)

    Reference:
      Christensen & Johnson, "Consistent image registration", IEEE TMI 2001; Zhang,
      "Inverse-consistent deep networks for unsupervised deformable image registration", 2018.
    """
    u = as_float(u)
    v = jnp.asarray(v).astype(u.dtype)
    if v.shape != u.shape:
        raise ValueError(f"u and v must have the same shape; got {u.shape} and {v.shape}")

    def residual(a, b):
        w = compose(a, b)
        sq = jnp.sum(w * w, axis=-1, keepdims=True)
        m = None if mask is None else voxel_mask(mask, sq)
        return masked_mean(sq, m)

    if symmetric:
        return 0.5 * (residual(u, v) + residual(v, u))
    return residual(u, v)
