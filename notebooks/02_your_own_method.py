# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Write your own joint method
#
# A new joint registration + segmentation method on the method protocol
# (`jrs_jax.methods.base`), compared with VoxelMorph in a small study: **data**, **the
# method** (objectives, two networks, a training regime, `predict`), **a paired study** and
# **a qualitative result**. Set `JRS_SMOKE=1` for a tiny run of a few seconds (the tests do).

# %%
import os
import tempfile
from typing import ClassVar

import jax
import numpy as np

import jrs_jax
from jrs_jax import viz
from jrs_jax.config import load_config
from jrs_jax.data import batch_rng, load_learn2reg, pair_batch, sample_pairs
from jrs_jax.experiment import load_run
from jrs_jax.losses import combine, dice_ce, linear_ramp, regulariser, similarity, soft_dice, term
from jrs_jax.methods import Method, register_method
from jrs_jax.nets import RegistrationNet, SegmentationNet
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.studies import run_study
from jrs_jax.train import Alternating, NetState, make_alternating_step, make_optimizer, variables

try:
    from IPython.display import Image, Markdown, display
except ImportError:  # plain Python (e.g. `python 02_your_own_method.py`): print instead
    Image, Markdown, display = str, str, print

SMOKE = os.environ.get("JRS_SMOKE") == "1"
SIZE = 32 if SMOKE else 64
WORK = tempfile.mkdtemp(prefix="jrs_own_method_")
CONFIGS = os.path.join(os.path.dirname(jrs_jax.__file__), os.pardir, "configs")  # the repo's
print(jax.default_backend(), "| work folder:", WORK)

# %% [markdown]
# ## 1. Data
#
# The built-in synthetic anatomy (`write_learn2reg_dataset`, scenario `"anatomy"`): 10
# subjects, the last 2 held out for validation. The study below generates it in `OUT/data`
# from this description, so every row and seed trains on the same files.

# %%
DATA = {
    "scenario": "anatomy",
    "seed": 0,
    "settings": {"shape": [SIZE, SIZE], "num_subjects": 10, "num_heldout": 2},
    "why": f"{SIZE}x{SIZE} synthetic anatomy, 10 subjects (2 held out)",
}

# %% [markdown]
# ## 2. The method
#
# Two networks, each with its own optimiser, trained alternately (4 `F_R` steps, then 1 `F_S`
# step; the partner is frozen):
#
# - `F_R`: `LNCC(I_m∘φ, I_f) + λ_r diffusion(φ) + λ_a(t) Dice(F_S(I_m)∘φ, F_S(I_f))`, the
#   anatomy weight `λ_a(t)` ramping up from 0 while `F_S` learns;
# - `F_S`: `DiceCE(F_S(I_m), S_m) + λ_c Dice(F_S(I_m)∘φ, F_S(I_f))` on a labelled moving
#   image: its segmentations must agree across the registration.
#
# With `with_step=True` the regime passes each loss its network's own update count: the
# clock of the scheduled weight.


# %%
@register_method
class SegRegConsistency(Method):
    """State ``{"reg": NetState, "seg": NetState}``; config sections ``reg_model``,
    ``seg_model``, ``loss``, ``optim``, ``schedule`` (see ``cfg`` below)."""

    name = "segreg"
    tasks: ClassVar[dict] = {"register": ("moving", "fixed"), "segment": ("image",)}

    def __init__(self, config, **data):
        super().__init__(config, **data)
        loss, steps = config["loss"], int(config["train"]["steps"])
        self.reg_net = RegistrationNet(**config["reg_model"])
        self.seg_net = SegmentationNet(num_classes=self.num_classes, **config["seg_model"])
        ramp = linear_ramp(0.0, loss["anatomy_weight"], steps=loss["anatomy_ramp"])
        self.reg_objective = combine(
            sim=term(
                similarity(loss["similarity"]), "warped", "fixed", **loss["similarity_kwargs"]
            ),
            smooth=term(
                regulariser(loss["regulariser"]),
                "disp",
                weight=loss["reg_weight"],
                **loss["regulariser_kwargs"],
            ),
            anatomy=term(soft_dice, "warped_seg", "fixed_seg", weight=ramp),
        )
        self.seg_objective = combine(
            supervised=term(dice_ce, "logits", "labels", weight=loss["supervised_weight"]),
            consistency=term(
                soft_dice, "warped_seg", "fixed_seg", weight=loss["consistency_weight"]
            ),
        )
        self.schedule = Alternating(tuple(config["schedule"].items()))  # (("reg", 4), ("seg", 1))
        self.tx = {n: make_optimizer(**config["optim"], total_steps=steps) for n in ("reg", "seg")}
        self._step = make_alternating_step(
            {"reg": self.reg_loss, "seg": self.seg_loss},
            self.schedule,
            donate=True,
            with_step=True,
        )

    def init(self, key, dataset=None):
        k_reg, k_seg = jax.random.split(key)
        x = self.zeros()
        return {
            "reg": NetState.create(params=self.reg_net.init(k_reg, x, x), tx=self.tx["reg"]),
            "seg": NetState.create(params=self.seg_net.init(k_seg, x), tx=self.tx["seg"]),
        }

    def sample_batch(self, dataset, step):
        rng = batch_rng(self.seed, step)  # pure in (seed, step)
        pairs = sample_pairs(rng, dataset.training(), int(self.config["data"]["batch_size"]))
        if self.schedule.phase(step) == "seg":  # segmentation steps: a labelled moving image
            pairs[:, 1] = rng.choice(dataset.labelled(), len(pairs))
        return pair_batch(dataset, pairs)

    def predict(self, variables, batch):
        out = {}
        if "moving" in batch and "fixed" in batch:
            disp = self.reg_net.apply(variables["reg"], batch["moving"], batch["fixed"])["disp"]
            out.update(disp=disp, warped=warp(batch["moving"], disp))
        if "image" in batch:
            out["seg_probs"] = jax.nn.softmax(self.seg_net.apply(variables["seg"], batch["image"]))
        return out

    def _probs(self, v, image):
        return self.predict(v, {"image": image})["seg_probs"]

    def _warp_seg(self, probs, disp):
        return warp_labels(probs, disp, num_classes=self.num_classes)  # soft: differentiable

    def reg_loss(self, v, batch, key, step):  # F_S frozen; step: F_R's update count
        out = self.predict(v, batch)
        return self.reg_objective(
            step=step,
            warped=out["warped"],
            fixed=batch["fixed"],
            disp=out["disp"],
            warped_seg=self._warp_seg(self._probs(v, batch["moving"]), out["disp"]),
            fixed_seg=self._probs(v, batch["fixed"]),
        )

    def seg_loss(self, v, batch, key, step):  # F_R frozen
        disp = self.predict(v, batch)["disp"]
        logits = self.seg_net.apply(v["seg"], batch["moving"])
        return self.seg_objective(
            logits=logits,
            labels=batch["moving_labels"],
            warped_seg=self._warp_seg(jax.nn.softmax(logits), disp),
            fixed_seg=self._probs(v, batch["fixed"]),
        )

    def train_step(self, state, batch, key, step):
        return self._step(state, batch, key, step)


# %% [markdown]
# ## 3. A paired study against VoxelMorph
#
# Both rows are config dicts. Equal budgets: VoxelMorph gets as many updates as `F_R` (same
# network, loss and optimiser); both are validated on the same held-out pairs per seed, and
# `gaps` are the per-seed differences of registration Dice (same seed: same data, same split).

# %%
vxm = load_config(os.path.join(CONFIGS, "voxelmorph.py") + (":smoke" if SMOKE else ""))
steps = 20 if SMOKE else 500
schedule = {"reg": 4, "seg": 1}
n_reg = Alternating(tuple(schedule.items())).count("reg", steps)
seg_model = (
    {"features": [4, 8], "decoder_features": [8, 4]}
    if SMOKE
    else {"features": [16, 32, 32], "decoder_features": [32, 16, 16]}
)
cfg = {
    "method": "segreg",
    "seed": 0,
    "data": {**vxm["data"], "num_labelled": 4},
    "reg_model": vxm["model"],
    "seg_model": seg_model,
    "loss": {
        **vxm["loss"],
        "anatomy_weight": 1.0,
        "anatomy_ramp": n_reg // 2,  # in F_R updates
        "supervised_weight": 1.0,
        "consistency_weight": 0.5,
    },
    "optim": vxm["optim"],
    "schedule": schedule,
    "train": {
        **vxm["train"],
        "steps": steps,
        "log_every": 10,
        "eval_every": steps,
        "ckpt_every": steps,
    },
    "eval": vxm["eval"],
}
every = {"train.steps": n_reg, "train.eval_every": n_reg, "train.ckpt_every": n_reg}
study = {
    "name": "segreg",
    "claim": "an anatomy term from a jointly trained segmenter improves registration",
    "data": DATA,
    "seeds": [0, 1] if SMOKE else [0, 1, 2],
    "groups": [
        {
            "name": "N = 4",
            "rows": [
                {"name": "voxelmorph", "label": "VoxelMorph", "config": vxm, "set": every},
                {"name": "segreg", "label": "SegRegConsistency", "config": cfg},
            ],
        }
    ],
    "columns": {
        "val/reg_dice": "registration Dice",
        "val/seg_dice": "segmentation Dice",
        "val/folding_percent": "folding %",
    },
    "gaps": [{"row": "segreg", "baseline": "voxelmorph", "metric": "val/reg_dice"}],
    "budget": f"{steps} steps at 4 : 1 = {n_reg} F_R updates; VoxelMorph {n_reg} updates.",
}
result = run_study(study, out=os.path.join(WORK, "study"), progress=False)

# %%
display(Markdown(result["table"]))
display(Image(os.path.join(WORK, "study", "table.png")))

# %% [markdown]
# ## 4. A held-out pair
#
# The seed-0 run of the new method, reloaded from its run folder (best checkpoint), registers
# a validation pair through `method.run(..., "register")` (its jitted `predict`).

# %%
rec = next(r for r in result["records"] if r["row"] == "segreg" and r["seed"] == 0)
method, state, run_cfg = load_run(rec["workdir"])
ds = load_learn2reg(run_cfg["data"]["dataset"])
batch = pair_batch(ds, np.asarray(ds.val_pairs[:1]))
pred = method.run(variables(state), batch, "register")
warped_labels = warp_labels(batch["moving_labels"], pred["disp"], num_classes=1, mode="nearest")
fig = viz.registration_panel(
    batch["fixed"][0],
    batch["moving"][0],
    np.asarray(pred["warped"][0]),
    fixed_labels=batch["fixed_labels"][0],
    moving_labels=batch["moving_labels"][0],
    warped_labels=np.asarray(warped_labels[0]),
    disp=np.asarray(pred["disp"][0]),
)
fig  # noqa: B018 (display)
