"""A lightweight registration-segmentation cascade for small organs at risk.

Lei et al. (Guo, Liu, ...), "3D Lightweight Network for Simultaneous Registration and
Segmentation of Organs-at-Risk in CT Images of Head and Neck Cancer", IEEE TMI 2022. No
public code: the choices below are jrs_jax's.

(A) **Template selection** (data-dependent :meth:`OARCascade.init`): each of up to
``template.candidates`` labelled training subjects is registered to every other labelled
training subject by instance optimisation of a displacement field (``template.steps`` Adam
steps on ``MSE + λ diffusion``, all pairs in one batch, :func:`jrs_jax.train.refine`) and
scored ``DI = (1 − DSC) + 0.5 · MSE`` (Dice of the warped labels, MSE of the warped image);
the candidate with the lowest mean DI becomes the template ``(T, S_T)`` of the state.

(B) **Registration network** ``R`` (VoxelMorph U-Net) on ``(T, I, [S_T, P_{n-1}])``: the
template, the target, the template's organ masks and the target's current segmentation
(zeros at iteration 0) -> ``φ_n``; ``S_T∘φ_n`` is the atlas segmentation of iteration ``n``.

(C) **ROI layer and auto-context**: for each organ ``k`` of ``model.roi_labels`` (default
every foreground label; the organs at risk, structures that fit a crop) the centroid of
``S_T∘φ_n`` (channel ``k``, :func:`jrs_jax.spatial.soft_centroid`) places a fixed
``model.crop`` window
(:func:`~jrs_jax.spatial.crop_around`); the segmentation U-Net ``G`` sees the image crop and
its previous probability map of the organ on that crop (auto-context) and predicts the organ
there; pasted back (:func:`~jrs_jax.spatial.paste_back`) and assembled into ``P_n``
(organ ``k``'s probability from its own crop, a label outside ``roi_labels`` from the warped
template; background ``∏_k (1 − p_k)``; renormalised).
``model.iterations`` rounds of (B) and (C); the previous round's maps enter the next one
without gradient (each round is trained on the previous round's output).

(D) Shape correction (2-D projections) is **not implemented** (optional in the paper).

Loss, averaged over the rounds::

    L_reg = Dice(S_T∘φ, S_I) + 0.5 MSE(T∘φ, I) + 0.1 CD(S_T∘φ, S_I)
    L_seg = Dice(P, S_I) + 0.25 CE(P, S_I)
    L     = 0.5 L_reg + L_seg

(CD: centroid distance in voxels). ``model.segment="atlas"`` trains ``R`` alone on
``L_reg`` and segments with the warped template (the registration-only baseline).

Config: ``configs/oar_cascade.py``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import metrics
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, subject_batch
from ..losses import centroid_distance, combine, cross_entropy, diffusion, mse, soft_dice, term
from ..nets import RegistrationNet, SegmentationNet
from ..spatial import crop_around, paste_back, soft_centroid, warp
from ..train import NetState, make_optimizer, make_update, refine
from .base import Method

__all__ = ["OARCascade", "select_template"]

SEGMENT = ("cascade", "atlas")


def _pair_objective(u, batch, key):
    """``MSE(M∘u, F) + λ diffusion(u)`` summed over the pairs (independent per pair)."""
    moved = warp(batch["moving"], u)
    return jnp.sum(mse(moved, batch["fixed"]) + batch["lam"] * diffusion(u)), {}


def select_template(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    candidates: int,
    steps: int,
    lr: float = 0.1,
    smooth: float = 1.0,
) -> tuple[int, np.ndarray]:
    """(A): ``(index of the chosen template, mean DI per candidate)``.

    Candidate ``c`` (the first ``candidates`` of ``images [N, *S, C]`` / ``labels [N, *S]``)
    is registered to every other image by ``steps`` Adam steps on a displacement field
    (``MSE + smooth · diffusion``, from zero) and scored ``DI = (1 − DSC) + 0.5 · MSE``
    (mean foreground Dice of the nearest-warped labels; MSE of the warped image).
    """
    from ..evaluation import warp_labels_nearest

    n = len(images)
    cands = list(range(min(int(candidates), n)))
    pairs = np.asarray([(f, m) for m in cands for f in range(n) if f != m], np.int64)
    fixed, moving = jnp.asarray(images[pairs[:, 0]]), jnp.asarray(images[pairs[:, 1]])
    u0 = jnp.zeros((*fixed.shape[:-1], fixed.ndim - 2), jnp.float32)
    batch = {"moving": moving, "fixed": fixed, "lam": jnp.float32(smooth)}
    u, _ = refine(_pair_objective, u0, batch, steps=int(steps), tx=_adam(lr), key=jax.random.key(0))
    moved = np.asarray(warp(moving, u))
    warped = np.asarray(warp_labels_nearest(jnp.asarray(labels[pairs[:, 1]]), u))
    di = np.zeros(len(cands))
    for (f, m), w, img in zip(pairs, warped, moved):
        dsc = metrics.mean_dice(w, labels[f], labels=range(1, num_classes), missing="zero")
        di[cands.index(int(m))] += (1.0 - dsc) + 0.5 * float(np.mean((img - images[f]) ** 2))
    di /= max(n - 1, 1)
    return int(cands[int(np.argmin(di))]), di


_ADAM_CACHE: dict = {}


def _adam(lr: float):  # one optax object per rate: refine compiles once
    return _ADAM_CACHE.setdefault(float(lr), optax.adam(float(lr)))


class OARCascade(Method):
    """The cascade (module docstring). State: ``{"reg": NetState, "seg": NetState,
    "template_image" [*S, C], "template_labels" [*S, K], "template_index" int32}``."""

    name = "oar_cascade"
    tasks: ClassVar[dict] = {"segment": ("image",)}
    refine_net = None  # no test-time refinement: the cascade segments single images

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} needs exclusive labels")
        model, loss = config["model"], config["loss"]
        self.segment_with = model.get("segment", "cascade")
        if self.segment_with not in SEGMENT:
            raise ValueError(f"model.segment must be one of {SEGMENT}; got {self.segment_with!r}")
        self.iterations = int(model["iterations"])
        if self.iterations < 1:
            raise ValueError(f"model.iterations must be >= 1; got {self.iterations}")
        self.crop = tuple(int(c) for c in model["crop"])
        if len(self.crop) != self.ndim or any(c > n for c, n in zip(self.crop, self.shape)):
            raise ValueError(f"model.crop {self.crop} must be {self.ndim} sizes <= {self.shape}")
        k = self.num_classes
        roi = model.get("roi_labels")
        self.roi_labels = tuple(range(1, k)) if roi is None else tuple(int(i) for i in roi)
        if not self.roi_labels or not all(0 < i < k for i in self.roi_labels):
            raise ValueError(f"model.roi_labels must be foreground labels 1..{k - 1}; got {roi}")
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=2, **config["seg_model"])
        self.reg_objective = combine(
            dice=term(soft_dice, "warped_masks", "target"),
            mse=term(mse, "warped_template", "image", weight=float(loss["mse_weight"])),
            cd=term(
                lambda a, b: centroid_distance(a, b, num_classes=k),
                "warped_masks",
                "target",
                weight=float(loss["cd_weight"]),
            ),
        )
        self.seg_objective = combine(
            dice=term(soft_dice, "probs", "target"),
            ce=term(cross_entropy, "log_probs", "labels", weight=float(loss["ce_weight"])),
        )
        self.reg_weight = float(loss["reg_weight"])
        self.nets = ("reg",) if self.segment_with == "atlas" else ("reg", "seg")
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train=self.nets, donate=True)

    # -- (A) template selection, state, data -----------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_reg, k_seg = jax.random.split(key)
        c, k = self.image_channels, self.num_classes
        image = np.zeros((*self.shape, c), np.float32)
        labels = np.zeros((*self.shape, k), np.float32)
        index = -1
        if dataset is not None:
            lab = dataset.labelled()
            if len(lab) < 2:
                raise ValueError(f"{self.name} needs >= 2 labelled training subjects")
            b = subject_batch(dataset, np.asarray(lab))
            t = self.config["template"]
            pick, _ = select_template(
                b["image"],
                b["labels"],
                num_classes=k,
                candidates=int(t["candidates"]),
                steps=int(t["steps"]),
            )
            index = int(lab[pick])
            image = b["image"][pick]
            labels = np.asarray(jax.nn.one_hot(b["labels"][pick], k), np.float32)
        x = self.zeros()
        extra = self.zeros(2 * k)
        state = {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x, extra), tx=self.tx),
            "template_image": jnp.asarray(image),
            "template_labels": jnp.asarray(labels),
            "template_index": jnp.int32(index),
        }
        if "seg" in self.nets:
            crop = jnp.zeros((1, *self.crop, c + 1), jnp.float32)
            state["seg"] = NetState.create(params=self.seg_net.init(k_seg, crop), tx=self.tx)
        return state

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Random labelled training subjects (the targets)."""
        lab = np.asarray(dataset.labelled())
        size = int(self.config["data"]["batch_size"])
        return subject_batch(dataset, batch_rng(self.seed, step).choice(lab, size))

    # -- (B) + (C): one round, the cascade ---------------------------------------------------

    def _register(self, v: dict, image: jax.Array, prev: jax.Array) -> jax.Array:
        b = image.shape[0]
        template = jnp.broadcast_to(v["template_image"], (b, *v["template_image"].shape))
        masks = jnp.broadcast_to(v["template_labels"], (b, *v["template_labels"].shape))
        extra = jnp.concatenate([masks, prev], -1)
        return self.reg_net.apply(v["reg"], template, image, extra)["disp"]

    def _organs(self, v: dict, image: jax.Array, warped_masks: jax.Array, prev: jax.Array):
        """Organ probabilities ``[B, *S, K - 1]``: each organ of ``model.roi_labels``
        segmented on its ROI crop (centre: the centroid of its warped template mask) with its
        previous map as the auto-context channel, pasted back (0 outside the crop); the other
        foreground labels (structures larger than a crop) keep the warped template mask."""
        roi = np.asarray(self.roi_labels)
        centres, _ = soft_centroid(warped_masks[..., roi])  # [B, R, D]

        def organ(centre, prev_k):  # centre [B, D], prev_k [B, *S]
            x = jnp.concatenate([image, prev_k[..., None]], -1)
            crop, start = crop_around(x, centre, size=self.crop)
            p = jax.nn.softmax(self.seg_net.apply(v["seg"], crop))[..., 1:]
            return paste_back(p, start, shape=self.shape)[..., 0]

        probs = jax.vmap(organ, in_axes=(1, -1), out_axes=-1)(centres, prev[..., roi])
        return warped_masks[..., 1:].at[..., roi - 1].set(probs)

    @staticmethod
    def _assemble(organs: jax.Array) -> jax.Array:
        """``P [B, *S, K]`` from organ probabilities: background ``∏(1 − p_k)``, then
        normalised over the classes."""
        background = jnp.prod(1.0 - organs, axis=-1, keepdims=True)
        p = jnp.concatenate([background, organs], -1)
        return p / jnp.maximum(jnp.sum(p, -1, keepdims=True), 1e-6)

    def cascade(self, v: dict, image: jax.Array, *, iterations: int | None = None) -> list[dict]:
        """Every round's ``{"disp", "warped_masks", "warped_template", "probs"}``."""
        n = self.iterations if iterations is None else int(iterations)
        b = image.shape[0]
        prev = jnp.zeros((b, *self.shape, self.num_classes), jnp.float32)
        rounds = []
        for _ in range(n):
            disp = self._register(v, image, prev)
            template = jnp.broadcast_to(v["template_image"], image.shape)
            masks = jnp.broadcast_to(v["template_labels"], (*image.shape[:-1], self.num_classes))
            out = {
                "disp": disp,
                "warped_masks": warp(masks, disp),
                "warped_template": warp(template, disp),
            }
            if self.segment_with == "cascade":
                organs = self._organs(v, image, jax.lax.stop_gradient(out["warped_masks"]), prev)
                out["probs"] = self._assemble(organs)
            else:
                out["probs"] = out["warped_masks"]
            prev = jax.lax.stop_gradient(out["probs"])
            rounds.append(out)
        return rounds

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"seg_probs" (the last round's P), "atlas_probs" (S_T∘φ), "disp" (template ->
        image)}`` for ``image``."""
        last = self.cascade(variables, batch["image"])[-1]
        return {
            "seg_probs": last["probs"],
            "atlas_probs": last["warped_masks"],
            "disp": last["disp"],
        }

    # -- the loss --------------------------------------------------------------------------

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``0.5 L_reg + L_seg`` averaged over the rounds (``L_reg`` alone for the
        registration-only model)."""
        image, labels = batch["image"], batch["labels"]
        target = jax.nn.one_hot(labels, self.num_classes)
        total, parts = 0.0, {}
        rounds = self.cascade(variables, image)
        for r in rounds:
            reg, reg_parts = self.reg_objective(
                warped_masks=r["warped_masks"],
                target=target,
                warped_template=r["warped_template"],
                image=image,
            )
            loss = self.reg_weight * reg if self.segment_with == "cascade" else reg
            for name, value in reg_parts.items():
                parts[f"reg_{name}"] = parts.get(f"reg_{name}", 0.0) + value / len(rounds)
            if self.segment_with == "cascade":
                seg, seg_parts = self.seg_objective(
                    probs=r["probs"],
                    log_probs=jnp.log(jnp.maximum(r["probs"], 1e-6)),
                    target=target,
                    labels=labels,
                )
                loss = loss + seg
                for name, value in seg_parts.items():
                    parts[f"seg_{name}"] = parts.get(f"seg_{name}", 0.0) + value / len(rounds)
            total = total + loss / len(rounds)
        return total, parts

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)
