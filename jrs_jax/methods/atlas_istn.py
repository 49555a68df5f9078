"""Atlas-ISTN: joint segmentation, registration and atlas construction.

Sinclair, Schuh, Hahn, Petersen, Bai, Batten, Schaap & Glocker, "Atlas-ISTN: Joint
segmentation, registration and atlas construction with image-and-spatial transformer
networks", MedIA 2022 (public code ``biomedia-mira/atlas-istn``, PyTorch).

An image transformer network (ITN, :class:`~jrs_jax.nets.SegmentationNet`) maps an image ``x``
to ``K`` class logits; its structure map ``ŷ = ITN(x)`` is their softmax (``model.itn_output =
"softmax"``) or the raw logits (``"linear"``, the public code). A spatial transformer network
(STN) sees the foreground channels of the atlas label map ``y^a`` ``[*S, K]`` and of ``ŷ`` and
predicts ``Φ``, the pull field from atlas space onto the subject (``warp(atlas, disp) ~
subject``), composed of an affine part ``A`` (:class:`~jrs_jax.nets.AffineRegistrationNet`,
``model.affine``) and a stationary velocity ``v`` (:class:`~jrs_jax.nets.RegistrationNet`,
integrated at half resolution with 6 squarings)::

    Φ   = A ∘ exp(v)          disp     = compose(exp(v), u_A)
    Φ⁻¹ = exp(−v) ∘ A⁻¹       inv_disp = compose(u_{A⁻¹}, exp(−v))

(``compose(u, w)`` applies ``w`` first: ``warp(I, compose(u, w)) == warp(warp(I, w), u)``).
``∘Φ`` / ``∘Φ⁻¹`` are linear pull-back warps with border padding. With ``y`` the one-hot
ground truth and ``[fg]`` the foreground channels, all terms are mean squared errors::

    L_S   = ‖ŷ − y‖²                                       (all K channels)
    L_a2s = ‖(y^a∘Φ)[fg] − y[fg]‖²
    L_s2a = ‖(y∘Φ⁻¹)[fg] − y^a[fg]‖²
    L     = α L_S + ω (L_a2s + L_s2a + λ L_reg),   L_reg = grad-L2 of the non-rigid part exp(v)

``α = loss.seg_weight`` (1), ``ω = loss.omega`` (1), ``λ = loss.reg_weight`` (500, the public
code's ``lambda``). ``L_reg`` is VoxelMorph's gradient-L2 (:func:`~jrs_jax.losses.gradient_l2`)
of ``exp(v)`` measured, as the public code does, in ``grid_sample`` units (half the image extent
per axis, ``loss.reg_units = "normalized"``), so ``λ = 500`` keeps its meaning; ``"voxels"``
measures it in voxels. ``loss.structure_target = "labels"`` (the paper's equations and the public
code) uses the ground truth ``y`` in ``L_a2s`` and ``L_s2a``; ``"itn"`` uses ``ŷ`` there instead
(as refinement must). The ITN learns from ``L_S`` and, through the STN's input, from the
coupling terms; ITN and STN are trained jointly, one Adam state each.

Atlas construction (the atlas, an image ``[*S, C]`` and a soft label map ``[*S, K]``, is two
plain arrays of the state): ``init(key, dataset)`` sets it to the mean image and the mean one-hot
label map of the labelled training subjects. An epoch is ``ceil(N / batch_size)`` steps over a
fresh permutation of the ``N`` labelled training subjects; at its last step (``atlas.update_every
= "epoch"``, or every ``k`` steps for an integer ``k``) :meth:`sample_batch` adds the whole
training set (``all_images``, ``all_labels``) and :meth:`train_step`, after the gradient update,
warps every subject into atlas space with the updated networks in one ``vmap``-batched pass
(:func:`~jrs_jax.train.warp_subjects_to_atlas`) and moves the atlas towards their mean::

    z^a ← (1 − η) z^a + η · mean_n(z_n ∘ Φ_n⁻¹),    z = (image, one-hot labels),  η = atlas.rate

(0.01, the public code's ``alpha``; the public code warps with its subject-to-atlas transform,
which is ``Φ⁻¹`` here). The per-batch EMA of :func:`~jrs_jax.train.make_atlas_step` is not this
regime (it averages one batch, not the epoch's whole training set).

Test-time refinement (:mod:`jrs_jax.refinement`, task ``segment``; ``refine.steps = 50`` Adam
steps at ``refine.lr = 1e-3``, the public code's ``refine`` and ``learning_rate``): the ITN is
frozen and the STN's weights are optimised on the single image for the paper's ::

    ω (‖(y^a∘Φ)[fg] − ŷ[fg]‖² + ‖(ŷ∘Φ⁻¹)[fg] − y^a[fg]‖² + λ* L_reg),   λ* = refine.reg_weight or λ

(``refine.s2a = False`` drops the second term: the public code refines with ``‖ŷ − y^a∘Φ‖² +
λ L_reg`` only). Its result is ``y^a∘Φ``, the warped atlas: a segmentation with the atlas's
topology.

Prediction (task ``segment``): ``seg_probs`` is the ITN's softmax (``model.segment_with =
"itn"``) or the warped atlas ``y^a∘Φ`` (``"atlas"``; evaluation reads ``seg_probs`` only), plus
``itn_probs``, ``atlas_probs`` (``y^a∘Φ``), ``disp`` (``Φ``), ``inv_disp`` (``Φ⁻¹``),
``warped_atlas`` (the atlas image on the subject), ``velocity`` and, with the affine part,
``matrix``.

The public code's ω fading (``ω_e = ω / (1 + exp(−(e − E) / 25))`` at epoch ``e``) is
``loss.omega_fading_epoch = E`` (off by default; ``:official`` uses it); its learning-rate
halving every few hundred epochs is not reproduced. Atlas files: :meth:`write_outputs`.

Config: ``configs/atlas_istn.py``.
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_choice
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, subject_batch
from ..losses import combine, gradient_l2, mse, term
from ..nets import AffineRegistrationNet, RegistrationNet, SegmentationNet
from ..spatial import (
    affine_to_displacement,
    compose,
    to_normalized_displacement,
    warp,
)
from ..train import (
    NetState,
    ema_update,
    make_optimizer,
    make_update,
    variables,
    warp_subjects_to_atlas,
)
from .base import Method

__all__ = [
    "AtlasISTN",
    "epoch_indices",
    "invert_affine",
    "omega_fading",
    "svf_displacement",
]

#: Choices of the config keys (module docstring).
SEGMENT_WITH = ("itn", "atlas")
ITN_OUTPUTS = ("softmax", "linear")
STRUCTURE_TARGETS = ("labels", "itn")
REG_UNITS = ("normalized", "voxels")
#: The keys :meth:`AtlasISTN.sample_batch` adds at the steps that update the atlas.
ALL_KEYS = ("all_images", "all_labels")


# ----------------------------------------------------------------------------- pieces


def svf_displacement(velocity: jax.Array, *, steps: int, downsize: int) -> jax.Array:
    """``exp(v)`` by scaling and squaring at ``1 / downsize`` resolution, resized back: the
    integration of :class:`~jrs_jax.nets.RegistrationNet` (``output="velocity"``);
    ``svf_displacement(-v, ...)`` is the inverse transform.

    Shapes: ``velocity [B, *S, D] -> [B, *S, D]``.
    """
    from ..nets.registration import _integrate  # the one implementation of this integration

    return _integrate(velocity, steps, downsize)


def invert_affine(matrix: jax.Array) -> jax.Array:
    """The inverse of an affine map about the volume centre (the convention of
    :func:`~jrs_jax.spatial.affine_to_displacement`): ``φ(x) = A (x − c) + t + c`` gives
    ``φ⁻¹(y) = A⁻¹ (y − c) − A⁻¹ t + c``.

    Shapes: ``[B, D, D+1] -> [B, D, D+1]``.
    """
    d = matrix.shape[-2]
    a_inv = jnp.linalg.inv(matrix[..., :d, :d])
    return jnp.concatenate([a_inv, -a_inv @ matrix[..., :d, d:]], axis=-1)


def omega_fading(epoch: int, *, omega: float, start: float | None, width: float) -> float:
    """``ω`` at (1-based) ``epoch``: ``ω`` itself without fading (``start=None``), else the
    public code's sigmoid ramp ``ω / (1 + exp(−(epoch − start) / width))``."""
    if start is None:
        return float(omega)
    return float(omega) / (1.0 + math.exp(-(epoch - float(start)) / float(width)))


def epoch_indices(pool, *, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, bool]:
    """``(subject indices [batch_size], last step of the epoch?)`` of training step ``step``.

    An epoch is ``ceil(len(pool) / batch_size)`` steps over one permutation of ``pool`` (drawn
    from ``(seed, epoch)``); its last batch is filled up cyclically from the permutation's
    start, so every batch has ``batch_size`` subjects and every subject appears in each epoch.
    """
    pool = np.asarray(pool, np.int64)
    per_epoch = -(-len(pool) // int(batch_size))
    epoch, i = divmod(int(step), per_epoch)
    order = np.resize(batch_rng(seed, epoch, 1).permutation(pool), per_epoch * batch_size)
    return order[i * batch_size : (i + 1) * batch_size], i == per_epoch - 1


# ----------------------------------------------------------------------------- method


class AtlasISTN(Method):
    """Atlas-ISTN (module docstring). State: ``{"itn": NetState, "stn": NetState,
    "atlas_image": [*S, C], "atlas_labels": [*S, K]}``; the STN's parameters are
    ``{"svf": ..., "affine": ...}`` (``"affine"`` only with ``model.affine``)."""

    name = "atlas_istn"
    tasks: ClassVar[dict] = {"segment": ("image",)}
    refine_task = "segment"
    refine_net = "stn"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} needs exclusive labels (its atlas is a softmax map)")
        if self.num_classes < 2:
            raise ValueError(f"{self.name} needs labels: num_classes >= 2")
        model, loss, atlas = config["model"], config["loss"], config["atlas"]
        self.segment_with = check_choice("model.segment_with", model["segment_with"], SEGMENT_WITH)
        self.itn_output = check_choice("model.itn_output", model["itn_output"], ITN_OUTPUTS)
        self.use_affine = bool(model["affine"])
        self.structure_target = check_choice(
            "loss.structure_target", loss["structure_target"], STRUCTURE_TARGETS
        )
        self.reg_units = check_choice("loss.reg_units", loss["reg_units"], REG_UNITS)
        self.itn = SegmentationNet(num_classes=self.num_classes, **config["itn_model"])
        stn = dict(config["stn_model"])
        if stn.get("output") != "velocity":
            raise ValueError(
                f"{self.name} needs a velocity STN (stn_model.output='velocity'): its inverse "
                f"transform integrates -v; got output={stn.get('output')!r}"
            )
        self.svf = RegistrationNet(**stn)
        self.affine_net = AffineRegistrationNet(**{k: v for k, v in stn.items() if k in _ENCODER})
        self.omega = float(loss["omega"])
        self.fading = (loss.get("omega_fading_epoch"), float(loss.get("omega_fading_width", 25)))
        self.rate = float(atlas["rate"])
        every = atlas["update_every"]
        if every != "epoch" and not (isinstance(every, int) and every >= 1):
            raise ValueError(f"atlas.update_every must be 'epoch' or steps >= 1; got {every!r}")
        self.update_every = every
        lam = float(loss["reg_weight"])
        smooth = term(gradient_l2, "field", weight=lam)
        self.seg_objective = combine(seg=term(mse, "prime", "onehot", weight=loss["seg_weight"]))
        self.coupling = combine(
            a2s=term(mse, "atlas_on_subject", "target"),
            s2a=term(mse, "target_on_atlas", "atlas"),
            smooth=smooth,
        )
        refine = config.get("refine") or {}
        lam_refine = lam if refine.get("reg_weight") is None else float(refine["reg_weight"])
        w = self.omega
        self.refine_objective = combine(
            a2s=term(mse, "atlas_on_subject", "target", weight=w),
            **(
                {"s2a": term(mse, "target_on_atlas", "atlas", weight=w)}
                if refine.get("s2a", True)
                else {}
            ),
            smooth=term(gradient_l2, "field", weight=w * lam_refine),
        )
        self.tx = make_optimizer(**config["optim"], total_steps=int(config["train"]["steps"]))
        nets = ("itn", "stn")
        self._update = make_update(self.loss, train=nets, donate=True)
        update = make_update(self.loss, train=nets, jit=False)

        def with_atlas(state, batch, key):
            state, metrics = update(state, batch, key)
            return self.update_atlas(state, batch["all_images"], batch["all_labels"], metrics)

        self._update_with_atlas = jax.jit(with_atlas, donate_argnums=(0,))

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        """Networks from ``key``; the atlas is the mean image ``[*S, C]`` and the mean one-hot
        label map ``[*S, K]`` of the labelled training subjects of ``dataset`` (zeros of the
        same shapes and dtypes without one: the checkpoint template)."""
        k_itn, k_svf, k_aff = jax.random.split(key, 3)
        fg = self.zeros(self.num_classes - 1)
        stn = {"svf": self.svf.init(k_svf, fg, fg)}
        if self.use_affine:
            stn["affine"] = self.affine_net.init(k_aff, fg, fg)
        image = jnp.zeros((*self.shape, self.image_channels), jnp.float32)
        labels = jnp.zeros((*self.shape, self.num_classes), jnp.float32)
        if dataset is not None:
            pool = self._pool(dataset)
            s = subject_batch(dataset, pool, channels=self.channel("image"))
            image = jnp.asarray(s["image"].mean(0), jnp.float32)
            onehot = np.eye(self.num_classes, dtype=np.float32)[s["labels"]]
            labels = jnp.asarray(onehot.mean(0), jnp.float32)
        return {
            "itn": NetState.create(params=self.itn.init(k_itn, self.zeros()), tx=self.tx),
            "stn": NetState.create(params=stn, tx=self.tx),
            "atlas_image": image,
            "atlas_labels": labels,
        }

    def _pool(self, dataset: Dataset) -> list[int]:
        pool = dataset.labelled()
        if not pool:
            raise ValueError(f"{self.name} needs at least 1 labelled training subject; got 0")
        return pool

    def atlas_step(self, step: int, per_epoch: int) -> bool:
        """Whether training step ``step`` (0-based) ends with an atlas update."""
        if self.rate == 0.0:
            return False
        every = per_epoch if self.update_every == "epoch" else int(self.update_every)
        return (int(step) + 1) % every == 0

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """``image`` ``[B, *S, C]`` and ``labels`` ``[B, *S]`` of the epoch's next labelled
        subjects (:func:`epoch_indices`); ``omega`` ``[B]`` with ω fading; at the steps that
        update the atlas also the whole training set, ``all_images`` ``[N, *S, C]`` and
        ``all_labels`` ``[N, *S]``."""
        pool = self._pool(dataset)
        size = int(self.config["data"]["batch_size"])
        idx, _ = epoch_indices(pool, batch_size=size, seed=self.seed, step=step)
        ch = self.channel("image")
        s = subject_batch(dataset, idx, channels=ch)
        batch = {"image": s["image"], "labels": s["labels"]}
        per_epoch = -(-len(pool) // size)
        if self.fading[0] is not None:
            w = omega_fading(
                int(step) // per_epoch + 1,
                omega=self.omega,
                start=self.fading[0],
                width=self.fading[1],
            )
            batch["omega"] = np.full((size,), w, np.float32)
        if self.atlas_step(step, per_epoch):
            everyone = subject_batch(dataset, pool, channels=ch)
            batch.update(all_images=everyone["image"], all_labels=everyone["labels"])
        return batch

    # -- the networks ----------------------------------------------------------------------

    def transforms(self, stn: dict, atlas_fg: jax.Array, prime_fg: jax.Array) -> dict:
        """The STN on ``(y^a[fg], ŷ[fg])`` ``[B, *S, K - 1]`` each: ``disp`` (``Φ``, atlas ->
        subject), ``inv_disp`` (``Φ⁻¹``), ``svf_disp`` (``exp(v)``), ``velocity``, all
        ``[B, *S, D]``, and with the affine part ``matrix`` ``[B, D, D+1]``."""
        out = self.svf.apply(stn["svf"], atlas_fg, prime_fg)
        v, u = out["velocity"], out["disp"]
        u_inv = svf_displacement(
            -v, steps=self.svf.integration_steps, downsize=self.svf.int_downsize
        )
        fields = {"svf_disp": u, "velocity": v, "disp": u, "inv_disp": u_inv}
        if self.use_affine:
            matrix = self.affine_net.apply(stn["affine"], atlas_fg, prime_fg)["matrix"]
            u_a = affine_to_displacement(matrix, self.shape)
            u_a_inv = affine_to_displacement(invert_affine(matrix), self.shape)
            fields.update(matrix=matrix, disp=compose(u, u_a), inv_disp=compose(u_a_inv, u_inv))
        return fields

    def forward(self, variables: dict, image: jax.Array) -> dict:
        """``logits``, ``probs`` (softmax) and ``prime`` (``ŷ``) ``[B, *S, K]`` of the ITN,
        ``atlas`` (``y^a`` broadcast to ``[B, *S, K]``) and the STN's :meth:`transforms`."""
        logits = self.itn.apply(variables["itn"], image)
        probs = jax.nn.softmax(logits)
        prime = probs if self.itn_output == "softmax" else logits
        atlas = jnp.broadcast_to(variables["atlas_labels"][None], prime.shape).astype(prime.dtype)
        fields = self.transforms(variables["stn"], atlas[..., 1:], prime[..., 1:])
        return {"logits": logits, "probs": probs, "prime": prime, "atlas": atlas, **fields}

    def predict(self, variables: dict, batch: dict) -> dict:
        """``seg_probs`` (``model.segment_with``), ``itn_probs``, ``atlas_probs`` (``y^a∘Φ``)
        ``[B, *S, K]``; ``warped_atlas`` ``[B, *S, C]``; ``disp``, ``inv_disp``, ``velocity``
        ``[B, *S, D]``; ``matrix`` ``[B, D, D+1]`` with the affine part."""
        f = self.forward(variables, batch["image"])
        atlas_probs = warp(f["atlas"], f["disp"])
        image = jnp.broadcast_to(
            variables["atlas_image"][None], (*f["disp"].shape[:-1], self.image_channels)
        )
        out = {
            "seg_probs": f["probs"] if self.segment_with == "itn" else atlas_probs,
            "itn_probs": f["probs"],
            "atlas_probs": atlas_probs,
            "warped_atlas": warp(image, f["disp"]),
            **{k: f[k] for k in ("disp", "inv_disp", "velocity", "matrix") if k in f},
        }
        return out

    # -- losses ----------------------------------------------------------------------------

    def _reg_field(self, svf_disp: jax.Array) -> jax.Array:
        """The field ``L_reg`` smooths: ``exp(v)`` in ``loss.reg_units``."""
        if self.reg_units == "normalized":
            return to_normalized_displacement(svf_disp)
        return svf_disp

    def coupling_inputs(self, f: dict, target: jax.Array) -> dict:
        """The inputs of ``L_a2s``, ``L_s2a`` and ``L_reg`` (foreground channels): ``y^a∘Φ``,
        ``target`` (``y`` or ``ŷ``), ``target∘Φ⁻¹``, ``y^a`` and the regularised field."""
        return {
            "atlas_on_subject": warp(f["atlas"], f["disp"])[..., 1:],
            "target": target[..., 1:],
            "target_on_atlas": warp(target, f["inv_disp"])[..., 1:],
            "atlas": f["atlas"][..., 1:],
            "field": self._reg_field(f["svf_disp"]),
        }

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``α L_S + ω (L_a2s + L_s2a + λ L_reg)`` (module docstring); ``ω`` from
        ``batch["omega"]`` ``[B]`` when given (fading), else ``loss.omega``."""
        f = self.forward(variables, batch["image"])
        onehot = jax.nn.one_hot(batch["labels"], self.num_classes, dtype=f["prime"].dtype)
        target = onehot if self.structure_target == "labels" else f["prime"]
        seg, parts = self.seg_objective(reduce="none", prime=f["prime"], onehot=onehot)
        coupled, coupled_parts = self.coupling(reduce="none", **self.coupling_inputs(f, target))
        omega = batch.get("omega", self.omega)
        parts = {**parts, **coupled_parts}
        if "omega" in batch:
            parts["omega"] = jnp.mean(omega)
        return jnp.mean(seg + omega * coupled), parts

    def refine_loss(self, variables: dict, batch, key: jax.Array):
        """``ω (‖y^a∘Φ − ŷ‖² + ‖ŷ∘Φ⁻¹ − y^a‖² + λ* L_reg)`` (foreground channels) on one
        image; the ITN is frozen by :mod:`jrs_jax.refinement` (only ``variables["stn"]`` is
        optimised)."""
        f = self.forward(variables, batch["image"])
        return self.refine_objective(**self.coupling_inputs(f, f["prime"]))

    # -- the regime ------------------------------------------------------------------------

    def atlas_targets(self, variables: dict, images: jax.Array, labels: jax.Array):
        """``mean_n(z_n ∘ Φ_n⁻¹)``: every subject (``images [N, *S, C]``, integer ``labels
        [N, *S]``) warped into atlas space in one ``vmap`` pass
        (:func:`~jrs_jax.train.warp_subjects_to_atlas`) -> ``(image [*S, C], labels [*S, K])``."""
        c = self.image_channels
        onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        subjects = jnp.concatenate([jnp.asarray(images, jnp.float32), onehot], axis=-1)
        atlas = jnp.concatenate([variables["atlas_image"], variables["atlas_labels"]], axis=-1)

        def to_atlas(v, moving, fixed):  # moving: one subject's (image, labels); fixed: atlas
            f = self.forward({**v, "atlas_labels": fixed[0, ..., c:]}, moving[..., :c])
            return {"disp": f["inv_disp"]}

        warped, _ = warp_subjects_to_atlas(to_atlas, variables, atlas, subjects)
        mean = warped.mean(0)
        return mean[..., :c], mean[..., c:]

    def update_atlas(self, state: dict, images, labels, metrics: dict | None = None):
        """``z^a ← (1 − η) z^a + η mean_n(z_n ∘ Φ_n⁻¹)`` with the state's networks; returns
        ``(state, metrics)`` with ``metrics["atlas_shift"]``, the mean absolute change of the
        label map."""
        image, labels_ = self.atlas_targets(variables(state), images, labels)
        new = {
            "atlas_image": ema_update(state["atlas_image"], image, decay=1.0 - self.rate),
            "atlas_labels": ema_update(state["atlas_labels"], labels_, decay=1.0 - self.rate),
        }
        shift = jnp.mean(jnp.abs(new["atlas_labels"] - state["atlas_labels"]))
        return {**state, **new}, {**(metrics or {}), "atlas_shift": shift}

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        """One joint ITN + STN update; with ``all_images`` in the batch (the last step of an
        epoch) followed by the atlas update (two jitted steps, each compiled once)."""
        if ALL_KEYS[0] in batch:
            return self._update_with_atlas(state, batch, key)
        return self._update(state, batch, key)

    # -- outputs ---------------------------------------------------------------------------

    def write_outputs(self, state, workdir: str) -> list[str]:
        """The learned atlas in the run folder: ``atlas_image.nii.gz`` (float32; 2-D as
        ``[H, W, 1]``), ``atlas_labels.nii.gz`` (argmax, int32; the dataset's label names) on
        an identity (voxel) grid, and ``figures/atlas.png`` (the image with the label contours
        and the foreground probability ``1 − y^a_0``)."""
        from .. import viz
        from ..data import save_image

        image = np.asarray(jax.device_get(state["atlas_image"]), np.float32)
        soft = np.asarray(jax.device_get(state["atlas_labels"]), np.float32)
        hard = np.argmax(soft, axis=-1).astype(np.int32)

        def as_file(a):  # 2-D data are [H, W, 1] (+ channels) volumes
            return a[:, :, None] if self.ndim == 2 else a

        names = (self.config.get("data") or {}).get("label_names")
        names = {int(k): v for k, v in names.items()} if names else None
        paths = [os.path.join(workdir, f) for f in ("atlas_image.nii.gz", "atlas_labels.nii.gz")]
        flat = image[..., 0] if image.shape[-1] == 1 else image
        save_image(paths[0], as_file(flat), affine=np.eye(4))
        save_image(paths[1], as_file(hard), affine=np.eye(4), label_names=names)
        fig = viz.frame_strip(
            np.stack([image[..., :1], 1.0 - soft[..., :1]]),
            np.stack([hard, hard]),
            titles=["atlas image", "atlas foreground probability"],
        )
        paths.append(str(viz.save_figure(fig, os.path.join(workdir, "figures", "atlas.png"))))
        return paths


#: The encoder keywords the affine STN takes from ``stn_model``.
_ENCODER = (
    "features",
    "convs_per_level",
    "norm",
    "downsample",
    "dtype",
    "param_dtype",
    "remat",
    "conv_impl",
)
