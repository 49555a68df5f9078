"""U-Net segmentation: the segmentation baseline, trained on the labelled subjects only.

Ronneberger et al., MICCAI 2015 (2-D); Çiçek et al., MICCAI 2016 (3-D). A U-Net ``h_ψ``
maps an image to class logits and is trained with ::

    L(ψ) = α Dice_loss(softmax(h_ψ(x)), s) + β CE(h_ψ(x), s)

on batches of labelled training subjects (MONAI's ``DiceCELoss`` defaults α = β = 1).

Config (``configs/unet_seg.py``): ``model`` = :class:`~jrs_jax.nets.SegmentationNet`
keywords (``num_classes`` comes from the data), ``loss`` = ``{dice_weight, ce_weight}``,
``optim``, ``data.batch_size``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, subject_batch
from ..losses import combine, cross_entropy, soft_dice, term
from ..nets import SegmentationNet
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["UNetSeg"]


class UNetSeg(Method):
    """Segmentation network trained with Dice + cross-entropy. State: ``{"seg": NetState}``."""

    name = "unet_seg"
    tasks: ClassVar[dict] = {"segment": ("image",)}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        loss = config["loss"]
        self.net = SegmentationNet(num_classes=self.num_classes, **config["model"])
        self.objective = combine(
            dice=term(soft_dice, "probs", "onehot", weight=float(loss["dice_weight"])),
            ce=term(cross_entropy, "logits", "labels", weight=float(loss["ce_weight"])),
        )
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train="seg", donate=True)

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        params = self.net.init(key, self.zeros())
        return {"seg": NetState.create(params=params, tx=self.tx)}

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        pool = np.asarray(dataset.labelled(), np.int64)
        if len(pool) < 1:
            raise ValueError(f"{self.name} needs at least 1 labelled training subject; got 0")
        rng = batch_rng(self.seed, step)
        return subject_batch(dataset, rng.choice(pool, size=int(self.config["data"]["batch_size"])))

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"seg_probs"}``: softmax of the U-Net's logits."""
        return {"seg_probs": jax.nn.softmax(self.net.apply(variables["seg"], batch["image"]))}

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        logits = self.net.apply(variables["seg"], batch["image"])
        return self.objective(
            logits=logits,
            probs=jax.nn.softmax(logits),
            labels=batch["labels"],
            onehot=jax.nn.one_hot(batch["labels"], self.num_classes),
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)
