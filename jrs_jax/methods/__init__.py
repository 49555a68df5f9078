"""JRS methods and the two baselines, by name (``config["method"]``).

Each method is a :class:`~jrs_jax.methods.base.Method`: a module that reads like its paper's
equations on top of :mod:`jrs_jax.spatial`, :mod:`jrs_jax.losses`, :mod:`jrs_jax.nets` and
:mod:`jrs_jax.train`.
"""

from .adversarial_jrs import AdversarialJRS
from .atlas_istn import AtlasISTN
from .base import EVAL_MODES, TASKS, Method, MissingInput
from .cardiac_motion import CardiacMotion
from .cross_stitch import CrossStitchJRS
from .ddir import DDIR
from .deepatlas import DeepAtlas, update_counts
from .deeprs import DeepRS
from .hybrid_unet import HybridUNet
from .istn import ISTN
from .jrss import JRSS
from .jssr import JSSR
from .oar_cascade import OARCascade
from .sddir import SDDIR
from .seg_informed_2d import SegInformed2D
from .segis_net import SegisNet
from .tumour_jrs import TumourJRS
from .unet_seg import UNetSeg
from .voxelmorph import VoxelMorph
from .xray_gan import XrayGAN

#: Method classes by config name.
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        VoxelMorph,
        UNetSeg,
        DeepAtlas,
        AdversarialJRS,
        DeepRS,
        CrossStitchJRS,
        JRSS,
        DDIR,
        SDDIR,
        HybridUNet,
        SegInformed2D,
        SegisNet,
        CardiacMotion,
        JSSR,
        XrayGAN,
        ISTN,
        AtlasISTN,
        TumourJRS,
        OARCascade,
    )
}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method class to :data:`METHODS` under ``cls.name`` (usable as a decorator, e.g.
    for a method written in a notebook); re-registering a name replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method expects a Method subclass; got {cls!r}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method class called ``name`` (``ValueError`` naming the known ones otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name]


__all__ = [
    "DDIR",
    "EVAL_MODES",
    "ISTN",
    "JRSS",
    "JSSR",
    "METHODS",
    "SDDIR",
    "TASKS",
    "AdversarialJRS",
    "AtlasISTN",
    "CardiacMotion",
    "CrossStitchJRS",
    "DeepAtlas",
    "DeepRS",
    "HybridUNet",
    "Method",
    "MissingInput",
    "OARCascade",
    "SegInformed2D",
    "SegisNet",
    "TumourJRS",
    "UNetSeg",
    "VoxelMorph",
    "XrayGAN",
    "get_method",
    "register_method",
    "update_counts",
]
