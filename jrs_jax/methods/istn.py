"""ISTN: image-and-spatial transformer networks for structure-guided registration.

Lee, Oktay, Schuh, Schaap & Glocker, "Image-and-Spatial Transformer Networks for
Structure-Guided Image Registration", MICCAI 2019 (public code ``biomedia-mira/istn``).

An image transformer network (ITN, a small U-Net with a linear head) maps each image to a
structure representation the size of the supervision: ``M' = ITN(M)``, ``F' = ITN(F)``, here
``[B, *S, K - 1]``, one channel per foreground label, supervised by the one-hot label maps
``S_M``, ``S_F``. A spatial transformer network (STN) predicts ``φ`` from ``(M', F')``: dense
(:class:`~jrs_jax.nets.RegistrationNet`; by default a stationary velocity at half resolution,
smooth like the public code's cubic B-spline model) or affine
(:class:`~jrs_jax.nets.AffineRegistrationNet`). ``∘φ`` is the linear pull-back warp. All
terms are mean squared errors (``mse``); ``λ R(φ)`` (diffusion, ``loss.reg_weight``) keeps the
dense field plausible where no label constrains it:

================  ======================================================================
``loss.variant``  objective
================  ======================================================================
``explicit``      ISTN-e: ``‖M' − S_M‖² + ‖F' − S_F‖² + ‖S_M∘φ − S_F‖²``
``implicit``      ISTN-i (public code): ``‖M'∘φ − S_F‖² + ‖S_M∘φ − F'‖² + ‖S_M∘φ − S_F‖²``;
                  ``loss.implicit_coupling=False``: ``‖S_M∘φ − S_F‖²`` alone (the ITN
                  learns only through the STN; the spec's wording)
``supervised``    STN-s: no ITN, the STN sees ``(M, F)``: ``‖S_M∘φ − S_F‖²``
``unsupervised``  STN-u: no ITN: ``‖M∘φ − F‖²``
================  ======================================================================

(each plus ``λ R(φ)``). ITN and STN are trained jointly, one Adam state each.

Test-time refinement (:mod:`jrs_jax.refinement`; ``refine.steps = 50``, Adam ``1e-3``, as
the public code): the ITN is frozen and the STN's weights are optimised on the single pair
for ``‖M'∘φ − F'‖² + λ R(φ)`` (the STN variants without an ITN: ``‖M∘φ − F‖² + λ R(φ)``).
Because the ITN's output is a structure map, this objective is a label-like one that needs
no labels of the test pair.

Config: ``configs/istn.py``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs
from ..losses import combine, mse, regulariser_term, term
from ..nets import AffineRegistrationNet, RegistrationNet, SegmentationNet
from ..spatial import warp
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["ISTN", "VARIANTS"]

#: ``loss.variant`` values (module docstring).
VARIANTS = ("explicit", "implicit", "supervised", "unsupervised")


class ISTN(Method):
    """ISTN (module docstring). State: ``{"itn": NetState, "stn": NetState}`` (ISTN-e /
    ISTN-i) or ``{"stn": NetState}`` (STN-s / STN-u)."""

    name = "istn"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}
    refine_net = "stn"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        loss, model = config["loss"], config["model"]
        self.variant = loss["variant"]
        if self.variant not in VARIANTS:
            raise ValueError(f"loss.variant must be one of {VARIANTS}; got {self.variant!r}")
        if self.num_classes < 2 and self.variant != "unsupervised":
            raise ValueError(f"istn ({self.variant}) needs labels: num_classes >= 2")
        self.uses_itn = self.variant in ("explicit", "implicit")
        self.structures = self.num_classes - 1  # ITN channels: one per foreground label
        self.itn = SegmentationNet(num_classes=self.structures, **config["itn_model"])
        kind = model["transform"]
        if kind not in ("dense", "affine"):
            raise ValueError(f"model.transform must be 'dense' or 'affine'; got {kind!r}")
        stn = {k: v for k, v in config["stn_model"].items() if kind == "dense" or k in _ENCODER}
        self.stn = (RegistrationNet if kind == "dense" else AffineRegistrationNet)(**stn)
        smooth = regulariser_term(loss)
        terms = {
            "explicit": {
                "itn_moving": term(mse, "moving_prime", "moving_seg"),
                "itn_fixed": term(mse, "fixed_prime", "fixed_seg"),
                "seg": term(mse, "warped_seg", "fixed_seg"),
            },
            "implicit": {
                "seg": term(mse, "warped_seg", "fixed_seg"),
                **(
                    {
                        "prime_to_seg": term(mse, "warped_prime", "fixed_seg"),
                        "seg_to_prime": term(mse, "warped_seg", "fixed_prime"),
                    }
                    if loss.get("implicit_coupling", True)
                    else {}
                ),
            },
            "supervised": {"seg": term(mse, "warped_seg", "fixed_seg")},
            "unsupervised": {"image": term(mse, "warped", "fixed")},
        }[self.variant]
        self.objective = combine(**terms, smooth=smooth)
        # refinement: ‖M'∘φ − F'‖² (M, F without an ITN) + λ R(φ)
        self.refine_objective = combine(
            structure=term(mse, "warped_prime", "fixed_prime"), smooth=smooth
        )
        steps = int(config["train"]["steps"])
        self.tx = make_optimizer(**config["optim"], total_steps=steps)
        self.nets = ("itn", "stn") if self.uses_itn else ("stn",)
        self._update = make_update(self.loss, train=self.nets, donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_itn, k_stn = jax.random.split(key)
        x = self.zeros()
        stn_in = self.zeros(self.structures) if self.uses_itn else x
        state = {"stn": NetState.create(params=self.stn.init(k_stn, stn_in, stn_in), tx=self.tx)}
        if self.uses_itn:
            state["itn"] = NetState.create(params=self.itn.init(k_itn, x), tx=self.tx)
        return state

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Random pairs of labelled training subjects (any training subjects for STN-u)."""
        pool = dataset.training() if self.variant == "unsupervised" else dataset.labelled()
        if len(pool) < 2:
            raise ValueError(
                f"istn ({self.variant}) needs at least 2 labelled training subjects; the "
                f"dataset has {len(pool)}"
            )
        size = int(self.config["data"]["batch_size"])
        return pair_batch(dataset, sample_pairs(batch_rng(self.seed, step), pool, size))

    # -- the networks ----------------------------------------------------------------------

    def structure(self, variables: dict, image: jax.Array) -> jax.Array:
        """``ITN(image)`` ``[B, *S, K - 1]`` (the image itself without an ITN)."""
        return self.itn.apply(variables["itn"], image) if self.uses_itn else image

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` (+ ``"velocity"`` / ``"matrix"`` of the STN), and with an
        ITN the structure maps ``"moving_structure"``, ``"fixed_structure"``
        ``[B, *S, K - 1]``."""
        m_prime = self.structure(variables, batch["moving"])
        f_prime = self.structure(variables, batch["fixed"])
        out = dict(self.stn.apply(variables["stn"], m_prime, f_prime))
        out["warped"] = warp(batch["moving"], out["disp"])
        if self.uses_itn:
            out.update(moving_structure=m_prime, fixed_structure=f_prime)
        return out

    # -- losses ----------------------------------------------------------------------------

    def _foreground(self, labels: jax.Array) -> jax.Array:
        """``S``: one-hot foreground channels ``[B, *S, K - 1]`` of integer labels."""
        return jax.nn.one_hot(labels, self.num_classes)[..., 1:]

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """The objective of ``loss.variant`` (module docstring table)."""
        pred = self.predict(variables, batch)
        disp = pred["disp"]
        inputs = {"disp": disp, "warped": pred["warped"], "fixed": batch["fixed"]}
        if self.variant != "unsupervised":
            s_m = self._foreground(batch["moving_labels"])
            inputs.update(
                warped_seg=warp(s_m, disp), fixed_seg=self._foreground(batch["fixed_labels"])
            )
            inputs["moving_seg"] = s_m
        if self.uses_itn:
            m_prime, f_prime = pred["moving_structure"], pred["fixed_structure"]
            inputs.update(
                moving_prime=m_prime, fixed_prime=f_prime, warped_prime=warp(m_prime, disp)
            )
        return self.objective(**inputs)

    def refine_loss(self, variables: dict, batch, key: jax.Array):
        """``‖M'∘φ − F'‖² + λ R(φ)`` (``M``, ``F`` for the STN variants); the ITN is frozen
        by :mod:`jrs_jax.refinement` (only ``variables["stn"]`` is optimised)."""
        pred = self.predict(variables, batch)
        m_prime = pred.get("moving_structure", batch["moving"])
        f_prime = pred.get("fixed_structure", batch["fixed"])
        return self.refine_objective(
            warped_prime=warp(m_prime, pred["disp"]), fixed_prime=f_prime, disp=pred["disp"]
        )

    def pair_metrics(self, prediction, batch) -> dict:
        """With an ITN: ``itn_dice``, the mean foreground Dice of the fixed image's structure
        map read as a segmentation (a voxel's label is its largest channel where that
        exceeds 0.5, else background) against the fixed labels: how faithful the structure
        representation that refinement matches is."""
        if "fixed_structure" not in prediction or "fixed_labels" not in batch:
            return {}
        from .. import metrics

        f = np.asarray(prediction["fixed_structure"])
        labels = np.where(f.max(-1) > 0.5, f.argmax(-1) + 1, 0)
        scores = [
            metrics.mean_dice(p, t, labels=range(1, self.num_classes), missing="zero")
            for p, t in zip(labels, np.asarray(batch["fixed_labels"]))
        ]
        return {"itn_dice": np.asarray(scores)}

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)


#: The encoder keywords an affine STN takes from ``stn_model``.
_ENCODER = ("features", "dtype", "conv_impl", "remat", "activation", "norm")
