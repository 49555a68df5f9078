"""jrs_jax: joint image registration and segmentation in JAX/Flax.

Subpackages: :mod:`jrs_jax.spatial` (geometry: warp, compose, integrate, Jacobians,
converters), :mod:`jrs_jax.losses` (similarity, regularisation, segmentation, adversarial,
consistency; functional composition), :mod:`jrs_jax.metrics` (Learn2Reg-style evaluation),
:mod:`jrs_jax.postprocess` (label-map clean-up: largest component per class),
:mod:`jrs_jax.nets` (stateless Flax networks), :mod:`jrs_jax.train` (one optimiser state per
network), :mod:`jrs_jax.data` (NIfTI IO and preprocessing), :mod:`jrs_jax.viz` (figures).
"""

from . import data, losses, metrics, nets, postprocess, spatial, train, viz

__version__ = "0.1.0.dev0"

__all__ = [
    "__version__",
    "data",
    "losses",
    "metrics",
    "nets",
    "postprocess",
    "spatial",
    "train",
    "viz",
]
