"""Cross-stitch JRS: the loss composition, S_m as an input, one network stepped, the archs."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment, losses
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import pair_batch, write_learn2reg_dataset
from jrs_jax.methods import CrossStitchJRS
from jrs_jax.methods.cross_stitch import network_input
from jrs_jax.spatial import warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "cross_stitch.py:smoke")


def _perturbed(state, scale=0.3):
    """Non-trivial weights so the field and the segmentation are not ~0 / uniform."""
    rng = np.random.default_rng(1)
    params = jax.tree.map(
        lambda p: p + scale * jnp.asarray(rng.standard_normal(p.shape), p.dtype),
        state["net"].params,
    )
    return {"net": state["net"].replace(params=params)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    path = write_learn2reg_dataset(
        root / "data", key=3, shape=(16, 16), num_subjects=8, num_labelled=4, num_heldout=2
    )
    overrides = [
        f"data.dataset={str(path)!r}",
        "loss.dice_weight=2.0",
        "loss.reg_weight=0.25",
        "loss.label_weight=3.0",
        "loss.seg_ce_weight=0.7",
    ]
    cfg = apply_overrides(load_config(SMOKE), overrides)
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    method = experiment.build_method(cfg)
    state = _perturbed(method.init(jax.random.key(0), ds))
    return cfg, ds, method, state, root


def test_loss_is_the_documented_composition(setup):
    _, ds, method, state, _ = setup
    assert isinstance(method, CrossStitchJRS)
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    total, parts = jax.jit(method.loss)(v, batch, None)
    k = method.num_classes
    m, f = jnp.asarray(batch["moving"]), jnp.asarray(batch["fixed"])
    x = jnp.concatenate([m, f, jax.nn.one_hot(batch["moving_labels"], k)], -1)
    out = method.net.apply(v["net"], x, x)  # both paths see [I_m, I_f, S_m]
    logits, disp = out["seg"], out["disp"]
    assert float(jnp.abs(disp).max()) > 0.1  # a real field: the warp terms are exercised
    s_f = jax.nn.one_hot(batch["fixed_labels"], k)
    soft = warp_labels(batch["moving_labels"], disp, num_classes=k, mode="soft")
    expected = (
        2.0 * losses.soft_dice(jax.nn.softmax(logits), s_f)
        + 0.25 * losses.bending_energy(disp)
        + losses.local_ncc(warp(m, disp), f, window=9, convention="voxelmorph")
        + 3.0 * losses.local_ncc(soft, s_f, window=9, convention="monai")
        + 0.7 * losses.cross_entropy(logits, batch["fixed_labels"])
    ).mean()
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(parts) == {"seg_dice", "sim", "smooth", "label_sim", "seg_ce"}
    # the paper's loss has no cross-entropy: weight 0 drops the term
    paper = experiment.build_method(apply_overrides(method.config, ["loss.seg_ce_weight=0.0"]))
    total0, parts0 = jax.jit(paper.loss)(v, batch, None)
    assert "seg_ce" not in parts0
    ce = 0.7 * losses.cross_entropy(logits, batch["fixed_labels"]).mean()
    np.testing.assert_allclose(float(total0), float(expected - ce), rtol=1e-5)


def test_prediction_segments_the_fixed_image_from_the_moving_labels(setup):
    _, ds, method, state, _ = setup
    v = variables(state)
    batch = pair_batch(ds, np.asarray([[6, 7], [7, 6]]))  # held-out pair
    out = method.run(v, batch, "register")
    assert set(out) == {"disp", "warped", "seg_probs"}
    np.testing.assert_allclose(
        np.asarray(out["warped"]), np.asarray(warp(batch["moving"], out["disp"])), atol=1e-6
    )
    x = network_input(
        jnp.asarray(batch["moving"]),
        jnp.asarray(batch["fixed"]),
        jnp.asarray(batch["moving_labels"]),
        num_classes=method.num_classes,
    )
    logits = method.net.apply(v["net"], x, x)["seg"]
    np.testing.assert_allclose(
        np.asarray(out["seg_probs"]), np.asarray(jax.nn.softmax(logits)), rtol=1e-5, atol=1e-6
    )
    # S_m is an input of both outputs: other moving labels, other field and segmentation
    other = {**batch, "moving_labels": np.zeros_like(batch["moving_labels"])}
    out2 = method.run(v, other, "register")
    assert float(jnp.abs(out2["seg_probs"] - out["seg_probs"]).max()) > 1e-4
    assert float(jnp.abs(out2["disp"] - out["disp"]).max()) > 1e-4
    assert method.best_metric == "val/mean_dice"


def test_pairs_are_drawn_among_labelled_training_subjects(setup):
    _, ds, method, _, _ = setup
    labelled = set(ds.labelled())
    assert len(labelled) == 4 and len(labelled) < len(ds.subjects) - len(ds.held_out())
    for step in range(20):
        b = method.sample_batch(ds, step)
        assert b["moving_has_label"].all() and b["fixed_has_label"].all()
    one = apply_overrides(method.config, ["data.num_labelled=1"])
    ds1 = experiment.load_dataset(one)
    with pytest.raises(ValueError, match="at least 2 labelled"):
        experiment.build_method(experiment.resolve_config(one, ds1)).sample_batch(ds1, 0)


def test_train_step_steps_the_one_network_and_its_alphas(setup):
    _, ds, method, state, _ = setup
    state = jax.tree.map(jnp.copy, state)
    before = jax.device_get(state["net"].params)
    new, metrics = method.train_step(state, method.sample_batch(ds, 0), jax.random.key(0), 0)
    assert set(new) == {"net"} and int(new["net"].step) == 1
    assert np.isfinite(float(metrics["loss"]))
    after = jax.device_get(new["net"].params)["params"]
    for name in ("stitch_enc0", "stitch_dec1", "seg_encoder", "reg_decoder", "flow"):
        moved = jax.tree.map(
            lambda a, b: float(np.abs(a - b).max()), before["params"][name], after[name]
        )
        assert max(jax.tree.leaves(moved)) > 0, name


@pytest.mark.parametrize(
    ("variant", "expect"),
    [
        ("separate", {"seg_encoder", "reg_encoder", "seg_head", "flow"}),
        ("shared", {"encoder", "decoder_seg", "decoder_disp", "head_seg", "head_disp"}),
        ("level", {"stitch_enc0", "stitch_dec0"}),
    ],
)
def test_architecture_variants(setup, variant, expect):
    cfg, ds, _, _, _ = setup
    spec = SMOKE.replace(":smoke", f":smoke,{variant}")
    cfg = experiment.resolve_config(
        apply_overrides(load_config(spec), [f"data.dataset={cfg['data']['dataset']!r}"]), ds
    )
    method = experiment.build_method(cfg)
    p = method.init(jax.random.key(0))["net"].params["params"]
    assert expect <= set(p)
    stitched = [k for k in p if k.startswith("stitch")]
    if variant == "level":
        assert all(p[k]["alpha"].shape == (2, 2, 1) for k in stitched)
    else:
        assert not stitched
    if variant == "shared":  # the displacement head starts near the identity, as the others
        assert float(jnp.abs(p["head_disp"]["kernel"]).max()) < 1e-4
    total, _ = jax.jit(method.loss)(
        variables(method.init(jax.random.key(0))), method.sample_batch(ds, 0), None
    )
    assert np.isfinite(float(total))


def test_register_without_moving_labels_is_one_line_exit_2(setup, run_cli, tmp_path):
    cfg, _, _, _, root = setup
    run = tmp_path / "run"
    rc, _, err = run_cli(
        [
            "train",
            SMOKE,
            "--workdir",
            run,
            "--set",
            f"data.dataset={cfg['data']['dataset']!r}",
            "--set",
            "train.steps=2",
            "--no-progress",
        ]
    )
    assert rc == 0, err
    img = lambda i: root / "data" / "imagesTr" / f"sub_{i:04d}_0000.nii.gz"
    argv = ["register", "--checkpoint", run, "--fixed", img(6), "--moving", img(7)]
    rc, _, err = run_cli([*argv, "--out", tmp_path / "out"])
    assert rc == 2
    assert err == "jrs-jax: error: cross_stitch needs --moving-labels to register\n"
    assert not (tmp_path / "out").exists()
