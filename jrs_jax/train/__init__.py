"""Training: one ``NetState`` (params, optax state, static optimiser) per network."""

from .state import OPTIMIZERS, SCHEDULES, NetState, make_optimizer

__all__ = ["OPTIMIZERS", "SCHEDULES", "NetState", "make_optimizer"]
