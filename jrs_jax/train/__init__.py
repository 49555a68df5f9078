"""Training: one ``NetState`` (params, optax state, static optimiser) per network, and
orbax checkpoints of a pytree of them (``Checkpointer``: last N and best, atomic, resumable)."""

from .checkpoint import Checkpointer, CheckpointNotFoundError
from .state import OPTIMIZERS, SCHEDULES, NetState, make_optimizer

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "CheckpointNotFoundError",
    "Checkpointer",
    "NetState",
    "make_optimizer",
]
