"""DeepAtlas: joint semi-supervised learning of registration and segmentation.

Xu & Niethammer, "DeepAtlas: Joint Semi-Supervised Learning of Image Registration and
Segmentation", MICCAI 2019.

Two networks, each with its own optimiser state: ``F_R(I_m, I_f) -> φ`` (a VoxelMorph
U-Net, :class:`~jrs_jax.nets.RegistrationNet`) and ``F_S(I) -> S`` (a U-Net,
:class:`~jrs_jax.nets.SegmentationNet`). Pairs are drawn from the four DeepAtlas cases
(:func:`~jrs_jax.data.deepatlas_pairs`). Labels ``S`` are one-hot maps; ``F_S``'s
predictions are softmax probabilities; labels are warped *softly* (linear interpolation of
each class, border padding) so the anatomy loss is differentiable with respect to ``φ``
and to ``F_S``. ``L_a`` is a soft Dice loss; ``L_sp`` is soft Dice + cross-entropy
(``loss.supervised="dice_ce"``, the default) or soft Dice alone (``"dice"``).

Registration step (``F_S`` frozen)::

    L_R = L_i(I_m∘φ, I_f) + λ_r L_r(φ) + λ_a L_a(Ŝ_m∘φ, Ŝ_f)

where ``Ŝ = S`` for a labelled image and ``Ŝ = F_S(I)`` otherwise (both sides predicted in
the unlabelled-unlabelled case). Segmentation step (``F_R`` frozen), per pair case::

    fixed unlabelled  (case "moving_labelled"): λ_a L_a(S_m∘φ, F_S(I_f)) + λ_sp L_sp(F_S(I_m), S_m)
    moving unlabelled (case "fixed_labelled"):  λ_a L_a(F_S(I_m)∘φ, S_f) + λ_sp L_sp(F_S(I_f), S_f)
    both labelled     (case "both_labelled"):   λ_sp L_sp(F_S(I_m), S_m)   (L_a has no F_S term)
    both unlabelled   (case "none_labelled"):   0 (no segmentation signal)

averaged over the batch (pairs of the last case only dilute it; the segmentation phase
samples with ``data.seg_mix``, which by default never draws them).

Schedule (all steps of one run, see :meth:`DeepAtlas.phase`): ``schedule.reg_pretrain``
registration steps without the anatomy term (unsupervised), then ``schedule.seg_pretrain``
segmentation steps through the frozen registration net (Semi-DeepAtlas: with one labelled
image, the anatomy term trains ``F_S`` on every unlabelled image), then joint training for
the remaining ``train.steps`` steps, alternating ``schedule.reg_steps`` registration and
``schedule.seg_steps`` segmentation steps (the paper's 20 : 1; MONAI's tutorial 40 : 5).
The partner network is frozen (not stepped, optimiser state untouched) in every step.

Config: ``configs/deepatlas.py`` (official-code and MONAI-tutorial defaults are variants).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data import sampling
from ..data.datasets import Dataset
from ..data.sampling import batch_rng, pair_batch
from ..losses import cross_entropy, regulariser, similarity, soft_dice
from ..nets import RegistrationNet, SegmentationNet
from ..spatial import warp, warp_labels
from ..train import Alternating, NetState, make_optimizer, make_update
from .base import Method

__all__ = ["DEEPATLAS_CASES", "DeepAtlas", "deepatlas_pairs", "update_counts"]

#: Names of the DeepAtlas pair cases returned by :func:`deepatlas_pairs` (case id = index).
DEEPATLAS_CASES = ("both_labelled", "fixed_labelled", "moving_labelled", "none_labelled")

_PHASES = ("reg_pretrain", "seg_pretrain", "reg", "seg")


def update_counts(config: dict) -> dict[str, int]:
    """Updates of ``F_R`` (``"reg"``) and ``F_S`` (``"seg"``) over a whole run of ``config``.

    Pretraining plus the joint rounds of ``schedule.reg_steps`` registration then
    ``schedule.seg_steps`` segmentation steps (a last partial round starts with
    registration), as :meth:`DeepAtlas.phase` schedules them. A baseline trained with as
    many updates is not short-changed (the demo and ``benchmarks/deepatlas_table.py``).
    """
    sched = config["schedule"]
    reg_pre, seg_pre = int(sched["reg_pretrain"]), int(sched["seg_pretrain"])
    r, s = int(sched["reg_steps"]), int(sched["seg_steps"])
    joint = int(config["train"]["steps"]) - reg_pre - seg_pre
    joint_reg = (joint // (r + s)) * r + min(joint % (r + s), r)
    return {"reg": reg_pre + joint_reg, "seg": seg_pre + joint - joint_reg}


def deepatlas_pairs(
    rng,
    labelled: Sequence[int],
    unlabelled: Sequence[int],
    batch_size: int,
    *,
    mix: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(fixed, moving)`` pairs from the four DeepAtlas cases.

    Case ids (see :data:`DEEPATLAS_CASES`): 0 both labelled, 1 fixed labelled only, 2 moving
    labelled only, 3 neither labelled. Each row first draws its case with probabilities
    ``mix``, then its fixed / moving indices uniformly from the matching pools (distinct
    indices when both come from the same pool).

    Empty cases: a case whose pools cannot give a pair (case 0 needs >= 2 labelled, case 3
    >= 2 unlabelled, cases 1 and 2 need >= 1 of each) is dropped and ``mix`` is
    renormalised over the remaining cases (e.g. no unlabelled subjects -> every pair is case
    0). Cases with ``mix`` 0 are never drawn.

    Returns:
      ``(pairs, cases)``: ``int64 [B, 2]`` (column 0 fixed, column 1 moving) and ``int64
      [B]`` case ids.

    Raises:
      ValueError: bad ``mix`` (not 4 non-negative values), overlapping pools, or no case
        possible with positive weight.
    """
    lab, unl = (
        sampling.unique_indices(labelled, "labelled"),
        sampling.unique_indices(unlabelled, "unlabelled"),
    )
    if np.intersect1d(lab, unl).size:
        raise ValueError(f"labelled and unlabelled overlap: {np.intersect1d(lab, unl).tolist()}")
    w = np.asarray(mix, np.float64).reshape(-1)
    if w.shape != (4,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"mix must be 4 non-negative weights; got {tuple(mix)}")
    cross = len(lab) >= 1 and len(unl) >= 1
    possible = np.array([len(lab) >= 2, cross, cross, len(unl) >= 2])
    w = np.where(possible, w, 0.0)
    if w.sum() <= 0:
        raise ValueError(
            f"no DeepAtlas case can be drawn with mix={tuple(mix)} from {len(lab)} labelled "
            f"and {len(unl)} unlabelled subjects"
        )
    g = sampling.as_rng(rng)
    b = int(batch_size)
    cases = g.choice(4, size=b, p=w / w.sum()).astype(np.int64)
    pairs = np.zeros((b, 2), np.int64)
    for c in range(4):
        sel = np.flatnonzero(cases == c)
        k = len(sel)
        if k == 0:
            continue
        if c == 0:
            pairs[sel] = sampling.draw_distinct(g, lab, k)
        elif c == 3:
            pairs[sel] = sampling.draw_distinct(g, unl, k)
        else:
            fixed_pool, moving_pool = (lab, unl) if c == 1 else (unl, lab)
            pairs[sel, 0] = fixed_pool[g.integers(0, len(fixed_pool), size=k)]
            pairs[sel, 1] = moving_pool[g.integers(0, len(moving_pool), size=k)]
    return pairs, cases


class DeepAtlas(Method):
    """DeepAtlas (see the module docstring). State: ``{"reg": NetState, "seg": NetState}``."""

    name = "deepatlas"
    can_register = True
    can_segment = True

    def __init__(self, config, *, shape, num_classes):
        super().__init__(config, shape=shape, num_classes=num_classes)
        loss, sched = config["loss"], config["schedule"]
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        self.sim = similarity(loss["similarity"])
        self.sim_kwargs = dict(loss.get("similarity_kwargs", {}))
        self.smooth = regulariser(loss["regulariser"])
        self.smooth_kwargs = dict(loss.get("regulariser_kwargs", {}))
        self.lambda_r = float(loss["reg_weight"])
        self.lambda_a = float(loss["anatomy_weight"])
        self.lambda_sp = float(loss["supervised_weight"])
        self.supervised = loss.get("supervised", "dice")
        if self.supervised not in ("dice", "dice_ce"):
            raise ValueError(
                f"loss.supervised must be 'dice' or 'dice_ce'; got {self.supervised!r}"
            )
        steps = int(config["train"]["steps"])
        self.reg_pretrain = int(sched["reg_pretrain"])
        self.seg_pretrain = int(sched["seg_pretrain"])
        if self.reg_pretrain + self.seg_pretrain > steps:
            raise ValueError(
                f"schedule.reg_pretrain + schedule.seg_pretrain = "
                f"{self.reg_pretrain + self.seg_pretrain} exceeds train.steps = {steps}"
            )
        self.joint = Alternating(
            (("reg", int(sched["reg_steps"])), ("seg", int(sched["seg_steps"])))
        )
        self.tx = {
            "reg": make_optimizer(**config["optim"]["reg"], total_steps=steps),
            "seg": make_optimizer(**config["optim"]["seg"], total_steps=steps),
        }
        self._updates = {
            "reg_pretrain": make_update(self._reg_loss(anatomy=False), train="reg", donate=True),
            "reg": make_update(self._reg_loss(anatomy=True), train="reg", donate=True),
            "seg": make_update(self.seg_loss, train="seg", donate=True),
        }
        self._updates["seg_pretrain"] = self._updates["seg"]

    # -- schedule, state, data -------------------------------------------------------------

    def phase(self, step: int) -> str:
        """``"reg_pretrain"``, ``"seg_pretrain"``, or the joint stage's ``"reg"`` / ``"seg"``."""
        if step < self.reg_pretrain:
            return "reg_pretrain"
        if step < self.reg_pretrain + self.seg_pretrain:
            return "seg_pretrain"
        return self.joint.phase(step - self.reg_pretrain - self.seg_pretrain)

    @property
    def best_metric(self) -> str:
        return "val/mean_dice"

    def init(self, key: jax.Array) -> dict:
        k_reg, k_seg = jax.random.split(key)
        x = jnp.zeros((1, *self.shape, 1), jnp.float32)
        return {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx["reg"]),
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx["seg"]),
        }

    def sample_batch(self, dataset: Dataset, step: int) -> dict[str, np.ndarray]:
        data = self.config["data"]
        seg = self.phase(step) in ("seg", "seg_pretrain")
        mix = data["seg_mix"] if seg else data["reg_mix"]
        lab, unl = dataset.labelled(), dataset.unlabelled()
        pairs, cases = deepatlas_pairs(
            batch_rng(self.seed, step), lab, unl, int(data["batch_size"]), mix=mix
        )
        return {**pair_batch(dataset, pairs), "case": cases}

    # -- the networks ----------------------------------------------------------------------

    def register(self, variables: dict, moving: jax.Array, fixed: jax.Array) -> dict:
        return self.reg_net.apply(variables["reg"], moving, fixed)

    def segment(self, variables: dict, image: jax.Array) -> jax.Array:
        return self.seg_net.apply(variables["seg"], image)

    # -- losses ----------------------------------------------------------------------------

    def _onehot(self, labels: jax.Array) -> jax.Array:
        return jax.nn.one_hot(labels, self.num_classes)

    def _warp_soft(self, probs: jax.Array, disp: jax.Array) -> jax.Array:
        return warp_labels(probs, disp, num_classes=self.num_classes, mode="soft")

    @staticmethod
    def _pick(has_label: jax.Array, manual: jax.Array, predicted: jax.Array) -> jax.Array:
        """Per example: the manual one-hot map where labelled, else the prediction."""
        sel = has_label.reshape((-1,) + (1,) * (manual.ndim - 1))
        return jnp.where(sel, manual, predicted)

    def _sup(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        loss = soft_dice(jax.nn.softmax(logits), self._onehot(labels))
        if self.supervised == "dice_ce":
            loss = loss + cross_entropy(logits, labels)
        return loss

    def _reg_loss(self, *, anatomy: bool):
        def loss_fn(v: dict, batch: dict, key: jax.Array):
            moving, fixed = batch["moving"], batch["fixed"]
            disp = self.register(v, moving, fixed)["disp"]
            sim = self.sim(warp(moving, disp), fixed, **self.sim_kwargs)
            smooth = self.smooth(disp, **self.smooth_kwargs)
            total = sim + self.lambda_r * smooth
            parts = {"sim": sim.mean(), "smooth": smooth.mean()}
            if anatomy:  # F_S is frozen here: its predictions are constants
                s_m = self._pick(
                    batch["moving_has_label"],
                    self._onehot(batch["moving_labels"]),
                    jax.nn.softmax(self.segment(v, moving)),
                )
                s_f = self._pick(
                    batch["fixed_has_label"],
                    self._onehot(batch["fixed_labels"]),
                    jax.nn.softmax(self.segment(v, fixed)),
                )
                anat = soft_dice(self._warp_soft(s_m, disp), s_f)
                total = total + self.lambda_a * anat
                parts["anatomy_reg"] = anat.mean()
            return total.mean(), parts

        return loss_fn

    def seg_loss(self, v: dict, batch: dict, key: jax.Array):
        """The case-wise segmentation loss (module docstring); ``F_R`` is frozen."""
        moving, fixed, case = batch["moving"], batch["fixed"], batch["case"]
        disp = jax.lax.stop_gradient(self.register(v, moving, fixed)["disp"])
        logits_m, logits_f = self.segment(v, moving), self.segment(v, fixed)
        p_m, p_f = jax.nn.softmax(logits_m), jax.nn.softmax(logits_f)
        s_m, s_f = self._onehot(batch["moving_labels"]), self._onehot(batch["fixed_labels"])
        # anatomy: case 2 (moving labelled) compares S_m∘φ with F_S(I_f);
        #          case 1 (fixed labelled)  compares F_S(I_m)∘φ with S_f.
        anat_2 = soft_dice(self._warp_soft(s_m, disp), p_f)
        anat_1 = soft_dice(self._warp_soft(p_m, disp), s_f)
        anat = jnp.where(case == 2, anat_2, jnp.where(case == 1, anat_1, 0.0))
        # supervised: on the labelled side (the moving image when both are labelled).
        sup_m = self._sup(logits_m, batch["moving_labels"])
        sup_f = self._sup(logits_f, batch["fixed_labels"])
        sup = jnp.where((case == 0) | (case == 2), sup_m, jnp.where(case == 1, sup_f, 0.0))
        total = self.lambda_a * anat + self.lambda_sp * sup
        return total.mean(), {"anatomy_seg": anat.mean(), "supervised": sup.mean()}

    def train_step(self, state: dict, batch: dict, key: jax.Array, step: int):
        phase = self.phase(step)
        state, metrics = self._updates[phase](state, batch, key)
        return state, {**metrics, f"loss/{phase}": metrics["loss"]}
