"""Losses for registration and segmentation: per-example values ``[B]``, lower is better.

Arrays are positional, hyper-parameters keyword-only; every loss is jit-safe and free of NaN
on degenerate inputs (constant images, absent classes, empty masks, zero fields). Terms
combine into one objective with :func:`combine` / :func:`term`, which returns
``(total, {name: value})`` so every term is logged::

    objective = combine(
        sim=term(local_ncc, "warped", "fixed", window=9),
        smooth=term(bending_energy, "disp", weight=linear_ramp(0.0, 7.5, steps=1000)),
    )
    total, parts = objective(step=step, warped=w, fixed=f, disp=u)

Families: similarity (:mod:`.similarity`), regularisation (:mod:`.regularisation`),
segmentation (:mod:`.segmentation`), adversarial (:mod:`.adversarial`), consistency
(:mod:`.consistency`), composition (:mod:`.combine`).
"""

from .adversarial import (
    GAN_KINDS,
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from .combine import (
    MissingInputError,
    Objective,
    Term,
    combine,
    constant,
    cosine_ramp,
    gated,
    linear_ramp,
    per_example,
    piecewise,
    ramp,
    ref,
    term,
)
from .consistency import cycle_l1, inverse_consistency
from .registry import (
    REGULARISERS,
    SIMILARITIES,
    regulariser,
    regulariser_term,
    similarity,
    similarity_term,
)
from .regularisation import (
    bending_energy,
    diffusion,
    gradient_l1,
    gradient_l2,
    huber_smoothness,
    jacobian_folding,
    velocity_kl,
)
from .segmentation import (
    activate,
    binary_cross_entropy,
    centroid_distance,
    cross_entropy,
    dice_bce,
    dice_ce,
    dice_score,
    label_channels,
    soft_dice,
    soft_kl,
)
from .similarity import l1, local_ncc, mse, mutual_information, ncc, ssim

__all__ = [
    "GAN_KINDS",
    "REGULARISERS",
    "SIMILARITIES",
    "MissingInputError",
    "Objective",
    "Term",
    "activate",
    "bending_energy",
    "binary_cross_entropy",
    "centroid_distance",
    "combine",
    "constant",
    "cosine_ramp",
    "cross_entropy",
    "cycle_l1",
    "dice_bce",
    "dice_ce",
    "dice_score",
    "diffusion",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "gated",
    "gradient_l1",
    "gradient_l2",
    "gradient_penalty",
    "huber_smoothness",
    "inverse_consistency",
    "jacobian_folding",
    "l1",
    "label_channels",
    "linear_ramp",
    "local_ncc",
    "mse",
    "mutual_information",
    "ncc",
    "per_example",
    "piecewise",
    "ramp",
    "ref",
    "regulariser",
    "regulariser_term",
    "similarity",
    "similarity_term",
    "soft_dice",
    "soft_kl",
    "ssim",
    "term",
    "velocity_kl",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]
