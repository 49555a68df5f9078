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
# # DeepAtlas quickstart
#
# From a deformation field to a trained joint registration + segmentation model, in four
# steps: **warp and integrate** a field, **compose losses** as plain functions, **train a
# small DeepAtlas** on the built-in synthetic anatomy, and **look at the results**.
#
# Conventions (see the README): images are `[B, *S, C]` channels last; displacements are
# `[B, *S, D]` in voxels along array axes; `warp(I, u)(x) = I(x + u(x))`.
#
# Set `JRS_SMOKE=1` to run everything on tiny shapes in a few seconds (the test suite does).

# %%
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrs_jax
from jrs_jax import experiment, losses, spatial, viz
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.train import variables

SMOKE = os.environ.get("JRS_SMOKE") == "1"
SIZE = 32 if SMOKE else 96
WORK = tempfile.mkdtemp(prefix="jrs_quickstart_")
CONFIGS = os.path.join(os.path.dirname(jrs_jax.__file__), os.pardir, "configs")  # the repo's
print(jax.default_backend(), "| work folder:", WORK)

# %% [markdown]
# ## 1. Warp and integrate a field
#
# A random stationary velocity `v`, integrated by scaling and squaring, gives a
# diffeomorphism `exp(v)`; `exp(-v)` is its inverse, so composing the two is (close to)
# the identity.

# %%
key_img, key_vel = jax.random.split(jax.random.key(0))
image = spatial.gaussian_filter(jax.random.normal(key_img, (1, SIZE, SIZE, 1)), 3.0)
image = (image - image.min()) / (image.max() - image.min())
velocity = spatial.random_velocity(key_vel, (SIZE, SIZE), amplitude=2.0, control_spacing=12)
disp = spatial.integrate_velocity(velocity, steps=7)
inverse = spatial.integrate_velocity(-velocity, steps=7)
moving = spatial.warp(image, inverse)  # the image deformed by the inverse map

roundtrip = spatial.compose(disp, inverse)
print("max |exp(v) o exp(-v)| =", float(jnp.abs(roundtrip).max()), "voxels")
print("min det J =", float(spatial.jacobian_determinant(disp).min()))

fig = viz.registration_panel(image[0], moving[0], spatial.warp(moving, disp)[0], disp=disp[0])
fig  # noqa: B018 (display)

# %% [markdown]
# ## 2. Compose losses as functions
#
# `losses.combine` builds an objective from named, weighted terms (weights may follow a
# schedule); it returns the total and the unweighted terms. Here we recover the velocity
# from the pair by gradient descent on LNCC + diffusion.

# %%
objective = losses.combine(
    sim=losses.term(losses.local_ncc, "warped", "fixed", window=9),
    smooth=losses.term(losses.diffusion, "disp", weight=0.5),
)


def loss_fn(v):
    u = spatial.integrate_velocity(v)
    return objective(warped=spatial.warp(moving, u), fixed=image, disp=u)


tx = optax.adam(0.1)


@jax.jit
def fit_step(v, opt_state):
    (_, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(v)
    updates, opt_state = tx.update(g, opt_state)
    return optax.apply_updates(v, updates), opt_state, parts


v = jnp.zeros_like(velocity)
opt_state = tx.init(v)
print("LNCC loss before:", float(losses.local_ncc(moving, image, window=9)[0]))
for _ in range(20 if SMOKE else 200):
    v, opt_state, parts = fit_step(v, opt_state)
print("after:", {k: round(float(x), 4) for k, x in parts.items()})

# %% [markdown]
# ## 3. Train a small DeepAtlas
#
# The synthetic anatomy is written in the Learn2Reg layout, so the same reader serves real
# data. DeepAtlas trains a registration and a segmentation network with their own
# optimisers: unsupervised registration first, then segmentation through the frozen
# registration (Semi-DeepAtlas), then both alternately (20 : 1).

# %%
dataset = write_learn2reg_dataset(
    os.path.join(WORK, "data"),
    key=0,
    shape=(SIZE, SIZE),
    num_subjects=12 if SMOKE else 20,
    num_heldout=3,
    num_val_pairs=6,
)
cfg = load_config(os.path.join(CONFIGS, "deepatlas.py") + (":smoke" if SMOKE else ""))
cfg = apply_overrides(cfg, [f"data.dataset={dataset!r}"])
if not SMOKE:
    cfg = apply_overrides(
        cfg,
        [
            "train.steps=600",
            "schedule.reg_pretrain=200",
            "schedule.seg_pretrain=100",
            "train.eval_every=300",
            "train.ckpt_every=300",
        ],
    )
result = experiment.train(cfg, workdir=os.path.join(WORK, "deepatlas"), progress=not SMOKE)
result["evaluation"]

# %% [markdown]
# ## 4. Look at the results
#
# Registration of a held-out pair (label contours, deformation grid, Jacobian determinant),
# the segmentation of a held-out subject, and the training curves.

# %%
method, state = result["method"], result["state"]
ds = experiment.load_dataset(cfg)
params = variables(jax.device_get(state))
fixed_i, moving_i = ds.val_pairs[0]
f, m = ds.subjects[fixed_i], ds.subjects[moving_i]
pred = method.run(params, {"moving": m.image[None], "fixed": f.image[None]}, "register")
u = pred["disp"]
warped_labels = spatial.warp_labels(m.labels[None], u, num_classes=1, mode="nearest")
fig = viz.registration_panel(
    f.image,
    m.image,
    pred["warped"][0],
    fixed_labels=f.labels,
    moving_labels=m.labels,
    warped_labels=np.asarray(warped_labels[0]),
    disp=np.asarray(u[0]),
)
fig  # noqa: B018

# %%
pred = method.labels(method.run(params, {"image": f.image[None]}, "segment"))[0]
viz.overlay(f.image, pred, title="DeepAtlas segmentation (held-out subject)")

# %%
viz.training_curves(os.path.join(WORK, "deepatlas", "metrics.jsonl"))
