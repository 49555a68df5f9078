"""Segis-Net: single-step simultaneous segmentation and registration.

Li, Niessen, Klein, Vernooij, Bron, "Longitudinal diffusion MRI analysis using Segis-Net: A
single-step deep-learning framework for simultaneous segmentation and registration",
NeuroImage 2021. Public code survives in the Keras fork ``JacobDyson01/Segis-Net``.

Two streams, trained together in one step on a source ``s`` and a target ``t`` (two scans
of one subject): a segmentation stream ``F`` (:class:`~jrs_jax.nets.SegmentationNet`) whose
head has one sub-branch per region, a conv ``1^D`` and a sigmoid each (tracts overlap: a voxel
may carry several labels; the ``K`` sub-branches are the ``K`` output channels of one
``1^D`` conv, which is the same function and the same parameters as ``K`` separate convs
concatenated), and a registration stream ``g`` (:class:`~jrs_jax.nets.RegistrationNet`) giving
the deformable part ``φ_D`` (``u``, pull-back, ``I_s∘φ ≈ I_t``)::

    Ŝ_s = σ(F(I_s)),    φ̂ = g(I_s, I_t)

    L = L_seg(S_s, Ŝ_s) + α L_reg(I_t, I_s∘φ̂) + β L_smooth(φ_D) + γ L_com(S_t, Ŝ_s∘φ̂)

``L_seg``, ``L_com`` soft Dice losses (``L_com`` on the predicted source segmentation warped
softly, linear per channel, so it trains both streams), ``L_reg`` MSE, ``L_smooth`` VoxelMorph's
gradient L2. Public-code weights: ``α = λ``, ``β = 0.01 λ``, ``γ = 1`` with ``λ`` ramped from 10
to 100 (+4 per epoch there; here linearly over ``schedule.ramp_steps`` updates, then held at
100, :func:`~jrs_jax.losses.linear_ramp`: the cap the spec leaves open, as +4 per epoch
overshoots 100 at epoch 23).

``loss.com_weight = 0`` (``configs/segis_net.py:pipeline``) is the multi-stage baseline of
the claim: with ``γ = 0`` the two streams share no term, so the same updates train a
segmentation network and a registration network separately (segment, then register), each
with its own optimiser state as always.

``predict`` (task ``register``) returns ``disp``, ``warped`` and the segmentations of both
images (``seg_sigmoid`` of the fixed / target, ``moving_seg_sigmoid`` of the moving / source),
so the pair evaluation scores registration Dice, segmentation Dice per tract, and the
longitudinal consistency ``val/seg_consistency`` (Dice of ``Seg(s)∘φ`` with ``Seg(t)``); task
``segment`` segments one image. Exclusive-label data (integer maps) gets a softmax head and
``seg_probs`` instead: the same losses on class probabilities.

Choices where the paper or code is silent: ``S_t`` in ``L_com`` is the target's manual label
map (the spec's open question; both scans of a training pair are labelled); the public code's
precomputed affine, to which ``φ_D`` is added, is the identity here (the synthetic scans are
already affinely aligned); Adam 1e-4 (the Keras code's).

Config (``configs/segis_net.py``): ``seg_model`` / ``reg_model`` (U-Net keywords), ``loss`` =
``{lambda_start, lambda_end, smooth_factor, seg_weight, com_weight}``, ``schedule.ramp_steps``,
``optim``, ``data.batch_size``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, within_subject_pairs
from ..losses import (
    activate,
    combine,
    gradient_l2,
    linear_ramp,
    mse,
    soft_dice,
    term,
)
from ..nets import RegistrationNet, SegmentationNet
from ..spatial import warp, warp_labels
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["SegisNet"]


class SegisNet(Method):
    """Segis-Net (module docstring).

    State: ``{"seg": NetState, "reg": NetState}``, both stepped by every update.
    """

    name = "segis_net"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}
    eval_mode = "within_subject"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        loss = config["loss"]
        self.seg_net = SegmentationNet(
            num_classes=self.num_classes, multilabel=self.multi_label, **config["seg_model"]
        )
        self.reg_net = RegistrationNet(output="displacement", **config["reg_model"])
        ramp = int(config["schedule"]["ramp_steps"])
        lam = linear_ramp(float(loss["lambda_start"]), float(loss["lambda_end"]), steps=ramp)
        beta = float(loss["smooth_factor"])
        smooth = linear_ramp(beta * lam.start, beta * lam.end, steps=ramp)
        self.com_weight = float(loss["com_weight"])
        terms = {
            "seg": term(soft_dice, "seg_source", "source_target", weight=float(loss["seg_weight"])),
            "reg": term(mse, "warped", "fixed", weight=lam),
            "smooth": term(gradient_l2, "disp", weight=smooth),
        }
        if self.com_weight > 0:
            terms["com"] = term(soft_dice, "warped_seg", "target", weight=self.com_weight)
        self.objective = combine(**terms)
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train=("seg", "reg"), donate=True, with_step=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_seg, k_reg = jax.random.split(key)
        x = self.zeros()
        return {
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx),
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Ordered pairs (target = fixed, source = moving) of two labelled scans of one
        training subject."""
        lab = [i for i in dataset.training() if dataset.subjects[i].has_labels]
        b = int(self.config["data"]["batch_size"])
        try:
            pairs = within_subject_pairs(batch_rng(self.seed, step), dataset, lab, b)
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None
        return pair_batch(dataset, pairs)

    # -- the streams -----------------------------------------------------------------------

    def segment(self, variables: dict, image: jax.Array) -> jax.Array:
        """``Ŝ = σ(F(I))`` (or softmax for exclusive labels): ``[B, *S, K]``."""
        return activate(self.seg_net.apply(variables["seg"], image), multi_label=self.multi_label)

    def predict(self, variables: dict, batch: dict) -> dict:
        """Pair: ``{"disp", "warped", seg of fixed, moving_ seg of moving}``; image: its
        segmentation (``seg_sigmoid`` / ``seg_probs``)."""
        key = self.seg_key
        if "image" in batch:
            return {key: self.segment(variables, batch["image"])}
        disp = self.reg_net.apply(variables["reg"], batch["moving"], batch["fixed"])["disp"]
        return {
            "disp": disp,
            "warped": warp(batch["moving"], disp),
            key: self.segment(variables, batch["fixed"]),
            f"moving_{key}": self.segment(variables, batch["moving"]),
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array, step: jax.Array):
        """``L`` of the module docstring at update ``step`` (the λ ramp's clock)."""
        source = self.segment(variables, batch["moving"])
        disp = self.reg_net.apply(variables["reg"], batch["moving"], batch["fixed"])["disp"]
        inputs = {
            "seg_source": source,
            "source_target": self.label_channels(batch["moving_labels"]),
            "warped": warp(batch["moving"], disp),
            "fixed": batch["fixed"],
            "disp": disp,
        }
        if self.com_weight > 0:
            inputs["warped_seg"] = warp_labels(
                source, disp, num_classes=self.num_classes, mode="soft"
            )
            inputs["target"] = self.label_channels(batch["fixed_labels"])
        return self.objective(step=step, **inputs)

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)

    @property
    def best_metric(self) -> str:
        return "val/mean_dice"
