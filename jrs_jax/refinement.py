"""Test-time refinement of any trained method on one example (instance optimisation).

A trained registration network is a good initial guess, not the optimum of its objective on
a given pair; a few optimiser steps on that pair alone close part of the gap (VoxelMorph's
TF scripts and MONAI's tutorial do it for one model each). Here it is one function for every
method: a copy of the state entry :attr:`Method.refine_net <jrs_jax.methods.Method>` (the
registration network by default; ISTN's spatial transformer, Atlas-ISTN's atlas-to-subject
network) is optimised with Adam on :meth:`Method.refine_loss
<jrs_jax.methods.Method.refine_loss>` of the single example, the other networks frozen,
through :func:`jrs_jax.train.refine` (one jitted step per update). The trained state is never
modified.

Used by ``jrs-jax register --refine N [--refine-lr LR]`` (:func:`jrs_jax.inference.register_files`
reports the metrics before and after), by evaluation when the config's ``eval.refine_steps``
is set (every pair or subject refined on its own, :func:`jrs_jax.evaluation.evaluate`) and
by notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .methods.base import Method
from .train import refine

__all__ = ["DEFAULT_REFINE_LR", "check_refinable", "refine_options", "refine_variables"]

#: Adam learning rate of refinement when neither the call nor the config's ``refine.lr`` sets one.
DEFAULT_REFINE_LR = 1e-4


def check_refinable(method: Method, variables: Mapping[str, Any] | None = None) -> str:
    """The state entry refinement optimises; ``ValueError`` (one line, why) if ``method``
    cannot refine: it does not serve :attr:`~jrs_jax.methods.Method.refine_task`, has no
    :attr:`~jrs_jax.methods.Method.refine_net`, or ``variables`` lack that entry."""
    task, net = method.refine_task, method.refine_net
    if task not in method.tasks:
        does = ", ".join(sorted(method.tasks)) or "nothing"
        raise ValueError(f"{method.name} cannot refine: it does not {task} (it does: {does})")
    if net is None:
        raise ValueError(f"{method.name} has no network to refine at test time")
    if variables is not None and net not in variables:
        raise ValueError(
            f"{method.name} cannot refine: its state has no {net!r} entry ({sorted(variables)})"
        )
    return net


def refine_options(config: Mapping[str, Any], *, steps=None, lr=None) -> tuple[int, float]:
    """``(steps, lr)``: the given values, else the config's ``refine.steps`` / ``refine.lr``
    (a method's published defaults), else 0 steps and :data:`DEFAULT_REFINE_LR`.

    Raises:
      ValueError: negative ``steps`` or non-positive ``lr``.
    """
    section = config.get("refine") or {}
    steps = int(section.get("steps", 0) if steps is None else steps)
    lr = float(section.get("lr", DEFAULT_REFINE_LR) if lr is None else lr)
    if steps < 0:
        raise ValueError(f"refinement steps must be >= 0; got {steps}")
    if not lr > 0:
        raise ValueError(f"the refinement learning rate must be positive; got {lr}")
    return steps, lr


def _refiner(method: Method, lr: float):
    """``(loss_fn, tx, jitted loss_fn)`` of ``method`` at ``lr``, cached on the method: the
    same objects on every call, so :func:`jrs_jax.train.refine` compiles once per shape and
    step count."""
    cache = method.__dict__.setdefault("_refiners", {})
    if lr not in cache:
        net = method.refine_net

        def loss_fn(p, example, key):
            params, frozen = p, example["frozen"]
            return method.refine_loss({**frozen, net: params}, example["batch"], key)

        cache[lr] = (loss_fn, optax.adam(lr), jax.jit(loss_fn))
    return cache[lr]


def refine_variables(
    method: Method,
    variables: Mapping[str, Any],
    batch: Mapping[str, Any],
    *,
    steps: int,
    lr: float = DEFAULT_REFINE_LR,
    key: jax.Array | None = None,
) -> tuple[dict, np.ndarray]:
    """Refine ``variables[method.refine_net]`` on one example with ``steps`` Adam steps.

    Args:
      method: a trained method.
      variables: its variables (``jrs_jax.train.variables(state)``); not modified.
      batch: one example of :attr:`~jrs_jax.methods.Method.refine_task` (batch size 1: the
        keys that task needs, ``[1, *S, C]`` images).
      steps: optimiser steps (0: ``variables`` unchanged).
      lr: Adam learning rate.
      key: PRNG key of the objective (default ``jax.random.key(0)``).

    Returns:
      ``(refined variables, losses float32 [steps + 1])``: ``losses[i]`` the objective before
      step ``i`` and ``losses[-1]`` after the last one.

    Raises:
      ValueError: the method cannot refine (:func:`check_refinable`), a batch of more than one
        example, a missing input, negative ``steps``.
    """
    net = check_refinable(method, variables)
    keys = method.inputs(method.refine_task)
    example = {k: jnp.asarray(batch[k]) for k in keys if batch.get(k) is not None}
    missing = [k for k in keys if k not in example]
    if missing:
        raise ValueError(f"{method.name} needs {missing[0]} to refine")
    sizes = {v.shape[0] for v in example.values()}
    if sizes != {1}:
        raise ValueError(f"refinement optimises one example at a time; got batch sizes {sizes}")
    key = jax.random.key(0) if key is None else key
    loss_fn, tx, jitted = _refiner(method, float(lr))
    frozen = {k: v for k, v in variables.items() if k != net}
    data = {"frozen": frozen, "batch": example}
    params, losses = refine(loss_fn, variables[net], data, steps=int(steps), tx=tx, key=key)
    out = {**variables, net: params}
    final, _ = jitted(params, data, jax.random.fold_in(key, int(steps)))
    return out, np.append(np.asarray(losses, np.float32), np.float32(final))
