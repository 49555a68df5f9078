"""Cross-stitch network for joint registration and segmentation.

Beljaards, Elmahdy, Verbeek, Staring, "A Cross-Stitch Architecture for Joint Registration
and Segmentation in Adaptive Radiotherapy", MIDL (PMLR 121) 2020. Public code:
``moelmahdy/JRS-MTL`` (TensorFlow 1 and a PyTorch follow-up).

One network, two full encoder-decoder paths, segmentation ``S`` and registration ``R``
(:class:`~jrs_jax.nets.CrossStitchNet`), both fed ``x = [I_m, I_f, S_m]`` (images and the
one-hot moving label map on channels). After every encoder level and every decoder stage
``l`` a cross-stitch unit mixes the two feature maps, per channel ``k``::

    [X̂_S; X̂_R]_k = [[α_SS, α_SR]; [α_RS, α_RR]]_{l,k} · [X_S; X_R]_k,   α(0) = [[.9, .1]; [.1, .9]]

``S`` outputs the fixed image's label map ``Ŝ_f = softmax(S(x))``, ``R`` the displacement
``φ`` (``u``, pull-back, ``I_m∘φ ≈ I_f``). One optimiser, end to end, on labelled pairs
(``S_m`` is an input, ``S_f`` a target)::

    L = w_dice Dice(Ŝ_f, S_f) + w_bend bending(φ) + NCC(I_m∘φ, I_f) + w_lab NCC(S_m∘φ, S_f)

``Dice`` the soft Dice loss, ``bending`` the bending energy, ``NCC`` local NCC losses
(``-LNCC``, window 9), ``S_m∘φ`` the one-hot moving labels warped softly (linear
interpolation per class, :func:`~jrs_jax.spatial.warp_labels` ``mode="soft"``) so the label
term is differentiable in ``φ``.

``predict`` needs ``moving``, ``fixed`` *and* ``moving_labels`` (``S_m`` is an input, also
at inference) and returns ``disp``, ``warped`` and ``seg_probs`` = ``Ŝ_f`` (of the fixed
image): the pair evaluation then scores the registration (``val/reg_dice``) and the
fixed-image segmentation (``val/seg_dice``); the best checkpoint maximises their mean
``val/mean_dice``.

Choices where the paper is silent (or where jrs_jax departs from it):

* ``α`` per level and channel (``model.stitch="channel"``, the paper's notation) or one per
  level (``"level"``); ``"none"`` removes the units (two independent paths: the "no sharing"
  ablation). The PyTorch follow-up starts ``α`` at 0.5 everywhere (variant ``official``).
* Weights ``w_dice = w_lab = 1`` (not given); NCC window 9 and ``w_bend = 0.5`` are the
  public code's. The label NCC is computed per class channel (``convention="monai"``); the
  image NCC is VoxelMorph's (window over all channels). Optional cross-entropy on ``Ŝ_f``
  (``loss.seg_ce_weight``, default 0: the paper's Dice alone).
* Deep supervision (the public code's 3 resolutions) and patch-based training are left out:
  the synthetic images are small enough to train whole.
* ``model.arch="shared_encoder"`` swaps the network for a shared encoder with two decoders
  (:class:`~jrs_jax.nets.SharedEncoderMultiDecoder`, same widths, same inputs, same loss):
  the architecture baseline of the paper's claim. Its displacement head (a conv ``1^D``)
  is re-initialised ``N(0, head_init_std^2)`` like the two-path network's, so both start
  from a near-identity field.
* Exclusive labels only (``Ŝ_f`` is a softmax).

Config (``configs/cross_stitch.py``): ``model`` = ``{arch, stitch, stitch_self_weight,
head_init_std}`` + U-Net keywords (``features``, ``decoder_features``, ``dtype``, ...),
``loss`` = ``{dice_weight, seg_ce_weight, similarity, similarity_kwargs, regulariser,
regulariser_kwargs, reg_weight, label_similarity, label_similarity_kwargs,
label_weight}``, ``optim`` (:func:`~jrs_jax.train.make_optimizer`), ``data.batch_size``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import labelled_pair_batch
from ..losses import (
    combine,
    cross_entropy,
    regulariser_term,
    similarity_term,
    soft_dice,
    term,
)
from ..nets import CrossStitchNet, SharedEncoderMultiDecoder
from ..spatial import warp, warp_labels
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["ARCHS", "CrossStitchJRS", "network_input"]

#: ``model.arch``: two stitched paths, two independent paths, or one shared encoder.
ARCHS = ("cross_stitch", "separate", "shared_encoder")

_NET_KEYS = ("arch", "stitch", "stitch_self_weight", "head_init_std")


def network_input(
    moving: jax.Array, fixed: jax.Array, moving_labels: jax.Array, *, num_classes: int
) -> jax.Array:
    """``x = [I_m, I_f, one-hot S_m]`` on channels: ``[B, *S, C]``, ``[B, *S, C]``, int
    ``[B, *S]`` -> ``[B, *S, 2C + K]`` float32."""
    s_m = jax.nn.one_hot(moving_labels.astype(jnp.int32), num_classes, dtype=jnp.float32)
    return jnp.concatenate([moving.astype(jnp.float32), fixed.astype(jnp.float32), s_m], -1)


class CrossStitchJRS(Method):
    """Cross-stitch joint registration + segmentation (module docstring).

    State: ``{"net": NetState}`` (one network, one optimiser).
    """

    name = "cross_stitch"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed", "moving_labels")}
    refine_net = "net"  # refinement: the whole network, on sim + λ reg (the default loss)

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} needs exclusive labels (its Ŝ_f is a softmax)")
        model, loss = dict(config["model"]), config["loss"]
        self.arch = model.get("arch", "cross_stitch")
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}; got {self.arch!r}")
        unet = {k: v for k, v in model.items() if k not in _NET_KEYS}
        self.head_init_std = float(model.get("head_init_std", 1e-5))
        if self.arch == "shared_encoder":
            heads = (("seg", self.num_classes), ("disp", self.ndim))
            self.net = SharedEncoderMultiDecoder(heads=heads, **unet)
        else:
            stitch = "none" if self.arch == "separate" else model.get("stitch", "channel")
            self.net = CrossStitchNet(
                num_classes=self.num_classes,
                stitch=stitch,
                stitch_self_weight=float(model.get("stitch_self_weight", 0.9)),
                head_init_std=self.head_init_std,
                **unet,
            )
        terms = {
            "seg_dice": term(soft_dice, "seg_probs", "fixed_onehot", weight=loss["dice_weight"]),
            "sim": similarity_term(loss),
            "smooth": regulariser_term(loss),
            "label_sim": similarity_term(
                loss,
                "warped_seg",
                "fixed_onehot",
                key="label_similarity",
                weight=float(loss["label_weight"]),
            ),
        }
        if float(loss.get("seg_ce_weight", 0.0)) > 0:
            terms["seg_ce"] = term(
                cross_entropy, "seg_logits", "fixed_labels", weight=float(loss["seg_ce_weight"])
            )
        self.objective = combine(**terms)
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self._update = make_update(self.loss, train="net", donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_net, k_head = jax.random.split(key)
        x = self.zeros(2 * self.image_channels + self.num_classes)
        if self.arch == "shared_encoder":
            params = self.net.init(k_net, x)
            head = params["params"]["head_disp"]
            kernel = self.head_init_std * jax.random.normal(k_head, head["kernel"].shape)
            params["params"]["head_disp"] = {**head, "kernel": kernel}
        else:
            params = self.net.init(k_net, x, x)
        return {"net": NetState.create(params=params, tx=self.tx)}

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Random ordered pairs of distinct labelled training subjects (``S_m`` is an input,
        ``S_f`` a target)."""
        size = int(self.config["data"]["batch_size"])
        return labelled_pair_batch(
            dataset, seed=self.seed, step=step, batch_size=size, method=self.name
        )

    # -- the network and its loss ----------------------------------------------------------

    def forward(self, variables: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
        """``(logits [B, *S, K] of Ŝ_f, disp [B, *S, D])`` of a pair with ``moving_labels``."""
        x = network_input(
            batch["moving"], batch["fixed"], batch["moving_labels"], num_classes=self.num_classes
        )
        out = self.net.apply(variables["net"], *((x,) if self.arch == "shared_encoder" else (x, x)))
        return out["seg"], out["disp"]

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped", "seg_probs"}``; ``seg_probs`` segments the fixed image."""
        logits, disp = self.forward(variables, batch)
        return {
            "disp": disp,
            "warped": warp(batch["moving"], disp),
            "seg_probs": jax.nn.softmax(logits),
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``L`` of the module docstring on a labelled pair batch."""
        logits, disp = self.forward(variables, batch)
        k = self.num_classes
        return self.objective(
            seg_probs=jax.nn.softmax(logits),
            seg_logits=logits,
            fixed_labels=batch["fixed_labels"],
            fixed_onehot=jax.nn.one_hot(batch["fixed_labels"], k),
            warped=warp(batch["moving"], disp),
            fixed=batch["fixed"],
            disp=disp,
            warped_seg=warp_labels(batch["moving_labels"], disp, num_classes=k, mode="soft"),
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)

    @property
    def best_metric(self) -> str:
        """``val/mean_dice``: the mean of the registration and the fixed-image segmentation
        Dice (a register-only method would default to ``val/reg_dice``)."""
        return "val/mean_dice"
