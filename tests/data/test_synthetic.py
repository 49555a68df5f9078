"""Tests for :mod:`jrs_jax.data.synthetic` (template, subjects, Learn2Reg writer)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import load_image, load_labels
from jrs_jax.data.synthetic import make_subjects, make_template, write_learn2reg_dataset
from jrs_jax.spatial import jacobian_determinant, warp_labels

SHAPES = [(32, 32), (16, 16, 16)]
# 16^3 structures are a few voxels wide: smaller deformations there.
AMPLITUDE = {2: 2.0, 3: 1.0}
N = 3


def _dice(a: np.ndarray, b: np.ndarray, num_labels: int) -> float:
    return float(
        np.mean(
            [
                2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
                for k in range(1, num_labels + 1)
            ]
        )
    )


@pytest.fixture(scope="module", params=SHAPES, ids=["2d", "3d"])
def population(request):
    shape = request.param
    template = make_template(jax.random.PRNGKey(0), shape)
    subjects = make_subjects(
        jax.random.PRNGKey(1), template, num_subjects=N, amplitude=AMPLITUDE[len(shape)]
    )
    return template, subjects


def test_template_deterministic_and_key_dependent():
    a = make_template(jax.random.PRNGKey(3), (32, 32))
    b = make_template(jax.random.PRNGKey(3), (32, 32))
    c = make_template(jax.random.PRNGKey(4), (32, 32))
    assert a.dtype == np.int32 and a.shape == (32, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_subjects_deterministic_and_key_dependent(population):
    template, s = population
    amp = AMPLITUDE[template.ndim]
    again = make_subjects(jax.random.PRNGKey(1), template, num_subjects=N, amplitude=amp)
    other = make_subjects(jax.random.PRNGKey(2), template, num_subjects=N, amplitude=amp)
    for k in ("images", "labels", "disp", "disp_inv"):
        np.testing.assert_array_equal(s[k], again[k])
        assert not np.array_equal(s[k], other[k])


def test_shapes_and_dtypes(population):
    template, s = population
    shape, d = template.shape, template.ndim
    assert s["images"].shape == (N, *shape, 1) and s["images"].dtype == np.float32
    assert s["labels"].shape == (N, *shape) and s["labels"].dtype == np.int32
    assert s["disp"].shape == (N, *shape, d) and s["disp"].dtype == np.float32
    assert s["disp_inv"].shape == (N, *shape, d) and s["disp_inv"].dtype == np.float32
    assert -0.3 < s["images"].min() and s["images"].max() < 1.5


def test_every_label_present(population):
    template, s = population
    assert set(np.unique(template).tolist()) == {0, 1, 2, 3, 4}
    for lab in s["labels"]:
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_template_nesting_and_adjacency(shape, seed):
    t = make_template(jax.random.PRNGKey(seed), shape)
    full = np.ones((3,) * len(shape), bool)
    # label 2 is nested in the body: its (full-neighbourhood) dilation never reaches 0
    assert not np.any(ndimage.binary_dilation(t == 2, full) & (t == 0))
    # 3 and 4 touch (face neighbours)
    assert np.any(ndimage.binary_dilation(t == 3) & (t == 4))


def test_num_labels_variants():
    t = make_template(jax.random.PRNGKey(0), (48, 48), num_labels=5)
    assert set(np.unique(t).tolist()) == set(range(6))
    assert np.any(ndimage.binary_dilation(t == 4) & (t == 5))
    t1 = make_template(jax.random.PRNGKey(0), (32, 32), num_labels=1)
    assert set(np.unique(t1).tolist()) == {0, 1}
    with pytest.raises(ValueError, match="vanished"):
        make_template(jax.random.PRNGKey(0), (8, 8), num_labels=12)


def test_subjects_differ_but_overlap_template(population):
    template, s = population
    dice = [_dice(lab, template, 4) for lab in s["labels"]]
    assert 0.5 < np.mean(dice) < 0.98, dice
    # the labels are exactly the template pulled back by disp
    again = warp_labels(
        jnp.broadcast_to(jnp.asarray(template)[None], s["labels"].shape),
        jnp.asarray(s["disp"]),
        num_classes=5,
        mode="nearest",
    )
    np.testing.assert_array_equal(np.asarray(again), s["labels"])


def test_disp_fold_free(population):
    _, s = population
    assert float(jacobian_determinant(jnp.asarray(s["disp"])).min()) > 0
    assert float(jacobian_determinant(jnp.asarray(s["disp_inv"])).min()) > 0


def test_inverse_recovers_template(population):
    template, s = population
    back = np.asarray(
        warp_labels(
            jnp.asarray(s["labels"]), jnp.asarray(s["disp_inv"]), num_classes=5, mode="nearest"
        )
    )
    for i in range(N):
        before = _dice(s["labels"][i], template, 4)
        after = _dice(back[i], template, 4)
        assert after > before + 0.05 and after > 0.8, (before, after)


def test_intensity_contrast(population):
    _, s = population
    for img, lab in zip(s["images"][..., 0], s["labels"]):
        means = np.array([img[lab == k].mean() for k in range(5)])
        stds = np.array([img[lab == k].std() for k in range(5)])
        gaps = np.abs(means[:, None] - means[None, :])[~np.eye(5, dtype=bool)]
        # per-label means differ; contrast between labels exceeds the spread within them
        # (tiny 3-D structures are dimmed by the partial-volume blur, hence the small floor)
        assert gaps.min() > 0.01, means
        assert gaps.mean() > 2 * stds.mean(), (means, stds)
        counts = np.array([np.sum(lab == k) for k in range(5)])
        between = np.average((means - img.mean()) ** 2, weights=counts)
        within = np.average(stds**2, weights=counts)
        assert between > 4 * within, (between, within)


def test_label_means_hide_a_boundary():
    """Equal means for the touching structures 3 and 4 make their boundary invisible.

    Same key: identical labels and fields (only the rendering changes); without noise the
    image is then constant across the 3 | 4 boundary up to the blur of the other structures
    and the bias field, and its mean is the requested one on both sides.
    """
    template = make_template(jax.random.PRNGKey(0), (32, 32))
    means = (0.05, 0.35, 0.8, 0.6, 0.6)
    kw = dict(num_subjects=2, noise=0.0, bias=0.0, intensity_jitter=0.0, blur_sigma=0.0)
    plain = make_subjects(jax.random.PRNGKey(1), template, **kw)
    hidden = make_subjects(jax.random.PRNGKey(1), template, label_means=means, **kw)
    for key in ("labels", "disp", "disp_inv"):
        np.testing.assert_array_equal(plain[key], hidden[key])
    for img, lab in zip(hidden["images"][..., 0], hidden["labels"]):
        for k, m in enumerate(means):
            np.testing.assert_allclose(img[lab == k], m, atol=1e-6)
    # the default rendering contrasts 3 and 4 (>= 0.3 apart)
    img, lab = plain["images"][0, ..., 0], plain["labels"][0]
    assert abs(img[lab == 3].mean() - img[lab == 4].mean()) > 0.3


def test_label_means_validated():
    template = make_template(jax.random.PRNGKey(0), (32, 32))
    for bad in ((0.1, 0.2), (0.1, 0.2, 0.3, 0.4, float("nan"))):
        with pytest.raises(ValueError, match="label_means"):
            make_subjects(jax.random.PRNGKey(1), template, num_subjects=1, label_means=bad)


def test_bad_inputs():
    with pytest.raises(ValueError):
        make_template(jax.random.PRNGKey(0), (32,))
    with pytest.raises(ValueError):
        make_subjects(jax.random.PRNGKey(0), np.zeros((8, 8), np.float32), num_subjects=1)


# --------------------------------------------------------------------------------------------
# Learn2Reg writer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_write_learn2reg_dataset(tmp_path, shape):
    d = len(shape)
    kw = dict(
        key=7,
        shape=shape,
        num_subjects=6,
        num_labelled=2,
        num_heldout=3,
        num_val_pairs=4,
        spacing=1.5,
        amplitude=AMPLITUDE[d],
    )
    path = write_learn2reg_dataset(tmp_path / "a", **kw)
    assert path == os.path.join(tmp_path / "a", "dataset.json")
    with open(path) as f:
        meta = json.load(f)
    for k in ("name", "tensorImageSize", "training", "registration_val", "numTraining"):
        assert k in meta
    assert meta["modality"] and meta["labels"]["0"] == "background" and len(meta["labels"]) == 5
    assert meta["numTraining"] == 3 == len(meta["training"])
    assert meta["jrs_jax"]["ndim"] == d and meta["jrs_jax"]["seed"] == 7
    assert meta["jrs_jax"]["subject_settings"] == {"amplitude": AMPLITUDE[d]}

    # unlabelled training entries have no label
    assert ["label" in e for e in meta["training"]] == [True, True, False]
    base = os.path.dirname(path)
    resolve = lambda rel: os.path.join(base, rel)

    # the files hold the generated arrays
    template = make_template(jax.random.split(jax.random.PRNGKey(7), 3)[0], shape)
    subjects = make_subjects(
        jax.random.split(jax.random.PRNGKey(7), 3)[1],
        template,
        num_subjects=6,
        amplitude=AMPLITUDE[d],
    )
    squeeze = (lambda a: a[:, :, 0]) if d == 2 else (lambda a: a)
    for i, e in enumerate(meta["jrs_jax"]["fields"]):
        assert e["image"].startswith("./imagesTr/")
        img = load_image(resolve(e["image"]))
        assert img.data.shape == ((*shape, 1) if d == 2 else shape)
        np.testing.assert_array_equal(squeeze(img.data), subjects["images"][i, ..., 0])
        np.testing.assert_allclose(img.spacing, (1.5, 1.5, 1.0) if d == 2 else (1.5,) * 3)
        lab = load_labels(resolve(e["image"].replace("imagesTr", "labelsTr")))
        np.testing.assert_array_equal(squeeze(lab.data), subjects["labels"][i])
        disp = load_image(resolve(e["disp"]), channels=True).data
        np.testing.assert_array_equal(squeeze(disp), subjects["disp"][i])
        inv = load_image(resolve(e["disp_inv"]), channels=True).data
        np.testing.assert_array_equal(squeeze(inv), subjects["disp_inv"][i])
    tl = load_labels(resolve(meta["jrs_jax"]["template"])).data
    np.testing.assert_array_equal(squeeze(tl), template)
    for e in meta["training"]:
        assert os.path.isfile(resolve(e["image"]))
        if "label" in e:
            assert os.path.isfile(resolve(e["label"]))

    # registration pairs: distinct held-out subjects, not in training
    heldout = set(meta["jrs_jax"]["heldout"])
    train = {e["image"] for e in meta["training"]}
    assert len(heldout) == 3 and not heldout & train
    pairs = [(p["fixed"], p["moving"]) for p in meta["registration_val"]]
    assert len(pairs) == 4 == len(set(pairs))
    for f, m in pairs:
        assert f != m and f in heldout and m in heldout
        assert os.path.isfile(resolve(f)) and os.path.isfile(resolve(m))

    # same key: identical arrays and JSON
    path_b = write_learn2reg_dataset(tmp_path / "b", **kw)
    with open(path_b) as f:
        assert json.load(f) == meta
    for rel in (meta["training"][0]["image"], meta["jrs_jax"]["fields"][-1]["disp"]):
        a = load_image(resolve(rel), channels=True).data
        b = load_image(os.path.join(os.path.dirname(path_b), rel), channels=True).data
        np.testing.assert_array_equal(a, b)


def test_write_rejects_bad_splits(tmp_path):
    with pytest.raises(ValueError, match="num_heldout"):
        write_learn2reg_dataset(tmp_path, key=0, shape=(32, 32), num_subjects=3, num_heldout=3)
    with pytest.raises(ValueError, match="num_val_pairs"):
        write_learn2reg_dataset(
            tmp_path, key=0, shape=(32, 32), num_subjects=4, num_heldout=2, num_val_pairs=3
        )
