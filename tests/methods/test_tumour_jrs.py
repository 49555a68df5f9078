"""Tumour JRS: the similarity is weighted by 1 − p_tumour (stop-gradient) or its variants,
the loss is the documented composition, training pairs are atlas -> patient, and the pair
metrics score the tumour and the field in and around the lesion."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import losses
from jrs_jax.data import write_lesion_dataset
from jrs_jax.evaluation import evaluate
from jrs_jax.methods.tumour_jrs import lesion_regions
from jrs_jax.spatial import warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "tumour_jrs.py:smoke")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_lesion_dataset(
        tmp_path_factory.mktemp("tumour") / "d",
        key=2,
        shape=(32, 32),
        num_subjects=7,
        num_heldout=2,
        lesion_radius=(3.0, 4.0),
        mass_effect=1.0,
    )


def _setup(data, variants="", *sets):
    spec = SMOKE + ("," + variants if variants else "")
    return build_on(spec, data, *sets)


def test_tumour_label_is_the_lesion_and_pairs_are_atlas_to_patient(data):
    _cfg, ds, method = _setup(data)
    assert ds.label_names[method.tumour] == "lesion"
    batch = method.sample_batch(ds, 0)
    atlas = ds.subjects[0]
    for j in range(len(batch["moving"])):
        np.testing.assert_array_equal(batch["moving"][j], atlas.image)
        assert (batch["fixed_labels"][j] == method.tumour).any()
    assert not (batch["moving_labels"] == method.tumour).any()


@pytest.mark.parametrize("variants", ["", "hard", "unmasked", "truth", "separate"])
def test_loss_is_the_weighted_mse_plus_smoothness_plus_tumour_ce(data, perturbed, variants):
    _, ds, method = _setup(data, variants)
    state = perturbed(method.init(jax.random.key(0), ds), scale=0.2)
    v = variables(state)
    batch = method.sample_batch(ds, 0)
    logits, disp = method.forward(v, batch)
    assert float(jnp.abs(disp).max()) > 0.05
    p = jax.nn.softmax(logits)[..., 1:]
    tumour = (batch["fixed_labels"] == method.tumour).astype(np.float32)[..., None]
    w = {
        "": 1.0 - p,
        "separate": 1.0 - p,
        "hard": (p < 0.5).astype(jnp.float32),
        "unmasked": jnp.ones_like(p),
        "truth": 1.0 - tumour,
    }[variants]
    err = (warp(jnp.asarray(batch["moving"]), disp) - batch["fixed"]) ** 2
    sim = jnp.sum(w * err, axis=(1, 2, 3)) / jnp.sum(w, axis=(1, 2, 3))
    ce = losses.cross_entropy(logits, tumour[..., 0].astype(np.int32))
    expected = (sim + 0.1 * losses.diffusion(disp) + 0.5 * ce).mean()
    total, parts = jax.jit(method.loss)(v, batch, jax.random.key(0))
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"sim", "smooth", "seg"}


def test_the_mask_carries_no_gradient_to_the_segmentation(data, perturbed):
    """Through w = 1 − stop_gradient(p): with the CE off, the segmentation decoder gets no
    gradient from the similarity (separate nets: the segmentation net gets none at all)."""
    _, ds, method = _setup(data, "separate", "loss.seg_weight=0.0")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    batch = method.sample_batch(ds, 0)
    grads = jax.grad(lambda p: method.loss({**v, "seg": p}, batch, None)[0])(v["seg"])
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_lesion_regions_are_the_lesion_and_a_band_around_it():
    lesion = np.zeros((9, 9), bool)
    lesion[4, 4] = True
    inside, around = lesion_regions(lesion, band=2)
    assert inside.sum() == 1 and not (inside & around).any()
    assert around.sum() == 12  # the face-connected diamond of radius 2, less its centre


def test_pair_metrics_score_the_truth_field_and_a_perfect_segmentation(data):
    """Predicting the ground-truth field and the true tumour: EPE 0, tumour Dice 1, and the
    |log det J| of the truth (positive: the mass effect compresses / stretches)."""
    _, ds, method = _setup(data)
    ev = evaluate(method, variables(method.init(jax.random.key(0), ds)), ds)
    assert {"val/tumour_dice", "val/epe_lesion", "val/epe_around"} <= set(ev.summary)
    from jrs_jax.data import pair_batch
    from jrs_jax.evaluation import evaluation_pairs

    pairs = evaluation_pairs(ds, mode="atlas")
    b = pair_batch(ds, pairs, fields=True)
    lesion = (b["fixed_labels"] == method.tumour)[..., None].astype(np.float32)
    pred = {"disp": b["gt_disp"], "tumour_probs": lesion}
    m = method.pair_metrics(pred, b)
    np.testing.assert_allclose(m["tumour_dice"], 1.0)
    np.testing.assert_allclose(m["epe_lesion"], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["epe_around"], 0.0, atol=1e-6)
    assert (m["abs_logj_around"] > 0).all()
    zero = method.pair_metrics({"disp": 0 * b["gt_disp"], "tumour_probs": 0 * lesion}, b)
    assert (zero["epe_around"] > 0.1).all() and np.isnan(zero["tumour_dice"]).sum() == 0
    np.testing.assert_allclose(zero["tumour_dice"], 0.0)
    np.testing.assert_allclose(zero["abs_logj_lesion"], 0.0, atol=1e-6)
