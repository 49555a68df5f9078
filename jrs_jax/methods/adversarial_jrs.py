"""Adversarial optimisation for joint registration and segmentation (a WGAN-GP critic).

Elmahdy, Wolterink, Sokooti, Išgum, Staring, "Adversarial Optimization for Joint
Registration and Segmentation in Prostate CT Radiotherapy", MICCAI 2019.

The registration network is the generator, ``G_θ(I_m, I_f) -> φ``
(:class:`~jrs_jax.nets.RegistrationNet`). A critic ``D_ψ`` (PatchGAN,
:class:`~jrs_jax.nets.PatchDiscriminator`, raw scores, WGAN objective) judges whether a
triple concatenated on the channel axis looks well aligned::

    fake = (I_f, I_m∘φ, S_m∘φ)          real = (I_f, Θ(I_f), S_f∘Θ)

with ``S`` one-hot maps warped *softly* (:func:`~jrs_jax.spatial.warp_labels`,
``mode="soft"``) and ``Θ`` a small random diffeomorphism
(:func:`~jrs_jax.spatial.random_displacement`, control-point standard deviation
``critic.real_amplitude`` voxels every ``critic.real_spacing`` voxels), drawn afresh for every
example of every critic step. No truly aligned pair of two subjects exists, so "real" is
the fixed image against a slightly perturbed copy of itself. The objectives::

    L_G = L_sim + λ1 L_smooth + λ2 L_G^GAN
    L_sim = (1 − DSC(S_m∘φ, S_f)) + (1 − NCC(I_m∘φ, I_f))
    L_smooth = bending energy of φ (``losses.bending_energy``)
    L_G^GAN = −E[D(fake)]                                   (``losses.wasserstein_generator_loss``)
    L_D = E[D(fake)] − E[D(real)] + λ_GP E[(‖∇_x̂ D(x̂)‖₂ − 1)²]
                                  (``losses.wasserstein_critic_loss``, ``losses.gradient_penalty``)

``1 − DSC`` is ``losses.soft_dice`` (mean over the ``K`` classes, background included);
``1 − NCC`` is ``1 + losses.ncc`` (global NCC, the paper's; ``losses.ncc`` returns ``−NCC``)
or, with ``loss.similarity="local_ncc"``, ``1 + losses.local_ncc`` (``1 − LNCC``). ``E[D]``
is the mean of the PatchGAN score map over patches and examples. Labels are needed only for
training (pairs are drawn among the labelled training subjects); ``predict`` needs only
``(moving, fixed)``.

Schedule (:func:`~jrs_jax.train.make_adversarial_step`): every train step makes
``critic.n_critic`` critic updates (the generator frozen), then one generator update against
the updated critic (frozen in turn); the two networks have their own optimiser states. With
``critic.per_step_batches`` each critic update sees its own freshly drawn batch of pairs
(WGAN's practice); otherwise all of them see the generator's batch.

Choices where the paper is silent (jrs_jax decisions):

* Real label channel: ``S_f∘Θ`` (``critic.real_labels="warped"``, the default), not the
  paper's ``S_f`` (``"fixed"``). A fake's label map is a soft-warped one-hot map, with
  interpolated (fractional) edges, and it is consistent with the warped image (both warped
  by ``φ``); a crisp ``S_f`` next to ``Θ(I_f)`` differs from every fake in both respects, so
  the critic could tell real from fake by edge softness alone. ``S_f∘Θ``, warped by the same
  soft interpolation, leaves only alignment with ``I_f`` to judge.
* Critic normalisation: instance norm (``critic.norm="instance"``, the PatchGAN default).
  WGAN-GP forbids batch norm, because the penalty is a per-example input gradient and batch
  statistics couple the examples; instance norm (like layer/group norm) normalises each
  example on its own, so the per-example gradient is well defined. ``"group"`` and
  ``"none"`` are the alternatives.
* ``critic.inputs``: ``"images_labels"`` (the paper's triple) or ``"images"`` (the pair
  ``(I_f, I_m∘φ)`` against ``(I_f, Θ(I_f))``), an ablation.
* ``loss.adv_weight = 0`` (λ2 = 0): no critic at all. The state holds only ``"reg"``, the
  train step is a plain generator update with ``L_sim + λ1 L_smooth`` and no critic is
  built, evaluated or stepped: it costs nothing and cannot affect the generator.
* ``λ_GP = 10`` and ``n_critic = 5`` (Gulrajani et al.); Adam with ``b1 = 0.5, b2 = 0.9``
  for the critic (WGAN-GP's), the registration net as VoxelMorph.

Config (``configs/adversarial_jrs.py``): ``model`` (:class:`~jrs_jax.nets.RegistrationNet`
keywords), ``critic`` = ``{features, norm, inputs, n_critic, gp_weight, per_step_batches,
real_amplitude, real_spacing, real_labels}``, ``loss`` = ``{similarity, similarity_kwargs,
reg_weight (λ1), regulariser_kwargs, adv_weight (λ2)}``, ``optim`` = ``{reg, critic}``
(:func:`~jrs_jax.train.make_optimizer` keywords), ``data.batch_size``.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_choice
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch, sample_pairs
from ..losses import (
    bending_energy,
    combine,
    gradient_penalty,
    similarity,
    soft_dice,
    term,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from ..nets import PatchDiscriminator, RegistrationNet
from ..spatial import random_displacement, warp, warp_labels
from ..train import NetState, make_adversarial_step, make_optimizer, make_update
from .base import Method

__all__ = [
    "CRITIC_INPUTS",
    "NCC_KINDS",
    "REAL_LABELS",
    "AdversarialJRS",
    "critic_input",
    "one_minus_ncc",
    "real_triple",
]

#: ``critic.inputs``: what the critic sees.
CRITIC_INPUTS = ("images", "images_labels")
#: ``critic.real_labels``: the label channel of a real triple.
REAL_LABELS = ("warped", "fixed")
#: ``loss.similarity``: global or local NCC (the losses registry entries of that name).
NCC_KINDS = ("ncc", "local_ncc")


def one_minus_ncc(warped, fixed, *, kind: str = "ncc", **kwargs) -> jnp.ndarray:
    """``1 − NCC(warped, fixed)`` per example ``[B]`` (the paper's image term).

    ``kind="ncc"``: global Pearson NCC (``1 + losses.ncc``, in ``[0, 2]``);
    ``kind="local_ncc"``: ``1 + losses.local_ncc(**kwargs)`` (``1 − mean LNCC``).
    """
    check_choice("loss.similarity", kind, NCC_KINDS)
    return 1.0 + similarity(kind)(warped, fixed, **kwargs)


def critic_input(fixed, warped, warped_seg=None) -> jnp.ndarray:
    """The critic's input: ``(I_f, I, S)`` concatenated on channels.

    Shapes: ``fixed``, ``warped`` ``[B, *S, C]``, ``warped_seg`` ``[B, *S, K]`` or ``None``
    (images only) -> ``[B, *S, 2C (+ K)]``.
    """
    parts = [fixed, warped] + ([] if warped_seg is None else [warped_seg])
    return jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1)


def real_triple(
    key: jax.Array,
    fixed: jnp.ndarray,
    fixed_labels: jnp.ndarray,
    *,
    num_classes: int,
    amplitude: float,
    control_spacing: int,
    labels: str = "warped",
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """A "well aligned" triple built from the fixed image alone: ``(I_f, Θ(I_f), S)``.

    ``Θ = random_displacement(key, S, amplitude=..., control_spacing=...)``, one per example;
    ``S = S_f∘Θ`` (soft-warped one-hot, ``labels="warped"``) or the one-hot ``S_f``
    (``"fixed"``).

    Shapes: ``fixed [B, *S, C]``, ``fixed_labels`` int ``[B, *S]`` ->
    ``([B, *S, C], [B, *S, C], [B, *S, K])``.
    """
    check_choice("critic.real_labels", labels, REAL_LABELS)
    theta = random_displacement(
        key,
        fixed.shape[1:-1],
        batch_size=fixed.shape[0],
        amplitude=amplitude,
        control_spacing=control_spacing,
    )
    if labels == "warped":
        seg = warp_labels(fixed_labels, theta, num_classes=num_classes, mode="soft")
    else:
        seg = jax.nn.one_hot(fixed_labels, num_classes)
    return fixed, warp(fixed, theta), seg


class AdversarialJRS(Method):
    """Registration net + WGAN-GP critic (see the module docstring).

    State: ``{"reg": NetState, "critic": NetState}``, or ``{"reg": NetState}`` when
    ``loss.adv_weight = 0``.
    """

    name = "adversarial_jrs"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed")}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError(f"{self.name} needs exclusive label maps (one-hot Dice and critic)")
        model, loss, critic = config["model"], config["loss"], config["critic"]
        self.net = RegistrationNet(**model)
        self.adv_weight = float(loss["adv_weight"])
        if self.adv_weight < 0:
            raise ValueError(f"loss.adv_weight must be >= 0; got {self.adv_weight}")
        self.with_critic = self.adv_weight > 0
        self.critic_inputs = critic["inputs"]
        check_choice("critic.inputs", self.critic_inputs, CRITIC_INPUTS)
        self.n_critic = int(critic["n_critic"])
        self.per_step_batches = bool(critic["per_step_batches"])
        self.theta = {
            "amplitude": float(critic["real_amplitude"]),
            "control_spacing": int(critic["real_spacing"]),
            "labels": critic["real_labels"],
        }
        check_choice("critic.real_labels", self.theta["labels"], REAL_LABELS)
        self.critic = PatchDiscriminator(features=tuple(critic["features"]), norm=critic["norm"])
        # L_G = (1 − DSC) + (1 − NCC) + λ1 bending (+ λ2 (−E[D(fake)]))
        self.gen_objective = combine(
            dice=term(soft_dice, "warped_seg", "fixed_seg"),
            sim=term(
                one_minus_ncc,
                "warped",
                "fixed",
                kind=loss["similarity"],
                **loss.get("similarity_kwargs", {}),
            ),
            smooth=term(
                bending_energy,
                "disp",
                weight=float(loss["reg_weight"]),
                **loss.get("regulariser_kwargs", {}),
            ),
        )
        if self.with_critic:
            self.gen_objective = self.gen_objective.extend(
                adv=term(wasserstein_generator_loss, "fake_scores", weight=self.adv_weight)
            )
        # L_D = E[D(fake)] − E[D(real)] + λ_GP GP
        self.critic_objective = combine(
            wgan=term(wasserstein_critic_loss, "real_scores", "fake_scores"),
            gp=term(
                gradient_penalty,
                "gp_key",
                "critic_fn",
                "real",
                "fake",
                weight=float(critic["gp_weight"]),
            ),
        )
        steps = int(config["train"]["steps"])
        self.tx = {"reg": make_optimizer(**config["optim"]["reg"], total_steps=steps)}
        if self.with_critic:
            self.tx["critic"] = make_optimizer(**config["optim"]["critic"], total_steps=steps)
            self._step = make_adversarial_step(
                self.generator_loss,
                self.critic_loss,
                gen="reg",
                disc="critic",
                n_critic=self.n_critic,
                donate=True,
            )
        else:
            self._step = make_update(self.generator_loss, train="reg", donate=True)

    # -- state and data --------------------------------------------------------------------

    def _critic_channels(self) -> int:
        c = 2 * self.image_channels
        return c + self.num_classes if self.critic_inputs == "images_labels" else c

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_reg, k_critic = jax.random.split(key)
        x = self.zeros()
        state = {"reg": NetState.create(params=self.net.init(k_reg, x, x), tx=self.tx["reg"])}
        if self.with_critic:
            params = self.critic.init(k_critic, self.zeros(self._critic_channels()))
            state["critic"] = NetState.create(params=params, tx=self.tx["critic"])
        return state

    def _pairs(self, dataset: Dataset, step: int, stream: int) -> dict[str, np.ndarray]:
        pool = dataset.labelled()
        if len(pool) < 2:
            raise ValueError(
                f"{self.name} needs at least 2 labelled training subjects (Dice and the "
                f"critic's label channel); the dataset has {len(pool)}"
            )
        rng = batch_rng(self.seed, step, stream)
        b = pair_batch(dataset, sample_pairs(rng, pool, int(self.config["data"]["batch_size"])))
        return {k: b[k] for k in ("moving", "fixed", "moving_labels", "fixed_labels")}

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Labelled pairs (stream 0) for the generator; with a critic and
        ``critic.per_step_batches``, ``"critic"``: ``n_critic`` more batches (streams
        ``1..n_critic``) stacked on a leading axis, one per critic update."""
        batch = self._pairs(dataset, step, 0)
        if self.with_critic and self.per_step_batches:
            each = [self._pairs(dataset, step, 1 + i) for i in range(self.n_critic)]
            batch["critic"] = {k: np.stack([b[k] for b in each]) for k in each[0]}
        return batch

    # -- the model -------------------------------------------------------------------------

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` (+ ``"velocity"`` for a velocity-field model)."""
        out = self.net.apply(variables["reg"], batch["moving"], batch["fixed"])
        return {**out, "warped": warp(batch["moving"], out["disp"])}

    def fake(self, variables: dict, batch: dict) -> dict:
        """The generator's outputs and the fake critic input.

        Returns ``{"disp", "warped", "warped_seg" (S_m∘φ, soft), "fixed_seg" (one-hot S_f),
        "fake" (critic_input)}``.
        """
        out = self.predict(variables, batch)
        k = self.num_classes
        warped_seg = warp_labels(batch["moving_labels"], out["disp"], num_classes=k, mode="soft")
        seg = warped_seg if self.critic_inputs == "images_labels" else None
        return {
            "disp": out["disp"],
            "warped": out["warped"],
            "warped_seg": warped_seg,
            "fixed_seg": jax.nn.one_hot(batch["fixed_labels"], k),
            "fake": critic_input(batch["fixed"], out["warped"], seg),
        }

    def real(self, key: jax.Array, batch: dict) -> jnp.ndarray:
        """The real critic input ``critic_input(*real_triple(...))`` (labels dropped for
        ``critic.inputs="images"``)."""
        f, theta_f, seg = real_triple(
            key, batch["fixed"], batch["fixed_labels"], num_classes=self.num_classes, **self.theta
        )
        return critic_input(f, theta_f, seg if self.critic_inputs == "images_labels" else None)

    def scores(self, critic_params, x: jnp.ndarray) -> jnp.ndarray:
        """PatchGAN critic scores ``[B, *S', 1]`` of a critic input ``[B, *S, C']``."""
        return self.critic.apply(critic_params, x)

    # -- losses ----------------------------------------------------------------------------

    def generator_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_G`` (the critic, if any, is frozen: its scores' gradient reaches ``φ``)."""
        f = self.fake(v, batch)
        inputs = {k: f[k] for k in ("warped_seg", "fixed_seg", "disp", "warped")}
        inputs["fixed"] = batch["fixed"]
        if self.with_critic:
            inputs["fake_scores"] = self.scores(v["critic"], f["fake"])
        return self.gen_objective(**inputs)

    def critic_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_D`` with the gradient penalty on real/fake interpolates (generator frozen)."""
        k_theta, k_gp = jax.random.split(key)
        fake = jax.lax.stop_gradient(self.fake(v, batch)["fake"])
        real = self.real(k_theta, batch)
        critic_fn = partial(self.scores, v["critic"])
        total, parts = self.critic_objective(
            real_scores=critic_fn(real),
            fake_scores=critic_fn(fake),
            gp_key=k_gp,
            critic_fn=critic_fn,
            real=real,
            fake=fake,
        )
        return total, {**parts, "wasserstein": -parts["wgan"]}

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._step(state, batch, key)
