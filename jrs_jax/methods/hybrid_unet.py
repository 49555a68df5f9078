"""Hybrid U-Net: one network segments both time points and registers them.

Li, Niessen, Klein, de Groot, Ikram, Vernooij, Bron, "A Hybrid Deep Learning Framework for
Integrated Segmentation and Registration: Evaluation on Longitudinal White Matter Tract
Changes", MICCAI 2019. No public code.

One U-Net ``h_θ`` (:class:`~jrs_jax.nets.MultiHeadUNet`: every layer shared up to the heads)
reads the two scans of one subject on channels, ``x = [I_m, I_f]``, and outputs the
segmentation logits of both time points and a displacement ``u`` (pull-back,
``I_m∘φ ≈ I_f``)::

    (Ŝ_m, Ŝ_f, φ) = h_θ([I_m, I_f])

    L = Seg(Ŝ_m, S_m) + Seg(Ŝ_f, S_f) + sim(I_m∘φ, I_f) + λ reg(φ) + γ (1 - Dice(S_m∘φ, S_f))

``Seg`` is Dice + cross-entropy (:func:`~jrs_jax.losses.dice_ce`; for overlapping labels
Dice + binary cross-entropy, :func:`~jrs_jax.losses.dice_bce`, on sigmoid channels), ``sim``
local NCC (window 9), ``reg`` the diffusion regulariser, and the consistency term the soft
Dice of the moving labels warped softly (linear per class, differentiable in ``φ``) against
the fixed labels. Training pairs are two scans of one labelled training subject
(:func:`~jrs_jax.data.within_subject_pairs`), as the longitudinal setting of the paper;
``data.pairs="any"`` draws any two labelled training scans instead (cross-sectional data).

``predict`` (task ``register``: ``moving``, ``fixed``) returns ``disp``, ``warped``, the
fixed image's segmentation (``seg_probs``, or ``seg_sigmoid`` for multi-label data) and the
moving image's (``moving_seg_probs`` / ``moving_seg_sigmoid``): the pair evaluation scores the
registration (``val/reg_dice``), the fixed-image segmentation (``val/seg_dice``) and the
agreement of the two segmentations through the field (``val/seg_consistency``: Dice of
``Seg(t1)∘φ`` with ``Seg(t2)``).

Choices where the paper is silent (the spec lists the term weights as open):

* ``γ = 1`` on the consistency term, ``λ = 1`` (VoxelMorph's NCC setting), unit weights on
  both segmentation terms. ``loss.consistency_on="labels"`` (default) warps the label maps
  ``S_m``/``S_f``; ``"predictions"`` warps ``Ŝ_m`` onto ``Ŝ_f`` instead (both sides get the
  gradient), a direct push toward consistent segmentations that also works on unlabelled
  pairs' predictions.
* ``model.arch="separate"``: the baseline of separate networks with the same losses and
  inputs: a :class:`~jrs_jax.nets.SegmentationNet` applied to each scan and a
  :class:`~jrs_jax.nets.RegistrationNet` on the pair, each with its own optimiser state,
  the same widths and the same updates.

Config (``configs/hybrid_unet.py``): ``model`` = ``{arch, head_init_std}`` + U-Net keywords,
``loss`` = ``{seg_weight, similarity, similarity_kwargs, regulariser, regulariser_kwargs,
reg_weight, consistency_weight, consistency_on}``, ``optim``, ``data`` = ``{batch_size,
pairs}``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs, within_subject_pairs
from ..losses import (
    activate,
    combine,
    dice_bce,
    dice_ce,
    regulariser_term,
    similarity_term,
    soft_dice,
    term,
)
from ..nets import MultiHeadUNet, RegistrationNet, SegmentationNet
from ..spatial import warp, warp_labels
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["ARCHS", "CONSISTENCY_ON", "HybridUNet"]

#: ``model.arch``: the shared hybrid U-Net, or separate segmentation and registration nets.
ARCHS = ("hybrid", "separate")
#: ``loss.consistency_on``: what the consistency Dice warps.
CONSISTENCY_ON = ("labels", "predictions")
#: ``data.pairs``: two scans of one subject, or any two labelled scans.
PAIRS = ("within_subject", "any")

_NET_KEYS = ("arch", "head_init_std")


class HybridUNet(Method):
    """The hybrid segmentation + registration U-Net (module docstring).

    State: ``{"net": NetState}`` (hybrid) or ``{"seg": NetState, "reg": NetState}``
    (separate networks).
    """

    name = "hybrid_unet"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}

    @property
    def refine_net(self) -> str:
        """Refinement optimises the registration: the hybrid network, or ``"reg"``."""
        return "net" if self.arch == "hybrid" else "reg"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        model, loss = dict(config["model"]), config["loss"]
        self.arch = model.get("arch", "hybrid")
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}; got {self.arch!r}")
        self.consistency_on = loss.get("consistency_on", "labels")
        if self.consistency_on not in CONSISTENCY_ON:
            raise ValueError(
                f"loss.consistency_on must be one of {CONSISTENCY_ON}; got {self.consistency_on!r}"
            )
        self.pairs = config["data"].get("pairs", "within_subject")
        if self.pairs not in PAIRS:
            raise ValueError(f"data.pairs must be one of {PAIRS}; got {self.pairs!r}")
        unet = {k: v for k, v in model.items() if k not in _NET_KEYS}
        std = float(model.get("head_init_std", 1e-5))
        k = self.num_classes
        if self.arch == "hybrid":
            heads = (("seg_moving", k), ("seg_fixed", k))
            self.net = MultiHeadUNet(heads=heads, flow_head="disp", head_init_std=std, **unet)
            self.nets = ("net",)
        else:
            self.seg_net = SegmentationNet(num_classes=k, multilabel=self.multi_label, **unet)
            self.reg_net = RegistrationNet(head_init_std=std, **unet)
            self.nets = ("seg", "reg")
        seg_loss = dice_bce if self.multi_label else dice_ce
        w_seg = float(loss.get("seg_weight", 1.0))
        terms = {
            "seg_moving": term(seg_loss, "logits_moving", "moving_target", weight=w_seg),
            "seg_fixed": term(seg_loss, "logits_fixed", "fixed_target", weight=w_seg),
            "sim": similarity_term(loss),
            "smooth": regulariser_term(loss),
        }
        self.consistency_weight = float(loss.get("consistency_weight", 1.0))
        if self.consistency_weight > 0:
            terms["consistency"] = term(
                soft_dice, "warped_seg", "fixed_seg", weight=self.consistency_weight
            )
        self.objective = combine(**terms)
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train=self.nets, donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        x = self.zeros()
        if self.arch == "hybrid":
            return {"net": NetState.create(params=self.net.init(key, x, x), tx=self.tx)}
        k_seg, k_reg = jax.random.split(key)
        return {
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx),
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Ordered pairs of two labelled training scans: of one subject (``data.pairs =
        "within_subject"``, the default) or any two (``"any"``)."""
        pool = [i for i in dataset.training() if dataset.subjects[i].has_labels]
        size = int(self.config["data"]["batch_size"])
        rng = batch_rng(self.seed, step)
        if self.pairs == "within_subject":
            try:
                pairs = within_subject_pairs(rng, dataset, pool, size)
            except ValueError as err:
                raise ValueError(f"{self.name} (data.pairs='within_subject'): {err}") from None
        else:
            if len(pool) < 2:
                raise ValueError(
                    f"{self.name} needs at least 2 labelled training scans; the dataset has "
                    f"{len(pool)}"
                )
            pairs = sample_pairs(rng, pool, size)
        return pair_batch(dataset, pairs)

    # -- the network and its loss ----------------------------------------------------------

    def forward(self, variables: dict, batch: dict) -> dict:
        """``{"logits_moving", "logits_fixed": [B, *S, K], "disp": [B, *S, D]}``."""
        moving, fixed = batch["moving"], batch["fixed"]
        if self.arch == "hybrid":
            out = self.net.apply(variables["net"], moving, fixed)
            return {
                "logits_moving": out["seg_moving"],
                "logits_fixed": out["seg_fixed"],
                "disp": out["disp"],
            }
        seg = lambda x: self.seg_net.apply(variables["seg"], x)
        disp = self.reg_net.apply(variables["reg"], moving, fixed)["disp"]
        return {"logits_moving": seg(moving), "logits_fixed": seg(fixed), "disp": disp}

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped", "seg_probs" | "seg_sigmoid", "moving_seg_probs" |
        "moving_seg_sigmoid"}`` (segmentations of the fixed and the moving image)."""
        out = self.forward(variables, batch)
        key = self.seg_key
        act = lambda z: activate(z, multi_label=self.multi_label)
        return {
            "disp": out["disp"],
            "warped": warp(batch["moving"], out["disp"]),
            key: act(out["logits_fixed"]),
            f"moving_{key}": act(out["logits_moving"]),
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``L`` of the module docstring on a labelled pair batch."""
        out = self.forward(variables, batch)
        disp = out["disp"]
        moving_t, fixed_t = (
            self.label_channels(batch["moving_labels"]),
            self.label_channels(batch["fixed_labels"]),
        )
        inputs = {
            "logits_moving": out["logits_moving"],
            "logits_fixed": out["logits_fixed"],
            "moving_target": batch["moving_labels"] if not self.multi_label else moving_t,
            "fixed_target": batch["fixed_labels"] if not self.multi_label else fixed_t,
            "warped": warp(batch["moving"], disp),
            "fixed": batch["fixed"],
            "disp": disp,
        }
        if self.consistency_weight > 0:
            if self.consistency_on == "labels":
                source, target = moving_t, fixed_t
            else:
                act = lambda z: activate(z, multi_label=self.multi_label)
                source, target = act(out["logits_moving"]), act(out["logits_fixed"])
            inputs["warped_seg"] = warp_labels(
                source, disp, num_classes=self.num_classes, mode="soft"
            )
            inputs["fixed_seg"] = target
        return self.objective(**inputs)

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)

    @property
    def best_metric(self) -> str:
        """``val/mean_dice``: the mean of the registration and the fixed-image segmentation
        Dice."""
        return "val/mean_dice"
