"""Atlas-ISTN: the atlas starts as the training means and moves, at epoch ends only, to the
EMA of the whole training set warped into atlas space; the loss and the refinement objective
are the documented MSE compositions over Φ = A∘exp(v) and Φ⁻¹ = exp(−v)∘A⁻¹ (checked against
fields rebuilt here from the networks); predict switches seg_probs between the ITN and the
warped atlas; refinement moves only the STN; the atlas is written as NIfTI and PNG."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.methods.atlas_istn import epoch_indices, invert_affine, svf_displacement
from jrs_jax.refinement import refine_variables
from jrs_jax.spatial import (
    affine_to_displacement,
    compose,
    identity_grid,
    integrate_velocity,
    resize_field,
    warp,
)
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """5 training subjects (4 labelled, 1 not) and 2 held out, 16 x 16."""
    root = tmp_path_factory.mktemp("atlas_istn") / "data"
    return write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=7, num_labelled=4, num_heldout=2
    )


def _setup(data, variants="", *sets):
    spec = os.path.join(ROOT, "configs", f"atlas_istn.py:smoke{',' if variants else ''}{variants}")
    cfg = apply_overrides(load_config(spec), [f"data.dataset={str(data)!r}", *sets])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    return ds, experiment.build_method(cfg)


def _copy(state):
    return jax.tree.map(jnp.copy, state)


def _fields(method, v, prime, atlas):
    """``(Φ, Φ⁻¹, exp(v))`` rebuilt from the networks: the inverse by integrating ``−v`` at
    half resolution and inverting the homogeneous affine matrix with numpy."""
    a_fg, p_fg = atlas[..., 1:], prime[..., 1:]
    out = method.svf.apply(v["stn"]["svf"], a_fg, p_fg)
    u, vel = out["disp"], out["velocity"]
    half = tuple(n // 2 for n in method.shape)
    u_inv = resize_field(integrate_velocity(resize_field(-vel, half), steps=6), method.shape)
    if "affine" not in v["stn"]:
        return u, u_inv, u
    m = np.asarray(method.affine_net.apply(v["stn"]["affine"], a_fg, p_fg)["matrix"], np.float64)
    hom = np.concatenate([m, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(m), 1, 3))], axis=1)
    m_inv = jnp.asarray(np.linalg.inv(hom)[:, :2], jnp.float32)
    disp = compose(u, affine_to_displacement(m, method.shape))
    return disp, compose(affine_to_displacement(m_inv, method.shape), u_inv), u


def _by_hand(method, v, image):
    """ITN logits -> ``ŷ`` (softmax, or the logits for a linear head), ``y^a`` and the fields."""
    logits = method.itn.apply(v["itn"], jnp.asarray(image))
    prime = logits if method.itn_output == "linear" else jax.nn.softmax(logits)
    atlas = jnp.broadcast_to(v["atlas_labels"][None], prime.shape)
    return (logits, prime, atlas, *_fields(method, v, prime, atlas))


def _mse(a, b):
    return losses.mse(a, b)


def _smooth(u):  # grad-L2 of exp(v) in grid_sample units (2 / (n - 1) per voxel)
    return losses.gradient_l2(u * (2.0 / 15.0))


def test_init_sets_the_atlas_to_the_labelled_training_means(data):
    ds, method = _setup(data)
    lab = ds.labelled()
    assert len(lab) == 4 and len(ds.training()) == 5  # the unlabelled subject is left out
    state = method.init(jax.random.key(0), ds)
    images = np.stack([ds.subjects[i].image for i in lab])
    onehot = np.eye(method.num_classes)[np.stack([ds.subjects[i].labels for i in lab])]
    np.testing.assert_allclose(np.asarray(state["atlas_image"]), images.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state["atlas_labels"]), onehot.mean(0), atol=1e-7)
    assert len(np.unique(np.asarray(state["atlas_labels"]))) > 2  # a soft map, not one label
    template = method.init(jax.random.key(1))
    assert jax.tree.structure(template) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(state)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    for k in ("atlas_image", "atlas_labels"):
        assert not np.any(np.asarray(template[k]))
    assert set(state["stn"].params) == {"svf", "affine"}


CASES = {  # variants, overrides
    "labels": ("", ()),
    "itn_target_no_affine": ("no_affine", ("loss.structure_target='itn'",)),
    "official": ("official", ()),  # linear ITN head, ω fading from the batch
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_is_the_documented_composition(data, perturbed, case):
    variants, sets = CASES[case]
    sets = ("loss.seg_weight=1.5", "loss.omega=0.7", "loss.reg_weight=800.0", *sets)
    ds, method = _setup(data, variants, *sets)
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    step = 5
    batch = method.sample_batch(ds, step)
    _, prime, atlas, disp, inv, u = _by_hand(method, v, batch["image"])
    assert float(jnp.abs(u).max()) > 0.05
    vel = method.svf.apply(v["stn"]["svf"], atlas[..., 1:], prime[..., 1:])["velocity"]
    np.testing.assert_allclose(  # the helper integrates as the network does
        np.asarray(svf_displacement(vel, steps=6, downsize=2)), np.asarray(u), atol=1e-6
    )
    y = jax.nn.one_hot(batch["labels"], method.num_classes)
    target = prime if case == "itn_target_no_affine" else y
    a2s = _mse(warp(atlas, disp)[..., 1:], target[..., 1:])
    s2a = _mse(warp(target, inv)[..., 1:], atlas[..., 1:])
    omega = 0.7
    if case == "official":  # epoch 3 of 2 steps each: 0.7 / (1 + exp(-(3 - 25) / 25))
        omega = 0.7 / (1.0 + math.exp(22.0 / 25.0))
        np.testing.assert_allclose(batch["omega"], omega, rtol=1e-6)
        assert method.itn_output == "linear" and not np.allclose(prime.sum(-1), 1.0)
    smooth = _smooth(u)
    assert float((800.0 * smooth).mean()) > 1e-3 * float(a2s.mean())  # the term counts
    expected = (1.5 * _mse(prime, y) + omega * (a2s + s2a + 800.0 * smooth)).mean()
    total, parts = method.loss(v, batch, jax.random.key(0))
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    np.testing.assert_allclose(float(parts["s2a"]), float(s2a.mean()), rtol=1e-5)
    np.testing.assert_allclose(float(parts["smooth"]), float(smooth.mean()), rtol=1e-5)


def test_the_atlas_moves_only_at_epoch_ends_to_the_ema_of_the_warped_training_set(data, perturbed):
    ds, method = _setup(data, "", "atlas.rate=0.25")
    lab = ds.labelled()
    # batch 2 over 4 labelled subjects: epochs of 2 steps, each subject once per epoch
    for epoch in range(3):
        seen = [epoch_indices(lab, batch_size=2, seed=0, step=2 * epoch + i) for i in (0, 1)]
        assert [last for _, last in seen] == [False, True]
        assert sorted(np.concatenate([idx for idx, _ in seen]).tolist()) == lab
    state = perturbed(method.init(jax.random.key(0), ds), scale=0.2)
    key = jax.random.key(1)

    first = method.sample_batch(ds, 0)
    assert "all_images" not in first
    before = _copy(state)
    state, metrics = method.train_step(state, first, key, 0)
    assert "atlas_shift" not in metrics
    for k in ("atlas_image", "atlas_labels"):
        np.testing.assert_array_equal(np.asarray(state[k]), np.asarray(before[k]))

    last = method.sample_batch(ds, 1)
    everyone = np.stack([ds.subjects[i].image for i in lab])
    np.testing.assert_array_equal(last["all_images"], everyone)
    labels = np.stack([ds.subjects[i].labels for i in lab])
    np.testing.assert_array_equal(last["all_labels"], labels)
    old = _copy(state)
    plain, _ = method._update(_copy(state), {k: last[k] for k in ("image", "labels")}, key)
    state, metrics = method.train_step(state, last, key, 1)
    v = variables(state)
    for a, b in zip(jax.tree.leaves(variables(plain)["stn"]), jax.tree.leaves(v["stn"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same gradient update
    sum_image, sum_labels = 0.0, 0.0
    old_v = {**v, "atlas_labels": old["atlas_labels"]}  # the updated nets, the old atlas
    for n in range(len(lab)):  # one subject at a time
        x = everyone[n : n + 1]
        *_, inv, _ = _by_hand(method, old_v, x)
        sum_image = sum_image + warp(jnp.asarray(x), inv)[0]
        onehot = jax.nn.one_hot(last["all_labels"][n : n + 1], method.num_classes)
        sum_labels = sum_labels + warp(onehot, inv)[0]
    for k, mean in (("atlas_image", sum_image / 4), ("atlas_labels", sum_labels / 4)):
        expected = 0.75 * np.asarray(old[k]) + 0.25 * np.asarray(mean)
        np.testing.assert_allclose(np.asarray(state[k]), expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(state[k]), np.asarray(old[k]), atol=1e-4)
    shift = np.abs(np.asarray(state["atlas_labels"]) - np.asarray(old["atlas_labels"])).mean()
    np.testing.assert_allclose(float(metrics["atlas_shift"]), shift, rtol=1e-5)


def test_predict_keys_and_segment_with_the_warped_atlas(data, perturbed):
    ds, method = _setup(data)
    _, atlas_method = _setup(data, "atlas")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    image = method.sample_batch(ds, 0)["image"]
    out = method.run(v, {"image": image}, "segment")
    keys = {"seg_probs", "itn_probs", "atlas_probs", "warped_atlas", "disp", "inv_disp"}
    assert set(out) == keys | {"velocity", "matrix"}
    logits, _, atlas, disp, inv, _ = _by_hand(method, v, image)
    np.testing.assert_allclose(out["itn_probs"], jax.nn.softmax(logits), atol=1e-6)
    np.testing.assert_array_equal(out["seg_probs"], out["itn_probs"])
    np.testing.assert_allclose(out["disp"], disp, atol=1e-5)
    np.testing.assert_allclose(out["inv_disp"], inv, atol=1e-5)
    np.testing.assert_allclose(out["atlas_probs"], warp(atlas, disp), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["atlas_probs"]).sum(-1), 1.0, atol=1e-5)
    # Φ⁻¹ undoes Φ (pulling by Φ, then by Φ⁻¹, is the identity): exactly for the affine part
    # inside the grid, up to the integration error of exp(±v) for the whole (4.5 % here; the
    # other order of the parts, exp(−v) ∘ A⁻¹ applied the wrong way round, is at 17 %)
    m = out["matrix"]
    u_a, u_a_inv = (affine_to_displacement(x, method.shape) for x in (m, invert_affine(m)))
    pos = identity_grid(method.shape) + u_a_inv
    inside = np.asarray(jnp.all((pos >= 0) & (pos <= 15), -1))
    assert inside.mean() > 0.5
    np.testing.assert_allclose(np.asarray(compose(u_a_inv, u_a))[inside], 0.0, atol=1e-4)
    residual = jnp.abs(compose(out["inv_disp"], out["disp"])).mean()
    assert float(jnp.abs(out["disp"]).mean()) > 0.5
    assert float(residual) < 0.1 * float(jnp.abs(out["disp"]).mean())
    by_atlas = atlas_method.run(v, {"image": image}, "segment")
    np.testing.assert_array_equal(by_atlas["seg_probs"], by_atlas["atlas_probs"])
    np.testing.assert_allclose(by_atlas["atlas_probs"], out["atlas_probs"], atol=1e-6)
    assert not np.allclose(by_atlas["seg_probs"], out["seg_probs"], atol=1e-2)


def test_refinement_moves_only_the_stn_along_the_refine_objective(data, perturbed):
    ds, method = _setup(data, "", "loss.omega=0.5")
    v = variables(perturbed(method.init(jax.random.key(0), ds), scale=0.2))
    one = {"image": method.sample_batch(ds, 0)["image"][:1]}
    _, prime, atlas, disp, inv, u = _by_hand(method, v, one["image"])
    a2s = _mse(warp(atlas, disp)[..., 1:], prime[..., 1:])
    s2a = _mse(warp(prime, inv)[..., 1:], atlas[..., 1:])
    expected = 0.5 * (a2s + s2a + 500.0 * _smooth(u)).mean()
    total, parts = method.refine_loss(v, one, jax.random.key(0))
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"a2s", "s2a", "smooth"}
    refined, values = refine_variables(method, v, one, steps=10, lr=1e-3)
    assert values[-1] < values[0]
    for k in ("itn", "atlas_image", "atlas_labels"):
        for a, b in zip(jax.tree.leaves(v[k]), jax.tree.leaves(refined[k])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(v["stn"]), jax.tree.leaves(refined["stn"]))
    )
    _, public = _setup(data, "", "refine.s2a=false")  # the public code's objective
    _, parts = public.refine_loss(v, one, jax.random.key(0))
    assert set(parts) == {"a2s", "smooth"}


def test_the_atlas_is_written_as_nifti_and_png(data, tmp_path):
    ds, method = _setup(data)
    state = method.init(jax.random.key(0), ds)
    paths = experiment.write_figures(method, state, ds, str(tmp_path))
    image, labels = tmp_path / "atlas_image.nii.gz", tmp_path / "atlas_labels.nii.gz"
    png = tmp_path / "figures" / "atlas.png"
    assert {str(image), str(labels), str(png)} <= set(paths)
    img = nib.load(image)
    assert img.shape == (16, 16, 1)
    np.testing.assert_allclose(img.get_fdata()[:, :, 0], np.asarray(state["atlas_image"])[..., 0])
    lab = nib.load(labels)
    assert np.issubdtype(lab.get_data_dtype(), np.integer) and lab.shape == (16, 16, 1)
    hard = np.argmax(np.asarray(state["atlas_labels"]), -1)
    np.testing.assert_array_equal(np.asarray(lab.dataobj)[:, :, 0], hard)
    assert len(np.unique(hard)) > 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "setting, match",
    [
        ("model.segment_with='both'", "model.segment_with"),
        ("stn_model.output='displacement'", "velocity"),
        ("atlas.update_every='batch'", "atlas.update_every"),
    ],
)
def test_bad_settings_are_errors(data, setting, match):
    with pytest.raises(ValueError, match=match):
        _setup(data, "", setting)
