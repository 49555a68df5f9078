"""JSSR: joint synthesis, segmentation and registration of two modalities.

Li, Huo, Yan, Lu, Xiao, Harrison et al., "JSSR: A Joint Synthesis, Segmentation, and
Registration System for 3D Multi-modal Image Alignment of Large-Scale Pathological CT
Scans", ECCV 2020. No public code exists: every choice below is jrs_jax's.

Multi-modal registration made mono-modal by synthesis. The moving image ``x`` is in modality
X, the fixed image ``y`` in modality Y (channels ``data.moving_channel`` /
``data.fixed_channel`` of a two-modality dataset, e.g. the ``multimodal`` scenario). Four
networks, each with its own optimiser state::

    G(x)           generator: x rendered in modality Y      (nets.ImageGenerator, U-Net skips)
    Φ(G(x), y)     registration: τ, pull-back               (nets.RegistrationNet)
    S(·)           segmentation of modality-Y images         (nets.SegmentationNet)
    D(·)           discriminator: real y vs G(x, y)          (nets.PatchDiscriminator)

Objectives (the spec's, with ``τ(I) = warp(I, τ)``)::

    L_GAN     = E log D(y) + E log(1 − D(G(x, y)))                (losses.gan_*_loss, logits)
    L_syn+reg = 2 ||τ(G(x, y)) − y||_1 + λ_reg ||∇τ||² + λ_syn L_GAN        (min over G, Φ)
    L_seg     = λ_seg L_dice^reg + λ_sup L_dice^sup
    L_dice^reg = 1 − Dice(τ(S(G(x, y))), S(y))                   (soft Dice of predictions)
    L_dice^sup = 1 − Dice(S(y_l), labels_l)                      (labelled modality-Y images)

The factor 2 on the registration L1 stands for the synthesis L1 ``||G(x, y) − y_aligned||_1``,
whose target (``y`` aligned to ``x``) does not exist: the paper approximates it by the
registration L1, and relies on ``G``'s skip connections to keep it from the trivial output
``G(x, y) = y`` (which makes ``τ`` the identity).

The generator's input (``gen_inputs``, a jrs_jax decision): ``x`` alone by default
(``"moving"``, pix2pix's ``G(x)``; the formulas below write ``G(x, y)`` as the spec does).
With the spec's pair input (``"pair"``, ``configs/jssr.py:pair``) the skip connections carry
``y`` to the output as easily as ``x``, and ``G`` minimises ``||τ(G(x, y)) − y||_1`` by
copying ``y``: measured on 64 x 64 inverted-contrast pairs (600 updates, networks 16-32-32),
the registration Dice stayed at the identity's, 0.7912 against 0.7912, while with ``G(x)``
it reached 0.879 after the 300 pretraining updates. Nothing in the objective penalises the
copy; only an input without ``y`` rules it out.

Schedule (``schedule.pretrain_steps = P`` of ``train.steps = N``):

* ``schedule.mode = "joint"`` (JSSR): for the first ``P`` updates, pretraining: ``S`` with
  ``L_dice^sup`` alone and ``G + Φ`` with ``L_syn+reg``; then ``N − P`` joint updates of
  ``G, Φ, S`` with ``L_syn+reg + λ_seg (L_dice^reg + L_dice^sup)``. Every update is the
  classic GAN alternation: one ``D`` step (``−L_GAN``, i.e. binary cross-entropy on
  logits), then one step of the other networks against the updated ``D``
  (:func:`~jrs_jax.train.make_adversarial_step`; the non-saturating generator loss
  ``−log D(G)``, the usual replacement of ``log(1 − D(G))``).
* ``"separate"`` (the reviewer's baseline: synthesis, then registration, trained
  separately): the first ``P`` updates train ``G`` (with ``D``) alone on ``2 ||G(x, y) −
  y||_1 + λ_syn L_GAN``, i.e. the same objective with ``τ`` fixed to the identity; the last
  ``N − P`` train ``Φ`` alone on ``2 ||τ(G(x, y)) − y||_1 + λ_reg ||∇τ||²`` with ``G``
  frozen. ``S`` learns ``L_dice^sup`` throughout; nothing ties it to ``G`` or ``Φ``.

``loss.seg_weight = 0`` (``configs/jssr.py:no_seg``) drops the consistency term: the
joint synthesis + registration without segmentation (``S`` is still trained supervised, for
the segmentation column).

Choices where the paper is silent (jrs_jax decisions):

* ``λ_reg = 1`` (the ``gradient_l2`` of VoxelMorph, on a 1-voxel field scale), ``λ_syn =
  0.1``, ``λ_seg = λ_sup = 1`` (the paper's one ``λ_seg`` on both Dice terms; kept as two
  weights so that ``λ_seg = 0`` still trains ``S``); ``P = N / 2``. Adam 1e-3 for ``G, Φ,
  S``; 2e-4 with ``b1 = 0.5`` for ``D`` (pix2pix).
* ``G`` ends in a sigmoid (images lie in ``[0, 1]``); ``D`` is a PatchGAN with instance norm.
* ``L_dice^sup``: labelled training subjects' modality-Y images (channel ``data.fixed_channel``,
  or the dataset's ``label_modality`` when it records one; a dataset whose labels belong
  to the other modality is refused). Soft Dice over all classes, background included.
* ``L_dice^reg`` warps the probabilities ``S(G(x, y))`` linearly with ``τ`` (a soft warp),
  so its gradient reaches ``Φ``, ``G`` and ``S``.

``predict`` (task ``register``; ``moving`` in X, ``fixed`` in Y) returns ``disp`` (``τ``),
``warped`` (``τ(x)``, X contrast), ``synth`` (``G(x, y)``), ``warped_synth`` (``τ(G(x, y))``),
``seg_probs`` (``S(y)``) and ``moving_seg_probs`` (``S(G(x, y))``: ``x`` segmented through
synthesis), so the pair evaluation scores the cross-modal registration Dice, the Y
segmentation, ``seg_consistency``, and :meth:`JSSR.pair_metrics` adds
``seg_dice_moving``: the Dice of ``S(G(x, y))`` with the moving image's labels (segmentation
of modality X through synthesis). Task ``segment`` runs ``S`` on a modality-Y image.

On a one-modality dataset with ``data.moving_channel`` / ``data.fixed_channel`` left
``None`` (the smoke config), the method runs mono-modally (``G`` translates Y to Y).

Config (``configs/jssr.py``): ``gen_model``, ``reg_model``, ``seg_model`` (U-Net keywords),
``disc`` = ``{features, norm}``, ``loss`` = ``{l1_weight, reg_weight, syn_weight,
seg_weight, sup_weight, gan}``, ``schedule`` = ``{mode, pretrain_steps}``, ``optim`` =
``{gen, disc}``, ``data.batch_size``, ``data.moving_channel`` / ``data.fixed_channel``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from .._checks import check_choice
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs, subject_batch
from ..losses import (
    combine,
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_l2,
    l1,
    soft_dice,
    term,
)
from ..nets import ImageGenerator, PatchDiscriminator, RegistrationNet, SegmentationNet
from ..spatial import warp
from ..train import NetState, make_adversarial_step, make_optimizer, make_update
from .base import Method

__all__ = ["GEN_INPUTS", "JSSR", "SCHEDULE_MODES"]

#: ``schedule.mode``: JSSR's pretrain-then-joint schedule, or the separate pipeline.
SCHEDULE_MODES = ("joint", "separate")
#: ``gen_inputs``: what the generator sees, ``x`` alone or the pair ``(x, y)``.
GEN_INPUTS = ("moving", "pair")


class JSSR(Method):
    """JSSR (module docstring).

    State: ``{"syn": G, "reg": Φ, "seg": S, "disc": D}``, four ``NetState`` s.
    """

    name = "jssr"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}
    cross_modal_pairs = True

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} needs exclusive label maps (softmax segmentation)")
        loss, sched = config["loss"], config["schedule"]
        self.mode = sched["mode"]
        check_choice("schedule.mode", self.mode, SCHEDULE_MODES)
        steps = int(config["train"]["steps"])
        self.pretrain = int(sched["pretrain_steps"])
        if not 0 <= self.pretrain <= steps:
            raise ValueError(
                f"schedule.pretrain_steps must be in [0, {steps}]; got {self.pretrain}"
            )
        self.gen_net = ImageGenerator(
            out_channels=1, output_activation="sigmoid", **config["gen_model"]
        )
        self.reg_net = RegistrationNet(output="displacement", **config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        self.disc_net = PatchDiscriminator(**config["disc"])
        self.gen_inputs = config["gen_inputs"]
        check_choice("gen_inputs", self.gen_inputs, GEN_INPUTS)
        self.gan = loss["gan"]
        w_l1, w_reg = float(loss["l1_weight"]), float(loss["reg_weight"])
        w_syn, self.seg_weight = float(loss["syn_weight"]), float(loss["seg_weight"])
        sup = {"sup": term(soft_dice, "sup_probs", "sup_labels", weight=float(loss["sup_weight"]))}
        # the objectives of the phases (module docstring)
        syn_reg = {
            "l1": term(l1, "warped_synth", "fixed", weight=w_l1),
            "smooth": term(gradient_l2, "disp", weight=w_reg),
            "gan": term(gan_generator_loss, "fake_scores", weight=w_syn, kind=self.gan),
        }
        self.objectives = {
            "pretrain": combine(syn_reg, sup),
            "separate_syn": combine(
                l1=term(l1, "synth", "fixed", weight=w_l1),
                gan=syn_reg["gan"],
                **sup,
            ),
            "separate_reg": combine(l1=syn_reg["l1"], smooth=syn_reg["smooth"], **sup),
        }
        joint = dict(sup)
        if self.seg_weight > 0:
            joint["cons"] = term(soft_dice, "warped_seg", "fixed_seg", weight=self.seg_weight)
        self.objectives["joint"] = combine(syn_reg, joint)
        self.disc_objective = combine(
            gan=term(gan_discriminator_loss, "real_scores", "fake_scores", kind=self.gan)
        )
        opt = config["optim"]
        self.tx = {
            "gen": make_optimizer(**opt["gen"], total_steps=steps),
            "disc": make_optimizer(**opt["disc"], total_steps=steps),
        }
        adv = lambda phase, gen: make_adversarial_step(
            lambda v, b, k: self.generator_loss(v, b, k, phase=phase),
            self.discriminator_loss,
            gen=gen,
            disc="disc",
            donate=True,
        )
        if self.mode == "joint":
            self._steps = {
                "pretrain": adv("pretrain", ("syn", "reg", "seg")),
                "joint": adv("joint", ("syn", "reg", "seg")),
            }
        else:
            self._steps = {
                "separate_syn": adv("separate_syn", ("syn", "seg")),
                "separate_reg": make_update(
                    lambda v, b, k: self.generator_loss(v, b, k, phase="separate_reg"),
                    train=("reg", "seg"),
                    donate=True,
                ),
            }

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_syn, k_reg, k_seg, k_disc = jax.random.split(key, 4)
        x = self.zeros()
        gen = self.tx["gen"]
        return {
            "syn": NetState.create(
                params=self.gen_net.init(k_syn, *((x,) if self.gen_inputs == "moving" else (x, x))),
                tx=gen,
            ),
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=gen),
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=gen),
            "disc": NetState.create(params=self.disc_net.init(k_disc, x), tx=self.tx["disc"]),
        }

    def _label_channel(self, dataset: Dataset) -> int | None:
        """The channel of the supervised Dice's images: modality Y (``data.fixed_channel``),
        checked against the dataset's ``label_modality`` when it records one."""
        fc = self.channel("fixed")
        recorded = getattr(dataset, "label_modality", None)
        if recorded is not None and fc is not None and int(recorded) != fc:
            raise ValueError(
                f"{self.name}: the dataset's labels belong to modality {recorded} "
                f"(label_modality) but the supervised Dice reads modality Y = channel {fc} "
                "(data.fixed_channel)"
            )
        return fc

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Cross-modal pairs of training subjects (moving in X, fixed in Y; labels not
        needed) and, as ``sup_image`` / ``sup_labels``, labelled training subjects'
        modality-Y images for ``L_dice^sup``."""
        b = int(self.config["data"]["batch_size"])
        train, lab = dataset.training(), dataset.labelled()
        if len(train) < 2 or not len(lab):
            raise ValueError(
                f"{self.name} needs at least 2 training subjects and 1 labelled one; the "
                f"dataset has {len(train)} and {len(lab)}"
            )
        rng = batch_rng(self.seed, step)
        batch = pair_batch(dataset, sample_pairs(rng, train, b), **self.pair_channels())
        sup = subject_batch(
            dataset, rng.choice(lab, size=b, replace=True), channels=self._label_channel(dataset)
        )
        return {
            "moving": batch["moving"],
            "fixed": batch["fixed"],
            "sup_image": sup["image"],
            "sup_labels": sup["labels"],
        }

    # -- the model -------------------------------------------------------------------------

    def synthesise(self, variables: dict, moving: jax.Array, fixed: jax.Array) -> jax.Array:
        """``G(x)`` (``gen_inputs="moving"``) or ``G(x, y)`` (``"pair"``): ``x`` rendered in
        modality Y, ``[B, *S, 1]`` in ``[0, 1]``."""
        images = (moving,) if self.gen_inputs == "moving" else (moving, fixed)
        return self.gen_net.apply(variables["syn"], *images)

    def segment(self, variables: dict, image: jax.Array) -> jax.Array:
        """``S(I)``: softmax probabilities ``[B, *S, K]`` of a modality-Y image."""
        return jax.nn.softmax(self.seg_net.apply(variables["seg"], image), axis=-1)

    def forward(self, variables: dict, moving: jax.Array, fixed: jax.Array) -> dict:
        """``{"synth": G(x, y), "disp": τ = Φ(G(x, y), y), "warped_synth": τ(G(x, y))}``."""
        synth = self.synthesise(variables, moving, fixed)
        disp = self.reg_net.apply(variables["reg"], synth, fixed)["disp"]
        return {"synth": synth, "disp": disp, "warped_synth": warp(synth, disp)}

    def predict(self, variables: dict, batch: dict) -> dict:
        """Pair: ``disp``, ``warped``, ``synth``, ``warped_synth``, ``seg_probs`` (``S(y)``),
        ``moving_seg_probs`` (``S(G(x, y))``); image: ``seg_probs`` (``S(image)``)."""
        if "image" in batch:
            return {"seg_probs": self.segment(variables, batch["image"])}
        out = self.forward(variables, batch["moving"], batch["fixed"])
        return {
            **out,
            "warped": warp(batch["moving"], out["disp"]),
            "seg_probs": self.segment(variables, batch["fixed"]),
            "moving_seg_probs": self.segment(variables, out["synth"]),
        }

    def pair_metrics(self, prediction, batch) -> dict:
        """``seg_dice_moving``: Dice of ``S(G(x, y))`` (``x`` segmented through synthesis)
        with the moving image's labels, NaN where the moving image is unlabelled."""
        from ..evaluation import label_dice

        seg = self.labels(prediction, prefix="moving_")
        has = np.asarray(batch.get("moving_has_label", np.ones(len(seg), bool)))
        lab = np.asarray(batch["moving_labels"])
        out = [label_dice(s, t) if h else np.nan for s, t, h in zip(seg, lab, has, strict=True)]
        return {"seg_dice_moving": np.asarray(out, np.float64)}

    # -- losses ----------------------------------------------------------------------------

    def _fake(self, variables: dict, batch: dict, *, phase: str) -> dict:
        """The generator side's tensors of ``phase`` (``τ`` is the identity while ``G``
        is trained alone)."""
        if phase == "separate_syn":
            synth = self.synthesise(variables, batch["moving"], batch["fixed"])
            return {"synth": synth}
        return self.forward(variables, batch["moving"], batch["fixed"])

    def generator_loss(self, v: dict, batch: dict, key: jax.Array, *, phase: str):
        """The objective of ``phase`` over ``G, Φ, S`` (``D`` frozen)."""
        out = self._fake(v, batch, phase=phase)
        inputs = {**out, "fixed": batch["fixed"], "sup_labels": batch["sup_labels"]}
        inputs["sup_probs"] = self.segment(v, batch["sup_image"])
        if phase != "separate_reg":
            inputs["fake_scores"] = self.disc_net.apply(v["disc"], out["synth"])
        if phase == "joint" and self.seg_weight > 0:
            inputs["warped_seg"] = warp(self.segment(v, out["synth"]), out["disp"])
            inputs["fixed_seg"] = self.segment(v, batch["fixed"])
        return self.objectives[phase](**inputs)

    def discriminator_loss(self, v: dict, batch: dict, key: jax.Array):
        """``−L_GAN`` over ``D``: real ``y``, fake ``G(x, y)`` (``G`` frozen)."""
        synth = jax.lax.stop_gradient(self.synthesise(v, batch["moving"], batch["fixed"]))
        return self.disc_objective(
            real_scores=self.disc_net.apply(v["disc"], batch["fixed"]),
            fake_scores=self.disc_net.apply(v["disc"], synth),
        )

    def phase(self, step: int) -> str:
        """The schedule's phase at update ``step`` (module docstring)."""
        first = step < self.pretrain
        if self.mode == "joint":
            return "pretrain" if first else "joint"
        return "separate_syn" if first else "separate_reg"

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._steps[self.phase(int(step))](state, batch, key)
