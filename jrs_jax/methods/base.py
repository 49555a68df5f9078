"""What every method gives the training loop, the evaluator and the CLI.

A method is a small class built from a config dict (``configs/*.py``), the spatial shape and
the number of label classes. It owns its networks (Flax modules), its optimisers and its
jitted steps; the state it trains is a dict of :class:`~jrs_jax.train.NetState` s (see
:mod:`jrs_jax.train.steps`). The loop only calls:

* ``init(key) -> state``;
* ``sample_batch(dataset, step) -> {name: np.ndarray}`` — host-side, a pure function of
  ``(config seed, step)``, so a resumed run draws exactly the batches of an uninterrupted one;
* ``train_step(state, batch, key, step) -> (state, metrics)``.

Inference, used by evaluation and ``jrs-jax register`` / ``segment``, works on
``variables = jrs_jax.train.variables(state)``:

* ``register(variables, moving, fixed) -> {"disp": [B, *S, D], ...}`` (registration
  methods; ``moving``/``fixed`` ``[B, *S, 1]``);
* ``segment(variables, image) -> logits [B, *S, K]`` (segmentation methods).

A method that does not register (or segment) leaves ``can_register`` (``can_segment``)
False.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset

__all__ = ["Method"]


class Method(abc.ABC):
    """Base class: config bookkeeping and the jitted inference entry points.

    Subclasses set ``name``, implement ``init``, ``sample_batch``, ``train_step`` and
    ``register`` and/or ``segment``, and set ``can_register`` / ``can_segment``.

    Args:
      config: the full config dict (sections ``model``, ``loss``, ``optim``, ``data``,
        ``train``, ...; see ``configs/``).
      shape: spatial shape ``S`` of the images.
      num_classes: number of label classes ``K`` including background.
    """

    name: ClassVar[str] = "method"
    can_register: ClassVar[bool] = False
    can_segment: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], *, shape: tuple[int, ...], num_classes: int):
        self.config = config
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(self.shape)
        if self.ndim not in (2, 3):
            raise ValueError(f"{self.name}: images must be 2-D or 3-D; got shape {self.shape}")
        self.num_classes = int(num_classes)
        self.seed = int(config.get("seed", 0))
        self._jit_register = jax.jit(self.register) if self.can_register else None
        self._jit_segment = jax.jit(self.segment) if self.can_segment else None

    @property
    def best_metric(self) -> str:
        """Validation metric that picks the best checkpoint (higher is better)."""
        return "val/reg_dice" if self.can_register else "val/seg_dice"

    # -- the loop's interface ----------------------------------------------------------------------

    @abc.abstractmethod
    def init(self, key: jax.Array) -> dict:
        """See the module docstring."""

    @abc.abstractmethod
    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """See the module docstring."""

    @abc.abstractmethod
    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        """See the module docstring."""

    def register(self, variables: dict, moving: jax.Array, fixed: jax.Array) -> dict:
        raise TypeError(f"{self.name} is not a registration method")

    def segment(self, variables: dict, image: jax.Array) -> jax.Array:
        raise TypeError(f"{self.name} is not a segmentation method")

    # -- inference (jitted once per method instance) ---------------------------------------

    def predict_disp(self, variables: dict, moving, fixed) -> jax.Array:
        """Jitted ``register(...)["disp"]`` for ``[B, *S, 1]`` images."""
        if self._jit_register is None:
            raise TypeError(f"{self.name} is not a registration method")
        return self._jit_register(variables, jnp.asarray(moving), jnp.asarray(fixed))["disp"]

    def predict_logits(self, variables: dict, image) -> jax.Array:
        """Jitted ``segment(...)`` for ``[B, *S, 1]`` images."""
        if self._jit_segment is None:
            raise TypeError(f"{self.name} is not a segmentation method")
        return self._jit_segment(variables, jnp.asarray(image))
