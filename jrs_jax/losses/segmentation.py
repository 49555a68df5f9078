"""Segmentation losses: soft Dice, cross-entropy, Dice + CE, soft KL, centroid distance.

Conventions: predictions (probabilities or logits) are channels-last ``[B, *S, K]``; targets
are either integer label maps ``[B, *S]`` (one-hot encoded here with ``K`` taken from the
prediction; labels outside ``[0, K)`` become all-zero rows, i.e. they match no class) or
one-hot / soft maps ``[B, *S, K]``. Optional masks are ``[B, *S]`` or ``[B, *S, 1]`` (bool or
float weights). Every loss returns per-example values ``[B]``, lower is better, and is NaN-free
for absent classes and empty masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ..spatial.roi import soft_centroid
from ._reduce import as_float, masked_mean, safe_div, voxel_mask

__all__ = [
    "activate",
    "binary_cross_entropy",
    "centroid_distance",
    "cross_entropy",
    "dice_bce",
    "dice_ce",
    "dice_score",
    "label_channels",
    "soft_dice",
    "soft_kl",
]


# ----------------------------------------------------------------------------- helpers


def _target_onehot(target, pred: jnp.ndarray) -> jnp.ndarray:
    """Integer ``[B, *S]`` or one-hot/soft ``[B, *S, K]`` target -> ``[B, *S, K]`` like ``pred``."""
    target = jnp.asarray(target)
    num_classes = pred.shape[-1]
    if target.ndim == pred.ndim - 1 and target.shape == pred.shape[:-1]:
        return jax.nn.one_hot(target.astype(jnp.int32), num_classes, dtype=pred.dtype)
    if target.shape == pred.shape:
        return target.astype(pred.dtype)
    raise ValueError(
        f"target must be integer labels {tuple(pred.shape[:-1])} or one-hot/soft "
        f"{tuple(pred.shape)} to match the prediction; got shape {tuple(target.shape)}"
    )


def _voxel_mean(per_voxel: jnp.ndarray, mask, like: jnp.ndarray) -> jnp.ndarray:
    """Per-example mean of ``[B, *S]`` values over an optional ``[B, *S(, 1)]`` mask."""
    m = None if mask is None else voxel_mask(mask, like, per_channel=False)[..., 0]
    return masked_mean(per_voxel, m)


def _spatial_axes(x: jnp.ndarray) -> tuple[int, ...]:
    """Spatial axes of a channels-last ``[B, *S, K]`` array."""
    return tuple(range(1, x.ndim - 1))


# ----------------------------------------------------------------------------- Dice


def dice_score(
    pred: jnp.ndarray,
    target: jnp.ndarray,
    *,
    include_background: bool = True,
    eps: float = 1e-5,
    squared_denominator: bool = False,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Per-class soft Dice coefficient (higher is better), for logging and :func:`soft_dice`.

    .. math::

        \\mathrm{Dice}_k = \\frac{2 \\sum_x p_k t_k + \\varepsilon}
                                {\\sum_x p_k + \\sum_x t_k + \\varepsilon}

    (``p_k², t_k²`` in the denominator with ``squared_denominator=True``), summed over the
    spatial axes of each example. The same ``ε`` smooths numerator and denominator, as MONAI's
    ``DiceLoss(smooth_nr=ε, smooth_dr=ε)``: a class absent from both maps scores exactly 1, a
    class predicted but absent from the target scores ~0. With a ``mask`` both maps are
    multiplied by it first (MONAI's masking).

    Args:
      pred: ``[B, *S, K]`` probabilities (or hard one-hot).
      target: integer ``[B, *S]`` or one-hot/soft ``[B, *S, K]``.
      include_background: if False, drop class 0 (needs ``K >= 2``).
      eps: smoothing added to numerator and denominator.
      squared_denominator: use ``Σp² + Σt²`` (V-Net / MONAI ``squared_pred=True``).
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights.

    Returns:
      ``[B, K]`` (``[B, K - 1]`` without background).

    Example:
      >>> t = jnp.array([[0, 1, 1, 2]])
      >>> dice_score(jax.nn.one_hot(t, 3), t)
      Array([[1., 1., 1.]], dtype=float32)

    Reference:
      Milletari, Navab, Ahmadi, "V-Net", 3DV 2016; MONAI ``monai.losses.DiceLoss``.
    """
    pred = as_float(pred)
    if pred.ndim < 3:
        raise ValueError(f"pred must have shape [B, *S, K]; got {tuple(pred.shape)}")
    t = _target_onehot(target, pred)
    p = pred
    m = None if mask is None else voxel_mask(mask, pred, per_channel=False)
    if m is not None:
        p, t = p * m, t * m
    if not include_background:
        if pred.shape[-1] < 2:
            raise ValueError("include_background=False needs at least 2 classes (K >= 2)")
        p, t = p[..., 1:], t[..., 1:]
    axes = _spatial_axes(p)
    inter = jnp.sum(p * t, axis=axes)
    if squared_denominator:
        den = jnp.sum(p * p, axis=axes) + jnp.sum(t * t, axis=axes)
    else:
        den = jnp.sum(p, axis=axes) + jnp.sum(t, axis=axes)
    return (2.0 * inter + eps) / (den + eps)


def soft_dice(
    pred: jnp.ndarray,
    target: jnp.ndarray,
    *,
    include_background: bool = True,
    eps: float = 1e-5,
    squared_denominator: bool = False,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Soft Dice loss: ``1 − mean_k Dice_k`` per example.

    ``Dice_k`` as in :func:`dice_score` (``ε``-smoothed, so classes absent from both maps count
    as Dice 1 and never produce NaN). The mean runs over the ``K`` classes, or ``K − 1`` without
    background. Equals MONAI ``DiceLoss(softmax=False, smooth_nr=ε, smooth_dr=ε,
    reduction="none")`` averaged over classes (its ``"mean"`` reduction is ``soft_dice(...)
    .mean()``). Identical one-hot maps give 0, disjoint maps give ≈ 1.

    Args:
      pred: ``[B, *S, K]`` probabilities (apply softmax/sigmoid first).
      target: integer ``[B, *S]`` or one-hot/soft ``[B, *S, K]``.
      include_background: if False, drop class 0 from the mean (needs ``K >= 2``).
      eps: smoothing added to numerator and denominator.
      squared_denominator: use ``Σp² + Σt²`` in the denominator.
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights.

    Returns:
      ``[B]``.

    Example:
      >>> t = jnp.array([[0, 1, 1, 2]])
      >>> soft_dice(jax.nn.one_hot(t, 3), t)
      Array([0.], dtype=float32)

    Reference:
      Milletari, Navab, Ahmadi, "V-Net", 3DV 2016; MONAI ``monai.losses.DiceLoss``.
    """
    dice = dice_score(
        pred,
        target,
        include_background=include_background,
        eps=eps,
        squared_denominator=squared_denominator,
        mask=mask,
    )
    return 1.0 - jnp.mean(dice, axis=-1)


# ----------------------------------------------------------------------------- cross-entropy


def cross_entropy(
    logits_or_probs: jnp.ndarray,
    target: jnp.ndarray,
    *,
    from_logits: bool = True,
    class_weights: Sequence[float] | jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    label_smoothing: float = 0.0,
    eps: float = 1e-7,
) -> jnp.ndarray:
    """Voxel-wise categorical cross-entropy, averaged over the (masked) voxels of each example.

    .. math::

        \\ell(x) = -\\sum_k w_k\\, \\tilde t_k(x) \\log p_k(x), \\qquad
        \\tilde t = (1 - s)\\, t + s / K, \\qquad
        L = \\frac{\\sum_x m(x)\\, \\ell(x)}{\\sum_x m(x)}

    ``log p`` is ``log_softmax(logits)`` (``from_logits=True``) or ``log(clip(p, eps, 1))``.
    ``s`` is ``label_smoothing`` (PyTorch's definition). Class weights multiply the per-class
    terms and the result is a plain mean over voxels (PyTorch's ``reduction="none"`` followed by
    a mean; not renormalised by the weights). An empty mask gives 0.

    Args:
      logits_or_probs: ``[B, *S, K]`` logits (default) or probabilities.
      target: integer ``[B, *S]`` or one-hot/soft ``[B, *S, K]``.
      from_logits: whether the first argument holds logits.
      class_weights: optional ``[K]`` per-class weights.
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights.
      label_smoothing: ``s`` in ``[0, 1]``.
      eps: probability floor when ``from_logits=False``.

    Returns:
      ``[B]`` mean cross-entropy in nats; uniform logits give ``log K``.

    Example:
      >>> cross_entropy(jnp.zeros((1, 3, 3, 4)), jnp.zeros((1, 3, 3), jnp.int32))  # log 4
      Array([1.3862944], dtype=float32)

    Reference:
      Long, Shelhamer, Darrell, "Fully convolutional networks for semantic segmentation",
      CVPR 2015.
    """
    x = as_float(logits_or_probs)
    if x.ndim < 3:
        raise ValueError(f"logits_or_probs must have shape [B, *S, K]; got {tuple(x.shape)}")
    num_classes = x.shape[-1]
    if from_logits:
        logp = jax.nn.log_softmax(x, axis=-1)
    else:
        logp = jnp.log(jnp.clip(x, eps, 1.0))
    t = _target_onehot(target, x)
    t = t * (1.0 - label_smoothing) + label_smoothing / num_classes  # identity for s = 0
    if class_weights is not None:
        w = jnp.asarray(class_weights, dtype=x.dtype)
        if w.shape != (num_classes,):
            raise ValueError(
                f"class_weights must have shape ({num_classes},); got {tuple(w.shape)}"
            )
        t = t * w
    per_voxel = -jnp.sum(t * logp, axis=-1)
    return _voxel_mean(per_voxel, mask, x)


def dice_ce(
    logits: jnp.ndarray,
    target: jnp.ndarray,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    include_background: bool = True,
    class_weights: Sequence[float] | jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    eps: float = 1e-5,
) -> jnp.ndarray:
    """Weighted sum of soft Dice (on ``softmax(logits)``) and cross-entropy (on the logits).

    ``L = dice_weight · soft_dice(softmax(logits), target) + ce_weight · cross_entropy(logits,
    target)``. ``include_background`` only affects the Dice term (the cross-entropy always uses
    all classes), as MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True)``, whose ``"mean"``
    reduction equals ``dice_ce(...).mean()``.

    Args:
      logits: ``[B, *S, K]``.
      target: integer ``[B, *S]`` or one-hot/soft ``[B, *S, K]``.
      dice_weight: weight of the Dice term.
      ce_weight: weight of the cross-entropy term.
      include_background: include class 0 in the Dice mean.
      class_weights: optional ``[K]`` cross-entropy class weights.
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights (both terms).
      eps: Dice smoothing.

    Returns:
      ``[B]``.

    Example:
      >>> dice_ce(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4), jnp.int32)).shape
      (2,)

    Reference:
      Isensee et al., "nnU-Net", Nature Methods 2021; MONAI ``monai.losses.DiceCELoss``.
    """
    logits = as_float(logits)
    probs = jax.nn.softmax(logits, axis=-1)
    dice = soft_dice(probs, target, include_background=include_background, eps=eps, mask=mask)
    ce = cross_entropy(logits, target, class_weights=class_weights, mask=mask)
    return dice_weight * dice + ce_weight * ce


def activate(logits: jnp.ndarray, *, multi_label: bool = False) -> jnp.ndarray:
    """Probabilities of segmentation logits ``[B, *S, K]``: ``softmax`` over classes
    (exclusive labels) or, with ``multi_label``, an independent ``sigmoid`` per channel
    (overlapping structures). Applied exactly once, here."""
    logits = as_float(logits)
    return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)


def label_channels(labels: jnp.ndarray, num_classes: int, *, multi_label: bool = False):
    """Labels as float channels ``[B, *S, K]``: integer maps ``[B, *S]`` one-hot encoded, or
    (``multi_label``) binary maps ``[B, *S, K]`` cast to float: the targets of the soft Dice
    and of soft warping, whichever label format the data has."""
    if multi_label:
        return jnp.asarray(labels).astype(jnp.float32)
    return jax.nn.one_hot(jnp.asarray(labels).astype(jnp.int32), num_classes, dtype=jnp.float32)


def binary_cross_entropy(
    logits: jnp.ndarray,
    target: jnp.ndarray,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Per-channel binary cross-entropy of multi-label logits, averaged over channels and the
    (masked) voxels of each example.

    .. math::

        \\ell(x) = \\frac{1}{K} \\sum_k -t_k \\log \\sigma(z_k) - (1 - t_k) \\log(1 - \\sigma(z_k))

    computed stably from the logits ``z`` (``softplus(z) - t z``), as
    ``optax.sigmoid_binary_cross_entropy`` and PyTorch's ``BCEWithLogitsLoss``.

    Args:
      logits: ``[B, *S, K]``.
      target: binary or soft ``[B, *S, K]`` (e.g. a multi-label map).
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights.

    Returns:
      ``[B]`` in nats; zero logits give ``log 2``.

    Example:
      >>> binary_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.ones((1, 2, 2, 3)))  # log 2
      Array([0.6931472], dtype=float32)
    """
    z = as_float(logits)
    if z.ndim < 3:
        raise ValueError(f"logits must have shape [B, *S, K]; got {tuple(z.shape)}")
    t = jnp.asarray(target)
    if t.shape != z.shape:
        raise ValueError(
            f"multi-label target must have the logits' shape {tuple(z.shape)}; got {tuple(t.shape)}"
        )
    per_voxel = jnp.mean(jax.nn.softplus(z) - t.astype(z.dtype) * z, axis=-1)
    return _voxel_mean(per_voxel, mask, z)


def dice_bce(
    logits: jnp.ndarray,
    target: jnp.ndarray,
    *,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    mask: jnp.ndarray | None = None,
    eps: float = 1e-5,
) -> jnp.ndarray:
    """The multi-label counterpart of :func:`dice_ce`: soft Dice on ``sigmoid(logits)`` (every
    channel, each its own structure) plus :func:`binary_cross_entropy` on the logits.

    Args:
      logits: ``[B, *S, K]``.
      target: binary or soft ``[B, *S, K]``.
      dice_weight, bce_weight: term weights.
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights (both terms).
      eps: Dice smoothing.

    Returns:
      ``[B]``.
    """
    logits = as_float(logits)
    t = jnp.asarray(target).astype(logits.dtype)
    dice = soft_dice(jax.nn.sigmoid(logits), t, include_background=True, eps=eps, mask=mask)
    return dice_weight * dice + bce_weight * binary_cross_entropy(logits, t, mask=mask)


# ----------------------------------------------------------------------------- soft KL


def soft_kl(
    p: jnp.ndarray,
    q: jnp.ndarray,
    *,
    from_logits: bool = False,
    eps: float = 1e-7,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Voxel-wise ``KL(p ‖ q)`` between two soft segmentations, averaged over voxels.

    .. math:: L = \\operatorname{mean}_x \\sum_k p_k(x) \\big(\\log p_k(x) - \\log q_k(x)\\big)

    Direction: ``p`` is the reference ("target") distribution, ``q`` the one being fitted —
    ``soft_kl(teacher, student)`` is PyTorch's ``kl_div(log q, p)``. Both arguments receive
    gradients; wrap ``p`` in ``jax.lax.stop_gradient`` for a one-sided consistency loss. With
    probabilities, both are floored at ``eps`` inside the logs (``0 · log 0`` counts as 0);
    with logits, ``log_softmax`` is used. ``soft_kl(p, p) = 0`` exactly.

    Args:
      p: ``[B, *S, K]`` reference probabilities (or logits).
      q: ``[B, *S, K]`` probabilities (or logits).
      from_logits: whether ``p`` and ``q`` are logits.
      eps: probability floor for the logs when ``from_logits=False``.
      mask: optional ``[B, *S]`` or ``[B, *S, 1]`` voxel weights.

    Returns:
      ``[B]`` mean KL in nats (``>= 0``).

    Example:
      >>> p = jnp.full((1, 2, 2, 2), 0.5)
      >>> soft_kl(p, p)
      Array([0.], dtype=float32)

    Reference:
      Kullback & Leibler, "On information and sufficiency", Ann. Math. Stat. 1951; Hinton,
      Vinyals, Dean, "Distilling the knowledge in a neural network", 2015.
    """
    p = as_float(p)
    q = jnp.asarray(q).astype(p.dtype)
    if p.ndim < 3 or q.shape != p.shape:
        raise ValueError(
            f"p and q must both have shape [B, *S, K]; got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    if from_logits:
        logp = jax.nn.log_softmax(p, axis=-1)
        logq = jax.nn.log_softmax(q, axis=-1)
        probs = jnp.exp(logp)
    else:
        logp = jnp.log(jnp.clip(p, eps, 1.0))
        logq = jnp.log(jnp.clip(q, eps, 1.0))
        probs = p
    per_voxel = jnp.sum(probs * (logp - logq), axis=-1)
    return _voxel_mean(per_voxel, mask, p)


# ----------------------------------------------------------------------------- centroids


def _class_weights_map(labels, num_classes: int, name: str) -> jnp.ndarray:
    """Hard ``[B, *S]`` (integer/bool dtype) or soft ``[B, *S, K]`` (float) -> ``[B, *S, K]``."""
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
        out = jax.nn.one_hot(labels.astype(jnp.int32), num_classes, dtype=jnp.float32)
    else:
        if labels.shape[-1] != num_classes:
            raise ValueError(
                f"{name}: a floating-point map is read as soft labels [B, *S, K] with "
                f"K = num_classes = {num_classes}; got shape {tuple(labels.shape)} (pass hard "
                f"labels with an integer dtype)"
            )
        out = labels
    if out.ndim - 2 not in (2, 3):
        raise ValueError(f"{name} must be 2-D or 3-D label maps; got shape {tuple(labels.shape)}")
    return out


def centroid_distance(
    labels_a: jnp.ndarray,
    labels_b: jnp.ndarray,
    *,
    num_classes: int,
    spacing: float | Sequence[float] | jnp.ndarray | None = None,
    include_background: bool = False,
) -> jnp.ndarray:
    """Mean Euclidean distance between the per-class centroids of two label maps.

    .. math::

        c_k = \\frac{\\sum_x w_k(x)\\, h \\odot x}{\\sum_x w_k(x)}, \\qquad
        L = \\frac{1}{|P|} \\sum_{k \\in P} \\lVert c^a_k - c^b_k \\rVert_2

    where ``w_k`` is the one-hot (hard labels) or soft (probability) weight of class ``k``, ``x``
    the voxel index, ``h`` the spacing, and ``P`` the classes with positive total weight in
    **both** maps (classes absent from either map are excluded; if no class is left the loss is
    0). Hard maps are recognised by an integer or bool dtype (``[B, *S]``), soft maps by a
    floating dtype (``[B, *S, K]``); the two arguments may mix kinds. Differentiable with
    respect to soft inputs (the norm has a zero, finite gradient at coincident centroids).

    Args:
      labels_a: integer ``[B, *S]`` or float ``[B, *S, K]``.
      labels_b: same kinds as ``labels_a`` (same spatial shape).
      num_classes: ``K``.
      spacing: voxel size in mm (scalar or per spatial axis): distances in mm; ``None``: voxels.
      include_background: include class 0.

    Returns:
      ``[B]`` mean centroid distance (voxels or mm).

    Example:
      >>> a = jnp.zeros((1, 8, 8), jnp.int32).at[:, 2:4, 2:4].set(1)
      >>> b = jnp.roll(a, 3, axis=1)  # shift by 3 voxels along axis 0
      >>> centroid_distance(a, b, num_classes=2)
      Array([3.], dtype=float32)

    Reference:
      Hu et al., "Weakly-supervised convolutional neural networks for multimodal image
      registration", MedIA 2018 (centroid/landmark error of label maps).
    """
    wa = _class_weights_map(labels_a, num_classes, "labels_a")
    wb = _class_weights_map(labels_b, num_classes, "labels_b")
    dtype = jnp.promote_types(wa.dtype, wb.dtype)
    wa, wb = wa.astype(dtype), wb.astype(dtype)
    if wa.shape != wb.shape:
        raise ValueError(
            f"labels_a and labels_b describe different grids: {tuple(wa.shape)} vs "
            f"{tuple(wb.shape)}"
        )
    if not include_background:
        if num_classes < 2:
            raise ValueError("include_background=False needs num_classes >= 2")
        wa, wb = wa[..., 1:], wb[..., 1:]
    ca, ma = soft_centroid(wa, spacing=spacing)  # [B, K, D], [B, K]
    cb, mb = soft_centroid(wb, spacing=spacing)
    present = jnp.logical_and(ma > 0, mb > 0)
    sq = jnp.sum(jnp.square(ca - cb), axis=-1)
    dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    pf = present.astype(dtype)
    return safe_div(jnp.sum(dist * pf, axis=-1), jnp.sum(pf, axis=-1))
