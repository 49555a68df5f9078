"""Adversarial JRS: the generator / critic losses, the WGAN-GP schedule, the real triples."""

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
from jrs_jax.methods import AdversarialJRS
from jrs_jax.methods.adversarial_jrs import critic_input, real_triple
from jrs_jax.spatial import random_displacement, warp, warp_labels
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAMBDA1, LAMBDA2, GP = 0.7, 0.3, 5.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv")
    return write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2
    )


def _build(data, *sets):
    cfg = load_config(os.path.join(ROOT, "configs", "adversarial_jrs.py:smoke"))
    cfg = apply_overrides(
        cfg,
        [
            f"data.dataset={data!r}",
            f"loss.reg_weight={LAMBDA1}",
            f"loss.adv_weight={LAMBDA2}",
            f"critic.gp_weight={GP}",
            *sets,
        ],
    )
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    method = experiment.build_method(cfg)
    # non-trivial networks (perturbed parameters): fields, maps and scores are not ~0
    state = perturbed_state(method.init(jax.random.key(0), ds))
    return method, ds, state


@pytest.fixture(scope="module")
def setup(data):
    return _build(data)


def _gen_batch(method, ds, step=0):
    return {k: jnp.asarray(v) for k, v in method.sample_batch(ds, step).items() if k != "critic"}


def _expected_generator_loss(method, v, b, *, adv: bool):
    k = method.num_classes
    m, f = b["moving"], b["fixed"]
    disp = method.net.apply(v["reg"], m, f)["disp"]
    warped = warp(m, disp)
    warped_seg = warp_labels(b["moving_labels"], disp, num_classes=k, mode="soft")
    per_ex = (
        losses.soft_dice(warped_seg, jax.nn.one_hot(b["fixed_labels"], k))  # 1 - DSC
        + (1.0 + losses.ncc(warped, f))  # 1 - NCC
        + LAMBDA1 * losses.bending_energy(disp)
    )
    if adv:
        x = jnp.concatenate([f, warped, warped_seg], -1)
        per_ex = per_ex + LAMBDA2 * (-jnp.mean(method.critic.apply(v["critic"], x), (1, 2, 3)))
    return per_ex.mean()


def test_generator_loss_is_the_documented_composition(setup):
    method, ds, state = setup
    assert isinstance(method, AdversarialJRS) and method.with_critic
    v, b = variables(state), _gen_batch(method, ds)
    total, parts = jax.jit(method.generator_loss)(v, b, jax.random.key(0))
    np.testing.assert_allclose(total, _expected_generator_loss(method, v, b, adv=True), rtol=1e-5)
    assert set(parts) == {"dice", "sim", "smooth", "adv"}
    assert float(parts["dice"]) > 0.05 and float(parts["smooth"]) > 0  # non-trivial field


def test_critic_loss_is_wgan_plus_gradient_penalty(setup):
    method, ds, state = setup
    v, b = variables(state), _gen_batch(method, ds)
    key = jax.random.key(7)
    total, parts = jax.jit(method.critic_loss)(v, b, key)
    k_theta, k_gp = jax.random.split(key)
    fake = method.fake(v, b)["fake"]
    real = critic_input(
        *real_triple(
            k_theta,
            b["fixed"],
            b["fixed_labels"],
            num_classes=method.num_classes,
            amplitude=1.0,
            control_spacing=8,
        )
    )

    def critic_fn(x):
        return method.critic.apply(v["critic"], x)

    wgan = jnp.mean(critic_fn(fake), (1, 2, 3)) - jnp.mean(critic_fn(real), (1, 2, 3))
    gp = losses.gradient_penalty(k_gp, critic_fn, real, fake)
    np.testing.assert_allclose(total, jnp.mean(wgan + GP * gp), rtol=1e-4, atol=1e-6)
    assert float(parts["gp"]) > 0  # the penalty is there (and weighted by critic.gp_weight)
    np.testing.assert_allclose(parts["wasserstein"], -parts["wgan"])


def test_one_step_updates_the_critic_n_critic_times_and_the_generator_once(setup):
    method, ds, state = setup
    n = method.n_critic
    assert n == 2  # the smoke config
    batch = method.sample_batch(ds, 0)
    assert batch["critic"]["fixed"].shape == (n, *batch["fixed"].shape)  # a batch per step
    before = jax.tree.map(np.array, state)  # the step donates its input state
    new, metrics = method.train_step(before, batch, jax.random.key(0), 0)
    assert int(new["critic"].step) == int(state["critic"].step) + n
    assert int(new["reg"].step) == int(state["reg"].step) + 1
    for name in ("reg", "critic"):
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new[name].params,
                             state[name].params)  # fmt: skip
        assert max(jax.tree.leaves(moved)) > 0, name
    assert np.isfinite(float(metrics["critic/gp"])) and float(metrics["critic/gp"]) > 0
    assert {"reg/adv", "reg/dice", "critic/wgan", "loss/critic", "loss/reg"} <= set(metrics)


def test_real_triples_come_from_the_fixed_image_with_a_small_deformation(setup):
    method, ds, _ = setup
    b = _gen_batch(method, ds)
    key = jax.random.key(3)
    f, theta_f, seg = real_triple(
        key, b["fixed"], b["fixed_labels"], num_classes=5, amplitude=1.0, control_spacing=8
    )
    theta = random_displacement(key, (16, 16), batch_size=2, amplitude=1.0, control_spacing=8)
    assert 0 < float(jnp.abs(theta).max()) < 4.0  # small
    np.testing.assert_array_equal(f, b["fixed"])
    np.testing.assert_allclose(theta_f, warp(b["fixed"], theta), atol=1e-6)
    np.testing.assert_allclose(seg, warp_labels(b["fixed_labels"], theta, num_classes=5), atol=1e-6)
    assert 0 < float(jnp.abs(theta_f - b["fixed"]).mean()) < 0.1  # perturbed, but close
    # the method's real input does not look at the moving image; "fixed" labels are crisp S_f
    moved = {**b, "moving": b["moving"] + 1.0, "moving_labels": b["fixed_labels"]}
    np.testing.assert_array_equal(method.real(key, b), method.real(key, moved))
    _, _, crisp = real_triple(
        key, b["fixed"], b["fixed_labels"], num_classes=5, amplitude=1.0, control_spacing=8,
        labels="fixed",
    )  # fmt: skip
    np.testing.assert_array_equal(crisp, jax.nn.one_hot(b["fixed_labels"], 5))


def test_images_only_critic_sees_no_labels(data):
    method, ds, state = _build(data, "critic.inputs='images'")
    b = _gen_batch(method, ds)
    assert method.real(jax.random.key(0), b).shape[-1] == 2
    assert method.fake(variables(state), b)["fake"].shape[-1] == 2
    assert state["critic"].params["params"]["conv0"]["kernel"].shape[-2] == 2


def test_no_critic_when_the_adversarial_weight_is_zero(data):
    method, ds, state = _build(data, "loss.adv_weight=0.0")
    assert set(state) == {"reg"} and not method.with_critic  # no critic built
    batch = method.sample_batch(ds, 0)
    assert "critic" not in batch
    v, b = variables(state), _gen_batch(method, ds)
    total, parts = jax.jit(method.generator_loss)(v, b, jax.random.key(0))
    np.testing.assert_allclose(total, _expected_generator_loss(method, v, b, adv=False), rtol=1e-5)
    assert "adv" not in parts
    new, _ = method.train_step(state, batch, jax.random.key(0), 0)
    assert int(new["reg"].step) == 1


def test_bad_settings_are_errors(data):
    with pytest.raises(ValueError, match=r"critic\.inputs"):
        _build(data, "critic.inputs='labels'")
    with pytest.raises(ValueError, match="adv_weight"):
        _build(data, "loss.adv_weight=-1.0")
