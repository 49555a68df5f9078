"""DeepAtlas: joint semi-supervised learning of registration and segmentation.

Xu & Niethammer, "DeepAtlas: Joint Semi-Supervised Learning of Image Registration and
Segmentation", MICCAI 2019.

Two networks, each with its own optimiser state: ``F_R(I_m, I_f) -> φ`` (a VoxelMorph
U-Net, :class:`~jrs_jax.nets.RegistrationNet`) and ``F_S(I) -> S`` (a U-Net,
:class:`~jrs_jax.nets.SegmentationNet`). Pairs are drawn from the four DeepAtlas cases
(:func:`~jrs_jax.data.labelled_case_pairs`). Labels ``S`` are one-hot maps; ``F_S``'s
predictions are softmax probabilities; labels are warped *softly* (linear interpolation of
each class, border padding) so the anatomy loss is differentiable with respect to ``φ``
and to ``F_S``. ``L_a`` is a soft Dice loss; ``L_sp`` is soft Dice + cross-entropy
(``loss.supervised="dice_ce"``, the default) or soft Dice alone (``"dice"``).

Registration step (``F_S`` frozen)::

    L_R = L_i(I_m∘φ, I_f) + λ_r L_r(φ) + λ_a L_a(Ŝ_m∘φ, Ŝ_f)

where ``Ŝ = S`` for a labelled image and ``Ŝ = F_S(I)`` otherwise (both sides predicted in
the unlabelled-unlabelled case). Segmentation step (``F_R`` frozen), per pair case::

    fixed unlabelled  (case "moving_labelled"): λ_a L_a(S_m∘φ, F_S(I_f)) + λ_sp L_sp(F_S(I_m), S_m)
    moving unlabelled (case "fixed_labelled"):  λ_a L_a(F_S(I_m)∘φ, S_f) + λ_sp L_sp(F_S(I_f), S_f)
    both labelled     (case "both_labelled"):   λ_sp L_sp(F_S(I_m), S_m)   (L_a has no F_S term)
    both unlabelled   (case "none_labelled"):   0 (no segmentation signal)

averaged over the batch (pairs of the last case only dilute it; the segmentation phase
samples with ``data.seg_mix``, which by default never draws them).

Schedule (all steps of one run, see :meth:`DeepAtlas.phase`): ``schedule.reg_pretrain``
registration steps without the anatomy term (unsupervised), then ``schedule.seg_pretrain``
segmentation steps through the frozen registration net (Semi-DeepAtlas: with one labelled
image, the anatomy term trains ``F_S`` on every unlabelled image), then joint training for
the remaining ``train.steps`` steps, alternating ``schedule.reg_steps`` registration and
``schedule.seg_steps`` segmentation steps (the paper's 20 : 1; MONAI's tutorial 40 : 5).
The partner network is frozen (not stepped, optimiser state untouched) in every step.

Config: ``configs/deepatlas.py`` (official-code and MONAI-tutorial defaults are variants).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data import sampling
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch
from ..losses import (
    combine,
    dice_ce,
    gated,
    per_example,
    ref,
    regulariser_term,
    similarity_term,
    soft_dice,
    term,
)
from ..nets import RegistrationNet, SegmentationNet
from ..spatial import warp, warp_labels
from ..train import Alternating, NetState, make_alternating_step, make_optimizer, make_update
from .base import Method

__all__ = ["DeepAtlas", "update_counts"]


def update_counts(config: dict) -> dict[str, int]:
    """Updates of ``F_R`` (``"reg"``) and ``F_S`` (``"seg"``) over a whole run of ``config``.

    Pretraining plus the joint rounds of ``schedule.reg_steps`` registration then
    ``schedule.seg_steps`` segmentation steps (a last partial round starts with
    registration), as :meth:`DeepAtlas.phase` schedules them. A baseline trained with as
    many updates is not short-changed (the demo and ``jrs-jax reproduce deepatlas``).
    """
    sched = config["schedule"]
    reg_pre, seg_pre = int(sched["reg_pretrain"]), int(sched["seg_pretrain"])
    r, s = int(sched["reg_steps"]), int(sched["seg_steps"])
    joint = int(config["train"]["steps"]) - reg_pre - seg_pre
    joint_reg = Alternating((("reg", r), ("seg", s))).count("reg", joint)
    return {"reg": reg_pre + joint_reg, "seg": seg_pre + joint - joint_reg}


class DeepAtlas(Method):
    """DeepAtlas (see the module docstring). State: ``{"reg": NetState, "seg": NetState}``."""

    name = "deepatlas"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        loss, sched = config["loss"], config["schedule"]
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        supervised = loss.get("supervised", "dice")
        if supervised not in ("dice", "dice_ce"):
            raise ValueError(f"loss.supervised must be 'dice' or 'dice_ce'; got {supervised!r}")
        l_sp = (lambda z, s: dice_ce(z, s)) if supervised == "dice_ce" else _softmax_dice
        lambda_a = float(loss["anatomy_weight"])
        # L_R = L_i(I_m∘φ, I_f) + λ_r L_r(φ) [+ λ_a L_a(Ŝ_m∘φ, Ŝ_f)]
        self.reg_objective = combine(
            sim=similarity_term(loss),
            smooth=regulariser_term(loss),
        )
        self.reg_anatomy_objective = self.reg_objective.extend(
            anatomy_reg=term(soft_dice, "warped_seg", "fixed_seg", weight=lambda_a)
        )
        # L_S = λ_a L_a (one side manual, the other predicted) + λ_sp L_sp (a labelled side)
        self.seg_objective = combine(
            anatomy_seg=term(
                gated(soft_dice), "anat_warped", "anat_target", weight=lambda_a, on=ref("anat_on")
            ),
            supervised=term(
                gated(l_sp),
                "sup_logits",
                "sup_labels",
                weight=float(loss["supervised_weight"]),
                on=ref("sup_on"),
            ),
        )
        steps = int(config["train"]["steps"])
        self.reg_pretrain = int(sched["reg_pretrain"])
        self.seg_pretrain = int(sched["seg_pretrain"])
        if self.reg_pretrain + self.seg_pretrain > steps:
            raise ValueError(
                f"schedule.reg_pretrain + schedule.seg_pretrain = "
                f"{self.reg_pretrain + self.seg_pretrain} exceeds train.steps = {steps}"
            )
        self.joint = Alternating(
            (("reg", int(sched["reg_steps"])), ("seg", int(sched["seg_steps"])))
        )
        self.tx = {
            "reg": make_optimizer(**config["optim"]["reg"], total_steps=steps),
            "seg": make_optimizer(**config["optim"]["seg"], total_steps=steps),
        }
        self._joint_step = make_alternating_step(
            {"reg": self.reg_loss, "seg": self.seg_loss}, self.joint, donate=True
        )
        self._pretrain = {
            "reg_pretrain": make_update(self.reg_pretrain_loss, train="reg", donate=True),
            "seg_pretrain": self._joint_step.updates["seg"],
        }

    # -- schedule, state, data -------------------------------------------------------------

    def phase(self, step: int) -> str:
        """``"reg_pretrain"``, ``"seg_pretrain"``, or the joint stage's ``"reg"`` / ``"seg"``."""
        if step < self.reg_pretrain:
            return "reg_pretrain"
        if step < self.reg_pretrain + self.seg_pretrain:
            return "seg_pretrain"
        return self.joint.phase(step - self.reg_pretrain - self.seg_pretrain)

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_reg, k_seg = jax.random.split(key)
        x = self.zeros()
        return {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx["reg"]),
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx["seg"]),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Pairs of the DeepAtlas cases (:func:`~jrs_jax.data.labelled_case_pairs`); the
        losses read only the batch's ``*_has_label`` flags."""
        data = self.config["data"]
        seg = self.phase(step) in ("seg", "seg_pretrain")
        mix = data["seg_mix"] if seg else data["reg_mix"]
        lab, unl = dataset.labelled(), dataset.unlabelled()
        pairs, _ = sampling.labelled_case_pairs(
            batch_rng(self.seed, step), lab, unl, int(data["batch_size"]), mix=mix
        )
        return pair_batch(dataset, pairs)

    # -- the networks ----------------------------------------------------------------------

    def _register(self, v: dict, moving: jax.Array, fixed: jax.Array) -> jax.Array:
        return self.reg_net.apply(v["reg"], moving, fixed)["disp"]

    def _logits(self, v: dict, image: jax.Array) -> jax.Array:
        return self.seg_net.apply(v["seg"], image)

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` for a pair (``moving``, ``fixed``), ``{"seg_probs"}`` for an
        ``image``; both for a batch with all three."""
        out = {}
        if "moving" in batch and "fixed" in batch:
            disp = self._register(variables, batch["moving"], batch["fixed"])
            out.update(disp=disp, warped=warp(batch["moving"], disp))
        if "image" in batch:
            out["seg_probs"] = jax.nn.softmax(self._logits(variables, batch["image"]))
        return out

    # -- losses ----------------------------------------------------------------------------

    def _onehot(self, labels: jax.Array) -> jax.Array:
        return jax.nn.one_hot(labels, self.num_classes)

    def _warp_soft(self, probs: jax.Array, disp: jax.Array) -> jax.Array:
        return warp_labels(probs, disp, num_classes=self.num_classes, mode="soft")

    def _reg_inputs(self, v: dict, batch: dict) -> dict:
        moving, fixed = batch["moving"], batch["fixed"]
        disp = self._register(v, moving, fixed)
        return {"warped": warp(moving, disp), "fixed": fixed, "disp": disp}

    def reg_pretrain_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_i + λ_r L_r`` (unsupervised registration pretraining)."""
        return self.reg_objective(**self._reg_inputs(v, batch))

    def reg_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_R`` with ``Ŝ`` = the manual one-hot map where labelled, else the frozen
        ``F_S`` softmax (it is frozen in this step: its predictions are constants)."""
        inputs = self._reg_inputs(v, batch)
        s_m = per_example(
            batch["moving_has_label"],
            self._onehot(batch["moving_labels"]),
            jax.nn.softmax(self._logits(v, batch["moving"])),
        )
        s_f = per_example(
            batch["fixed_has_label"],
            self._onehot(batch["fixed_labels"]),
            jax.nn.softmax(self._logits(v, batch["fixed"])),
        )
        inputs.update(warped_seg=self._warp_soft(s_m, inputs["disp"]), fixed_seg=s_f)
        return self.reg_anatomy_objective(**inputs)

    def seg_loss(self, v: dict, batch: dict, key: jax.Array):
        """The case-wise segmentation loss (module docstring); ``F_R`` is frozen.

        From the ``has_label`` flags: ``L_a`` compares ``S_m∘φ`` with ``F_S(I_f)`` when only
        the moving image is labelled, ``F_S(I_m)∘φ`` with ``S_f`` when only the fixed one
        is, and is off otherwise; ``L_sp`` is on the moving image when it is labelled, else
        on the fixed one when that is, else off.
        """
        moving, fixed = batch["moving"], batch["fixed"]
        m_lab, f_lab = batch["moving_has_label"], batch["fixed_has_label"]
        disp = jax.lax.stop_gradient(self._register(v, moving, fixed))
        logits_m, logits_f = self._logits(v, moving), self._logits(v, fixed)
        s_m, s_f = self._onehot(batch["moving_labels"]), self._onehot(batch["fixed_labels"])
        p_m, p_f = jax.nn.softmax(logits_m), jax.nn.softmax(logits_f)
        only_m = m_lab & ~f_lab
        return self.seg_objective(
            anat_warped=self._warp_soft(per_example(only_m, s_m, p_m), disp),
            anat_target=per_example(only_m, p_f, s_f),
            anat_on=m_lab != f_lab,
            sup_logits=per_example(m_lab, logits_m, logits_f),
            sup_labels=per_example(m_lab, batch["moving_labels"], batch["fixed_labels"]),
            sup_on=m_lab | f_lab,
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        phase = self.phase(step)
        if phase in self._pretrain:
            state, metrics = self._pretrain[phase](state, batch, key)
            return state, {**metrics, f"loss/{phase}": metrics["loss"]}
        return self._joint_step(state, batch, key, step - self.reg_pretrain - self.seg_pretrain)


def _softmax_dice(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Soft Dice of ``softmax(logits)`` against integer ``labels`` (``[B]``)."""
    return soft_dice(jax.nn.softmax(logits), jax.nn.one_hot(labels, logits.shape[-1]))
