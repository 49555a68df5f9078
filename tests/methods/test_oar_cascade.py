"""OAR cascade: template selection by the DI score, the ROI crops around the warped organs'
centroids, the auto-context rounds, the loss 0.5 L_reg + L_seg, and the registration-only
variant."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import losses, metrics
from jrs_jax.data import subject_batch, write_small_organs_dataset
from jrs_jax.methods.oar_cascade import select_template
from jrs_jax.spatial import crop_around, soft_centroid, warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "oar_cascade.py:smoke")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_organs_dataset(
        tmp_path_factory.mktemp("oar") / "d", key=1, shape=(32, 32), num_subjects=6, num_heldout=2
    )


def _setup(data, variants="", *sets):
    return build_on(SMOKE + ("," + variants if variants else ""), data, *sets)


def test_template_selection_scores_di_and_picks_the_lowest():
    """Without registration steps DI is plain (1 − Dice) + 0.5 MSE of the raw pairs; an
    outlier candidate (shifted) loses to a typical one."""
    rng = np.random.default_rng(0)
    base = np.zeros((16, 16), np.int32)
    base[4:10, 5:11] = 1
    base[10:13, 3:6] = 2
    labels = np.stack([np.roll(base, s, axis=1) for s in (5, 0, 1, 0)])
    images = (labels[..., None] * 0.4 + 0.02 * rng.standard_normal((4, 16, 16, 1))).astype(
        np.float32
    )
    pick, di = select_template(images, labels, num_classes=3, candidates=3, steps=0)
    expected = [
        np.mean(
            [
                (1 - metrics.mean_dice(labels[m], labels[f], labels=[1, 2], missing="zero"))
                + 0.5 * np.mean((images[m] - images[f]) ** 2)
                for f in range(4)
                if f != m
            ]
        )
        for m in range(3)
    ]
    np.testing.assert_allclose(di, expected, rtol=1e-5)
    assert pick == int(np.argmin(expected)) and pick != 0
    _, di_reg = select_template(images, labels, num_classes=3, candidates=3, steps=30)
    assert di_reg[0] < di[0]  # registering the outlier first lowers its DI


def test_init_stores_the_selected_template(data):
    _, ds, method = _setup(data)
    state = method.init(jax.random.key(0), ds)
    i = int(state["template_index"])
    assert i in ds.labelled()
    np.testing.assert_array_equal(np.asarray(state["template_image"]), ds.subjects[i].image)
    np.testing.assert_array_equal(
        np.asarray(state["template_labels"]).argmax(-1), ds.subjects[i].labels
    )
    blank = method.init(jax.random.key(0))
    assert jax.tree.map(jnp.shape, blank) == jax.tree.map(jnp.shape, state)


def test_each_organ_is_segmented_on_its_crop_around_the_warped_centroid(data, perturbed):
    _, ds, method = _setup(data)
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    image = jnp.asarray(subject_batch(ds, np.asarray([4, 5]))["image"])
    prev = jnp.zeros((2, *method.shape, method.num_classes))
    disp = method._register(v, image, prev)
    masks = warp(
        jnp.broadcast_to(v["template_labels"], (*image.shape[:-1], method.num_classes)), disp
    )
    organs = np.asarray(method._organs(v, image, masks, prev))
    centres, _ = soft_centroid(masks[..., 1:])
    for k in range(method.num_classes - 1):
        _, start = crop_around(image, centres[:, k], size=method.crop)
        for b in range(2):
            inside = np.zeros(method.shape, bool)
            s = np.asarray(start[b])
            inside[s[0] : s[0] + method.crop[0], s[1] : s[1] + method.crop[1]] = True
            assert organs[b, ..., k][~inside].max() == 0.0
            assert organs[b, ..., k][inside].min() > 0.0


def test_rounds_feed_the_previous_segmentation_back(data, perturbed):
    _, ds, method = _setup(data, "it3")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    image = jnp.asarray(subject_batch(ds, np.asarray([4]))["image"])
    rounds = method.cascade(v, image)
    assert len(rounds) == 3
    assert not np.allclose(rounds[0]["disp"], rounds[1]["disp"])  # P_1 changes R's input
    np.testing.assert_allclose(np.asarray(rounds[-1]["probs"]).sum(-1), 1.0, rtol=1e-5)
    out = method.run(v, {"image": image}, "segment")
    np.testing.assert_allclose(out["seg_probs"], rounds[-1]["probs"], rtol=1e-5, atol=1e-6)


def test_loss_is_half_l_reg_plus_l_seg(data, perturbed):
    _, ds, method = _setup(data, "it1")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    batch = method.sample_batch(ds, 0)
    (r,) = method.cascade(v, jnp.asarray(batch["image"]))
    k = method.num_classes
    target = jax.nn.one_hot(batch["labels"], k)
    l_reg = (
        losses.soft_dice(r["warped_masks"], target)
        + 0.5 * losses.mse(r["warped_template"], batch["image"])
        + 0.1 * losses.centroid_distance(r["warped_masks"], target, num_classes=k)
    )
    p = r["probs"]
    l_seg = losses.soft_dice(p, target) + 0.25 * losses.cross_entropy(
        jnp.log(jnp.maximum(p, 1e-6)), batch["labels"]
    )
    total, _ = jax.jit(method.loss)(v, batch, None)
    np.testing.assert_allclose(float(total), float((0.5 * l_reg + l_seg).mean()), rtol=1e-5)


def test_registration_only_segments_with_the_warped_template(data, perturbed):
    _, ds, method = _setup(data, "atlas")
    state = method.init(jax.random.key(0), ds)
    assert "seg" not in state
    v = variables(perturbed(state, scale=0.2))
    out = method.run(v, {"image": subject_batch(ds, np.asarray([4]))["image"]}, "segment")
    np.testing.assert_allclose(out["seg_probs"], out["atlas_probs"])


def test_labels_outside_roi_labels_keep_the_warped_template(data, perturbed):
    _, ds, method = _setup(data, "", "model.roi_labels=[2, 3]")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    image = jnp.asarray(subject_batch(ds, np.asarray([4]))["image"])
    prev = jnp.zeros((1, *method.shape, method.num_classes))
    masks = jax.nn.one_hot(jnp.asarray(ds.subjects[4].labels)[None], method.num_classes)
    organs = np.asarray(method._organs(v, image, masks, prev))
    keep = [k for k in range(1, method.num_classes) if k not in (2, 3)]
    np.testing.assert_array_equal(organs[..., np.asarray(keep) - 1], np.asarray(masks)[..., keep])
    assert not np.array_equal(organs[..., 1], np.asarray(masks)[..., 2])
