"""Concurrent atlas-to-patient registration and tumour segmentation.

Estienne et al., "Deep Learning-Based Concurrent Brain Registration and Tumor Segmentation",
Frontiers in Computational Neuroscience 2020 (public code
``TheoEst/joint_registration_tumor_segmentation``).

A lesion-free atlas ``A`` (the moving image) is registered to a patient ``P`` (the fixed
image) that holds a tumour the atlas does not. One shared encoder reads the pair; a
segmentation decoder predicts the patient's tumour probability ``p_t`` and a deformation
decoder the field ``φ`` (:class:`~jrs_jax.nets.SharedEncoderMultiDecoder`, the displacement
head starting near zero). Inside the tumour there is nothing in the atlas to match, so the
similarity is relaxed there: each voxel's term is weighted by ``w = 1 − p_t``, with the
gradient stopped through ``w`` (the public code masks with its stop-gradient prediction)::

    L = sim_w(A∘φ, P) + λ R(φ) + β CE(p_t, T_P)

``sim_w`` is the ``w``-weighted MSE (public code) or the masked local NCC
(:func:`~jrs_jax.losses.local_ncc` with ``mask``), ``R`` diffusion, ``T_P`` the patient's
tumour label (``β = 0.5``, the public code's weight of each decoder's cross-entropy; its
second CE segments the atlas, which here has no tumour, so it is dropped).

``loss.mask``: ``"soft"`` (``w = 1 − p_t``, default), ``"hard"`` (``w = [p_t < 0.5]``, the
public code's argmax mask), ``"none"`` (the unmasked ablation: ``w = 1``) or ``"truth"``
(``w = 1 − T_P``: the oracle mask, a diagnostic of what a perfect segmentation gives).
``model.arch``: ``"shared"`` (one encoder, two decoders) or ``"separate"`` (a segmentation
U-Net on ``P`` and a VoxelMorph U-Net on ``(A, P)``, trained by the same loss).

Evaluation (mode ``"atlas"``): the atlas warped onto every held-out patient; besides the
healthy-label Dice (``eval.labels``), :meth:`TumourJRS.pair_metrics` scores the tumour
Dice and the plausibility of the field at the lesion against the ground truth: endpoint
error and mean ``|log det J|`` inside the lesion and in a band of ``eval.lesion_band``
voxels (default 4) around it.

Config: ``configs/tumour_jrs.py``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from .. import metrics
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch
from ..losses import combine, cross_entropy, regulariser_term, similarity_term, term
from ..nets import RegistrationNet, SegmentationNet, SharedEncoderMultiDecoder
from ..spatial import warp
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["MASKS", "TumourJRS", "lesion_regions"]

#: ``loss.mask`` values (module docstring).
MASKS = ("soft", "hard", "none", "truth")
#: ``model.arch`` values.
ARCHS = ("shared", "separate")
_NET_KEYS = ("arch", "head_init_std", "tumour_label")


def lesion_regions(lesion: np.ndarray, *, band: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, around)`` bool masks of a lesion mask ``[*S]``: the lesion itself and the
    voxels outside it within ``band`` voxels (face-connected dilation)."""
    lesion = np.asarray(lesion, bool)
    grown = ndimage.binary_dilation(lesion, iterations=int(band)) if band > 0 else lesion
    return lesion, grown & ~lesion


class TumourJRS(Method):
    """Concurrent registration and tumour segmentation (module docstring). State:
    ``{"net": NetState}`` (shared) or ``{"seg": NetState, "reg": NetState}`` (separate)."""

    name = "tumour_jrs"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}
    eval_mode = "atlas"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        model, loss = dict(config["model"]), config["loss"]
        self.arch = model.get("arch", "shared")
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}; got {self.arch!r}")
        self.mask = loss.get("mask", "soft")
        if self.mask not in MASKS:
            raise ValueError(f"loss.mask must be one of {MASKS}; got {self.mask!r}")
        self.tumour = self._tumour_label(model.get("tumour_label"))
        unet = {k: v for k, v in model.items() if k not in _NET_KEYS}
        std = float(model.get("head_init_std", 1e-5))
        if self.arch == "shared":
            heads = (("seg", 2), ("disp", self.ndim))
            self.net = SharedEncoderMultiDecoder(
                heads=heads, small_init_heads=("disp",), head_init_std=std, **unet
            )
            self.nets = ("net",)
        else:
            self.seg_net = SegmentationNet(num_classes=2, **unet)
            self.reg_net = RegistrationNet(head_init_std=std, **unet)
            self.nets = ("seg", "reg")
        registration = combine(
            sim=similarity_term(loss, mask="weight"), smooth=regulariser_term(loss)
        )
        self.registration = registration
        self.objective = registration.extend(
            seg=term(cross_entropy, "tumour_logits", "tumour", weight=float(loss["seg_weight"]))
        )
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train=self.nets, donate=True)

    @property
    def refine_net(self) -> str:
        """Refinement optimises the registration: the shared network, or ``"reg"``."""
        return "net" if self.arch == "shared" else "reg"

    def _tumour_label(self, given) -> int:
        """The tumour's label: ``model.tumour_label``, else the label named ``lesion`` /
        ``tumour`` in ``data.label_names``, else the last label."""
        if given is not None:
            label = int(given)
        else:
            names = {
                str(v).lower(): int(k)
                for k, v in (self.config["data"].get("label_names") or {}).items()
            }
            label = next(
                (names[n] for n in ("lesion", "tumour", "tumor") if n in names),
                self.num_classes - 1,
            )
        if not 0 < label < self.num_classes:
            raise ValueError(
                f"tumour label {label} is not a foreground label of {self.num_classes} classes"
            )
        return label

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        x = self.zeros()
        if self.arch == "shared":
            return {"net": NetState.create(params=self.net.init(key, x, x), tx=self.tx)}
        k_seg, k_reg = jax.random.split(key)
        return {
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx),
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx),
        }

    def atlas_index(self, dataset: Dataset) -> int:
        """The atlas: ``eval.atlas`` if set, else the first labelled training subject."""
        from ..evaluation import default_atlas

        atlas = (self.config.get("eval") or {}).get("atlas")
        return default_atlas(dataset) if atlas is None else int(atlas)

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """The atlas (moving) onto random labelled training patients (fixed)."""
        atlas = self.atlas_index(dataset)
        patients = [i for i in dataset.labelled() if i != atlas]
        if not patients:
            raise ValueError(
                f"{self.name} needs labelled training patients besides the atlas (subject {atlas})"
            )
        rng = batch_rng(self.seed, step)
        chosen = rng.choice(np.asarray(patients), int(self.config["data"]["batch_size"]))
        pairs = np.stack([chosen, np.full_like(chosen, atlas)], -1)  # (fixed, moving) rows
        return pair_batch(dataset, pairs)

    # -- the network and its loss ----------------------------------------------------------

    def forward(self, variables: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
        """``(tumour logits [B, *S, 2] of the fixed image, disp [B, *S, D])``."""
        moving, fixed = batch["moving"], batch["fixed"]
        if self.arch == "shared":
            out = self.net.apply(variables["net"], moving, fixed)
            return out["seg"], out["disp"]
        logits = self.seg_net.apply(variables["seg"], fixed)
        return logits, self.reg_net.apply(variables["reg"], moving, fixed)["disp"]

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped", "tumour_probs" [B, *S, 1]}`` (the fixed image's tumour)."""
        logits, disp = self.forward(variables, batch)
        return {
            "disp": disp,
            "warped": warp(batch["moving"], disp),
            "tumour_probs": jax.nn.softmax(logits)[..., 1:],
        }

    def similarity_weight(self, tumour_logits: jax.Array, tumour=None) -> jax.Array:
        """``w [B, *S, 1]`` of ``loss.mask`` (constant for the gradient)."""
        p = jax.lax.stop_gradient(jax.nn.softmax(tumour_logits)[..., 1:])
        if self.mask == "soft":
            return 1.0 - p
        if self.mask == "hard":
            return (p < 0.5).astype(p.dtype)
        if self.mask == "truth":
            return 1.0 - tumour[..., None].astype(p.dtype)
        return jnp.ones_like(p)

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        logits, disp = self.forward(variables, batch)
        tumour = (batch["fixed_labels"] == self.tumour).astype(jnp.int32)
        return self.objective(
            warped=warp(batch["moving"], disp),
            fixed=batch["fixed"],
            weight=self.similarity_weight(logits, tumour),
            disp=disp,
            tumour_logits=logits,
            tumour=tumour,
        )

    def refine_loss(self, variables: dict, batch, key: jax.Array):
        """``sim_w(A∘φ, P) + λ R(φ)`` on the pair (no labels: the oracle mask is replaced
        by the predicted soft one)."""
        logits, disp = self.forward(variables, batch)
        p = jax.lax.stop_gradient(jax.nn.softmax(logits)[..., 1:])
        weight = jnp.ones_like(p) if self.mask == "none" else 1.0 - p
        return self.registration(
            warped=warp(batch["moving"], disp), fixed=batch["fixed"], weight=weight, disp=disp
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)

    # -- evaluation ------------------------------------------------------------------------

    def pair_metrics(self, prediction, batch) -> dict:
        """Per pair: ``tumour_dice``, and with the ground-truth field ``epe_lesion`` /
        ``epe_around`` and ``abs_logj_lesion`` / ``abs_logj_around`` (mean ``|log det J|``,
        ``det J`` clipped at 1e-3) inside the fixed image's lesion and in the band of
        ``eval.lesion_band`` voxels around it (NaN for a patient without a lesion)."""
        band = int((self.config.get("eval") or {}).get("lesion_band", 4))
        probs = np.asarray(prediction["tumour_probs"])[..., 0]
        disp = np.asarray(prediction["disp"])
        lesion = np.asarray(batch["fixed_labels"]) == self.tumour
        out = {k: [] for k in ("tumour_dice", "epe_lesion", "epe_around")}
        out.update(abs_logj_lesion=[], abs_logj_around=[])
        for j in range(len(disp)):
            has = bool(lesion[j].any())
            out["tumour_dice"].append(
                metrics.mean_dice(
                    (probs[j] >= 0.5).astype(np.int32), lesion[j].astype(np.int32), missing="zero"
                )
                if has
                else np.nan
            )
            inside, around = lesion_regions(lesion[j], band=band)
            logj = np.abs(np.log(np.clip(metrics.jacobian_determinant(disp[j]), 1e-3, None)))
            for name, region in (("lesion", inside), ("around", around)):
                ok = has and region.any()
                out[f"abs_logj_{name}"].append(float(logj[region].mean()) if ok else np.nan)
                if "gt_disp" in batch:
                    gt = np.asarray(batch["gt_disp"])[j]
                    out[f"epe_{name}"].append(
                        metrics.endpoint_error(disp[j], gt, mask=region) if ok else np.nan
                    )
        return {k: np.asarray(v, np.float64) for k, v in out.items() if len(v) == len(disp)}
