"""JSSR: the documented objectives of each phase, the schedule (pretrain, joint; the separate
pipeline trains G, then Φ), cross-modal batches (moving in X, fixed in Y, supervision on Y
only), the prediction's keys and bad input (one-modality data)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on

from jrs_jax import cli, experiment, losses
from jrs_jax.data import DataError, write_learn2reg_dataset, write_multimodal_dataset
from jrs_jax.evaluation import evaluate, label_dice
from jrs_jax.methods import JSSR
from jrs_jax.spatial import warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "jssr.py:smoke")
CROSS = ("data.moving_channel=0", "data.fixed_channel=1", "schedule.pretrain_steps=3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("jssr") / "mm"
    return write_multimodal_dataset(
        root, key=3, shape=(16, 16), num_subjects=8, num_labelled=4, num_heldout=2
    )


@pytest.fixture(scope="module")
def joint(data):
    _, ds, method = build_on(SMOKE, data, *CROSS)
    return ds, method, method.init(jax.random.key(0), ds)


def _perturb(state, scale=0.05):
    """Random parameters everywhere (zero heads would make several terms trivial)."""
    out = dict(state)
    for i, name in enumerate(("syn", "reg", "seg", "disc")):
        leaves, tree = jax.tree.flatten(state[name].params)
        keys = jax.random.split(jax.random.key(10 + i), len(leaves))
        leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        out[name] = state[name].replace(params=jax.tree.unflatten(tree, leaves))
    return out


def test_batches_are_cross_modal_with_supervision_on_modality_y(joint):
    ds, method, _ = joint
    b = method.sample_batch(ds, 0)
    assert b["moving"].shape[-1] == b["fixed"].shape[-1] == b["sup_image"].shape[-1] == 1
    # the moving images are channel 0 (X) and the fixed ones channel 1 (Y) of some subjects
    x_images = {ds.subjects[i].image[..., 0].tobytes() for i in ds.training()}
    y_images = {ds.subjects[i].image[..., 1].tobytes() for i in ds.training()}
    assert all(m[..., 0].tobytes() in x_images for m in b["moving"])
    assert all(f[..., 0].tobytes() in y_images for f in b["fixed"])
    lab_y = {ds.subjects[i].image[..., 1].tobytes() for i in ds.labelled()}
    assert all(s[..., 0].tobytes() in lab_y for s in b["sup_image"])
    assert method.sample_batch(ds, 0)["moving"].tobytes() == b["moving"].tobytes()


def test_joint_objective_is_the_documented_sum(joint):
    ds, method, state = joint
    state = _perturb(state)
    batch = jax.tree.map(jnp.asarray, method.sample_batch(ds, 5))
    v = variables(state)
    x, y = batch["moving"], batch["fixed"]
    g = method.gen_net.apply(v["syn"], x)  # G(x): gen_inputs="moving"
    tau = method.reg_net.apply(v["reg"], g, y)["disp"]
    s = lambda im: jax.nn.softmax(method.seg_net.apply(v["seg"], im), -1)
    expected = {
        "l1": jnp.mean(jnp.abs(warp(g, tau) - y)),
        "smooth": jnp.mean(losses.gradient_l2(tau)),
        "gan": jnp.mean(jax.nn.softplus(-method.disc_net.apply(v["disc"], g))),  # −log D(G)
        "sup": jnp.mean(losses.soft_dice(s(batch["sup_image"]), batch["sup_labels"])),
        "cons": jnp.mean(losses.soft_dice(warp(s(g), tau), s(y))),
    }
    weights = {"l1": 2.0, "smooth": 1.0, "gan": 0.1, "sup": 1.0, "cons": 1.0}
    fn = jax.jit(lambda v, b: method.generator_loss(v, b, None, phase="joint"))
    total, parts = fn(v, batch)
    for k, want in expected.items():
        assert float(parts[k]) == pytest.approx(float(want), rel=1e-4, abs=1e-6), k
    assert float(total) == pytest.approx(sum(weights[k] * float(e) for k, e in expected.items()))
    assert float(expected["cons"]) > 1e-3 and float(expected["smooth"]) > 0
    # pretraining: the same without the consistency term
    _, pre = jax.jit(lambda v, b: method.generator_loss(v, b, None, phase="pretrain"))(v, batch)
    assert "cons" not in pre and float(pre["l1"]) == pytest.approx(float(parts["l1"]))
    # the discriminator: binary cross-entropy on logits, real y, fake G(x, y)
    d_total, _ = jax.jit(method.discriminator_loss)(v, batch, None)
    d = lambda im: method.disc_net.apply(v["disc"], im)
    want = jnp.mean(losses.gan_discriminator_loss(d(y), d(g)))
    assert float(d_total) == pytest.approx(float(want), rel=1e-5)


def _params(state):
    """Host copies of every network's parameters (the steps donate their input state)."""
    return {n: [np.asarray(x) for x in jax.tree.leaves(state[n].params)] for n in state}


def _changed(before, after, name):
    return any(not np.array_equal(p, q) for p, q in zip(before[name], after[name]))


def test_schedule_joint_trains_all_and_separate_trains_g_then_phi(data):
    for mode, phases in (
        ("joint", {0: {"syn", "reg", "seg", "disc"}, 3: {"syn", "reg", "seg", "disc"}}),
        ("separate", {0: {"syn", "seg", "disc"}, 3: {"reg", "seg"}}),
    ):
        _, ds, method = build_on(SMOKE, data, *CROSS, f"schedule.mode={mode!r}")
        state = method.init(jax.random.key(1), ds)
        for step, trained in phases.items():
            before = _params(state)
            state, metrics = method.train_step(
                state, method.sample_batch(ds, step), jax.random.key(step), step
            )
            assert all(np.isfinite(float(m)) for m in jax.tree.leaves(metrics))
            after = _params(state)
            got = {n for n in ("syn", "reg", "seg", "disc") if _changed(before, after, n)}
            assert got == trained, (mode, step, got)
    assert method.phase(2) == "separate_syn" and method.phase(3) == "separate_reg"


def test_no_seg_has_no_consistency_term(data):
    _, ds, method = build_on(SMOKE, data, *CROSS, "loss.seg_weight=0.0")
    state = method.init(jax.random.key(0), ds)
    batch = method.sample_batch(ds, 0)
    _, parts = jax.jit(lambda v, b: method.generator_loss(v, b, None, phase="joint"))(
        variables(state), batch
    )
    assert "cons" not in parts and "sup" in parts


def test_prediction_keys_and_segmentation_through_synthesis(joint):
    ds, method, state = joint
    ev = evaluate(method, variables(state), ds, max_pairs=2)
    for key in ("val/reg_dice", "val/seg_dice", "val/seg_consistency", "val/seg_dice_moving"):
        assert key in ev.summary and np.isfinite(ev.summary[key]), key
    f, m = ds.val_pairs[0]
    x = ds.subjects[m].image[None, ..., :1]
    y = ds.subjects[f].image[None, ..., 1:]
    pred = method.run(variables(state), {"moving": x, "fixed": y}, "register")
    assert set(pred) >= {"disp", "warped", "synth", "warped_synth", "seg_probs"}
    assert pred["moving_seg_probs"].shape == (1, *ds.shape, method.num_classes)
    np.testing.assert_allclose(pred["warped"], warp(jnp.asarray(x), pred["disp"]), atol=1e-6)
    # pair evaluation scored the moving image's labels against S(G(x, y))
    row = next(
        r
        for r in ev.pairs
        if (r["fixed"], r["moving"]) == (ds.subjects[f].name, ds.subjects[m].name)
    )
    want = label_dice(
        np.asarray(jnp.argmax(pred["moving_seg_probs"][0], -1)), ds.subjects[m].labels
    )
    assert row["seg_dice_moving"] == pytest.approx(want)


def test_labels_of_the_other_modality_are_refused(tmp_path):
    path = write_multimodal_dataset(
        tmp_path / "x_labels", key=0, shape=(16, 16), num_subjects=6, label_modality=0
    )
    _, ds, method = build_on(SMOKE, path, *CROSS)
    with pytest.raises(ValueError, match=r"modality 0 .*channel 1"):
        method.sample_batch(ds, 0)


def test_one_modality_dataset_is_one_line_exit_2(tmp_path, capsys):
    path = write_learn2reg_dataset(tmp_path / "mono", key=0, shape=(16, 16), num_subjects=6)
    with pytest.raises(DataError, match=r"dataset\.json: has 1 image channel.*data\.fixed_channel"):
        build_on(os.path.join(ROOT, "configs", "jssr.py"), path, "data.batch_size=2")
    code = cli.main(
        [
            "train",
            os.path.join(ROOT, "configs", "jssr.py:smoke"),
            "--workdir",
            str(tmp_path / "run"),
            "--set",
            f"data.dataset={str(path)!r}",
            "--set",
            "data.moving_channel=0",
            "--set",
            "data.fixed_channel=1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "dataset.json" in err and "data.fixed_channel" in err
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_voxelmorph_trains_cross_modal_pairs(data):
    _, ds, vxm = build_on(
        os.path.join(ROOT, "configs", "voxelmorph.py:mi,smoke"),
        data,
        "data.moving_channel=0",
        "data.fixed_channel=1",
    )
    assert vxm.cross_modal and vxm.image_channels == 1
    state = vxm.init(jax.random.key(0), ds)
    b = vxm.sample_batch(ds, 0)
    assert b["moving"].shape[-1] == b["fixed"].shape[-1] == 1
    state, metrics = vxm.train_step(state, b, jax.random.key(0), 0)
    assert np.isfinite(float(metrics["loss"]))
    assert "val/reg_dice" in evaluate(vxm, variables(state), ds, max_pairs=2).summary


def test_channel_settings_are_checked(data):
    with pytest.raises(ValueError, match="go together"):
        build_on(SMOKE, data, "data.moving_channel=0")
    cfg, ds, _ = build_on(os.path.join(ROOT, "configs", "unet_seg.py:smoke"), data)
    cfg["data"].update(moving_channel=0, fixed_channel=1)
    with pytest.raises(ValueError, match="unet_seg does not train on cross-modal pairs"):
        experiment.build_method(cfg)
    cfg["data"].update(moving_channel=0, fixed_channel=2)
    with pytest.raises(ValueError, match=r"fixed_channel=2, but the dataset has 2 channels"):
        JSSR(cfg, shape=ds.shape, num_classes=5, num_channels=2)
