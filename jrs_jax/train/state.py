"""One optimiser state per network: ``NetState`` and optimisers from keyword settings.

A training regime's state is a pytree of ``NetState`` s (e.g. ``{"reg": ..., "seg": ...}``);
a frozen network is simply not stepped, and an EMA teacher or an atlas is just another leaf.
Never one partitioned optimiser over networks that step at different times.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from .._checks import check_choice

__all__ = ["OPTIMIZERS", "SCHEDULES", "NetState", "make_optimizer"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


@flax.struct.dataclass
class NetState:
    """Parameters, optimiser state and step count of one network.

    ``tx`` is static (not a pytree leaf), so a ``NetState`` passes through ``jax.jit`` and
    ``jax.tree`` utilities and can be donated.

    Attributes:
      params: the network's parameter pytree.
      opt_state: ``tx.init(params)`` and its updates.
      step: int32 scalar, number of updates applied.
      tx: the optax transformation (static).

    Example:
      >>> state = NetState.create(params={"w": jnp.ones(3)}, tx=optax.sgd(0.1))
      >>> state = state.apply_gradients({"w": jnp.ones(3)})
      >>> state.params["w"]
      Array([0.9, 0.9, 0.9], dtype=float32)
    """

    params: Any
    opt_state: Any
    step: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, params: Any, tx: optax.GradientTransformation) -> NetState:
        """A fresh state at step 0."""
        return cls(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32), tx=tx)

    def apply_gradients(self, grads: Any) -> NetState:
        """One optimiser update with ``grads`` (same structure as ``params``)."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(params=params, opt_state=opt_state, step=self.step + 1)


def make_optimizer(
    *,
    name: str = "adam",
    learning_rate: float = 1e-4,
    schedule: str = "constant",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    end_factor: float = 0.0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    momentum: float = 0.9,
) -> optax.GradientTransformation:
    """An optax optimiser from plain settings (what configs hold).

    Args:
      name: ``"adam"`` (default; VoxelMorph uses 1e-4), ``"adamw"`` (decoupled
        ``weight_decay``) or ``"sgd"`` (with ``momentum``).
      learning_rate: peak learning rate.
      schedule: ``"constant"``, ``"cosine"`` (decay to ``end_factor * lr`` at
        ``total_steps``) or ``"linear"`` (same, linearly); both need ``total_steps``.
      total_steps: length of the decay (including warm-up).
      warmup_steps: linear warm-up from 0 over this many steps.
      end_factor: final learning rate as a fraction of the peak.
      weight_decay: AdamW decay (must be 0 for adam/sgd, to avoid silently ignoring it).
      clip_norm: clip updates to this global gradient norm first (None: no clipping).
      b1, b2: Adam moments; momentum: SGD momentum.

    Returns:
      ``optax.GradientTransformation``.
    """
    check_choice("name", name, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    if weight_decay and name != "adamw":
        raise ValueError(f"weight_decay={weight_decay} needs name='adamw' (got {name!r})")
    if schedule != "constant" and not total_steps:
        raise ValueError(f"schedule={schedule!r} needs total_steps")
    if schedule == "constant":
        lr: Any = learning_rate
        if warmup_steps:
            lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    elif schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0 if warmup_steps else learning_rate,
            learning_rate,
            warmup_steps,
            int(total_steps),
            end_value=end_factor * learning_rate,
        )
    else:
        decay = optax.linear_schedule(
            learning_rate, end_factor * learning_rate, int(total_steps) - warmup_steps
        )
        lr = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, learning_rate, warmup_steps), decay], [warmup_steps]
            )
            if warmup_steps
            else decay
        )
    if name == "adam":
        opt = optax.adam(lr, b1=b1, b2=b2)
    elif name == "adamw":
        opt = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
    else:
        opt = optax.sgd(lr, momentum=momentum or None)
    if clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt
