"""The method protocol: what every method gives the loop, evaluation, figures and the CLI.

A method is a small class built from a resolved config dict (``configs/*.py``; the data
section carries the spatial shape, the number of classes and channels). It is the only place
that knows its data, its hyper-parameters and its inference: it owns its networks (Flax
modules), its optimisers and its jitted steps. Its training state is a dict of
:class:`~jrs_jax.train.NetState` s (see :mod:`jrs_jax.train.steps`) plus any plain pytrees
(an atlas, an EMA teacher). Everything above it (:mod:`jrs_jax.evaluation`,
:mod:`jrs_jax.inference`, :mod:`jrs_jax.studies`, the CLI, the figures) is generic.

Training (:func:`jrs_jax.train.loop.fit` calls these):

* ``init(key, dataset=None) -> state``. With a dataset, data-dependent state may be set (an
  atlas started from the data mean, a selected template, intensity statistics); without one
  the state must have the same structure, shapes and dtypes (it is the template a checkpoint
  is restored into).
* ``sample_batch(dataset, step) -> {name: np.ndarray}``: host-side, a pure function of
  ``(config seed, step)`` (:func:`jrs_jax.data.batch_rng`), so a resumed run draws exactly the
  batches of an uninterrupted one.
* ``train_step(state, batch, key, step) -> (state, metrics)``.

Inference: ``predict(variables, batch) -> dict`` with ``variables =
jrs_jax.train.variables(state)``. It is jittable and the method's only inference entry point
(:meth:`Method.run` calls it, after the optional host-side :meth:`Method.prepare` that a
pipeline with a non-jittable stage overrides).
What it computes depends on the batch keys given; a method declares, per *task*, the batch
keys its ``predict`` needs (:attr:`Method.tasks`):

* ``"register"``: a pair. Standard inputs ``moving``/``fixed`` ``[B, *S, C]``; a method may
  need more (``moving_labels`` ``[B, *S]``, ``moving_mask``, a template, a second modality),
  and says so in its ``tasks`` entry.
* ``"segment"``: one image, ``image`` ``[B, *S, C]``.
* ``"sequence"``: a series of frames, ``sequence`` ``[B, T + 1, *S, C]``: frame 0 is the
  target, every later frame a source registered to it (cardiac cine); outputs
  ``disp_sequence`` ``[B, T, *S, D]`` (``warp(sequence[:, k + 1], disp_sequence[:, k]) ~
  sequence[:, 0]``) and ``seg_sequence_probs`` ``[B, T + 1, *S, K]``.

Standard output keys (documented once, read by evaluation, figures, the CLI and notebooks;
each is present only when the method produces it):

=================  ===================  ===================================================
key                shape                meaning
=================  ===================  ===================================================
``disp``           ``[B, *S, D]``       pull field moving -> fixed, voxels along array axes:
                                        ``warp(moving, disp) ~ fixed``
``velocity``       ``[B, *S', D]``      stationary velocity integrated into ``disp``
``warped``         ``[B, *S, C]``       ``warp(moving, disp)``
``seg_probs``      ``[B, *S, K]``       softmax class probabilities (exclusive labels) of
                                        ``image`` (task ``segment``) or of ``fixed``
``seg_sigmoid``    ``[B, *S, K]``       independent per-label probabilities (overlapping
                                        structures), thresholded per label, never argmaxed
``moving_seg_*``   ``[B, *S, K]``       ``moving_seg_probs`` / ``moving_seg_sigmoid``: the
                                        segmentation of ``moving`` in a pair prediction
                                        (evaluation then scores ``seg_consistency``, the
                                        Dice of ``labels(moving)∘disp`` with
                                        ``labels(fixed)``)
=================  ===================  ===================================================

plus method-specific extras (e.g. ``synth``). Hard labels come from :meth:`Method.labels`
(argmax of ``seg_probs``, or ``seg_sigmoid >= 0.5``): the only place they are made.

Test-time refinement (:mod:`jrs_jax.refinement`; ``jrs-jax register --refine N``, the
config's ``eval.refine_steps``): a copy of one state entry (:attr:`Method.refine_net`, the
registration network by default) is optimised on a single example of
:attr:`Method.refine_task` with :meth:`Method.refine_loss`, the method's unsupervised
objective (by default the config's ``sim(warped, fixed) + λ reg(disp)``), the rest frozen.

A method also names its evaluation mode (:attr:`Method.eval_mode`, overridable by the
config's ``eval.mode``; see :mod:`jrs_jax.evaluation`) and may add per-pair metrics
(:meth:`Method.pair_metrics`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset

__all__ = ["EVAL_MODES", "TASKS", "Method", "MissingInput"]

#: Tasks a method's ``predict`` may serve, with the standard inputs of each.
TASKS: dict[str, tuple[str, ...]] = {
    "register": ("moving", "fixed"),
    "segment": ("image",),
    "sequence": ("sequence",),
}

#: Evaluation modes (:mod:`jrs_jax.evaluation`).
EVAL_MODES = ("pairs", "atlas", "within_subject", "cross_modal", "sequence")


class MissingInput(ValueError):
    """A batch given to ``predict`` lacks a key the method declared for the task."""

    def __init__(self, method: str, task: str, key: str):
        self.method, self.task, self.key = method, task, key
        super().__init__(f"{method} needs {key} to {task}")


class Method(abc.ABC):
    """Base class: config bookkeeping, the task declaration and jitted inference.

    Subclasses set :attr:`name` and :attr:`tasks` and implement :meth:`init`,
    :meth:`sample_batch`, :meth:`train_step` and :meth:`predict`.

    Args:
      config: the full config dict (sections ``model``, ``loss``, ``optim``, ``data``,
        ``train``, ...; see ``configs/``).
      shape: spatial shape ``S`` of the images.
      num_classes: number of label classes ``K`` (including background for exclusive labels;
        the number of label channels for multi-label data).
      num_channels: image channels ``C`` (modalities).
      multi_label: labels are overlapping binary channels ``[*S, K]``.
    """

    name: ClassVar[str] = "method"
    #: ``{task: batch keys predict needs}`` (see the module docstring).
    tasks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: Default evaluation mode (one of :data:`EVAL_MODES`).
    eval_mode: ClassVar[str] = "pairs"
    #: Whether the method trains on cross-modal pairs (``data.moving_channel`` /
    #: ``data.fixed_channel``; its batches then come from :meth:`pair_channels`).
    cross_modal_pairs: ClassVar[bool] = False
    #: The task test-time refinement serves (:mod:`jrs_jax.refinement`).
    refine_task: ClassVar[str] = "register"
    #: The state entry test-time refinement optimises (``None``: the method does not refine).
    refine_net: ClassVar[str | None] = "reg"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        shape: tuple[int, ...],
        num_classes: int,
        num_channels: int = 1,
        multi_label: bool = False,
    ):
        self.config = config
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(self.shape)
        if self.ndim not in (2, 3):
            raise ValueError(f"{self.name}: images must be 2-D or 3-D; got shape {self.shape}")
        self.num_classes = int(num_classes)
        self.num_channels = int(num_channels)
        self.multi_label = bool(multi_label)
        self.seed = int(config.get("seed", 0))
        self._channels = self._check_channels(config.get("data") or {})
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise TypeError(f"{self.name}: unknown task(s) {unknown}; known: {sorted(TASKS)}")
        self._jit_predict = jax.jit(self.predict)

    def _check_channels(self, data: Mapping[str, Any]) -> dict[str, int | None]:
        """``{role: channel}`` of ``data.moving_channel`` / ``data.fixed_channel`` /
        ``data.image_channel`` (cross-modal training; see :meth:`channel`)."""
        mc, fc = data.get("moving_channel"), data.get("fixed_channel")
        if (mc is None) != (fc is None):
            raise ValueError(
                f"{self.name}: data.moving_channel and data.fixed_channel go together; got "
                f"moving_channel={mc!r}, fixed_channel={fc!r}"
            )
        if mc is not None and not self.cross_modal_pairs:
            raise ValueError(
                f"{self.name} does not train on cross-modal pairs (data.moving_channel="
                f"{mc!r}, data.fixed_channel={fc!r}): its batches do not read "
                "Method.pair_channels"
            )
        ic = data.get("image_channel", fc)
        out = {"moving": mc, "fixed": fc, "image": ic}
        for role, c in out.items():
            if c is not None and not (isinstance(c, int) and 0 <= c < self.num_channels):
                have = f"{self.num_channels} channel" + ("s" if self.num_channels > 1 else "")
                raise ValueError(
                    f"{self.name}: data.{role}_channel={c!r}, but the dataset has {have} "
                    f"(modalities 0..{self.num_channels - 1}); cross-modal training needs a "
                    "dataset with both modalities"
                )
        return out

    @property
    def cross_modal(self) -> bool:
        """Whether pairs are cross-modal (``data.moving_channel`` / ``data.fixed_channel``
        set): the moving image is one channel of a multi-channel dataset, the fixed one
        another, and the networks see one channel each."""
        return self._channels["moving"] is not None

    def channel(self, role: str) -> int | None:
        """The dataset image channel that feeds ``role`` (``"moving"``, ``"fixed"`` or
        ``"image"``, the image of the ``segment`` task; ``None``: all channels). Set by the
        config's ``data.moving_channel``, ``data.fixed_channel`` and ``data.image_channel``
        (default: the fixed channel)."""
        return self._channels[role]

    def pair_channels(self) -> dict[str, int | None]:
        """``{"moving_channel", "fixed_channel"}`` keywords of
        :func:`~jrs_jax.data.pair_batch` for this method's pairs."""
        return {"moving_channel": self.channel("moving"), "fixed_channel": self.channel("fixed")}

    @property
    def image_channels(self) -> int:
        """Channels of one network input image: 1 for cross-modal pairs (one modality each),
        else the dataset's ``C``."""
        return 1 if self.cross_modal else self.num_channels

    # -- the loop's interface --------------------------------------------------------------

    @abc.abstractmethod
    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        """See the module docstring."""

    @abc.abstractmethod
    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """See the module docstring."""

    @abc.abstractmethod
    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        """See the module docstring."""

    @abc.abstractmethod
    def predict(self, variables: dict, batch: Mapping[str, jax.Array]) -> dict:
        """See the module docstring (jittable; the keys present in ``batch`` say what to do)."""

    # -- shared conveniences ---------------------------------------------------------------

    @property
    def best_metric(self) -> str:
        """Validation metric that picks the best checkpoint (higher is better)."""
        if "register" in self.tasks and "segment" in self.tasks:
            return "val/mean_dice"
        return "val/reg_dice" if "register" in self.tasks else "val/seg_dice"

    @property
    def evaluation_mode(self) -> str:
        """The config's ``eval.mode`` if set, else :attr:`eval_mode`."""
        mode = (self.config.get("eval") or {}).get("mode") or self.eval_mode
        if mode not in EVAL_MODES:
            raise ValueError(f"eval.mode must be one of {list(EVAL_MODES)}; got {mode!r}")
        return mode

    def inputs(self, task: str) -> tuple[str, ...]:
        """The batch keys ``predict`` needs for ``task`` (``ValueError`` if it has no such task)."""
        if task not in self.tasks:
            does = ", ".join(sorted(self.tasks)) or "nothing"
            raise ValueError(f"{self.name} does not {task} (it does: {does})")
        return tuple(self.tasks[task])

    def prepare(self, variables: dict, batch: dict, task: str) -> dict:
        """Host-side step between the inputs and the jitted :meth:`predict` (default: none).

        A method whose pipeline has a stage that cannot run under ``jit`` (e.g. connected
        components of a predicted segmentation, :mod:`jrs_jax.postprocess`) computes it here
        and adds the result to the batch; :meth:`predict` then reads it like any input. It
        gets the keys ``task`` needs (numpy or JAX arrays) and returns the batch to predict
        on. :meth:`run`, and therefore evaluation, figures and the CLI, call it.
        """
        return batch

    def run(self, variables: dict, batch: Mapping[str, Any], task: str) -> dict:
        """Jitted :meth:`predict` on the keys ``task`` needs (extra keys are dropped), after
        :meth:`prepare`.

        Raises:
          MissingInput: a declared key is absent from ``batch``.
        """
        keys = self.inputs(task)
        for k in keys:
            if k not in batch or batch[k] is None:
                raise MissingInput(self.name, task, k)
        ready = self.prepare(variables, {k: jnp.asarray(batch[k]) for k in keys}, task)
        return self._jit_predict(variables, {k: jnp.asarray(v) for k, v in ready.items()})

    def label_channels(self, labels: jax.Array) -> jax.Array:
        """Batch labels as float channels ``[B, *S, K]`` (one-hot, or the multi-label map):
        :func:`jrs_jax.losses.label_channels` with this method's ``K`` and label format."""
        from ..losses import label_channels

        return label_channels(labels, self.num_classes, multi_label=self.multi_label)

    @property
    def seg_key(self) -> str:
        """The prediction key of this method's segmentations: ``seg_sigmoid`` for
        multi-label data, else ``seg_probs``."""
        return "seg_sigmoid" if self.multi_label else "seg_probs"

    @staticmethod
    def labels(prediction: Mapping[str, Any], *, prefix: str = "") -> np.ndarray:
        """Hard labels of a prediction: ``int32 [B, *S]`` (argmax of ``seg_probs``) or
        ``uint8 [B, *S, K]`` (``seg_sigmoid >= 0.5`` per label). ``prefix="moving_"`` reads
        ``moving_seg_probs`` / ``moving_seg_sigmoid`` (the moving image of a pair).

        Raises:
          KeyError: the prediction holds neither key.
        """
        if f"{prefix}seg_sigmoid" in prediction:
            return (np.asarray(prediction[f"{prefix}seg_sigmoid"]) >= 0.5).astype(np.uint8)
        if f"{prefix}seg_probs" in prediction:
            return np.asarray(jnp.argmax(prediction[f"{prefix}seg_probs"], -1)).astype(np.int32)
        raise KeyError(
            f"prediction has no segmentation ('{prefix}seg_probs' or '{prefix}seg_sigmoid')"
        )

    @staticmethod
    def has_segmentation(prediction: Mapping[str, Any], *, prefix: str = "") -> bool:
        """Whether :meth:`labels` can read the prediction (with ``prefix``)."""
        return bool({f"{prefix}seg_probs", f"{prefix}seg_sigmoid"} & set(prediction))

    def refine_loss(self, variables: dict, batch: Mapping[str, jax.Array], key: jax.Array):
        """The unsupervised objective of one example that test-time refinement minimises over
        ``variables[refine_net]`` (:mod:`jrs_jax.refinement`): ``(scalar, aux)``, jittable.

        Default: the config's registration objective on :meth:`predict`'s outputs,
        ``sim(warped, fixed) + λ reg(disp)`` (``loss.similarity`` / ``similarity_kwargs``,
        ``loss.regulariser`` / ``regulariser_kwargs`` / ``reg_weight``; no label term: the
        labels of a new pair are unknown). A method with another objective overrides it.

        Raises:
          ValueError: the config's ``loss`` section has no such registration objective.
        """
        objective = self.__dict__.get("_refine_objective")
        if objective is None:
            from ..losses import combine, regulariser_term, similarity_term

            loss = self.config.get("loss") or {}
            missing = [k for k in ("similarity", "regulariser", "reg_weight") if k not in loss]
            if missing:
                raise ValueError(
                    f"{self.name} cannot refine: its config's loss section has no "
                    f"{', '.join('loss.' + k for k in missing)} (the objective refinement uses)"
                )
            objective = combine(sim=similarity_term(loss), smooth=regulariser_term(loss))
            self.__dict__["_refine_objective"] = objective
        pred = self.predict(variables, batch)
        return objective(warped=pred["warped"], fixed=batch["fixed"], disp=pred["disp"])

    def pair_metrics(self, prediction: Mapping[str, Any], batch: Mapping[str, Any]) -> dict:
        """Method-specific per-pair metrics ``{name: [B]}`` added to the pair evaluation."""
        return {}

    def write_outputs(self, state: Any, workdir: str) -> list[str]:
        """Method-specific files written into the run folder ``workdir`` after training (e.g.
        a learned atlas as NIfTI and its figure under ``figures/``), next to the generic
        figures: :func:`jrs_jax.experiment.write_figures` calls it with the trained state and
        lists the returned paths with its own. Default: nothing written, ``[]``."""
        return []

    def zeros(self, channels: int | None = None) -> jax.Array:
        """A ``[1, *S, C]`` float32 zero image (network initialisation; ``C`` defaults to
        :attr:`image_channels`)."""
        c = self.image_channels if channels is None else int(channels)
        return jnp.zeros((1, *self.shape, c), jnp.float32)
