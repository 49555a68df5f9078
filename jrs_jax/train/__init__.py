"""Training: one ``NetState`` (params, optax state, static optimiser) per network, and
orbax checkpoints of a pytree of them (``Checkpointer``: last N and best, atomic, resumable)."""

from .checkpoint import Checkpointer, CheckpointNotFoundError
from .regimes import (
    ATLAS_MODES,
    ATLAS_TARGET,
    make_adversarial_step,
    make_alternating_step,
    make_atlas_step,
    make_self_training_step,
    pseudo_labels,
    refine,
    warp_subjects_to_atlas,
)
from .state import OPTIMIZERS, SCHEDULES, NetState, make_optimizer
from .steps import Alternating, LossFn, check_finite, ema_update, make_update, variables

__all__ = [
    "ATLAS_MODES",
    "ATLAS_TARGET",
    "OPTIMIZERS",
    "SCHEDULES",
    "Alternating",
    "CheckpointNotFoundError",
    "Checkpointer",
    "LossFn",
    "NetState",
    "check_finite",
    "ema_update",
    "make_adversarial_step",
    "make_alternating_step",
    "make_atlas_step",
    "make_optimizer",
    "make_self_training_step",
    "make_update",
    "pseudo_labels",
    "refine",
    "variables",
    "warp_subjects_to_atlas",
]
