"""SDDIR: masks predicted by the co-segmentation branch, no labels at inference, end-to-end
gradients, the co-attention ablation."""

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
from jrs_jax.methods import SDDIR
from jrs_jax.methods.ddir import region_masks
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "sddir.py:smoke")


def _build(path, variant="smoke"):
    cfg = load_config(SMOKE.replace(":smoke", f":{variant}"))
    cfg = apply_overrides(cfg, [f"data.dataset={str(path)!r}"])
    ds = experiment.load_dataset(cfg)
    return ds, experiment.build_method(experiment.resolve_config(cfg, ds))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sddir")
    path = write_learn2reg_dataset(
        root / "data", key=4, shape=(16, 16), num_subjects=8, num_labelled=5, num_heldout=2
    )
    ds, method = _build(path)
    state = perturbed_state(method.init(jax.random.key(0), ds), scale=0.2)
    return path, ds, method, state


def test_registers_from_the_images_alone_with_predicted_masks(setup):
    _, ds, method, state = setup
    assert isinstance(method, SDDIR) and method.tasks["register"] == ("moving", "fixed")
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    pred = method.run(v, batch, "register")  # no labels given
    assert set(pred) == {"disp", "warped", "seg_probs", "moving_seg_probs"}
    np.testing.assert_allclose(np.asarray(pred["seg_probs"]).sum(-1), 1.0, rtol=1e-5)
    # the registration is DDIR's on the soft masks of the predicted segmentations
    logits_m, logits_f = method.seg_net.apply(v["seg"], batch["moving"], batch["fixed"])
    masks_m = region_masks(jax.nn.softmax(logits_m), method.groups)
    masks_f = region_masks(jax.nn.softmax(logits_f), method.groups)
    ref = method.register(v["reg"], batch["moving"], batch["fixed"], masks_m, masks_f)
    np.testing.assert_allclose(pred["disp"], ref["disp"], atol=1e-5)
    np.testing.assert_allclose(pred["seg_probs"], jax.nn.softmax(logits_f), atol=1e-6)


def test_loss_adds_both_cross_entropies_and_trains_end_to_end(setup):
    _, ds, method, state = setup
    batch = method.sample_batch(ds, 0)
    v = variables(state)
    _, parts = jax.jit(method.loss)(v, batch, None)
    logits_m, logits_f = method.seg_net.apply(v["seg"], batch["moving"], batch["fixed"])
    ce = losses.cross_entropy(logits_m, batch["moving_labels"]) + losses.cross_entropy(
        logits_f, batch["fixed_labels"]
    )
    np.testing.assert_allclose(parts["seg_ce"], ce.mean(), rtol=1e-5)
    assert {"sim", "dice", "kl", "reg", "seg_ce"} == set(parts)

    # the registration terms alone reach the segmentation network (through the masks)
    reg_only = method.objective.without("seg_ce")

    def loss(seg_params):
        vv = {**v, "seg": seg_params}
        _, _, mm, mf = method.segment(vv, batch["moving"], batch["fixed"])
        out = method.register(vv["reg"], batch["moving"], batch["fixed"], mm, mf)
        return reg_only(**method.registration_inputs(out, batch, mf))[0]

    grads = jax.jit(jax.grad(loss))(v["seg"])
    assert float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))) > 0


def test_train_step_updates_both_networks(setup):
    _, ds, method, state = setup
    state = jax.tree.map(jnp.array, state)
    before = jax.tree.map(np.asarray, {n: state[n].params for n in ("seg", "reg")})
    new, metrics = method.train_step(state, method.sample_batch(ds, 1), jax.random.key(0), 1)
    assert {"grad_norm/seg", "grad_norm/reg"} <= set(metrics)
    for n in ("seg", "reg"):
        diff = max(
            float(np.abs(np.asarray(a) - b).max())
            for a, b in zip(jax.tree.leaves(new[n].params), jax.tree.leaves(before[n]))
        )
        assert diff > 0, n


def test_no_coattention_ablation_has_no_block(setup):
    path, _, method, _ = setup
    _, plain = _build(path, "smoke,no_coatt")
    x = method.zeros()

    def params(m):  # shapes only: nothing is compiled
        return jax.eval_shape(m.seg_net.init, jax.random.key(0), x, x)["params"]

    assert "co_attention" not in params(plain)
    assert "co_attention" in params(method)
