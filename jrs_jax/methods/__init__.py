"""JRS methods and the two baselines, by name (``config["method"]``).

Each method is a :class:`~jrs_jax.methods.base.Method`: a module that reads like its paper's
equations on top of :mod:`jrs_jax.spatial`, :mod:`jrs_jax.losses`, :mod:`jrs_jax.nets` and
:mod:`jrs_jax.train`.
"""

from .base import Method
from .deepatlas import DeepAtlas, update_counts
from .evaluate import Evaluation, evaluate, evaluation_pairs
from .unet_seg import UNetSeg
from .voxelmorph import VoxelMorph

#: Method classes by config name.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (VoxelMorph, UNetSeg, DeepAtlas)}


def get_method(name: str) -> type[Method]:
    """The method class called ``name`` (``ValueError`` naming the known ones otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name]


__all__ = [
    "METHODS",
    "DeepAtlas",
    "Evaluation",
    "Method",
    "UNetSeg",
    "VoxelMorph",
    "evaluate",
    "evaluation_pairs",
    "get_method",
    "update_counts",
]
