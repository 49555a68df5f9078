"""Joint registration and segmentation of X-ray images with a cycle-consistent GAN.

Mahapatra, Ge, Sedai, Chakravorty, "Joint Registration And Segmentation Of Xray Images Using
Generative Adversarial Networks", MLMI (MICCAI workshop) 2018. No public code exists: every
choice the paper leaves open is written here, marked *jrs_jax decision*.

Model (CycleGAN-style, two domains: ``X`` floating images, ``Y`` reference images)::

    G : (I_ref, I_flt, M_ref) -> (u_G, features)      registered = I_flt ∘ u_G   (X -> Y)
    F : (I_flt, I_ref, M_ref) -> (u_F, ·)             I_ref ∘ u_F                (Y -> X)
    D_Y: real I_ref  vs  fake I_flt ∘ u_G              D_X: real I_flt vs fake I_ref ∘ u_F

``G`` and ``F`` are VoxelMorph registration U-Nets (:class:`~jrs_jax.nets.RegistrationNet`)
on ``concat(moving, fixed, mask)``; ``u`` is the pull field of the library's convention
(``warp(moving, u) ≈ fixed``), so ``u_G`` *is* the recovered deformation and the registered
image is ``warp(I_flt, u_G)``. ``M_ref`` is the reference mask, the foreground (every label
``> 0``: the union of the structures) of the reference labels, float ``[B, *S, 1]``.
``D_X``, ``D_Y``: :class:`~jrs_jax.nets.PatchDiscriminator` (PatchGAN, instance norm), one
per domain, on single images (unconditional, as CycleGAN's).

The mask of the registered image (the paper's segmentation output): the last decoder feature
maps of ``G`` (the full-resolution output of its U-Net, ``[B, *S, C_f]``, read with Flax's
``capture_intermediates`` so that ``G`` is exactly ``RegistrationNet``) are normalised per
example and channel to ``[0, 1]`` by their spatial min and max, and summed over channels::

    m(x) = (1 / C_f) Σ_c (f_c(x) − min_x f_c) / (max_x f_c − min_x f_c + 1e-6)
    t    = otsu(m)            per example (:func:`jrs_jax.spatial.otsu_threshold`, 256 bins)
    hard = m > t              (scikit-image's convention: foreground strictly above)
    soft = sigmoid((m − stop_gradient(t)) / T)

(*jrs_jax decisions*: min-max normalisation, so every channel spans the same range whatever
its scale; the sum divided by ``C_f``, which leaves the Otsu split unchanged (Otsu is
scale-equivariant) and makes the temperature ``T`` (``mask.temperature``, default 0.05)
independent of the decoder width; no gradient through the threshold, which is piecewise
constant.) ``soft > 0.5`` exactly where ``hard`` is set. Polarity (``mask.polarity``):
``"above"`` (default): the foreground is the side above the threshold, fixed, and the Dice
loss teaches ``G`` to put the structure there; ``"reference"``: per example, the side (above
or below) whose hard mask overlaps the input reference mask more (a non-differentiable flip,
offered as an ablation; the reference mask is an input of ``G`` anyway).

Generator objective (minimised; ``L_F`` and the cycle term only with a cycle)::

    L = L_G + L_F + λ_cyc L_cyc
    L_G = −NMI(I_flt∘u_G, I_ref) + (1 − SSIM(I_flt∘u_G, I_ref)) + λ_feat L_feat
          + λ_adv ½ mean (D_Y(I_flt∘u_G) − 1)²                     (LSGAN, CycleGAN's)
          + λ_dice (−log Dice(soft, M_ref))
          + λ_agree (−log(1 − MSE_norm(u_G, u_gt)))
          + λ_smooth diffusion(u_G)
    L_F = −NMI(I_ref∘u_F, I_flt) + (1 − SSIM(I_ref∘u_F, I_flt)) + λ_feat L_feat
          + λ_adv ½ mean (D_X(I_ref∘u_F) − 1)² + λ_smooth diffusion(u_F)
    L_cyc = ‖(I_flt∘u_G)∘u_F − I_flt‖₁ + ‖(I_ref∘u_F)∘u_G − I_ref‖₁   (mean over voxels)

with ``∘`` the warp. Terms and their jrs_jax building blocks:

* ``−NMI``: :func:`~jrs_jax.losses.mutual_information` with ``normalized=True`` (Parzen
  NMI of Studholme, in ``[−2, −1]``; intensities in ``[0, 1]``). ``1 − SSIM``:
  :func:`~jrs_jax.losses.ssim` (Gaussian window 7). The paper's content loss is NMI + SSIM +
  VGG.
* ``L_feat`` (the paper's VGG loss): mean squared difference between feature maps of a
  pretrained network, ``mean_l mse(φ_l(registered), φ_l(target))``. **Off by default**: no
  pretrained weights can be downloaded at run time. Any feature extractor can be plugged in:
  ``XrayGAN(config, ..., feature_extractor=(module, params))`` or
  :meth:`XrayGAN.set_feature_extractor` (a Flax module and its variables, or any jittable
  callable ``[B, *S, C] -> map | list | dict of maps``); the weight is ``loss.feature_weight``
  (a weight 0 with an extractor logs the term without training on it). The extractor is a
  constant (never trained, not in the checkpointed state).
* Adversarial: LSGAN (*jrs_jax decision*, CycleGAN's choice; the paper says "adversarial
  loss"), :func:`~jrs_jax.losses.gan_generator_loss` / :func:`gan_discriminator_loss` with
  ``kind="lsgan"`` (``loss.gan_kind``).
* ``−log Dice``: Dice of the soft mask and ``M_ref`` (``1 − losses.soft_dice`` on one
  channel, ε = 1e-5), clipped below at 1e-6 so the log stays finite.
* Deformation agreement: the training pairs carry the known transform ``u_gt``
  (``pair_batch(..., fields=True)["gt_disp"]``)::

      e = mean_{x,d} (u_G − u_gt)²,   s = mean_{x,d} u_gt²,
      MSE_norm = e / (e + s + ε) ∈ [0, 1),   −log(1 − MSE_norm) = log(1 + e / (s + ε))

  (*jrs_jax decision*: the paper's ``log(1 − MSE_norm)`` needs an MSE in ``[0, 1)``; this
  normalisation is 0 for the exact field, grows monotonically with the error, stays finite,
  and is relative to the size of the true deformation; ``ε = loss.agreement_eps`` voxel²,
  default 0.01, keeps it finite for an identity ground truth). ``F`` has no agreement term:
  the paper's supervision is on the recovered deformation of ``G`` (and the reversed pair
  need not have a ground truth).
* Cycle (*jrs_jax decision*, CycleMorph's reading): the two fields applied in turn return
  each image to itself, ``(I∘u_G)∘u_F = I∘compose(u_F, u_G)``, i.e. ``φ_G ∘ φ_F ≈ id`` and
  ``φ_F ∘ φ_G ≈ id`` checked on the images (:func:`~jrs_jax.losses.cycle_l1`). The CycleGAN
  reading ``F(G(x))`` would run both networks again on the warped images (twice the forward
  cost) and in registration only measures the same inverse consistency less directly.
* Smoothness: the paper has no regulariser; a diffusion penalty
  (:func:`~jrs_jax.losses.diffusion`, ``loss.smooth_weight``, default 1, VoxelMorph's λ) on
  each field (*jrs_jax decision*: without it a GAN-driven field folds freely; at 0.1 the
  NMI + SSIM baseline folded 5% of the voxels after 300 updates at 64 x 64).

``F``'s input mask (*jrs_jax decision*): the floating mask is unknown at test time, so ``F``
gets the reference mask too; in ``F``'s direction the reference is the *moving* image, so it
is the mask of ``F``'s moving image, always available. ``F`` has no Dice term (it would need
the floating mask). Discriminators (LSGAN)::

    L_D = ½ mean (D_Y(I_ref) − 1)² + ½ mean D_Y(I_flt∘u_G)²   (+ the same for D_X with a cycle)

Schedule (:func:`~jrs_jax.train.make_adversarial_step` with ``gen=("G", "F")``, ``disc=("D_X",
"D_Y")``, ``gen_first=True``): every train step makes one joint update of the generators
(each its own optimiser), then one update of the discriminators against the *updated*
generators (each its own optimiser; CycleGAN's order); without an adversary a plain
:func:`~jrs_jax.train.make_update` of the generators. Metrics are prefixed ``G+F/`` and
``D_X+D_Y/`` (``G/``, ``D_Y/`` without the cycle). Adam 2e-4, ``b1 = 0.5`` for the
discriminators (CycleGAN's); the generators as VoxelMorph (Adam 1e-3).

Variants are loss weights (``configs/xray_gan.py``): a network is built only when a term
needs it. ``loss.cycle_weight = 0``: no ``F`` and no ``D_X`` (state ``{"G", "D_Y"}``);
``loss.adv_weight = 0``: no discriminator; the ``voxelmorph`` baseline (``G`` alone with
``−NMI + (1 − SSIM) + smoothness``) also sets ``model.mask_input = false``: ``G`` then sees
a zero mask channel (the same network and cost, no information from the labels). The mask is
predicted by every variant (for a model not trained with the Dice loss it shows what the
features segment by themselves).

Data: training pairs ``(fixed = reference, moving = floating)`` among the training subjects'
within-subject pairs, the reference the earlier scan (the ``known_transform`` scenario:
time 0 the reference, time 1 = ``warp(reference, T)``), or, for data with one scan per
subject, all ordered pairs of training subjects; the reference must be labelled (its mask is
an input and the Dice target) and, with ``λ_agree > 0``, the pair must have a ground truth
(pairs without one are skipped; none at all is an error). Batches are a pure function of
``(seed, step)``.

Inference (task ``register``, inputs ``moving``, ``fixed``, ``fixed_labels``): ``disp``,
``warped``, ``mask`` (hard, float ``[B, *S]``), ``mask_soft`` and, for data with one
foreground label (``K = 2``), ``seg_probs = [1 − soft, soft]`` (its argmax is the hard mask),
so evaluation's ``seg_dice`` is the mask Dice. With ``K > 2`` no ``seg_probs`` is given (a
binary mask is not a ``K``-class segmentation); :meth:`XrayGAN.pair_metrics` always reports
``mask_dice``, the Dice of the hard mask with the union of the fixed image's foreground
labels.

Config: ``model`` (:class:`~jrs_jax.nets.RegistrationNet` keywords + ``mask_input``),
``disc`` = ``{features, norm}``, ``mask`` = ``{temperature, bins, polarity}``, ``loss`` =
``{nmi_kwargs, ssim_kwargs, feature_weight, adv_weight, gan_kind, dice_weight,
agreement_weight, agreement_eps, cycle_weight, smooth_weight}``, ``optim`` = ``{gen,
disc}``, ``data.batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_choice
from ..data.datasets import Dataset
from ..data.sampling import all_pairs, all_within_subject_pairs, batch_rng
from ..data.sampling import pair_batch as make_pair_batch
from ..losses import (
    GAN_KINDS,
    combine,
    cycle_l1,
    diffusion,
    gan_discriminator_loss,
    gan_generator_loss,
    mse,
    mutual_information,
    soft_dice,
    ssim,
    term,
)
from ..nets import PatchDiscriminator, RegistrationNet, UNet
from ..spatial import otsu_threshold, warp
from ..train import NetState, make_adversarial_step, make_optimizer, make_update
from .base import Method

__all__ = [
    "POLARITIES",
    "XrayGAN",
    "cycle_loss",
    "deformation_agreement",
    "feature_loss",
    "log_dice",
    "mse_norm",
    "registration_mask",
    "summed_features",
]

#: ``mask.polarity``: which side of the Otsu split is the foreground.
POLARITIES = ("above", "reference")


# ------------------------------------------------------------------------------- the terms


def summed_features(features: jnp.ndarray, *, eps: float = 1e-6) -> jnp.ndarray:
    """``m = mean_c minmax_x(f_c)``: per example and channel, min-max normalised over space
    to ``[0, 1]``, averaged over channels (the paper's sum divided by ``C``).

    Shapes: ``[B, *S, C] -> [B, *S]`` (float32).
    """
    f = jnp.asarray(features, jnp.float32)
    axes = tuple(range(1, f.ndim - 1))
    lo = jnp.min(f, axis=axes, keepdims=True)
    hi = jnp.max(f, axis=axes, keepdims=True)
    return jnp.mean((f - lo) / (hi - lo + eps), axis=-1)


def registration_mask(
    features: jnp.ndarray,
    *,
    temperature: float = 0.05,
    bins: int = 256,
    polarity: str = "above",
    reference: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """The Otsu mask of the summed normalised features (module docstring).

    ``m = summed_features(features)``, ``t = otsu_threshold(m)`` per example, ``hard = m > t``,
    ``soft = sigmoid((m − t) / temperature)`` (no gradient through ``t``). With
    ``polarity="reference"`` each example whose below-threshold side overlaps ``reference``
    (``[B, *S]``, binary) more (Dice) is flipped: ``hard -> 1 − hard``, ``soft -> 1 − soft``.

    Returns ``{"summed": m [B, *S], "threshold": t [B], "hard": float [B, *S], "soft":
    [B, *S]}``.
    """
    check_choice("mask.polarity", polarity, POLARITIES)
    m = summed_features(features)
    t = jax.lax.stop_gradient(otsu_threshold(m, bins=bins))
    tb = t.reshape((-1,) + (1,) * (m.ndim - 1))
    hard = (m > tb).astype(jnp.float32)
    soft = jax.nn.sigmoid((m - tb) / temperature)
    if polarity == "reference":
        if reference is None:
            raise ValueError('mask.polarity="reference" needs the reference mask')
        r = jnp.asarray(reference, jnp.float32)
        axes = tuple(range(1, m.ndim))

        def dice(a):
            return 2 * jnp.sum(a * r, axes) / (jnp.sum(a, axes) + jnp.sum(r, axes) + 1e-5)

        flip = (dice(1.0 - hard) > dice(hard)).reshape(tb.shape)
        hard = jnp.where(flip, 1.0 - hard, hard)
        soft = jnp.where(flip, 1.0 - soft, soft)
    return {"summed": m, "threshold": t, "hard": hard, "soft": soft}


def log_dice(soft: jnp.ndarray, target: jnp.ndarray, *, floor: float = 1e-6) -> jnp.ndarray:
    """``−log Dice(soft, target)`` per example ``[B]`` (binary maps ``[B, *S]``; Dice of
    :func:`~jrs_jax.losses.soft_dice` on one channel, clipped below at ``floor``)."""
    dice = 1.0 - soft_dice(soft[..., None], jnp.asarray(target, jnp.float32)[..., None])
    return -jnp.log(jnp.maximum(dice, floor))


def _error_and_size(disp, gt_disp) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(e, s)`` per example: ``e = mse(disp, gt)``, ``s = mean gt²`` (voxel²)."""
    gt = jnp.asarray(gt_disp, jnp.float32)
    return mse(disp, gt), jnp.mean(jnp.square(gt), tuple(range(1, gt.ndim)))


def mse_norm(disp: jnp.ndarray, gt_disp: jnp.ndarray, *, eps: float = 0.01) -> jnp.ndarray:
    """``e / (e + s + eps)`` in ``[0, 1)`` with ``e = mse(disp, gt)``, ``s = mean gt²``
    (means over voxels and components, voxel²). Shapes ``[B, *S, D] -> [B]``."""
    e, s = _error_and_size(disp, gt_disp)
    return e / (e + s + eps)


def deformation_agreement(disp, gt_disp, *, eps: float = 0.01) -> jnp.ndarray:
    """``−log(1 − mse_norm(disp, gt))`` ``= log(1 + e / (s + eps))`` per example ``[B]``: 0
    for the exact field, increasing with the error (computed in the second, stable form)."""
    e, s = _error_and_size(disp, gt_disp)
    return jnp.log1p(e / (s + eps))


def cycle_loss(flt, flt_cycled, ref, ref_cycled) -> jnp.ndarray:
    """``‖flt_cycled − flt‖₁ + ‖ref_cycled − ref‖₁`` (each the mean over voxels,
    :func:`~jrs_jax.losses.cycle_l1`), ``[B]``."""
    return cycle_l1(flt, flt_cycled) + cycle_l1(ref, ref_cycled)


def _feature_maps(out) -> list[jnp.ndarray]:
    if isinstance(out, Mapping):
        return [jnp.asarray(v) for _, v in sorted(out.items())]
    if isinstance(out, (list, tuple)):
        return [jnp.asarray(v) for v in out]
    return [jnp.asarray(out)]


def feature_loss(extract: Callable, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """The paper's VGG (perceptual) loss with any extractor: ``mean_l mse(φ_l(a), φ_l(b))``
    over the maps ``φ_l`` that ``extract`` returns (one array, a list or a dict), ``[B]``."""
    fa, fb = _feature_maps(extract(a)), _feature_maps(extract(b))
    return sum(mse(x, y) for x, y in zip(fa, fb)) / len(fa)


def _as_extractor(extractor, params=None) -> Callable:
    if isinstance(extractor, tuple) and params is None and len(extractor) == 2:
        extractor, params = extractor
    if isinstance(extractor, nn.Module):
        if params is None:
            raise ValueError("a Flax feature extractor needs its variables: (module, params)")
        module, variables = extractor, params
        return lambda x: module.apply(variables, x)
    if not callable(extractor):
        raise TypeError(
            f"feature_extractor must be (flax module, params) or a callable; got "
            f"{type(extractor).__name__}"
        )
    return extractor


def _is_unet(module, method_name: str) -> bool:
    return isinstance(module, UNet) and method_name == "__call__"


# ------------------------------------------------------------------------------- the method


class XrayGAN(Method):
    """Cycle-consistent GAN registration with an Otsu feature mask (module docstring).

    State: ``{"G", "F", "D_X", "D_Y"}`` (``NetState`` each); without a cycle ``{"G", "D_Y"}``;
    without an adversary ``{"G"}`` (and ``"F"`` with a cycle).

    Args:
      config, **data: as every method.
      feature_extractor: optional ``(flax module, variables)`` or callable for the feature
        (VGG) loss; see :meth:`set_feature_extractor`.
    """

    name = "xray_gan"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed", "fixed_labels")}

    def __init__(self, config, *, feature_extractor=None, **data):
        super().__init__(config, **data)
        model, loss, mask = dict(config["model"]), config["loss"], config["mask"]
        self.mask_input = bool(model.pop("mask_input", True))
        self.net = RegistrationNet(**model)
        self.disc = PatchDiscriminator(
            features=tuple(config["disc"]["features"]), norm=config["disc"]["norm"]
        )
        self.w = {
            k: float(loss[f"{k}_weight"])
            for k in ("feature", "adv", "dice", "agreement", "cycle", "smooth")
        }
        bad = {k: v for k, v in self.w.items() if v < 0}
        if bad:
            raise ValueError(f"{self.name}: loss weights must be >= 0; got {bad}")
        self.gan_kind = loss.get("gan_kind", "lsgan")
        check_choice("loss.gan_kind", self.gan_kind, GAN_KINDS)
        self.agreement_eps = float(loss.get("agreement_eps", 0.01))
        self.nmi_kwargs = dict(loss.get("nmi_kwargs", {}))
        self.ssim_kwargs = dict(loss.get("ssim_kwargs", {}))
        self.mask_settings = {
            "temperature": float(mask["temperature"]),
            "bins": int(mask["bins"]),
            "polarity": mask["polarity"],
        }
        check_choice("mask.polarity", self.mask_settings["polarity"], POLARITIES)
        self.with_cycle = self.w["cycle"] > 0
        self.with_adv = self.w["adv"] > 0
        self.gens = ("G", "F") if self.with_cycle else ("G",)
        self.discs = tuple(("D_X", "D_Y") if self.with_cycle else ("D_Y",)) if self.with_adv else ()
        steps = int(config["train"]["steps"])
        self.tx = {
            n: make_optimizer(**config["optim"]["gen"], total_steps=steps) for n in self.gens
        }
        for n in self.discs:
            self.tx[n] = make_optimizer(**config["optim"]["disc"], total_steps=steps)
        self._extract = None
        self._pairs_cache: tuple[int, np.ndarray] | None = None
        self.set_feature_extractor(feature_extractor)

    # -- the feature (VGG) loss ------------------------------------------------------------

    def set_feature_extractor(self, extractor, params=None) -> None:
        """Plug in the feature network of the feature (VGG) loss, or remove it (``None``).

        ``extractor``: a Flax module with its ``params`` (variables), the tuple ``(module,
        params)``, or any jittable callable ``images [B, *S, C] -> map | list | dict of
        maps`` (e.g. a pretrained VGG loaded by the user, with grey images repeated to 3
        channels inside the callable). It is a constant of the loss (never trained, not
        checkpointed). Rebuilds the objectives and the jitted step. A positive
        ``loss.feature_weight`` without an extractor is an error at the first loss evaluation
        (a config alone cannot carry a network).
        """
        self._extract = None if extractor is None else _as_extractor(extractor, params)
        self._build()

    def _build(self) -> None:
        w = self.w

        def content(prefix: str, out: str, target: str) -> dict:
            terms = {
                f"{prefix}nmi": term(
                    mutual_information, out, target, normalized=True, **self.nmi_kwargs
                ),
                f"{prefix}ssim": term(ssim, out, target, **self.ssim_kwargs),
            }
            if self._extract is not None:
                terms[f"{prefix}feature"] = term(
                    lambda a, b: feature_loss(self._extract, a, b),
                    out,
                    target,
                    weight=w["feature"],
                )
            return terms

        terms = content("g_", "registered", "ref")
        if self.with_adv:
            terms["g_adv"] = term(
                gan_generator_loss, "scores_y", kind=self.gan_kind, weight=w["adv"]
            )
        if w["dice"] > 0:
            terms["g_dice"] = term(log_dice, "mask_soft", "ref_mask", weight=w["dice"])
        if w["agreement"] > 0:
            terms["g_agreement"] = term(
                deformation_agreement,
                "disp",
                "gt_disp",
                eps=self.agreement_eps,
                weight=w["agreement"],
            )
        if w["smooth"] > 0:
            terms["g_smooth"] = term(diffusion, "disp", weight=w["smooth"])
        if self.with_cycle:
            terms.update(content("f_", "f_registered", "flt"))
            if self.with_adv:
                terms["f_adv"] = term(
                    gan_generator_loss, "scores_x", kind=self.gan_kind, weight=w["adv"]
                )
            if w["smooth"] > 0:
                terms["f_smooth"] = term(diffusion, "f_disp", weight=w["smooth"])
            terms["cycle"] = term(
                cycle_loss, "flt", "flt_cycled", "ref", "ref_cycled", weight=w["cycle"]
            )
        self.gen_objective = combine(**terms)
        disc_terms = {}
        if self.with_adv:
            disc_terms["d_y"] = term(gan_discriminator_loss, "real_y", "fake_y", kind=self.gan_kind)
            if self.with_cycle:
                disc_terms["d_x"] = term(
                    gan_discriminator_loss, "real_x", "fake_x", kind=self.gan_kind
                )
        self.disc_objective = combine(**disc_terms) if disc_terms else None
        if self.discs:  # CycleGAN's order: generators, then discriminators vs the updated ones
            self._step = make_adversarial_step(
                self.generator_loss,
                self.discriminator_loss,
                gen=self.gens,
                disc=self.discs,
                gen_first=True,
                donate=True,
            )
        else:
            self._step = make_update(self.generator_loss, train=self.gens, donate=True)

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        keys = dict(zip(("G", "F", "D_X", "D_Y"), jax.random.split(key, 4)))
        x, m = self.zeros(), self.zeros(1)
        state = {}
        for n in self.gens:
            state[n] = NetState.create(params=self.net.init(keys[n], x, x, m), tx=self.tx[n])
        for n in self.discs:
            state[n] = NetState.create(params=self.disc.init(keys[n], x), tx=self.tx[n])
        return state

    def training_pairs(self, dataset: Dataset) -> np.ndarray:
        """The ``(fixed = reference, moving = floating)`` pairs training draws from
        ``int64 [P, 2]`` (module docstring; cached per dataset)."""
        if self._pairs_cache is not None and self._pairs_cache[0] == id(dataset):
            return self._pairs_cache[1]
        train = dataset.training()
        pairs = all_within_subject_pairs(dataset, train)
        if len(pairs):  # the reference is the earlier scan
            subj = dataset.subjects
            pairs = pairs[[subj[f].time < subj[m].time for f, m in pairs.tolist()]]
        else:
            pairs = all_pairs(train) if len(train) >= 2 else np.zeros((0, 2), np.int64)
        labelled = set(dataset.labelled())
        pairs = pairs[[int(f) in labelled for f in pairs[:, 0]]].reshape(-1, 2)
        if len(pairs) == 0:
            raise ValueError(
                f"{self.name} needs training pairs whose reference (fixed) scan is labelled "
                f"(its mask is G's input and the Dice target); {dataset.source} has none"
            )
        if self.w["agreement"] > 0:
            pairs = pairs[[dataset.has_ground_truth(p[None]) for p in pairs]].reshape(-1, 2)
            if len(pairs) == 0:
                raise ValueError(
                    f"{self.name}: loss.agreement_weight > 0 needs the ground-truth field of the "
                    f"training pairs, and {dataset.source} has none"
                )
        self._pairs_cache = (id(dataset), pairs)
        return pairs

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """``batch_size`` pairs drawn uniformly from :meth:`training_pairs` (with
        replacement; stream 0 of ``batch_rng(seed, step)``), with ``gt_disp`` when the
        agreement term is on."""
        pool = self.training_pairs(dataset)
        rng = batch_rng(self.seed, step)
        rows = pool[rng.integers(0, len(pool), size=int(self.config["data"]["batch_size"]))]
        need_gt = self.w["agreement"] > 0
        b = make_pair_batch(dataset, rows, fields=need_gt)
        keys = ("moving", "fixed", "fixed_labels") + (("gt_disp",) if need_gt else ())
        return {k: b[k] for k in keys}

    # -- the model -------------------------------------------------------------------------

    def reference_mask(self, fixed_labels: jnp.ndarray) -> jnp.ndarray:
        """Foreground (union of the labels) of the reference labels, float ``[B, *S]``."""
        lab = jnp.asarray(fixed_labels)
        if self.multi_label:
            return jnp.any(lab > 0, axis=-1).astype(jnp.float32)
        return (lab > 0).astype(jnp.float32)

    def _mask_channel(self, fixed_labels) -> jnp.ndarray:
        m = self.reference_mask(fixed_labels)[..., None]
        return m if self.mask_input else jnp.zeros_like(m)

    def register(self, params, moving, fixed, mask) -> tuple[dict, jnp.ndarray]:
        """One registration network on ``(moving, fixed, mask [B, *S, 1])``: its outputs
        (``disp``, ``velocity`` for a velocity model) and its last decoder features
        ``[B, *S, C_f]`` (float32)."""
        out, inter = self.net.apply(
            params, moving, fixed, mask, capture_intermediates=_is_unet, mutable=["intermediates"]
        )
        feats = inter["intermediates"]["unet"]["__call__"][0]
        return out, feats.astype(jnp.float32)

    def forward(self, variables: dict, batch: Mapping) -> dict:
        """``G`` on a batch: ``disp`` (+ ``velocity``), ``registered``, the mask dict of
        :func:`registration_mask` (``mask_*`` keys), ``features`` and ``ref_mask``."""
        flt, ref = batch["moving"], batch["fixed"]
        ref_mask = self.reference_mask(batch["fixed_labels"])
        out, feats = self.register(
            variables["G"], flt, ref, self._mask_channel(batch["fixed_labels"])
        )
        mask = registration_mask(feats, reference=ref_mask, **self.mask_settings)
        return {
            **out,
            "registered": warp(flt, out["disp"]),
            "features": feats,
            "ref_mask": ref_mask,
            **{f"mask_{k}": v for k, v in mask.items()},
        }

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped", "mask", "mask_soft"}`` (+ ``"velocity"``; + ``"seg_probs"``
        for ``K = 2``)."""
        f = self.forward(variables, batch)
        out = {k: f[k] for k in ("disp", "velocity") if k in f}
        out.update(warped=f["registered"], mask=f["mask_hard"], mask_soft=f["mask_soft"])
        if self.num_classes == 2 and not self.multi_label:
            out["seg_probs"] = jnp.stack([1.0 - f["mask_soft"], f["mask_soft"]], -1)
        return out

    def pair_metrics(self, prediction, batch) -> dict:
        """``mask_dice`` ``[B]``: Dice of the hard mask with the fixed labels' foreground."""
        hard = np.asarray(prediction["mask"]) > 0.5
        ref = np.asarray(self.reference_mask(jnp.asarray(batch["fixed_labels"]))) > 0.5
        axes = tuple(range(1, hard.ndim))
        inter = np.sum(hard & ref, axes)
        total = np.sum(hard, axes) + np.sum(ref, axes)
        return {"mask_dice": np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)}

    def scores(self, params, x: jnp.ndarray) -> jnp.ndarray:
        """PatchGAN scores ``[B, *S', 1]`` of images ``[B, *S, C]``."""
        return self.disc.apply(params, x)

    # -- losses ----------------------------------------------------------------------------

    def generator_inputs(self, v: dict, batch: Mapping) -> dict:
        """Every named input of :attr:`gen_objective` (the discriminators are read from
        ``v``; constant in the generator update)."""
        f = self.forward(v, batch)
        flt, ref = batch["moving"], batch["fixed"]
        x = {
            "registered": f["registered"],
            "ref": ref,
            "flt": flt,
            "disp": f["disp"],
            "mask_soft": f["mask_soft"],
            "ref_mask": f["ref_mask"],
        }
        if "gt_disp" in batch:
            x["gt_disp"] = batch["gt_disp"]
        if self.with_adv:
            x["scores_y"] = self.scores(v["D_Y"], f["registered"])
        if self.with_cycle:
            m = self._mask_channel(batch["fixed_labels"])
            f_out, _ = self.register(v["F"], ref, flt, m)
            x["f_disp"] = f_out["disp"]
            x["f_registered"] = warp(ref, f_out["disp"])
            x["flt_cycled"] = warp(f["registered"], f_out["disp"])
            x["ref_cycled"] = warp(x["f_registered"], f["disp"])
            if self.with_adv:
                x["scores_x"] = self.scores(v["D_X"], x["f_registered"])
        return x

    def generator_loss(self, v: dict, batch: Mapping, key: jax.Array):
        """``L_G (+ L_F + λ_cyc L_cyc)`` and its unweighted parts."""
        if self.w["feature"] > 0 and self._extract is None:
            raise ValueError(
                f"{self.name}: loss.feature_weight={self.w['feature']} needs a feature extractor "
                "(XrayGAN(..., feature_extractor=(module, params)) or set_feature_extractor); "
                "no pretrained weights are downloaded"
            )
        if self.w["agreement"] > 0 and "gt_disp" not in batch:
            raise ValueError(
                f"{self.name}: loss.agreement_weight > 0 needs the batch's ground-truth field "
                "gt_disp"
            )
        return self.gen_objective(**self.generator_inputs(v, batch))

    def discriminator_loss(self, v: dict, batch: Mapping, key: jax.Array):
        """``L_{D_Y} (+ L_{D_X})``, LSGAN, the generators constant."""
        flt, ref = batch["moving"], batch["fixed"]
        m = self._mask_channel(batch["fixed_labels"])
        u_g = jax.lax.stop_gradient(self.register(v["G"], flt, ref, m)[0]["disp"])
        x = {
            "real_y": self.scores(v["D_Y"], ref),
            "fake_y": self.scores(v["D_Y"], warp(flt, u_g)),
        }
        if self.with_cycle:
            u_f = jax.lax.stop_gradient(self.register(v["F"], ref, flt, m)[0]["disp"])
            x["real_x"] = self.scores(v["D_X"], flt)
            x["fake_x"] = self.scores(v["D_X"], warp(ref, u_f))
        return self.disc_objective(**x)

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        return self._step(state, batch, key)
