"""Functional composition of named, weighted loss terms (with weight schedules).

Every method in jrs_jax writes its training objective with :func:`combine` and :func:`term`::

    from jrs_jax.losses.combine import combine, term, ramp, ref
    from jrs_jax.losses.similarity import local_ncc, mse

    objective = combine(
        sim=term(local_ncc, "warped", "fixed", weight=1.0, window=5),
        smooth=term(bending_energy, "disp", weight=ramp(0.0, 7.5, steps=1000)),
        seg=term(mse, "warped_seg", "fixed_seg", weight=0.5, mask=ref("roi")),
    )
    total, parts = objective(step=step, warped=w, fixed=f, disp=u, warped_seg=ws,
                             fixed_seg=fs, roi=m)
    # total: scalar = mean_b sum_k weight_k(step) * term_k[b]
    # parts: {"sim": scalar, "smooth": scalar, "seg": scalar}, each term's UNWEIGHTED batch mean

    # in a train step
    (total, parts), grads = jax.value_and_grad(
        lambda p: objective(step=step, **forward(p, batch)), has_aux=True)(params)

A term's function returns per-example values ``[B]`` (a scalar is broadcast over the batch).
Weights are numbers or schedules ``f(step) -> scalar`` (:func:`constant`, :func:`linear_ramp`
a.k.a. :func:`ramp`, :func:`cosine_ramp`, :func:`piecewise`, or any jit-safe callable); ``step``
may be a Python int or a traced integer. Objectives are immutable and composable:
``objective.extend(name=term(...))``, ``combine(base, extra=...)``,
``combine(**objective.terms, new=...)``, ``objective.replace(...)``, ``objective.without(...)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = [
    "MissingInputError",
    "Objective",
    "Term",
    "combine",
    "constant",
    "cosine_ramp",
    "gated",
    "linear_ramp",
    "per_example",
    "piecewise",
    "ramp",
    "ref",
    "term",
]

_REDUCTIONS = ("mean", "none")


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def _step_f32(step) -> jnp.ndarray:
    return jnp.asarray(step, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Constant:
    value: float

    def __call__(self, step=None) -> jnp.ndarray:
        return jnp.asarray(self.value, jnp.float32)

    def __repr__(self) -> str:
        return f"constant({self.value!r})"


@dataclasses.dataclass(frozen=True)
class _Ramp:
    start: float
    end: float
    steps: int
    begin: int
    shape: str  # "linear" | "cosine"

    def __call__(self, step) -> jnp.ndarray:
        s = _step_f32(step) - self.begin
        if self.steps == 0:
            t = (s >= 0).astype(jnp.float32)
        else:
            t = jnp.clip(s / self.steps, 0.0, 1.0)
        if self.shape == "cosine":
            t = 0.5 * (1.0 - jnp.cos(jnp.pi * t))
        return jnp.asarray(self.start, jnp.float32) + (self.end - self.start) * t

    def __repr__(self) -> str:
        args = f"{self.start!r}, {self.end!r}, steps={self.steps}, begin={self.begin}"
        return f"{self.shape}_ramp({args})"


@dataclasses.dataclass(frozen=True)
class _Piecewise:
    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __call__(self, step) -> jnp.ndarray:
        s = _step_f32(step)
        idx = jnp.sum(s >= jnp.asarray(self.boundaries, jnp.float32)) if self.boundaries else 0
        return jnp.asarray(self.values, jnp.float32)[idx]

    def __repr__(self) -> str:
        return f"piecewise({list(self.boundaries)!r}, {list(self.values)!r})"


def constant(value: float) -> Callable:
    """Schedule that is ``value`` at every step (same as passing the number as ``weight``)."""
    return _Constant(float(value))


def _check_ramp(steps, begin) -> None:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if int(begin) != begin:
        raise ValueError(f"begin must be an int, got {begin!r}")


def linear_ramp(start: float, end: float, *, steps: int, begin: int = 0) -> Callable:
    """Schedule going linearly from ``start`` to ``end`` over ``steps`` steps from ``begin``.

    ``w(step) = start + (end - start) * clip((step - begin) / steps, 0, 1)``: ``start`` until
    ``begin``, ``end`` from ``begin + steps`` on (``steps=0``: a jump at ``begin``). jit-safe.

    Example:
      >>> w = linear_ramp(0.0, 1.0, steps=100, begin=50)
      >>> w(0), w(100), w(500)  # -> 0.0, 0.5, 1.0
    """
    _check_ramp(steps, begin)
    return _Ramp(float(start), float(end), int(steps), int(begin), "linear")


ramp = linear_ramp


def cosine_ramp(start: float, end: float, *, steps: int, begin: int = 0) -> Callable:
    """Like :func:`linear_ramp` with a half-cosine profile (zero slope at both ends).

    ``w(step) = start + (end - start) * (1 - cos(pi * t)) / 2``, ``t = clip((step - begin) /
    steps, 0, 1)``.

    Example:
      >>> cosine_ramp(1.0, 0.0, steps=10)(5)  # -> 0.5
    """
    _check_ramp(steps, begin)
    return _Ramp(float(start), float(end), int(steps), int(begin), "cosine")


def piecewise(boundaries: Sequence[float], values: Sequence[float]) -> Callable:
    """Piecewise-constant schedule: ``values[k]`` for ``boundaries[k-1] <= step < boundaries[k]``.

    ``len(values) == len(boundaries) + 1``; ``boundaries`` strictly increasing. jit-safe.

    Example:
      >>> w = piecewise([100, 200], [0.0, 1.0, 2.0])
      >>> w(99), w(100), w(250)  # -> 0.0, 1.0, 2.0
    """
    boundaries = tuple(float(x) for x in boundaries)
    values = tuple(float(x) for x in values)
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"piecewise needs len(values) == len(boundaries) + 1; got {len(values)} values and "
            f"{len(boundaries)} boundaries"
        )
    if any(b1 <= b0 for b0, b1 in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
    return _Piecewise(boundaries, values)


# --------------------------------------------------------------------------------------------
# terms
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ref:  # lower-case: used like a function, ``mask=ref("roi")``
    """Marks a keyword argument of a term as taken from the call-time inputs.

    ``term(mse, "warped", "fixed", mask=ref("roi"))`` calls ``mse(warped, fixed, mask=roi)``.
    """

    name: str


def per_example(flag, a, b):
    """Per example: ``a`` where ``flag`` ``[B]`` is set, else ``b`` (``a``, ``b`` ``[B, ...]``).

    Picks, e.g., the manual label where an image is labelled and the network's prediction
    elsewhere, inside one jitted loss.

    Example:
      >>> per_example(jnp.array([True, False]), jnp.ones((2, 3)), jnp.zeros((2, 3)))[:, 0]
      Array([1., 0.], dtype=float32)
    """
    flag = jnp.asarray(flag)
    return jnp.where(flag.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)


def gated(loss: Callable) -> Callable:
    """``loss(a, b) * on`` per example: a term that is off (zero, and no gradient) where the
    keyword ``on`` ``[B]`` is False; use with ``term(gated(f), "x", "y", on=ref("flag"))``.

    ``jnp.where`` (not a product) keeps a NaN-free zero gradient where the term is off.
    """

    def gated_loss(a, b, *, on):
        return jnp.where(on, loss(a, b), 0.0)

    gated_loss.__name__ = f"gated_{getattr(loss, '__name__', 'loss')}"
    return gated_loss


def _signature_names(fn) -> tuple[frozenset[str] | None, tuple[str, ...]]:
    """(accepted keyword names, or None for ``**kwargs``/unknown; required names in order)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in sig.parameters.values() if p.kind in kinds]
    required = tuple(p.name for p in params if p.default is p.empty)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None, required
    return frozenset(p.name for p in params), required


class MissingInputError(ValueError):
    """A term needs an input that was not passed to the objective."""


@dataclasses.dataclass(frozen=True, eq=False)
class Term:
    """A loss function bound to named inputs, fixed hyper-parameters and a weight.

    Build it with :func:`term`. ``inputs`` empty means "keyword mode": the function is called
    with the call-time inputs as keywords (only those it names, or all of them if it takes
    ``**kwargs``).
    """

    fn: Callable
    inputs: tuple[str, ...]
    weight: Any
    hparams: Mapping[str, Any]

    def weight_at(self, step=None, *, name: str = "term"):
        """The weight at ``step``: a Python float for numbers, an array for schedules."""
        w = self.weight
        if callable(w):
            if step is None:
                raise ValueError(
                    f"term {name!r} has a scheduled weight {w!r}; pass step= to the objective"
                )
            return w(step)
        return w

    def required_inputs(self) -> tuple[str, ...]:
        """Names of the call-time inputs this term needs."""
        names = list(self.inputs)
        names += [v.name for v in self.hparams.values() if isinstance(v, ref)]
        if not self.inputs:
            _, required = _signature_names(self.fn)
            names += [n for n in required if n not in self.hparams]
        return tuple(dict.fromkeys(names))

    def __call__(self, **inputs):
        """Evaluate the (unweighted) term: per-example values ``[B]`` (or a scalar)."""
        return self.evaluate(inputs)

    def evaluate(self, inputs: Mapping[str, Any], *, name: str = "term"):
        """Like calling the term with ``**inputs``; errors name the term ``name``."""

        def get(key):
            if key not in inputs:
                raise MissingInputError(
                    f"term {name!r} needs input {key!r}, which was not passed; got inputs "
                    f"{sorted(inputs)}"
                )
            return inputs[key]

        kwargs = {k: get(v.name) if isinstance(v, ref) else v for k, v in self.hparams.items()}
        if self.inputs:
            return self.fn(*(get(n) for n in self.inputs), **kwargs)
        accepted, required = _signature_names(self.fn)
        for key in (n for n in required if n not in kwargs):
            get(key)
        if accepted is None:
            pass_in = {k: v for k, v in inputs.items() if k not in kwargs}
        else:
            pass_in = {k: v for k, v in inputs.items() if k in accepted and k not in kwargs}
        return self.fn(**pass_in, **kwargs)

    def __repr__(self) -> str:
        fn = getattr(self.fn, "__name__", repr(self.fn))
        parts = [fn, *map(repr, self.inputs), f"weight={self.weight!r}"]
        parts += [f"{k}={v!r}" for k, v in self.hparams.items()]
        return f"term({', '.join(parts)})"


def term(fn: Callable, *inputs: str, weight: Any = 1.0, **hparams) -> Term:
    """Bind loss ``fn`` to named inputs, a weight and fixed keyword hyper-parameters.

    At call time the objective evaluates ``fn(inputs[n0], inputs[n1], ..., **hparams)``, where
    a hyper-parameter given as ``ref("name")`` is replaced by ``inputs["name"]``. With no input
    names, ``fn`` is called with the call-time inputs as keywords (those in its signature, or
    all of them if it takes ``**kwargs``).

    Args:
      fn: loss function returning per-example values ``[B]`` (or a scalar).
      *inputs: names of the call-time inputs passed positionally.
      weight: a number or a schedule ``f(step) -> scalar`` (``weight`` is reserved: wrap ``fn``
        with :func:`functools.partial` if it has its own ``weight`` keyword).
      **hparams: fixed keyword arguments of ``fn`` (static Python values, arrays or ``ref``).

    Returns:
      A :class:`Term`.

    Example:
      >>> term(local_ncc, "warped", "fixed", weight=1.0, window=5)
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    for n in inputs:
        if not isinstance(n, str):
            raise TypeError(f"input names must be strings, got {n!r}")
    if not callable(weight):
        if isinstance(weight, (int, float, np.number)):
            weight = float(weight)
            if not math.isfinite(weight):
                raise ValueError(f"weight must be finite, got {weight}")
        elif not hasattr(weight, "shape") or np.shape(weight) != ():
            raise TypeError(
                f"weight must be a number, a scalar array or a schedule, got {weight!r}"
            )
    return Term(fn, tuple(inputs), weight, MappingProxyType(dict(hparams)))


def _as_term(name: str, t) -> Term:
    if isinstance(t, Term):
        return t
    if callable(t):
        return term(t)
    raise TypeError(f"term {name!r} must be a Term (see term()) or a callable, got {t!r}")


# --------------------------------------------------------------------------------------------
# objective
# --------------------------------------------------------------------------------------------


class Objective:
    """An immutable, ordered collection of named weighted terms; call it to evaluate.

    ``objective(*, step=None, reduce="mean", **inputs) -> (total, parts)``; see :func:`combine`.
    """

    def __init__(self, terms: Mapping[str, Any]):
        self._terms = MappingProxyType({k: _as_term(k, v) for k, v in terms.items()})

    @property
    def terms(self) -> Mapping[str, Term]:
        """Read-only ``{name: Term}`` in evaluation order."""
        return self._terms

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the call-time inputs needed by the terms (first use order)."""
        names = [n for t in self._terms.values() for n in t.required_inputs()]
        return tuple(dict.fromkeys(names))

    def weights(self, step=None) -> dict[str, Any]:
        """``{name: weight at step}`` (e.g. for logging)."""
        return {k: t.weight_at(step, name=k) for k, t in self._terms.items()}

    def extend(self, **terms) -> Objective:
        """A new objective with the extra ``terms`` appended (names must be new)."""
        return combine(self, **terms)

    def replace(self, **terms) -> Objective:
        """A new objective with existing terms replaced (names must exist, order kept)."""
        unknown = sorted(set(terms) - set(self._terms))
        if unknown:
            raise KeyError(f"no terms named {unknown}; terms are {list(self._terms)}")
        return Objective({k: terms.get(k, t) for k, t in self._terms.items()})

    def without(self, *names: str) -> Objective:
        """A new objective without the named terms."""
        unknown = sorted(set(names) - set(self._terms))
        if unknown:
            raise KeyError(f"no terms named {unknown}; terms are {list(self._terms)}")
        return Objective({k: t for k, t in self._terms.items() if k not in names})

    def __call__(self, *, step=None, reduce: str = "mean", **inputs):
        """Evaluate: ``(total, {name: unweighted batch mean})``.

        Args:
          step: training step (int or traced scalar) for scheduled weights.
          reduce: ``"mean"``: ``total`` is the batch mean of the weighted per-example sum
            (a scalar); ``"none"``: ``total`` is that per-example sum ``[B]``. Static.
          **inputs: the named arrays the terms read.

        Returns:
          ``(total, parts)``; ``parts[name]`` is the term's unweighted batch mean (logged even
          when its weight is zero).
        """
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} is not one of {_REDUCTIONS}")
        if not self._terms:
            raise ValueError("the objective has no terms")
        per_example = None
        batch = None
        parts = {}
        for name, t in self._terms.items():
            value = jnp.asarray(t.evaluate(inputs, name=name))
            if value.ndim > 1:
                raise ValueError(
                    f"term {name!r} returned shape {value.shape}; loss terms must return "
                    "per-example values [B] (or a scalar)"
                )
            if value.ndim == 1:
                if batch is not None and value.shape[0] != batch[1]:
                    raise ValueError(
                        f"term {name!r} returned {value.shape[0]} values but term {batch[0]!r} "
                        f"returned {batch[1]}"
                    )
                batch = batch or (name, value.shape[0])
            value = value.astype(jnp.result_type(jnp.float32, value.dtype))
            parts[name] = jnp.mean(value)
            w = t.weight_at(step, name=name)
            if isinstance(w, float) and w == 0.0:
                continue  # logged only: no compute in the total or its gradient
            contrib = w * value
            per_example = contrib if per_example is None else per_example + contrib
        if per_example is None:  # every weight statically zero
            per_example = jnp.zeros((batch[1],) if batch else (), jnp.float32)
        if reduce == "mean":
            return jnp.mean(per_example), parts
        return per_example, parts

    def __len__(self) -> int:
        return len(self._terms)

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {k}={t!r}" for k, t in self._terms.items())
        return f"combine(\n{inner},\n)"


def combine(*objectives: Objective | Mapping[str, Any], **terms) -> Objective:
    """Combine named weighted loss terms into one objective.

    ``objective(step=..., **inputs)`` returns ``(total, parts)`` with::

        total = mean_b sum_k w_k(step) * term_k(inputs)[b]     (scalar; [B] with reduce="none")
        parts = {k: mean_b term_k(inputs)[b]}                  (unweighted, zero weights included)

    Works under ``jax.jit`` (``step`` may be traced; pass ``reduce`` statically, e.g. with
    ``functools.partial``) and ``jax.grad(..., has_aux=True)``. A missing input raises
    :class:`MissingInputError` (a ``ValueError``) naming the term and the input. Terms with a
    weight of exactly ``0.0`` (a Python number) are evaluated for logging but skipped in the
    total (no gradient work); scheduled weights that reach 0 still multiply.

    Args:
      *objectives: objectives (or ``{name: term}`` mappings) whose terms come first, in order.
      **terms: more terms: :class:`Term` (see :func:`term`) or plain callables
        ``f(**inputs) -> [B]`` (weight 1, called with the inputs they name).

    Returns:
      An :class:`Objective`.

    Raises:
      ValueError: on a duplicated term name.

    Example:
      >>> objective = combine(
      ...     sim=term(local_ncc, "warped", "fixed", weight=1.0, window=5),
      ...     smooth=term(bending_energy, "disp", weight=ramp(0.0, 7.5, steps=1000)),
      ... )
      >>> total, parts = objective(step=step, warped=w, fixed=f, disp=u)
      >>> objective = objective.extend(dice=term(dice_loss, "warped_seg", "fixed_seg", weight=0.5))
      >>> objective = combine(**objective.terms, mse=lambda warped, fixed: mse(warped, fixed))
    """
    merged: dict[str, Any] = {}

    def add(name, t):
        if name in merged:
            raise ValueError(f"duplicate term name {name!r}")
        merged[name] = t

    for obj in objectives:
        mapping = obj.terms if isinstance(obj, Objective) else obj
        if not isinstance(mapping, Mapping):
            raise TypeError(f"positional arguments must be Objectives or mappings, got {obj!r}")
        for k, t in mapping.items():
            add(k, t)
    for k, t in terms.items():
        add(k, t)
    return Objective(merged)
