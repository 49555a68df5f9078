"""Training: one ``NetState`` (params, optax state, static optimiser) per network; pure steps
and regimes over a dict of them (:mod:`.steps`, :mod:`.regimes`); orbax checkpoints
(``Checkpointer``: last N and best, atomic, resumable); the loop (:func:`fit`) and data
parallelism (:mod:`.parallel`)."""

from .checkpoint import Checkpointer, CheckpointNotFoundError
from .loop import TrainingDiverged, fit, read_log
from .parallel import data_mesh, replicate, shard_batch
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
    "TrainingDiverged",
    "check_finite",
    "data_mesh",
    "ema_update",
    "fit",
    "make_adversarial_step",
    "make_alternating_step",
    "make_atlas_step",
    "make_optimizer",
    "make_self_training_step",
    "make_update",
    "pseudo_labels",
    "read_log",
    "refine",
    "replicate",
    "shard_batch",
    "variables",
    "warp_subjects_to_atlas",
]
