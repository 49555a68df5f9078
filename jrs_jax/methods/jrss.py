"""JRSS: joint few-shot registration and segmentation self-training.

"Joint few-shot registration and segmentation self-training of 3D medical images",
Biomedical Signal Processing and Control (BSPC) 2022.

Networks, each its own entry of the state: a registration net ``F_R(I_m, I_f) -> φ``
(:class:`~jrs_jax.nets.RegistrationNet`, ``"reg"``, a ``NetState``); a segmentation
*student* ``F_s`` (:class:`~jrs_jax.nets.SegmentationNet` with ``dropout_rate > 0``,
``"student"``, a ``NetState``); its mean *teacher* ``F_t`` (same architecture, plain
params, ``"teacher"``); and ``F_p``, the teacher frozen at the start of the current round
(plain params, ``"pool"``), which labels the round's pseudo-label pool. Only the student's
calls get a ``"dropout"`` rng; teacher and pool predict deterministically.

Pseudo-labels (the pool, read by both rounds of an epoch). For a labelled image, ``Ŝ = S``
and ``m = 1``; otherwise, with ``p = softmax(F_p(I))`` (:func:`~jrs_jax.train.pseudo_labels`)::

    Ŝ(x) = one_hot(argmax_k p_k(x)),    m(x) = [max_k p_k(x) >= τ]

1. Teacher pretraining (``schedule.teacher_pretrain`` steps, labelled images only)::

       L_pre = Dice(softmax(F_s(I; ξ)), S)         (loss.pretrain = "dice", the paper's)

   then ``F_t <- F_s`` (the self-training regime with EMA decay 0: the teacher *is* the
   pretrained network). ``loss.pretrain = "dice_ce"`` adds cross-entropy.
2. Rounds (each epoch; ``F_p <- F_t`` at its first step), ``schedule.reg_steps``
   registration steps then ``schedule.seg_steps`` self-training steps:

   registration, weakly supervised by the (pseudo-)labels (``F_s``, ``F_t``, ``F_p``
   frozen; pairs uniform over all training images)::

       L_R = L_sim(I_m∘φ, I_f) + λ_r L_reg(φ) + λ_a Dice_w(Ŝ_m∘φ, Ŝ_f),   w = m_f · (m_m∘φ)

   self-training of the student (``F_R`` frozen) on two views of the pair's moving image,
   the image itself and the registration-warped image ``I_m∘φ`` (augmentation: a new
   deformation of the anatomy, its target warped with it), ``v ∈ {(I_m, Ŝ_m, m_m),
   (I_m∘φ, Ŝ_m∘φ, m_m∘φ)}``, student input ``x̃ = x + σ ε`` (input noise) plus dropout ``ξ``::

       L_S = λ_c CE_m(F_s(x̃; ξ), Ŝ) + λ_u KL(softmax F_t(x) ‖ softmax F_s(x̃; ξ))
             + λ_d Dice_m(softmax F_s(x̃; ξ), Ŝ)

   (``L_c + L_u + L_d``, the paper's weights 1), then ``F_t <- α F_t + (1 - α) F_s``
   (:func:`~jrs_jax.train.make_self_training_step`). ``CE_m`` and ``Dice_m`` are masked by
   ``m`` (:func:`~jrs_jax.losses.cross_entropy`, :func:`~jrs_jax.losses.soft_dice`); the KL
   consistency covers every voxel.

Round boundaries (:func:`round_ends`): the end of teacher pretraining (round 0, "teacher
only") and the end of every round; the study validates there (``train.eval_every``).
Inference: :meth:`JRSS.predict` segments with the mean teacher ``F_t`` (the usual
mean-teacher answer) and registers with ``F_R``.

Choices where the paper is silent (stated): ``τ = 0.9`` (``>= τ`` keeps a voxel), EMA
``α = 0.99``, input noise ``σ = 0.05``, student dropout 0.1; the pool is the teacher at the
round's start (so both rounds of an epoch read the same pseudo-labels) rather than a stored
label array; registration before self-training in each epoch (so the warped views come from
the just-updated ``F_R``); the pair's moving image is labelled with probability
``data.labelled_fraction`` (0.5: half the student's targets are manual labels even with one
labelled image), the fixed image uniform over the other training images; soft (linear)
warping of one-hot targets and of the confidence masks; ``Dice_w`` uses MONAI-style masking
of both maps.

Config (``configs/jrss.py``): ``reg_model`` / ``seg_model`` (network keywords; ``seg_model.
dropout_rate`` is the student's), ``loss`` = ``{similarity, similarity_kwargs, regulariser,
regulariser_kwargs, reg_weight (λ_r), reg_dice_weight (λ_a), ce_weight (λ_c), kl_weight
(λ_u), dice_weight (λ_d), pretrain}``, ``self_training`` = ``{threshold (τ), ema_decay (α),
noise_std (σ)}``, ``schedule`` = ``{teacher_pretrain, reg_steps, seg_steps}`` (rounds fill
``train.steps``; a last partial round is allowed), ``optim`` = ``{reg, seg}``,
``data.{batch_size, labelled_fraction}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data import sampling
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs, subject_batch
from ..losses import (
    combine,
    cross_entropy,
    dice_ce,
    per_example,
    ref,
    regulariser_term,
    similarity_term,
    soft_dice,
    soft_kl,
    term,
)
from ..nets import RegistrationNet, SegmentationNet
from ..spatial import warp, warp_labels
from ..train import (
    Alternating,
    NetState,
    make_optimizer,
    make_self_training_step,
    make_update,
    pseudo_labels,
)
from .base import Method

__all__ = ["JRSS", "round_ends", "self_training_pairs", "update_counts"]

PRETRAIN_LOSSES = ("dice", "dice_ce")


def _schedule(config: dict) -> tuple[int, int, int, int]:
    sched = config["schedule"]
    p, r, s = int(sched["teacher_pretrain"]), int(sched["reg_steps"]), int(sched["seg_steps"])
    steps = int(config["train"]["steps"])
    if p > steps:
        raise ValueError(f"schedule.teacher_pretrain = {p} exceeds train.steps = {steps}")
    if r < 0 or s < 0 or r + s == 0:
        raise ValueError(f"schedule.reg_steps / seg_steps must be >= 0, not both 0; got {r}, {s}")
    return p, r, s, steps


def round_ends(config: dict) -> list[int]:
    """Steps at which the rounds end: teacher pretraining (round 0), then every
    ``reg_steps + seg_steps`` steps, and ``train.steps`` if a last round is partial.

    Example:
      >>> round_ends({"schedule": {"teacher_pretrain": 200, "reg_steps": 100, "seg_steps": 100},
      ...             "train": {"steps": 800}})
      [200, 400, 600, 800]
    """
    p, r, s, steps = _schedule(config)
    ends = list(range(p, steps + 1, r + s))
    return ends if ends[-1] == steps else [*ends, steps]


def update_counts(config: dict) -> dict[str, int]:
    """Updates of ``F_R`` (``"reg"``) and of the segmentation network (``"seg"``: teacher
    pretraining + student steps) over a run of ``config``, as :meth:`JRSS.phase` schedules
    them (a last partial round starts with registration): the budgets of the baselines."""
    p, r, s, steps = _schedule(config)
    rounds = Alternating((("reg", r), ("seg", s)))
    n_reg = rounds.count("reg", steps - p)
    return {"reg": n_reg, "seg": steps - n_reg}


def self_training_pairs(
    rng,
    labelled: Sequence[int],
    unlabelled: Sequence[int],
    batch_size: int,
    *,
    labelled_fraction: float = 0.5,
) -> np.ndarray:
    """``(fixed, moving)`` pairs ``int64 [B, 2]`` for the self-training round.

    Each row's moving image (the student's) is drawn from the labelled pool with probability
    ``labelled_fraction``, else from the unlabelled pool (an empty pool gives all rows to the
    other); the fixed image (the deformation the moving image is warped to) uniformly from
    the other training images.

    Raises:
      ValueError: no training images, fewer than 2 in all, or a fraction outside [0, 1].
    """
    lab = sampling.unique_indices(labelled, "labelled")
    unl = sampling.unique_indices(unlabelled, "unlabelled")
    pool = np.concatenate([lab, unl])
    if len(pool) < 2:
        raise ValueError(f"self-training pairs need >= 2 training images; got {len(pool)}")
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in [0, 1]; got {labelled_fraction}")
    g = sampling.as_rng(rng)
    b = int(batch_size)
    frac = 1.0 if len(unl) == 0 else 0.0 if len(lab) == 0 else float(labelled_fraction)
    from_lab = g.random(b) < frac
    moving = np.empty(b, np.int64)
    for sel, src in ((from_lab, lab), (~from_lab, unl)):
        if sel.any():
            moving[sel] = src[g.integers(0, len(src), size=int(sel.sum()))]
    fixed = np.empty(b, np.int64)
    for i, m in enumerate(moving):
        others = pool[pool != m]
        fixed[i] = others[g.integers(0, len(others))]
    return np.stack([fixed, moving], -1).astype(np.int64)


class JRSS(Method):
    """JRSS (see the module docstring). State: ``{"reg": NetState, "student": NetState,
    "teacher": params, "pool": params}``."""

    name = "jrss"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError("jrss segments exclusive labels (softmax); got multi-label data")
        loss, st = config["loss"], config["self_training"]
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        self.threshold = float(st["threshold"])
        self.noise_std = float(st["noise_std"])
        pretrain = loss.get("pretrain", "dice")
        if pretrain not in PRETRAIN_LOSSES:
            raise ValueError(f"loss.pretrain must be one of {PRETRAIN_LOSSES}; got {pretrain!r}")
        # soft Dice of softmax(logits) against the integer labels (+ CE with "dice_ce")
        self.pretrain_fn = (
            (lambda z, s: soft_dice(jax.nn.softmax(z), s)) if pretrain == "dice" else dice_ce
        )
        # L_R = L_sim(I_m∘φ, I_f) + λ_r L_reg(φ) + λ_a Dice_w(Ŝ_m∘φ, Ŝ_f)
        self.reg_objective = combine(
            sim=similarity_term(loss),
            smooth=regulariser_term(loss),
            label_dice=term(
                soft_dice,
                "warped_seg",
                "fixed_seg",
                weight=float(loss["reg_dice_weight"]),
                mask=ref("pair_mask"),
            ),
        )
        # L_S = λ_c CE_m + λ_u KL(teacher ‖ student) + λ_d Dice_m
        self.seg_objective = combine(
            ce=term(
                cross_entropy, "logits", "target", weight=float(loss["ce_weight"]), mask=ref("mask")
            ),
            kl=term(
                soft_kl,
                "teacher_logits",
                "logits",
                weight=float(loss["kl_weight"]),
                from_logits=True,
            ),
            dice=term(
                soft_dice, "probs", "target", weight=float(loss["dice_weight"]), mask=ref("mask")
            ),
        )
        self.pretrain, self.reg_steps, self.seg_steps, steps = _schedule(config)
        self.rounds = Alternating((("reg", self.reg_steps), ("seg", self.seg_steps)))
        self.tx = {
            "reg": make_optimizer(**config["optim"]["reg"], total_steps=steps),
            "seg": make_optimizer(**config["optim"]["seg"], total_steps=steps),
        }
        self._steps = {
            # teacher pretraining: the regime with EMA decay 0 (teacher = the trained network)
            "teacher_pretrain": make_self_training_step(
                self.pretrain_loss, decay=0.0, threshold=None, donate=True
            ),
            "reg": make_update(self.reg_loss, train="reg", donate=True),
            "seg": make_self_training_step(
                self.student_loss,
                decay=float(st["ema_decay"]),
                threshold=self.threshold,
                donate=True,
            ),
        }

    # -- schedule, state, data -------------------------------------------------------------

    def phase(self, step: int) -> str:
        """``"teacher_pretrain"``, then the rounds' ``"reg"`` / ``"seg"`` steps."""
        if step < self.pretrain:
            return "teacher_pretrain"
        return self.rounds.phase(step - self.pretrain)

    def round_start(self, step: int) -> bool:
        """Whether ``step`` is the first step of a round (the pool is refreshed there)."""
        return step >= self.pretrain and (step - self.pretrain) % self.rounds.period == 0

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_reg, k_seg = jax.random.split(key)
        x = self.zeros()
        seg = self.seg_net.init(k_seg, x)
        return {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx["reg"]),
            "student": NetState.create(params=seg, tx=self.tx["seg"]),
            "teacher": jax.tree.map(jnp.copy, seg),
            "pool": jax.tree.map(jnp.copy, seg),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Labelled subjects (teacher pretraining), pairs uniform over the training images
        (registration) or :func:`self_training_pairs` (self-training)."""
        data = self.config["data"]
        b = int(data["batch_size"])
        rng = batch_rng(self.seed, step)
        phase = self.phase(step)
        lab, unl = dataset.labelled(), dataset.unlabelled()
        if phase == "teacher_pretrain":
            if not lab:
                raise ValueError(f"{self.name} needs at least 1 labelled training subject")
            return subject_batch(dataset, rng.choice(np.asarray(lab, np.int64), size=b))
        if phase == "reg":
            return pair_batch(dataset, sample_pairs(rng, dataset.training(), b))
        pairs = self_training_pairs(
            rng, lab, unl, b, labelled_fraction=float(data["labelled_fraction"])
        )
        return pair_batch(dataset, pairs)

    # -- the networks ----------------------------------------------------------------------

    def _register(self, v: dict, moving: jax.Array, fixed: jax.Array) -> jax.Array:
        return self.reg_net.apply(v["reg"], moving, fixed)["disp"]

    def _logits(self, params, image: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Segmentation logits; dropout is active only with a ``key`` (the student)."""
        rngs = {} if key is None else {"dropout": key}
        return self.seg_net.apply(params, image, rngs=rngs)

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` for a pair, ``{"seg_probs"}`` (the mean teacher's) for an
        ``image``."""
        out = {}
        if "moving" in batch and "fixed" in batch:
            disp = self._register(variables, batch["moving"], batch["fixed"])
            out.update(disp=disp, warped=warp(batch["moving"], disp))
        if "image" in batch:
            out["seg_probs"] = jax.nn.softmax(self._logits(variables["teacher"], batch["image"]))
        return out

    # -- pseudo-labels and losses ----------------------------------------------------------

    def targets(
        self, v: dict, image: jax.Array, labels: jax.Array, has_label: jax.Array, *, threshold
    ) -> tuple[jax.Array, jax.Array]:
        """``(Ŝ [B, *S, K] one-hot, m [B, *S])``: manual labels where ``has_label``, else the
        pool's thresholded pseudo-labels (:func:`~jrs_jax.train.pseudo_labels`)."""
        probs = jax.nn.softmax(self._logits(v["pool"], image))
        pl, conf = pseudo_labels(probs, threshold=threshold)
        k = self.num_classes
        target = per_example(has_label, jax.nn.one_hot(labels, k), jax.nn.one_hot(pl, k))
        return target, per_example(has_label, jnp.ones_like(conf), conf)

    def _warp_soft(self, onehot: jax.Array, mask: jax.Array, disp: jax.Array):
        k = self.num_classes
        return (
            warp_labels(onehot, disp, num_classes=k, mode="soft"),
            warp(mask[..., None], disp)[..., 0],
        )

    def pretrain_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_pre`` on labelled subjects (the student with dropout; the teacher copies it)."""
        logits = self._logits(v["student"], batch["image"], key)
        value = self.pretrain_fn(logits, batch["labels"]).mean()
        return value, {"pretrain": value}

    def reg_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_R`` with the pool's (pseudo-)labels on both sides (segmenters frozen)."""
        moving, fixed = batch["moving"], batch["fixed"]
        s_m, m_m = self.targets(
            v, moving, batch["moving_labels"], batch["moving_has_label"], threshold=self.threshold
        )
        s_f, m_f = self.targets(
            v, fixed, batch["fixed_labels"], batch["fixed_has_label"], threshold=self.threshold
        )
        disp = self._register(v, moving, fixed)
        warped_seg, warped_mask = self._warp_soft(s_m, m_m, disp)
        return self.reg_objective(
            warped=warp(moving, disp),
            fixed=fixed,
            disp=disp,
            warped_seg=warped_seg,
            fixed_seg=s_f,
            pair_mask=m_f * warped_mask,
        )

    def student_loss(self, v: dict, batch: dict, key: jax.Array, *, threshold: float):
        """``L_S`` on the moving image and its registration-warped view (``F_R`` frozen)."""
        moving, fixed = batch["moving"], batch["fixed"]
        target, mask = self.targets(
            v, moving, batch["moving_labels"], batch["moving_has_label"], threshold=threshold
        )
        disp = jax.lax.stop_gradient(self._register(v, moving, fixed))
        warped_target, warped_mask = self._warp_soft(target, mask, disp)
        x = jnp.concatenate([moving, warp(moving, disp)], 0)
        k_noise, k_drop = jax.random.split(key)
        noisy = x + self.noise_std * jax.random.normal(k_noise, x.shape, x.dtype)
        logits = self._logits(v["student"], noisy, k_drop)
        return self.seg_objective(
            logits=logits,
            probs=jax.nn.softmax(logits),
            teacher_logits=self._logits(v["teacher"], x),
            target=jnp.concatenate([target, warped_target], 0),
            mask=jnp.concatenate([mask, warped_mask], 0),
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        phase = self.phase(step)
        if self.round_start(step):  # F_p <- F_t: this round's pseudo-label pool
            state = {**state, "pool": jax.tree.map(jnp.copy, state["teacher"])}
        state, metrics = self._steps[phase](state, batch, key)
        return state, {**metrics, f"loss/{phase}": metrics["loss"]}
