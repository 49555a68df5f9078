"""Pure training steps over a pytree of ``NetState`` s.

A regime's state is a ``dict`` whose entries are :class:`~jrs_jax.train.NetState` s (one per
network, each with its own optimiser) or plain array pytrees (an EMA teacher, a template,
...). A *loss function* sees the **variables** of that state, i.e. the same dict with every
``NetState`` replaced by its ``params``::

    loss_fn(variables, batch, key) -> (loss: scalar, aux: {name: scalar})

:func:`make_update` turns it into a step that differentiates only with respect to the
networks named in ``train``; every other entry is held constant (``stop_gradient``) and
its optimiser state is left untouched, so a frozen partner is exactly "not stepped". The
regimes of :mod:`jrs_jax.train.regimes` (alternating, adversarial, self-training, atlas
building, test-time refinement) are compositions of such steps.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> from jrs_jax.train import NetState, make_update
  >>> state = {"a": NetState.create(params=jnp.ones(2), tx=optax.sgd(0.5)),
  ...          "b": NetState.create(params=jnp.ones(2), tx=optax.sgd(0.5))}
  >>> def loss_fn(v, batch, key):
  ...     return jnp.sum(v["a"] * v["b"]), {}
  >>> step = make_update(loss_fn, train="a")
  >>> new, metrics = step(state, None, jax.random.key(0))
  >>> new["a"].params, new["b"].params       # b frozen
  (Array([0.5, 0.5], dtype=float32), Array([1., 1.], dtype=float32))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .state import NetState

__all__ = [
    "Alternating",
    "LossFn",
    "check_finite",
    "ema_update",
    "make_update",
    "non_finite",
    "variables",
]

LossFn = Callable[[dict, Any, jax.Array], tuple[jax.Array, dict]]


def variables(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with every ``NetState`` replaced by its ``params`` (what a loss sees)."""
    return {k: (v.params if isinstance(v, NetState) else v) for k, v in state.items()}


def _names(train: str | Sequence[str], state: Mapping[str, Any]) -> tuple[str, ...]:
    names = (train,) if isinstance(train, str) else tuple(train)
    if not names:
        raise ValueError("train must name at least one network")
    for n in names:
        if n not in state:
            raise KeyError(f"train names {n!r}, which is not in the state {sorted(state)}")
        if not isinstance(state[n], NetState):
            raise TypeError(
                f"state[{n!r}] is a {type(state[n]).__name__}, not a NetState: only networks "
                "with an optimiser can be trained by make_update"
            )
    return names


def make_update(
    loss_fn: LossFn,
    *,
    train: str | Sequence[str],
    jit: bool = True,
    donate: bool = False,
    grad_norms: bool = True,
    with_step: bool = False,
) -> Callable[[dict, Any, jax.Array], tuple[dict, dict]]:
    """A step ``(state, batch, key) -> (state, metrics)`` training the networks in ``train``.

    The gradient of ``loss_fn`` is taken with respect to ``state[n].params`` for ``n`` in
    ``train`` only (jointly, one optimiser update each); the other entries pass through
    unchanged. ``metrics`` holds ``"loss"``, the ``aux`` terms of ``loss_fn`` and, with
    ``grad_norms``, ``"grad_norm/<n>"`` per trained network (all float32 scalars).

    Args:
      loss_fn: ``(variables, batch, key) -> (scalar loss, {name: scalar})``.
      train: name(s) of the ``NetState`` entries to update.
      jit: return ``jax.jit`` of the step (the usual case).
      donate: donate the input state's buffers to the output (saves a copy of every
        parameter and optimiser moment; the caller must not reuse the old state).
      grad_norms: add the global gradient norm per trained network to ``metrics``.
      with_step: call ``loss_fn(variables, batch, key, step)`` with ``step`` the update count
        (``NetState.step``, int32, traced) of the first trained network before this update:
        the clock of weight schedules (``objective(step=step, ...)``, ``linear_ramp``).
    """

    def step(state: dict, batch: Any, key: jax.Array) -> tuple[dict, dict]:
        names = _names(train, state)
        frozen = jax.lax.stop_gradient(variables(state))
        extra = (state[names[0]].step,) if with_step else ()

        def objective(trainable: dict) -> tuple[jax.Array, dict]:
            loss, aux = loss_fn({**frozen, **trainable}, batch, key, *extra)
            return loss, aux

        trainable = {n: state[n].params for n in names}
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        new = dict(state)
        metrics = {"loss": loss, **aux}
        for n in names:
            new[n] = state[n].apply_gradients(grads[n])
            if grad_norms:
                metrics[f"grad_norm/{n}"] = optax.tree.norm(grads[n])
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return new, metrics

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def ema_update(average: Any, new: Any, *, decay: float | jax.Array) -> Any:
    """Exponential moving average ``decay * average + (1 - decay) * new``, leaf-wise.

    Used for mean-teacher networks (``average`` = teacher params, ``new`` = student params)
    and EMA templates. ``decay`` may be traced (e.g. a warm-up ``min(decay, (1+t)/(10+t))``).
    """
    return jax.tree.map(lambda a, b: a * decay + b.astype(a.dtype) * (1 - decay), average, new)


def non_finite(metrics: Mapping[str, Any], *, names: Sequence[str] = ()) -> list[str]:
    """``["name=value", ...]`` for the metrics (default: all) holding a NaN or Inf.

    Host-side; blocks on the values.
    """
    bad = []
    for k in names or metrics:
        v = np.asarray(jax.device_get(metrics[k]), np.float64).ravel()
        if not np.all(np.isfinite(v)):
            bad.append(f"{k}={v[~np.isfinite(v)][0]}")
    return bad


def check_finite(metrics: Mapping[str, Any], *, step: int, names: Sequence[str] = ()) -> None:
    """Raise ``FloatingPointError`` naming the step and the terms if a metric is NaN or Inf.

    ``names``: metrics to check (default: all). Host-side; blocks on the values.
    """
    bad = non_finite(metrics, names=names)
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step}: {', '.join(bad)}")


class Alternating:
    """Which network steps at a given global step: a repeating pattern of phases.

    ``Alternating((("reg", 20), ("seg", 1)))`` steps ``reg`` 20 times, then ``seg`` once,
    and repeats (DeepAtlas' 1:20 ratio); the partner is frozen while the other steps.
    Host-side (plain Python): pair it with one jitted :func:`make_update` per phase, so a
    frozen network costs no gradient computation at all.

    Example:
      >>> sched = Alternating((("reg", 2), ("seg", 1)))
      >>> [sched.phase(t) for t in range(6)]
      ['reg', 'reg', 'seg', 'reg', 'reg', 'seg']
      >>> sched.count("seg", 6)      # seg steps among steps 0..5
      2
    """

    def __init__(self, pattern: Sequence[tuple[str, int]]):
        pattern = tuple((str(n), int(k)) for n, k in pattern)
        if not pattern or any(k < 0 for _, k in pattern) or sum(k for _, k in pattern) == 0:
            raise ValueError(
                f"pattern needs (name, count >= 0) entries with a positive total; got {pattern}"
            )
        self.pattern = pattern
        self.period = sum(k for _, k in pattern)

    @property
    def names(self) -> tuple[str, ...]:
        """Phase names with a positive count, in pattern order (duplicates removed)."""
        return tuple(dict.fromkeys(n for n, k in self.pattern if k > 0))

    def phase(self, step: int) -> str:
        """Name of the network updated at global step ``step`` (0-based)."""
        r = int(step) % self.period
        for name, k in self.pattern:
            if r < k:
                return name
            r -= k
        raise AssertionError("unreachable")

    def count(self, name: str, steps: int) -> int:
        """How many of the steps ``0 .. steps - 1`` update ``name``."""
        full, rest = divmod(int(steps), self.period)
        per = sum(k for n, k in self.pattern if n == name)
        return full * per + sum(self.phase(t) == name for t in range(rest))

    def __repr__(self) -> str:
        return f"Alternating({self.pattern!r})"
