"""Segmentation-informed registration of dynamic 2-D MR of the vocal tract.

Ruthven, Miquel, King, "A segmentation-informed deep learning framework to register dynamic
two-dimensional magnetic resonance images of the vocal tract during speech", Biomedical
Signal Processing and Control 2022. Public code: ``matthieuruthven/Speech_MRI_Registration``
(VoxelMorph, PyTorch backend).

A four-stage pipeline on two frames ``I_m``, ``I_f`` of one speaker:

1. a segmentation network ``F`` (:class:`~jrs_jax.nets.SegmentationNet`) labels both frames,
   ``Ŝ = argmax softmax F(I)``;
2. post-processing keeps the largest connected component of every class
   (:func:`~jrs_jax.postprocess.largest_component`, numpy outside ``jit``, run by
   :meth:`SegInformed2D.prepare`), ``S̃ = LCC(Ŝ)``; ``model.lcc_classes`` restricts it to
   the classes that are one piece in every frame (the air of the vocal tract is cut in two
   where the tongue touches the palate, so the ``speech`` configuration leaves it out);
3. a registration network ``g`` (:class:`~jrs_jax.nets.RegistrationNet`, plain displacement,
   the public code's ``int_steps=0``) reads the images and the cleaned segmentations,
   ``u = g([I_m, S̃_m^{fg}], [I_f, S̃_f^{fg}])`` (one-hot foreground channels, as the public
   code drops the background channel);
4. the spatial transformer warps the moving image and, in training and evaluation, the
   manual labels::

    L = MSE(I_m∘φ, I_f) + λ ‖∇u‖² + γ (1 - Dice(S_m∘φ, S_f))

Training (the public code trains the segmentation network first, in its own repository, and
registers with its post-processed predictions): steps ``0 .. schedule.seg_steps - 1`` train
``F`` (Dice + cross-entropy on labelled frames); the remaining steps train ``g`` with ``F``
frozen (no gradient can cross the post-processing anyway), each network with its own
optimiser state. ``model.seg_inputs=False`` is the image-only VoxelMorph with the same loss,
pairs and registration updates (no segmentation stage: ``schedule.seg_steps`` must be 0).

Evaluation (``pair_metrics``): the task metric ``contact_error`` = ``|C(S_m∘φ) - C(S_f)|``,
the change in the contact count (:func:`~jrs_jax.metrics.contact_count`: face-adjacent
voxel pairs) between the two classes ``eval.contact`` (default tongue 4 / soft palate 2 of the
``speech`` scenario) after warping the moving labels by nearest-neighbour lookup, and
``contact_kept`` (1 when the warped and the fixed labels agree on whether the two classes
touch, else 0).

Public-code defaults kept: MSE + λ grad-L2 + γ Dice, Adam lr 9e-4, batch 4, encoder (16, 32,
32, 32), decoder (32, 32, 32, 32, 32, 16, 16), ``int_steps=0``; of its per-fold values
``λ ∈ {0.01, 0.001}``, ``γ ∈ {1, 0.1}`` the most frequent, ``λ = 0.01``, ``γ = 1``. Pairs:
two frames of one labelled training speaker (the public code registers within a series).

Config (``configs/seg_informed_2d.py``): ``seg_model`` / ``reg_model`` (U-Net keywords),
``model`` = ``{seg_inputs, lcc_classes}``, ``loss`` = ``{reg_weight (λ), dice_weight
(γ)}``, ``schedule.seg_steps``, ``optim``, ``data.batch_size``, ``eval.contact``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, subject_batch, within_subject_pairs
from ..losses import combine, dice_ce, gradient_l2, mse, soft_dice, term
from ..metrics import contact_count
from ..nets import RegistrationNet, SegmentationNet
from ..postprocess import largest_component
from ..spatial import warp, warp_labels
from ..train import NetState, make_optimizer, make_update, variables
from .base import Method

__all__ = ["SegInformed2D"]


class SegInformed2D(Method):
    """The segmentation-informed registration pipeline (module docstring).

    State: ``{"seg": NetState, "reg": NetState}``.
    """

    name = "seg_informed_2d"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}
    eval_mode = "within_subject"

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} segments exclusive classes (softmax, argmax, LCC)")
        if self.ndim != 2:
            raise ValueError(f"{self.name} registers 2-D frames; got shape {self.shape}")
        loss = config["loss"]
        self.seg_inputs = bool(config["model"].get("seg_inputs", True))
        if not self.seg_inputs:  # the image-only baseline has no segmentation network
            self.tasks = {"register": self.tasks["register"]}
        lcc = config["model"].get("lcc_classes")
        self.lcc_classes = None if lcc is None else [int(c) for c in lcc]
        self.seg_steps = int(config["schedule"]["seg_steps"])
        steps = int(config["train"]["steps"])
        if not 0 <= self.seg_steps < steps:
            raise ValueError(
                f"schedule.seg_steps must be in [0, train.steps = {steps}); got {self.seg_steps}"
            )
        if not self.seg_inputs and self.seg_steps:
            raise ValueError(
                "model.seg_inputs=False (image-only registration) trains no segmentation "
                f"network: set schedule.seg_steps=0 (got {self.seg_steps})"
            )
        contact = (config.get("eval") or {}).get("contact") or (4, 2)
        self.contact = tuple(int(c) for c in contact)
        if len(self.contact) != 2:
            raise ValueError(f"eval.contact must name two classes; got {contact!r}")
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        self.reg_net = RegistrationNet(output="displacement", **config["reg_model"])
        self.objective = combine(
            sim=term(mse, "warped", "fixed"),
            smooth=term(gradient_l2, "disp", weight=float(loss["reg_weight"])),
            dice=term(soft_dice, "warped_seg", "fixed_seg", weight=float(loss["dice_weight"])),
        )
        self.tx_seg = make_optimizer(**config["optim"], total_steps=max(self.seg_steps, 1))
        self.tx_reg = make_optimizer(**config["optim"], total_steps=steps - self.seg_steps)
        self._seg_update = make_update(self.seg_loss, train="seg", donate=True)
        self._reg_update = make_update(self.loss, train="reg", donate=True)
        self._segment = jax.jit(lambda v, x: jnp.argmax(self.seg_net.apply(v["seg"], x), -1))

    # -- state and data --------------------------------------------------------------------

    @property
    def reg_channels(self) -> int:
        """Channels of each registration input: the image, plus ``K - 1`` foreground
        one-hot channels with ``model.seg_inputs``."""
        return self.image_channels + (self.num_classes - 1 if self.seg_inputs else 0)

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_seg, k_reg = jax.random.split(key)
        x = self.zeros(self.reg_channels)
        return {
            "seg": NetState.create(params=self.seg_net.init(k_seg, self.zeros()), tx=self.tx_seg),
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx_reg),
        }

    def phase(self, step: int) -> str:
        """``"seg"`` for the first ``schedule.seg_steps`` steps, then ``"reg"``."""
        return "seg" if int(step) < self.seg_steps else "reg"

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Labelled training frames (segmentation phase) or ordered pairs of two labelled
        frames of one training speaker (registration phase)."""
        b = int(self.config["data"]["batch_size"])
        rng = batch_rng(self.seed, step)
        lab = [i for i in dataset.training() if dataset.subjects[i].has_labels]
        if self.phase(step) == "seg":
            if not lab:
                raise ValueError(f"{self.name} needs labelled training frames")
            return subject_batch(dataset, rng.choice(np.asarray(lab, np.int64), size=b))
        try:
            pairs = within_subject_pairs(rng, dataset, lab, b)
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None
        return pair_batch(dataset, pairs)

    # -- the pipeline ----------------------------------------------------------------------

    def clean_segmentation(self, variables: dict, image) -> np.ndarray:
        """Stages 1-2 (host side): ``LCC(argmax F(I))``, int32 ``[B, *S]``."""
        raw = np.asarray(self._segment(variables, jnp.asarray(image)))
        return largest_component(
            raw, num_classes=self.num_classes, classes=self.lcc_classes, batched=True
        ).astype(np.int32)

    def prepare(self, variables: dict, batch: dict, task: str) -> dict:
        """Adds the cleaned segmentations ``moving_seg`` / ``fixed_seg`` of a pair."""
        if task != "register" or not self.seg_inputs:
            return batch
        return {
            **batch,
            "moving_seg": self.clean_segmentation(variables, batch["moving"]),
            "fixed_seg": self.clean_segmentation(variables, batch["fixed"]),
        }

    def _reg_input(self, image: jax.Array, seg: jax.Array | None) -> jax.Array:
        if not self.seg_inputs:
            return image
        onehot = jax.nn.one_hot(seg, self.num_classes, dtype=jnp.float32)[..., 1:]
        return jnp.concatenate([image.astype(jnp.float32), onehot], -1)

    def register(self, variables: dict, batch: dict) -> jax.Array:
        """Stage 3: ``u [B, *S, D]`` (needs ``moving_seg`` / ``fixed_seg`` with segmentation
        inputs: :meth:`prepare` adds them)."""
        m = self._reg_input(batch["moving"], batch.get("moving_seg"))
        f = self._reg_input(batch["fixed"], batch.get("fixed_seg"))
        return self.reg_net.apply(variables["reg"], m, f)["disp"]

    def predict(self, variables: dict, batch: dict) -> dict:
        """Pair: ``{"disp", "warped"}`` and, with segmentation inputs, the cleaned
        segmentations as one-hot ``seg_probs`` (fixed) / ``moving_seg_probs``. Image:
        ``{"seg_probs"}`` (softmax of ``F``, before post-processing)."""
        out = {}
        if "image" in batch:
            out["seg_probs"] = jax.nn.softmax(self.seg_net.apply(variables["seg"], batch["image"]))
        if "moving" in batch:
            if self.seg_inputs and "fixed_seg" not in batch:
                raise ValueError(
                    f"{self.name}.predict needs moving_seg / fixed_seg: call Method.run, whose "
                    "prepare step adds them"
                )
            disp = self.register(variables, batch)
            out.update(disp=disp, warped=warp(batch["moving"], disp))
            if self.seg_inputs:
                k = self.num_classes
                out["seg_probs"] = jax.nn.one_hot(batch["fixed_seg"], k)
                out["moving_seg_probs"] = jax.nn.one_hot(batch["moving_seg"], k)
        return out

    # -- losses and steps ------------------------------------------------------------------

    def seg_loss(self, variables: dict, batch: dict, key: jax.Array):
        """Stage-1 training: Dice + cross-entropy of ``F`` on labelled frames."""
        logits = self.seg_net.apply(variables["seg"], batch["image"])
        value = dice_ce(logits, batch["labels"]).mean()
        return value, {"seg": value}

    def loss(self, variables: dict, batch: dict, key: jax.Array):
        """``L`` of the module docstring (the manual labels in the Dice term)."""
        disp = self.register(variables, batch)
        k = self.num_classes
        return self.objective(
            warped=warp(batch["moving"], disp),
            fixed=batch["fixed"],
            disp=disp,
            warped_seg=warp_labels(batch["moving_labels"], disp, num_classes=k, mode="soft"),
            fixed_seg=jax.nn.one_hot(batch["fixed_labels"], k),
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        if self.phase(step) == "seg":
            return self._seg_update(state, batch, key)
        if self.seg_inputs:
            batch = self.prepare(variables(state), batch, "register")
        return self._reg_update(state, batch, key)

    def pair_metrics(self, prediction, batch) -> dict:
        """``contact_error`` and ``contact_kept`` per pair (module docstring)."""
        from ..evaluation import warp_labels_nearest  # evaluation imports the methods

        a, b = self.contact
        warped = np.asarray(
            warp_labels_nearest(jnp.asarray(batch["moving_labels"]), prediction["disp"])
        )
        after = contact_count(warped, a, b, batched=True)
        target = contact_count(np.asarray(batch["fixed_labels"]), a, b, batched=True)
        return {
            "contact_error": np.abs(after - target).astype(np.float64),
            "contact_kept": ((after > 0) == (target > 0)).astype(np.float64),
        }

    @property
    def best_metric(self) -> str:
        return "val/reg_dice"
