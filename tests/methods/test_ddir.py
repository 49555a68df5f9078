"""DDIR: region fields stitched by the fixed masks, region-local regularisation, the
single-region limit (VoxelMorph-diff), and masks required at inference."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_state

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.methods import MissingInput
from jrs_jax.methods.ddir import region_groups, region_masks
from jrs_jax.nets import ProbabilisticRegistrationNet
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "ddir.py:smoke")


def _build(path, *overrides, config=SMOKE):
    cfg = apply_overrides(load_config(config), [f"data.dataset={str(path)!r}", *overrides])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    return cfg, ds, experiment.build_method(cfg)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddir")
    path = write_learn2reg_dataset(
        root / "data", key=3, shape=(16, 16), num_subjects=8, num_labelled=5, num_heldout=2
    )
    _, ds, method = _build(path, "loss.reg_weight=0.5")
    state = perturbed_state(method.init(jax.random.key(0), ds), scale=0.2)
    return path, ds, method, state, root


def test_region_groups_and_masks():
    g = region_groups([[0, 1], [2], [3, 4]], 5)
    assert g.shape == (3, 5)
    assert region_groups(None, 4).shape == (4, 4)
    assert region_groups("global", 4).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="exactly once"):
        region_groups([[0, 1], [1, 2]], 3)
    with pytest.raises(ValueError, match="exactly once"):
        region_groups([[0], [2]], 3)
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, (2, 6, 6)))
    m = region_masks(jax.nn.one_hot(labels, 5), g)
    assert m.shape == (3, 2, 6, 6)
    np.testing.assert_array_equal(m.sum(0), 1.0)
    np.testing.assert_array_equal(m[1], labels == 2)
    np.testing.assert_array_equal(m[2], (labels == 3) | (labels == 4))


def test_stitched_field_takes_each_regions_field_and_jumps_between_them(setup):
    _, ds, method, state, _ = setup
    batch = method.sample_batch(ds, 0)
    masks_m = method.masks(jnp.asarray(batch["moving_labels"]))
    masks_f = method.masks(jnp.asarray(batch["fixed_labels"]))
    out = jax.jit(method.register)(
        state["reg"].params, batch["moving"], batch["fixed"], masks_m, masks_f
    )
    disp, fields = np.asarray(out["disp"]), np.asarray(out["fields"])
    assert fields.shape == (method.num_regions, *disp.shape)
    for k in range(method.num_regions):
        inside = np.asarray(masks_f[k]) > 0.5
        assert inside.any()
        np.testing.assert_allclose(disp[inside], fields[k][inside], atol=1e-6)
    # across a boundary between regions j and k the field jumps by u_k - u_j
    region = np.argmax(np.asarray(masks_f), 0)  # [B, *S]
    a, b = region[:, :-1], region[:, 1:]
    edge = a != b
    assert edge.any()
    jump = disp[:, 1:] - disp[:, :-1]
    ref = (
        np.take_along_axis(fields[:, :, 1:], b[None, ..., None], 0)[0]
        - np.take_along_axis(fields[:, :, :-1], a[None, ..., None], 0)[0]
    )
    np.testing.assert_allclose(jump[edge], ref[edge], atol=1e-6)
    assert np.abs(fields[0] - fields[1]).max() > 1e-3  # the regions' fields differ


def test_loss_is_the_documented_composition(setup):
    _, ds, method, state, _ = setup
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    total, parts = jax.jit(method.loss)(v, batch, None)  # key None: velocity means
    masks_m = method.masks(jnp.asarray(batch["moving_labels"]))
    masks_f = method.masks(jnp.asarray(batch["fixed_labels"]))
    out = method.register(v["reg"], batch["moving"], batch["fixed"], masks_m, masks_f)
    disp, k = out["disp"], method.num_classes
    sim = losses.local_ncc(
        warp(batch["moving"], disp), batch["fixed"], window=9, convention="voxelmorph"
    )
    dice = losses.soft_dice(
        warp_labels(batch["moving_labels"], disp, num_classes=k),
        jax.nn.one_hot(batch["fixed_labels"], k),
    )
    kl = sum(
        losses.velocity_kl(out["mean"][r], out["log_var"][r], prior_lambda=100.0, mask=masks_f[r])
        for r in range(method.num_regions)
    )
    reg = sum(
        losses.diffusion(out["fields"][r], mask=masks_f[r]) for r in range(method.num_regions)
    )
    ref = {"sim": sim.mean(), "dice": dice.mean(), "kl": kl.mean(), "reg": reg.mean()}
    for name, value in ref.items():
        np.testing.assert_allclose(parts[name], value, rtol=2e-4, atol=1e-6)
    expect = 20 * ref["sim"] + 200 * ref["dice"] + 0.025 * ref["kl"] + 0.5 * ref["reg"]
    np.testing.assert_allclose(total, expect, rtol=2e-4)


def test_a_region_absent_from_the_pair_gets_no_gradient(setup):
    """Every term sees region k only through its masks: with region k empty in both images,
    its network's parameters get exactly zero gradient (no global smoothness leaks in)."""
    _, ds, method, state, _ = setup
    batch = dict(method.sample_batch(ds, 0))
    for key in ("moving_labels", "fixed_labels"):  # organ (label 2) -> body (label 1)
        batch[key] = np.where(batch[key] == 2, 1, batch[key])

    def loss(params):
        return method.loss({"reg": params}, batch, jax.random.key(3))[0]

    grads = jax.jit(jax.grad(loss))(state["reg"].params)
    norms = [
        np.sqrt(sum(float(jnp.sum(g[k] ** 2)) for g in jax.tree.leaves(grads)))
        for k in range(method.num_regions)
    ]
    assert norms[1] == 0.0  # region 1 = label 2
    assert norms[0] > 0 and norms[2] > 0


def test_global_region_is_probabilistic_voxelmorph_diff(setup):
    path, ds, _, _, _ = setup
    _, _, method = _build(path, config=SMOKE.replace(":smoke", ":smoke,global"))
    assert method.num_regions == 1
    state = perturbed_state(method.init(jax.random.key(1), ds), scale=0.2)
    batch = method.sample_batch(ds, 0)
    pred = method.run(variables(state), batch, "register")
    single = ProbabilisticRegistrationNet(
        **{k: v for k, v in method.config["model"].items() if k != "regions"}
    )
    params = {"params": jax.tree.map(lambda x: x[0], state["reg"].params["params"]["nets"])}
    ref = jax.jit(single.apply)(params, jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"]))
    np.testing.assert_allclose(pred["disp"], ref["disp"], atol=1e-5)


def test_train_step_updates_the_stacked_networks(setup):
    _, ds, method, state, _ = setup
    state = jax.tree.map(jnp.array, state)  # the step donates its input
    before = jax.tree.map(np.asarray, state["reg"].params)
    new, metrics = method.train_step(state, method.sample_batch(ds, 1), jax.random.key(0), 1)
    assert {"sim", "dice", "kl", "reg", "loss"} <= set(metrics)
    leaves = list(zip(jax.tree.leaves(new["reg"].params), jax.tree.leaves(before)))
    # every region's network takes a step (all regions are in the batch)
    for k in range(method.num_regions):
        assert max(float(np.abs(np.asarray(a)[k] - b[k]).max()) for a, b in leaves) > 0, k


def test_prediction_needs_both_label_maps(setup, run_cli, tmp_path):
    path, ds, method, state, root = setup
    batch = method.sample_batch(ds, 0)
    with pytest.raises(MissingInput, match="fixed_labels"):
        method.run(
            variables(state),
            {k: batch[k] for k in ("moving", "fixed", "moving_labels")},
            "register",
        )
    run = tmp_path / "run"
    rc, _, err = run_cli(
        [
            "train",
            SMOKE,
            "--workdir",
            run,
            "--set",
            f"data.dataset={str(path)!r}",
            "--set",
            "train.steps=2",
            "--no-progress",
        ]
    )
    assert rc == 0, err
    img = lambda i: root / "data" / "imagesTr" / f"sub_{i:04d}_0000.nii.gz"
    lab = lambda i: root / "data" / "labelsTr" / f"sub_{i:04d}_0000.nii.gz"
    argv = ["register", "--checkpoint", run, "--fixed", img(6), "--moving", img(7)]
    rc, _, err = run_cli([*argv, "--moving-labels", lab(7), "--out", tmp_path / "out"])
    assert rc == 2
    assert err == "jrs-jax: error: ddir needs --fixed-labels to register\n"
    assert not (tmp_path / "out").exists()  # registering with both: the conformance test
