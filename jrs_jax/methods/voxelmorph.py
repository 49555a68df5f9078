"""VoxelMorph: the registration baseline (unsupervised; + Dice supervision; + diffeomorphic).

Balakrishnan et al., "VoxelMorph: A Learning Framework for Deformable Medical Image
Registration", IEEE TMI 2019; Dalca et al., MedIA 2019 (diffeomorphic variant).

A U-Net ``g_θ`` maps the pair ``(m, f)`` to a displacement ``u`` (or a stationary velocity
``v`` integrated by scaling and squaring, ``φ = exp(v)``), and the moving image is pulled
back, ``m ∘ φ``. The loss is ::

    L(θ) = sim(m ∘ φ, f) + λ reg(u) + γ Dice_loss(s_m ∘ φ, s_f)

with ``sim`` = local NCC (window 9) or MSE, ``reg`` = diffusion (VoxelMorph ``Grad('l2')``),
and the auxiliary Dice term (``γ > 0``, "+ Dice supervision") using the soft-warped one-hot
label map of the moving image; it needs labelled pairs, so with ``γ > 0`` pairs are drawn
among the labelled training subjects only.

Config (``configs/voxelmorph.py``): ``model`` = :class:`~jrs_jax.nets.RegistrationNet`
keywords, ``loss`` = ``{similarity, similarity_kwargs, regulariser, regulariser_kwargs,
reg_weight, dice_weight}``, ``optim`` = :func:`~jrs_jax.train.make_optimizer` keywords,
``data.batch_size``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs
from ..losses import (
    combine,
    regulariser_term,
    similarity_term,
    soft_dice,
    term,
)
from ..nets import RegistrationNet
from ..spatial import warp, warp_labels
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["VoxelMorph"]


class VoxelMorph(Method):
    """VoxelMorph registration network trained on image pairs (see the module docstring).

    State: ``{"reg": NetState}``.
    """

    name = "voxelmorph"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}
    cross_modal_pairs = True

    def __init__(self, config, **data):
        super().__init__(config, **data)
        model, loss, optim = config["model"], config["loss"], config["optim"]
        self.net = RegistrationNet(**model)
        self.dice_weight = float(loss.get("dice_weight", 0.0))
        terms = {
            "sim": similarity_term(loss),
            "reg": regulariser_term(loss),
        }
        if self.dice_weight > 0:
            terms["dice"] = term(soft_dice, "warped_seg", "fixed_seg", weight=self.dice_weight)
        self.objective = combine(**terms)
        self.tx = make_optimizer(**optim, total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train="reg", donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        params = self.net.init(key, self.zeros(), self.zeros())
        return {"reg": NetState.create(params=params, tx=self.tx)}

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        pool = dataset.labelled() if self.dice_weight > 0 else dataset.training()
        if len(pool) < 2:
            what = (
                "labelled training subjects (loss.dice_weight > 0)"
                if self.dice_weight
                else ("training subjects")
            )
            raise ValueError(f"{self.name} needs at least 2 {what}; the dataset has {len(pool)}")
        pairs = sample_pairs(
            batch_rng(self.seed, step), pool, int(self.config["data"]["batch_size"])
        )
        return pair_batch(dataset, pairs, **self.pair_channels())

    # -- the model and its loss ------------------------------------------------------------

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` (+ ``"velocity"`` for the diffeomorphic variant)."""
        out = self.net.apply(variables["reg"], batch["moving"], batch["fixed"])
        return {**out, "warped": warp(batch["moving"], out["disp"])}

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        out = self.predict(variables, batch)
        disp = out["disp"]
        inputs = {"warped": out["warped"], "fixed": batch["fixed"], "disp": disp}
        if self.dice_weight > 0:
            k = self.num_classes
            inputs["warped_seg"] = warp_labels(batch["moving_labels"], disp, num_classes=k)
            inputs["fixed_seg"] = jax.nn.one_hot(batch["fixed_labels"], k)
        return self.objective(**inputs)

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)
