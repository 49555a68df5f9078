"""Joint motion estimation and segmentation for cardiac MR sequences.

Qin, Bai, Schlemper, Petersen, Piechnik, Neubauer, Rueckert, "Joint Learning of Motion
Estimation and Segmentation for Cardiac MR Image Sequences", MICCAI 2018. Public code:
``cq615/Joint-Motion-Estimation-and-Segmentation`` (PyTorch).

One network (:class:`~jrs_jax.nets.MotionSegNet`) reads a sequence ``I_0 .. I_T``: frame 0
(end-diastole, ED) is the target, every later frame ``k`` a source registered to it. A shared
multi-scale encoder feeds a segmentation branch (``Ŝ_k = softmax(F_k)``, every frame) and a
motion branch whose per-frame motion features pass through a ConvGRU in time order before
the flow head (``u_k``, pull-back, ``I_k∘φ_k ≈ I_0``)::

    L = Σ_k MSE(I_k∘φ_k, I_0) + w_s Huber(∇u_k) + w_w CE(Ŝ_k∘φ_k, S_0)
        + w_c Σ_{t labelled} CE(F_t, S_t)

``Huber`` is :func:`~jrs_jax.losses.huber_smoothness` (threshold ``loss.huber_delta``), the
warped term ``CE(Ŝ_k∘φ_k, S_0)`` the cross-entropy of the source's predicted probabilities
warped linearly onto the target against the target's labels (softmax applied once, on the
logits: the public PyTorch port applies it twice), and the last term the supervised
cross-entropy on the frames that have labels (ED and ES only: labels are sparse in time, the
other frames' labels are hidden and used for evaluation only). Public-code weights ``w_s =
w_w = 0.01``; ``w_c = 1``.

Ablations (``model.arch`` / ``model.recurrent``): ``"separate"`` trains two networks of the
same architecture side by side, one on the motion terms (MSE + Huber), one on the supervised
segmentation term, each with its own optimiser (no shared encoder, no warped term);
``recurrent=False`` replaces the ConvGRU by a per-frame conv block of the same width.

Tasks: ``sequence`` (``sequence`` ``[B, T + 1, *S, C]`` -> ``disp_sequence`` ``[B, T, *S,
D]``, frame ``k + 1`` onto frame 0, ``seg_sequence_probs`` ``[B, T + 1, *S, K]``), the
method's natural one (evaluation mode ``"sequence"``; ``jrs-jax register --series``), and
``register`` (a pair: the sequence ``[fixed, moving]``), with ``seg_probs`` of the fixed and
``moving_seg_probs`` of the moving frame.

Training windows: the first ``data.frames`` frames of a training sequence (default all:
the whole cycle, so every window starts at ED, the labelled target), ``data.batch_size``
sequences per update.

Choices where the paper is silent: the Huber threshold 0.01 (on voxel displacement
gradients: near-L1, the paper's "Huber-approximated" total variation); the warped term uses
the source's *prediction* and the target's *label* (frame 0 is labelled in every window).

Config (``configs/cardiac_motion.py``): ``model`` = ``{arch, recurrent, gru_features,
head_init_std}`` + U-Net keywords, ``loss`` = ``{smooth_weight, warped_ce_weight,
seg_ce_weight, huber_delta}``, ``optim``, ``data`` = ``{batch_size, frames}``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, leading_windows, sequence_batch
from ..losses import cross_entropy, huber_smoothness, mse
from ..nets import MotionSegNet
from ..spatial import warp
from ..train import NetState, make_optimizer, make_update
from .base import Method

__all__ = ["ARCHS", "CardiacMotion"]

#: ``model.arch``: one joint network, or separate motion and segmentation networks.
ARCHS = ("joint", "separate")

_NET_KEYS = ("arch",)


class CardiacMotion(Method):
    """Joint cardiac motion estimation and segmentation (module docstring).

    State: ``{"net": NetState}`` (joint) or ``{"motion": NetState, "seg": NetState}``.
    """

    name = "cardiac_motion"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "sequence": ("sequence",)}
    eval_mode = "sequence"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} segments exclusive classes (softmax)")
        model, loss = dict(config["model"]), config["loss"]
        self.arch = model.get("arch", "joint")
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}; got {self.arch!r}")
        net = {k: v for k, v in model.items() if k not in _NET_KEYS}
        self.net = MotionSegNet(num_classes=self.num_classes, **net)
        self.w_smooth = float(loss["smooth_weight"])
        self.w_warped = float(loss["warped_ce_weight"])
        self.w_seg = float(loss["seg_ce_weight"])
        self.delta = float(loss["huber_delta"])
        frames = config["data"].get("frames")
        self.frames = None if frames is None else int(frames)
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        self.nets = ("net",) if self.arch == "joint" else ("motion", "seg")
        self._update = make_update(self.loss, train=self.nets, donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        x = self.zeros()
        keys = jax.random.split(key, len(self.nets))
        return {
            n: NetState.create(params=self.net.init(k, x, x[:, None]), tx=self.tx)
            for n, k in zip(self.nets, keys)
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """``data.batch_size`` training sequences (their first ``data.frames`` frames), drawn
        uniformly; frame 0 must be labelled."""
        _, windows = leading_windows(dataset, dataset.training(), self.frames)
        if not len(windows):
            raise ValueError(
                f"{self.name} needs training sequences (subjects with 2 or more frames)"
            )
        rng = batch_rng(self.seed, step)
        pick = rng.integers(0, len(windows), size=int(self.config["data"]["batch_size"]))
        batch = sequence_batch(dataset, windows[pick])
        if not batch["sequence_has_label"][:, 0].all():
            raise ValueError(
                f"{self.name}: the first frame of every training sequence (the target, ED) "
                "needs labels"
            )
        return batch

    # -- the network and its loss ----------------------------------------------------------

    def _apply(self, params, sequence: jax.Array) -> dict:
        return self.net.apply(params, sequence[:, 0], sequence[:, 1:])

    def track(self, variables: dict, sequence: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(seg logits [B, T + 1, *S, K], disp [B, T, *S, D])`` of a sequence."""
        if self.arch == "joint":
            out = self._apply(variables["net"], sequence)
            return out["seg"], out["disp"]
        return (
            self._apply(variables["seg"], sequence)["seg"],
            self._apply(variables["motion"], sequence)["disp"],
        )

    def predict(self, variables: dict, batch: dict) -> dict:
        """``sequence``: ``{"disp_sequence", "seg_sequence_probs"}``; pair: ``{"disp",
        "warped", "seg_probs", "moving_seg_probs"}`` (the sequence ``[fixed, moving]``)."""
        if "sequence" in batch:
            logits, disp = self.track(variables, batch["sequence"])
            return {"disp_sequence": disp, "seg_sequence_probs": jax.nn.softmax(logits)}
        seq = jnp.stack([batch["fixed"], batch["moving"]], 1)
        logits, disp = self.track(variables, seq)
        probs = jax.nn.softmax(logits)
        return {
            "disp": disp[:, 0],
            "warped": warp(batch["moving"], disp[:, 0]),
            "seg_probs": probs[:, 0],
            "moving_seg_probs": probs[:, 1],
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``L`` of the module docstring on a batch of sequences."""
        seq = batch["sequence"]
        labels, has = batch["sequence_labels"], batch["sequence_has_label"]
        logits, disp = self.track(variables, seq)
        b, t = disp.shape[:2]
        flat = lambda x: x.reshape(b * t, *x.shape[2:])
        sources, u = flat(seq[:, 1:]), flat(disp)
        target = jnp.broadcast_to(seq[:, :1], seq[:, 1:].shape)
        sim = mse(warp(sources, u), flat(target)).mean()
        smooth = huber_smoothness(u, delta=self.delta).mean()
        parts = {"sim": sim, "smooth": smooth}
        total = sim + self.w_smooth * smooth
        if self.w_seg > 0:  # supervised CE on the labelled frames only
            ce = cross_entropy(
                logits.reshape(-1, *logits.shape[2:]), labels.reshape(-1, *labels.shape[2:])
            )
            w = has.reshape(-1).astype(ce.dtype)
            parts["seg"] = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
            total = total + self.w_seg * parts["seg"]
        if self.arch == "joint" and self.w_warped > 0:  # CE(Ŝ_k∘φ_k, S_0)
            probs = jax.nn.softmax(logits[:, 1:])
            warped = warp(flat(probs), u)
            s0 = jnp.broadcast_to(labels[:, :1], labels[:, 1:].shape)
            ce = cross_entropy(warped, flat(s0), from_logits=False)
            w = jnp.broadcast_to(has[:, :1], has[:, 1:].shape).reshape(-1).astype(ce.dtype)
            parts["warped_ce"] = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
            total = total + self.w_warped * parts["warped_ce"]
        return total, parts

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._update(state, batch, key)

    @property
    def best_metric(self) -> str:
        return "val/mean_dice"
