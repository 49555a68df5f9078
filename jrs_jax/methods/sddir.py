"""SDDIR: joint segmentation and discontinuity-preserving registration (no masks given).

Chen, Xia, Ravikumar, Frangi, "Joint segmentation and discontinuity-preserving deformable
registration: application to cardiac cine-MR images", arXiv 2022. No public code.

DDIR (:mod:`jrs_jax.methods.ddir`) needs the region masks of both images at test time.
SDDIR predicts them: a segmentation branch segments the two images jointly, its
co-attention block (:class:`~jrs_jax.nets.AffinityCoAttention`, at the bottleneck of a
shared U-Net, :class:`~jrs_jax.nets.CoSegmentationNet`) letting each image's features read
the other's::

    (z_m, z_f) = Seg(m, f)                            # logits [B, *S, L] of both images
    P_m = softmax(z_m),  P_f = softmax(z_f)
    M_k = Σ_{l ∈ region k} P_m[l],   F_k = Σ_{l ∈ region k} P_f[l]     # soft region masks

and the DDIR registration branch runs on the pair cut by these soft masks (region fields
``u_k``, stitched ``u = Σ_k F_k · u_k``). Trained end to end, one step updating both
networks (each with its own optimiser state) on::

    L = w_seg · [CE(z_m, S_m) + CE(z_f, S_f)] + L_DDIR(u; F_k)

(the registration's gradient also reaches the segmentation through the masks). Inference
needs only the two images.

jrs_jax decisions (the paper leaves them open): the softmax of the affinity runs over the
attended positions; soft (probability) masks, not hard ones, so the split is
differentiable; ``w_seg = 100`` (so the two cross-entropies have the scale of DDIR's Dice
×200 term); the registration Dice term uses the training labels, as in DDIR;
``seg_model.co_attention = False`` is the ablation without co-attention (the same shared
U-Net, bottleneck features passed on unchanged).
"""

from __future__ import annotations

from typing import ClassVar

import jax

from ..losses import combine, cross_entropy, term
from ..nets import CoSegmentationNet
from ..spatial import warp
from ..train import NetState
from .ddir import DDIR, region_masks

__all__ = ["SDDIR"]


def _pair_ce(logits_m, logits_f, labels_m, labels_f):
    """``CE(z_m, S_m) + CE(z_f, S_f)`` per example, ``[B]``."""
    return cross_entropy(logits_m, labels_m) + cross_entropy(logits_f, labels_f)


class SDDIR(DDIR):
    """SDDIR (module docstring). State: ``{"seg": NetState, "reg": NetState}``."""

    name = "sddir"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}
    trained: ClassVar[tuple[str, ...]] = ("seg", "reg")

    def __init__(self, config, **data):
        super().__init__(config, **data)
        self.seg_net = CoSegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        loss = config["loss"]
        self.objective = combine(
            self.registration_terms(loss),
            seg_ce=term(
                _pair_ce,
                "logits_m",
                "logits_f",
                "moving_labels",
                "fixed_labels",
                weight=float(loss.get("seg_weight", 100.0)),
            ),
        )

    def init(self, key: jax.Array, dataset=None) -> dict:
        k_reg, k_seg = jax.random.split(key)
        x = self.zeros()
        state = super().init(k_reg, dataset)
        seg = NetState.create(params=jax.jit(self.seg_net.init)(k_seg, x, x), tx=self.tx)
        return {"seg": seg, **state}

    def segment(self, variables: dict, moving, fixed):
        """``(logits_m, logits_f, masks_m, masks_f)``: both images' logits ``[B, *S, L]`` and
        soft region masks ``[K, B, *S]``."""
        logits_m, logits_f = self.seg_net.apply(variables["seg"], moving, fixed)
        masks_m = region_masks(jax.nn.softmax(logits_m), self.groups)
        masks_f = region_masks(jax.nn.softmax(logits_f), self.groups)
        return logits_m, logits_f, masks_m, masks_f

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped", "seg_probs", "moving_seg_probs"}`` from the images alone
        (``seg_probs`` segments the fixed image)."""
        moving, fixed = batch["moving"], batch["fixed"]
        logits_m, logits_f, masks_m, masks_f = self.segment(variables, moving, fixed)
        out = self.register(variables["reg"], moving, fixed, masks_m, masks_f)
        return {
            "disp": out["disp"],
            "warped": warp(moving, out["disp"]),
            "seg_probs": jax.nn.softmax(logits_f),
            "moving_seg_probs": jax.nn.softmax(logits_m),
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        moving, fixed = batch["moving"], batch["fixed"]
        logits_m, logits_f, masks_m, masks_f = self.segment(variables, moving, fixed)
        out = self.register(variables["reg"], moving, fixed, masks_m, masks_f, key)
        return self.objective(
            **self.registration_inputs(out, batch, masks_f),
            logits_m=logits_m,
            logits_f=logits_f,
            moving_labels=batch["moving_labels"],
            fixed_labels=batch["fixed_labels"],
        )

    @property
    def best_metric(self) -> str:
        """``val/mean_dice``: registration Dice and the fixed image's segmentation Dice."""
        return "val/mean_dice"
