"""DeepRS: deep complementary joint model for registration and few-shot segmentation.

He, Li, Yang, Kong, Chen, Shu, Coatrieux, Dillenseger, Li, "Deep Complementary Joint Model
for Complex Scene Registration and Few-shot Segmentation on Medical Images", ECCV 2020.

Three networks, each with its own optimiser state: a registration net ``R(x_m, x_f) -> φ``
(a VoxelMorph U-Net, :class:`~jrs_jax.nets.RegistrationNet`), a segmentation net ``S``
(:class:`~jrs_jax.nets.SegmentationNet`, softmax probabilities) and a full-resolution
discriminator ``D(x, x_f)`` (:class:`~jrs_jax.nets.PixelDiscriminator`, one logit per
voxel; ``σ(D)`` is the alignment confidence). Pairs: the moving image ``x_m`` is a labelled
subject (it carries ``y_m``), the fixed image ``x_f`` any other training subject, labelled
or not (the few-shot premise; :func:`~jrs_jax.data.labelled_case_pairs` with the
cases "both labelled" and "moving labelled" weighted by their pool sizes, so ``x_f`` is
uniform over the other training subjects). ``W(·, φ)`` warps (images linearly, labels
softly: linear interpolation of the one-hot map).

Deep Structure Sampling (DSS): ``φ̂ = α · φ`` with ``α ~ U(a, b)`` per pair
(``dss.range``), applied to the displacement (``dss.on="displacement"``, the default: it
needs no integration and works with every registration output) or to the velocity
(``dss.on="velocity"``: ``φ̂ = exp(α v)``, scaling and squaring at full resolution; needs
``reg_model.output="velocity"`` and ``int_downsize=1``). ``W(x_m, φ̂)``, ``W(y_m, φ̂)`` are
the augmented pairs. ``dss.enabled=False`` is the ablation ``α ≡ 1`` (``φ̂ = φ``).

Discriminator (reference positives, warped negatives), with ``x_r = β x_m + (1 − β) x_f``
(the source's ``(1 − β * x_f)`` read as ``(1 − β) x_f``) and ``x_w = W(x_m, φ)``::

    L_D = −log σ(D(x_r, x_f)) − log(1 − σ(D(x_w, x_f)))     (losses.gan_discriminator_loss)

Registration (``S`` and ``D`` frozen)::

    L_reg = λ_adv L_adv + λ_drc L_drc + λ_cc L_cc + λ_R L_R
    L_adv = −log σ(D(x_w, x_f))                              (losses.gan_generator_loss)
    L_drc = mean_{x,k} (S(W(x_m, φ̂))_k − S(x_f)_k)²          (Deep Region Constraint; losses.mse)
    L_cc  = local NCC(x_w, x_f),  L_R = diffusion(φ)

Segmentation (``R`` and ``D`` frozen)::

    L_seg = λ_acm L_acm + λ_ce L_ce
    L_acm = mean_x −σ(D(W(x_m, φ̂), x_f)) Σ_k W(y_m, φ̂)_k log S(x_f)_k   (Alignment Confidence Map)
    L_ce  = CE(S(W(x_m, φ̂)), W(y_m, φ̂))

Choices where the paper is silent (all config keys):

* ``L_acm`` normalisation: a plain mean over voxels of the confidence-weighted
  cross-entropy (the formula as written; :func:`acm_cross_entropy`), not renormalised by
  ``Σ σ(D)``: where the discriminator is unsure everywhere, the weak supervision is weak.
  ``D`` is a sigmoid probability and a constant in ``L_seg`` (frozen: no gradient reaches
  it, and ``S`` cannot lower the loss by changing ``D``).
* ``L_drc``: the squared difference of the softmax maps averaged over voxels *and* classes
  (``1/K`` times the per-class sum); both maps come from the frozen ``S``, the gradient
  reaches ``R`` through ``W(x_m, φ̂)``. It needs no labels.
* The negatives of ``D`` are the registration output ``W(x_m, φ)`` (the generator's sample);
  the ACM is then read on the DSS-warped ``W(x_m, φ̂)``.
* ``α ~ U(0.5, 1.5)`` (a perturbation around the predicted field, mean 1); ``β = 0.3``;
  ``λ_adv = 0.1``, ``λ_drc = λ_cc = λ_R = λ_acm = λ_ce = 1``; Adam 1e-3 for all three nets.
* One training step = one update of each network, in the order ``D``, then ``R`` (against
  the updated ``D``), then ``S`` (with the updated ``R`` and ``D``), each with the others
  frozen: :func:`~jrs_jax.train.make_adversarial_step` (``D`` then ``R``) followed by a
  :func:`~jrs_jax.train.make_update` of ``S``, in one jitted step. Keys: ``k_adv, k_seg =
  split(key)``; the adversarial step splits ``k_adv`` into the ``D`` and ``R`` keys (see
  its docstring); each loss draws its own ``α`` from its key.

Config (``configs/deeprs.py``): ``reg_model`` / ``seg_model`` / ``disc_model`` network
keywords; ``dss`` = ``{enabled, range, on}``; ``loss`` = ``{similarity, similarity_kwargs,
regulariser, regulariser_kwargs, reg_weight (λ_R), cc_weight, adv_weight, drc_weight,
acm_weight, ce_weight, beta, gan}``; ``optim.{reg, seg, disc}``; ``data.batch_size``,
``data.num_labelled``. Ablations: ``dss.enabled=false``, ``loss.acm_weight=0``,
``loss.drc_weight=0``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..data.datasets import Dataset
from ..data.sampling import batch_rng, labelled_case_pairs, pair_batch
from ..losses import (
    combine,
    cross_entropy,
    gan_discriminator_loss,
    gan_generator_loss,
    mse,
    regulariser_term,
    similarity_term,
    term,
)
from ..nets import PixelDiscriminator, RegistrationNet, SegmentationNet
from ..spatial import integrate_velocity, warp, warp_labels
from ..train import NetState, make_adversarial_step, make_optimizer, make_update
from .base import Method

__all__ = [
    "DSS_FIELDS",
    "DeepRS",
    "acm_cross_entropy",
    "dss_alpha",
    "reference_image",
    "scale_field",
]

#: What Deep Structure Sampling scales (``dss.on``).
DSS_FIELDS = ("displacement", "velocity")


def dss_alpha(key: jax.Array, batch_size: int, *, low: float, high: float) -> jax.Array:
    """DSS factors ``α ~ U(low, high)``, one per pair: ``float32 [B]`` (``low == high``:
    constant)."""
    return jax.random.uniform(key, (int(batch_size),), jnp.float32, low, high)


def scale_field(field: jax.Array, alpha: jax.Array) -> jax.Array:
    """``α · field`` per example: ``field [B, *S, D]``, ``alpha [B]`` -> ``[B, *S, D]``."""
    return field * alpha.reshape((-1,) + (1,) * (field.ndim - 1))


def reference_image(moving: jax.Array, fixed: jax.Array, *, beta: float) -> jax.Array:
    """The discriminator's positive ``x_r = β x_m + (1 − β) x_f``: ``[B, *S, C]``."""
    return beta * moving + (1.0 - beta) * fixed


def acm_cross_entropy(
    logits: jax.Array, warped_labels: jax.Array, confidence: jax.Array
) -> jax.Array:
    """ACM-weighted cross-entropy ``mean_x −c(x) Σ_k ŷ_k(x) log softmax(logits)_k(x)``.

    Shapes: ``logits [B, *S, K]`` (of ``S(x_f)``), ``warped_labels [B, *S, K]`` (the soft
    ``W(y_m, φ̂)``), ``confidence [B, *S]`` (``σ(D)``, in ``[0, 1]``) -> ``[B]``. A plain mean
    over voxels (not renormalised by ``Σ c``): :func:`~jrs_jax.losses.cross_entropy` against
    the confidence-scaled soft target.
    """
    return cross_entropy(logits, confidence[..., None] * warped_labels)


class DeepRS(Method):
    """DeepRS (module docstring). State: ``{"reg", "seg", "disc": NetState}``."""

    name = "deeprs"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        if self.multi_label:
            raise ValueError("deeprs needs exclusive labels (softmax segmentation)")
        loss, dss = config["loss"], config["dss"]
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        self.disc_net = PixelDiscriminator(**config["disc_model"])
        self.dss_on = dss.get("on", "displacement")
        if self.dss_on not in DSS_FIELDS:
            raise ValueError(f"dss.on must be one of {DSS_FIELDS}; got {self.dss_on!r}")
        if self.dss_on == "velocity" and (
            self.reg_net.output != "velocity" or int(self.reg_net.int_downsize) != 1
        ):
            raise ValueError(
                'dss.on="velocity" needs reg_model.output="velocity" and int_downsize=1'
            )
        low, high = (float(v) for v in dss["range"]) if dss["enabled"] else (1.0, 1.0)
        if not low <= high:
            raise ValueError(f"dss.range must be (a, b) with a <= b; got {dss['range']}")
        self.alpha_range = (low, high)
        self.beta = float(loss["beta"])
        gan = loss.get("gan", "nonsaturating")
        # L_reg = λ_adv L_adv + λ_drc L_drc + λ_cc L_cc + λ_R L_R
        self.reg_objective = combine(
            adv=term(gan_generator_loss, "fake_scores", weight=float(loss["adv_weight"]), kind=gan),
            drc=term(mse, "seg_augmented", "seg_fixed", weight=float(loss["drc_weight"])),
            cc=similarity_term(loss, weight=float(loss["cc_weight"])),
            smooth=regulariser_term(loss),
        )
        # L_seg = λ_acm L_acm + λ_ce L_ce
        self.seg_objective = combine(
            acm=term(
                acm_cross_entropy,
                "logits_fixed",
                "labels_augmented",
                "confidence",
                weight=float(loss["acm_weight"]),
            ),
            ce=term(
                cross_entropy,
                "logits_augmented",
                "labels_augmented",
                weight=float(loss["ce_weight"]),
            ),
        )
        # L_D = −log D(x_r, x_f) − log(1 − D(x_w, x_f))
        self.disc_objective = combine(
            disc=term(gan_discriminator_loss, "real_scores", "fake_scores", kind=gan)
        )
        steps = int(config["train"]["steps"])
        optim = config["optim"]
        self.tx = {n: make_optimizer(**optim[n], total_steps=steps) for n in ("reg", "seg", "disc")}
        adversarial = make_adversarial_step(
            self.reg_loss, self.disc_loss, gen="reg", disc="disc", jit=False
        )
        seg_update = make_update(self.seg_loss, train="seg", jit=False)

        def step(state, batch, key):
            k_adv, k_seg = jax.random.split(key)
            state, metrics = adversarial(state, batch, k_adv)
            state, seg = seg_update(state, batch, k_seg)
            metrics = {
                **metrics,
                "loss/seg": seg.pop("loss"),
                "grad_norm/seg": seg.pop("grad_norm/seg"),
            }
            return state, {**metrics, **{f"seg/{k}": v for k, v in seg.items()}}

        self._step = jax.jit(step, donate_argnums=(0,))

    # -- state and data --------------------------------------------------------------------

    def init(self, key: jax.Array, dataset: Dataset | None = None) -> dict:
        k_reg, k_seg, k_disc = jax.random.split(key, 3)
        x = self.zeros()
        return {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx["reg"]),
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx["seg"]),
            "disc": NetState.create(params=self.disc_net.init(k_disc, x, x), tx=self.tx["disc"]),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        """Pairs with a labelled moving image and any other training subject as the fixed one
        (module docstring)."""
        lab, unl = dataset.labelled(), dataset.unlabelled()
        mix = (max(len(lab) - 1, 0), 0.0, len(unl), 0.0)
        pairs, _ = labelled_case_pairs(
            batch_rng(self.seed, step), lab, unl, int(self.config["data"]["batch_size"]), mix=mix
        )
        return pair_batch(dataset, pairs)

    # -- the networks ----------------------------------------------------------------------

    def _register(self, v: dict, moving: jax.Array, fixed: jax.Array) -> dict:
        return self.reg_net.apply(v["reg"], moving, fixed)

    def _logits(self, v: dict, image: jax.Array) -> jax.Array:
        return self.seg_net.apply(v["seg"], image)

    def _scores(self, v: dict, image: jax.Array, fixed: jax.Array) -> jax.Array:
        return self.disc_net.apply(v["disc"], image, fixed)

    def predict(self, variables: dict, batch: dict) -> dict:
        """``{"disp", "warped"}`` (+ ``"velocity"``) for a pair, ``{"seg_probs"}`` for an
        ``image``; both for a batch with all three."""
        out = {}
        if "moving" in batch and "fixed" in batch:
            out.update(self._register(variables, batch["moving"], batch["fixed"]))
            out["warped"] = warp(batch["moving"], out["disp"])
        if "image" in batch:
            out["seg_probs"] = jax.nn.softmax(self._logits(variables, batch["image"]))
        return out

    # -- Deep Structure Sampling -----------------------------------------------------------

    def sampled_field(self, key: jax.Array, out: dict) -> jax.Array:
        """``φ̂``: the registration output ``out`` (``disp``, ``velocity``) with its
        displacement or velocity scaled by ``α ~ U(dss.range)`` per pair (``[B, *S, D]``)."""
        disp = out["disp"]
        alpha = dss_alpha(key, disp.shape[0], low=self.alpha_range[0], high=self.alpha_range[1])
        if self.dss_on == "velocity":
            steps = int(self.reg_net.integration_steps)
            return integrate_velocity(scale_field(out["velocity"], alpha), steps=steps)
        return scale_field(disp, alpha)

    def _onehot_warp(self, labels: jax.Array, disp: jax.Array) -> jax.Array:
        return warp_labels(labels, disp, num_classes=self.num_classes, mode="soft")

    # -- losses ----------------------------------------------------------------------------

    def disc_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_D`` on positives ``(x_r, x_f)`` and negatives ``(W(x_m, φ), x_f)``."""
        moving, fixed = batch["moving"], batch["fixed"]
        warped = warp(moving, self._register(v, moving, fixed)["disp"])
        x_r = reference_image(moving, fixed, beta=self.beta)
        return self.disc_objective(
            real_scores=self._scores(v, x_r, fixed), fake_scores=self._scores(v, warped, fixed)
        )

    def reg_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_reg`` (``S`` and ``D`` frozen in this update)."""
        moving, fixed = batch["moving"], batch["fixed"]
        out = self._register(v, moving, fixed)
        warped = warp(moving, out["disp"])
        augmented = warp(moving, self.sampled_field(key, out))
        return self.reg_objective(
            fake_scores=self._scores(v, warped, fixed),
            seg_augmented=jax.nn.softmax(self._logits(v, augmented)),
            seg_fixed=jax.nn.softmax(self._logits(v, fixed)),
            warped=warped,
            fixed=fixed,
            disp=out["disp"],
        )

    def seg_loss(self, v: dict, batch: dict, key: jax.Array):
        """``L_seg`` (``R`` and ``D`` frozen: ``φ̂`` and the confidence map are constants)."""
        moving, fixed = batch["moving"], batch["fixed"]
        field = jax.lax.stop_gradient(self.sampled_field(key, self._register(v, moving, fixed)))
        augmented = warp(moving, field)
        confidence = jax.nn.sigmoid(self._scores(v, augmented, fixed))[..., 0]
        return self.seg_objective(
            logits_fixed=self._logits(v, fixed),
            logits_augmented=self._logits(v, augmented),
            labels_augmented=self._onehot_warp(batch["moving_labels"], field),
            confidence=jax.lax.stop_gradient(confidence),
        )

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        """One update of ``D``, then ``R``, then ``S`` (module docstring)."""
        return self._step(state, batch, key)
