"""Training regimes: every step is compared with a hand computation (toy quadratic or linear
models with known gradients), frozen partners are checked bit for bit."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrs_jax.losses import (
    gradient_l2,
    gradient_penalty,
    mse,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from jrs_jax.spatial import warp
from jrs_jax.train import (
    Alternating,
    NetState,
    make_adversarial_step,
    make_alternating_step,
    make_atlas_step,
    make_self_training_step,
    pseudo_labels,
    refine,
    warp_subjects_to_atlas,
)


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def _copy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


# --------------------------------------------------------------------------- alternating


def _alt_losses():
    def loss_a(v, batch, key):
        return jnp.sum((v["a"] * v["b"] - batch) ** 2), {"aux_a": jnp.sum(v["a"])}

    def loss_b(v, batch, key):
        return jnp.sum((v["a"] + v["b"] - batch) ** 2), {}

    return {"a": loss_a, "b": loss_b}


def _partial_grad(loss_fn, state, name, batch):
    v = {k: s.params for k, s in state.items()}
    return jax.grad(lambda p: loss_fn({**v, name: p}, batch, None)[0])(state[name].params)


def test_alternating_counts_frozen_partner_and_updates():
    tx = optax.adam(0.1)
    state = {
        "a": NetState.create(params=jnp.array([1.0, -0.5]), tx=tx),
        "b": NetState.create(params=jnp.array([0.3, 2.0]), tx=tx),
    }
    batch = jnp.array([1.5, -1.0])
    sched = Alternating((("a", 2), ("b", 1)))
    losses = _alt_losses()
    step = make_alternating_step(losses, sched)
    for t in range(6):
        name = sched.phase(t)
        other = "b" if name == "a" else "a"
        before = _copy({"other": state[other], "this": state[name]})
        new, metrics = step(state, batch, jax.random.key(t), t)
        # frozen partner: params, optimiser state and step bit-identical
        assert _leaves_equal(new[other], before["other"])
        # trained one: exactly one hand-written optax update
        grad = _partial_grad(losses[name], state, name, batch)
        upd, opt = tx.update(grad, state[name].opt_state, state[name].params)
        np.testing.assert_allclose(
            new[name].params, optax.apply_updates(state[name].params, upd), rtol=1e-6
        )
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
            new[name].opt_state,
            opt,
        )
        assert f"loss/{name}" in metrics and f"loss/{other}" not in metrics
        assert "phase" not in metrics
        assert float(metrics[f"loss/{name}"]) == float(metrics["loss"])
        assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
        state = new
    for n in ("a", "b"):
        assert int(state[n].step) == sched.count(n, 6)
    assert (int(state["a"].step), int(state["b"].step)) == (4, 2)
    # one compilation per phase
    assert step.updates["a"]._cache_size() == 1 and step.updates["b"]._cache_size() == 1


def test_alternating_loss_fns_must_match_schedule():
    sched = Alternating((("a", 2), ("b", 1)))
    with pytest.raises(ValueError, match="missing"):
        make_alternating_step({"a": _alt_losses()["a"]}, sched)
    with pytest.raises(ValueError, match="unused"):
        make_alternating_step({**_alt_losses(), "c": _alt_losses()["a"]}, sched)


def test_alternating_with_step_passes_each_networks_own_update_count():
    """A scheduled weight sees its network's update count: net a takes steps 0, 1, 2, 3
    while b (one step in three) sees 0, 1; with sgd(1) on loss -w·p, p moves by w."""
    sched = Alternating((("a", 2), ("b", 1)))
    weight = lambda s: 1.0 + s.astype(jnp.float32)  # 1, 2, 3, ...

    def loss(name):
        return lambda v, batch, key, step: (-weight(step) * v[name], {"w": weight(step)})

    state = {n: NetState.create(params=jnp.zeros(()), tx=optax.sgd(1.0)) for n in "ab"}
    step = make_alternating_step({"a": loss("a"), "b": loss("b")}, sched, with_step=True)
    seen = []
    for t in range(6):
        state, m = step(state, None, jax.random.key(t), t)
        seen.append(float(m["w"]))
    assert seen == [1.0, 2.0, 1.0, 3.0, 4.0, 2.0]
    assert float(state["a"].params) == 1 + 2 + 3 + 4 and float(state["b"].params) == 1 + 2


# --------------------------------------------------------------------------- adversarial
# Toy WGAN in 1-D: generator x = theta + z, critic D(x) = w * x. Then
#   critic loss  mean D(fake) - mean D(real)    d/dw     = mean(fake) - mean(real)
#   gen loss     -mean D(fake)                  d/dtheta = -w


def _gan_losses(noise_from_key: bool, gen="gen", disc="disc"):
    def fake(v, batch, key):
        z = jax.random.normal(key, batch["real"].shape) if noise_from_key else batch["z"]
        return v[gen] + z

    def disc_loss(v, batch, key):
        loss = wasserstein_critic_loss(v[disc] * batch["real"], v[disc] * fake(v, batch, key))
        return jnp.mean(loss), {"w": v[disc]}

    def gen_loss(v, batch, key):
        assert "critic" not in batch
        return jnp.mean(wasserstein_generator_loss(v[disc] * fake(v, batch, key))), {}

    return gen_loss, disc_loss


def _gan_state(lr):
    return {
        "gen": NetState.create(params=jnp.float32(0.2), tx=optax.sgd(lr)),
        "disc": NetState.create(params=jnp.float32(-0.3), tx=optax.sgd(lr)),
    }


def test_adversarial_n_critic_same_batch_matches_analytic():
    lr, n_critic, B = 0.1, 3, 4
    gen_loss, disc_loss = _gan_losses(noise_from_key=True)
    step = make_adversarial_step(gen_loss, disc_loss, n_critic=n_critic)
    state = _gan_state(lr)
    batch = {"real": jnp.linspace(1.0, 2.0, B)[:, None]}
    theta, w = 0.2, -0.3
    for s in range(2):
        key = jax.random.key(s)
        gen_before = _copy(state["gen"])
        state, metrics = step(state, batch, key)
        # by hand, with the documented key derivation
        k_disc, _ = jax.random.split(key)
        disc_losses = []
        for i in range(n_critic):
            z = np.asarray(jax.random.normal(jax.random.fold_in(k_disc, i), (B, 1)))
            diff = theta + z.mean() - np.asarray(batch["real"]).mean()
            disc_losses.append(w * diff)
            w = w - lr * diff  # generator frozen: theta unchanged
        theta = theta - lr * (-w)  # against the updated critic
        np.testing.assert_allclose(float(state["disc"].params), w, rtol=1e-5)
        np.testing.assert_allclose(float(state["gen"].params), theta, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["loss/disc"]), np.mean(disc_losses), rtol=1e-5)
        assert int(state["gen"].step) == int(gen_before.step) + 1
    assert int(state["disc"].step) == n_critic * int(state["gen"].step) == 6
    assert {"loss/gen", "loss/disc", "grad_norm/gen", "grad_norm/disc", "disc/w"} <= set(metrics)


def test_adversarial_per_critic_batches_are_scanned():
    lr, n_critic, B = 0.05, 3, 2
    gen_loss, disc_loss = _gan_losses(noise_from_key=False, gen="G", disc="D")
    step = make_adversarial_step(gen_loss, disc_loss, n_critic=n_critic, gen="G", disc="D")
    state = {"G": _gan_state(lr)["gen"], "D": _gan_state(lr)["disc"]}
    rng = np.random.default_rng(0)
    critic = {
        "real": rng.normal(size=(n_critic, B, 1)).astype(np.float32),
        "z": rng.normal(size=(n_critic, B, 1)).astype(np.float32),
    }
    batch = {
        "real": np.ones((B, 1), np.float32),
        "z": np.full((B, 1), 0.5, np.float32),
        "critic": critic,
    }
    state, metrics = step(state, batch, jax.random.key(0))
    theta, w = 0.2, -0.3
    for i in range(n_critic):
        w -= lr * (theta + critic["z"][i].mean() - critic["real"][i].mean())
    theta += lr * w  # the generator sees batch without "critic" (asserted in gen_loss)
    np.testing.assert_allclose(float(state["D"].params), w, rtol=1e-5)
    np.testing.assert_allclose(float(state["G"].params), theta, rtol=1e-5)
    assert "loss/D" in metrics and "loss/G" in metrics

    bad = {**batch, "critic": jax.tree.map(lambda x: x[:2], critic)}
    with pytest.raises(ValueError, match="n_critic=3"):
        step(state, bad, jax.random.key(0))


def test_adversarial_wgan_gp_matches_analytic():
    # critic D(x) = x @ w on x in R^2: |grad_x D| = |w| for every interpolate, so the GP
    # gradient is 2 (|w| - 1) w / |w| whatever the random alphas are.
    lr, lam, B = 0.01, 10.0, 3
    w0 = np.array([0.6, -1.8], np.float32)
    theta0 = np.array([0.5, 0.25], np.float32)
    real = np.arange(B * 2, dtype=np.float32).reshape(B, 2) / 4

    def critic(v):
        return lambda x: x @ v["disc"]

    def disc_loss(v, batch, key):
        fake = v["gen"] + jnp.zeros_like(batch)
        wl = wasserstein_critic_loss(critic(v)(batch)[:, None], critic(v)(fake)[:, None])
        gp = gradient_penalty(key, critic(v), batch, fake)
        return jnp.mean(wl + lam * gp), {"gp": jnp.mean(gp)}

    def gen_loss(v, batch, key):
        fake = v["gen"] + jnp.zeros_like(batch)
        return jnp.mean(wasserstein_generator_loss(critic(v)(fake)[:, None])), {}

    state = {
        "gen": NetState.create(params=jnp.asarray(theta0), tx=optax.sgd(lr)),
        "disc": NetState.create(params=jnp.asarray(w0), tx=optax.sgd(lr)),
    }
    step = make_adversarial_step(gen_loss, disc_loss, n_critic=1)
    state, metrics = step(state, jnp.asarray(real), jax.random.key(3))
    norm = np.linalg.norm(w0)
    grad_w = (theta0 - real.mean(0)) + lam * 2 * (norm - 1) * w0 / norm
    w1 = w0 - lr * grad_w
    np.testing.assert_allclose(np.asarray(state["disc"].params), w1, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state["gen"].params), theta0 + lr * w1, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["disc/gp"]), (norm - 1) ** 2, rtol=1e-5)


def test_adversarial_rejects_bad_settings():
    gen_loss, disc_loss = _gan_losses(noise_from_key=True)
    with pytest.raises(ValueError, match="n_critic"):
        make_adversarial_step(gen_loss, disc_loss, n_critic=0)
    with pytest.raises(ValueError, match="different"):
        make_adversarial_step(gen_loss, disc_loss, gen="x", disc="x")
    with pytest.raises(ValueError, match="different"):
        make_adversarial_step(gen_loss, disc_loss, gen=("a", "x"), disc="x")


def test_adversarial_generator_side_may_be_several_networks():
    """``gen=("a", "b")``: one generator update steps both (jointly, each with its own
    optimiser), against the updated critic; metrics are prefixed ``a+b``."""
    lr = 0.1

    def disc_loss(v, batch, key):  # the critic's parameter d moves towards a + b
        return jnp.square(v["d"] - v["a"] - v["b"]), {}

    def gen_loss(v, batch, key):  # a and b minimise (a + b - d)^2 + a^2
        return jnp.square(v["a"] + v["b"] - v["d"]) + jnp.square(v["a"]), {"a2": v["a"] ** 2}

    sgd = optax.sgd(lr)
    state = {n: NetState.create(params=jnp.float32(x), tx=sgd) for n, x in zip("abd", (1, 2, 0))}
    step = make_adversarial_step(gen_loss, disc_loss, gen=("a", "b"), disc="d")
    state, metrics = step(state, None, jax.random.key(0))
    d1 = 0.0 - lr * 2 * (0.0 - 3.0)  # 0.6
    r = 3.0 - d1
    np.testing.assert_allclose(float(state["d"].params), d1, rtol=1e-6)
    np.testing.assert_allclose(float(state["a"].params), 1 - lr * (2 * r + 2 * 1), rtol=1e-6)
    np.testing.assert_allclose(float(state["b"].params), 2 - lr * 2 * r, rtol=1e-6)
    assert {"loss/a+b", "a+b/a2", "grad_norm/a", "grad_norm/b", "loss/d"} <= set(metrics)
    # CycleGAN's order: the generators first (against the old critic d = 0), then the critic
    state = {n: NetState.create(params=jnp.float32(x), tx=sgd) for n, x in zip("abd", (1, 2, 0))}
    step = make_adversarial_step(gen_loss, disc_loss, gen=("a", "b"), disc=("d",), gen_first=True)
    state, metrics = step(state, None, jax.random.key(0))
    a1, b1 = 1 - lr * (2 * 3.0 + 2 * 1), 2 - lr * 2 * 3.0
    np.testing.assert_allclose(float(state["a"].params), a1, rtol=1e-6)
    np.testing.assert_allclose(float(state["b"].params), b1, rtol=1e-6)
    np.testing.assert_allclose(float(state["d"].params), lr * 2 * (a1 + b1), rtol=1e-6)


# --------------------------------------------------------------------------- self-training


def _st_state(lr=0.1):
    return {
        "student": NetState.create(params={"w": jnp.array([1.0, 2.0, -1.0])}, tx=optax.sgd(lr)),
        "teacher": {"w": jnp.array([0.5, 0.0, 0.5])},
    }


def test_self_training_teacher_is_ema_of_updated_student():
    lr, decay = 0.1, 0.75
    seen = {}

    def loss_fn(v, batch, key, *, threshold):
        seen["threshold"] = threshold
        # pulls the student towards the (constant) teacher; threshold enters the gradient
        return jnp.sum((v["student"]["w"] - v["teacher"]["w"]) ** 2) + threshold * jnp.sum(
            v["student"]["w"] * batch
        ), {}

    state = _st_state(lr)
    batch = jnp.array([1.0, -1.0, 2.0])
    step = make_self_training_step(loss_fn, decay=decay, threshold=0.5)
    w, t = np.array([1.0, 2.0, -1.0]), np.array([0.5, 0.0, 0.5])
    for s in range(3):
        state, metrics = step(state, batch, jax.random.key(s))
        w = w - lr * (2 * (w - t) + 0.5 * np.asarray(batch))  # no gradient into the teacher
        t = decay * t + (1 - decay) * w
        np.testing.assert_allclose(np.asarray(state["student"].params["w"]), w, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(state["teacher"]["w"]), t, rtol=1e-6)
    assert seen["threshold"] == 0.5
    assert float(metrics["ema_decay"]) == decay
    assert int(state["student"].step) == 3


def test_self_training_decay_zero_copies_student_and_schedule():
    def loss_fn(v, batch, key):  # threshold=None: a plain LossFn
        return jnp.sum(v["student"]["w"] ** 2 * v["teacher"]["w"]), {}

    step = make_self_training_step(loss_fn, decay=0.0, threshold=None)
    state, _ = step(_st_state(), None, jax.random.key(0))
    assert _leaves_equal(state["teacher"], state["student"].params)

    # decay as a function of the student's step after the update: 1 - 1/(1+1) = 0.5
    step = make_self_training_step(loss_fn, decay=lambda s: 1.0 - 1.0 / (s + 1), threshold=None)
    state0 = _st_state()
    state, metrics = step(state0, None, jax.random.key(0))
    np.testing.assert_allclose(float(metrics["ema_decay"]), 0.5)
    expected = 0.5 * np.asarray(state0["teacher"]["w"]) + 0.5 * np.asarray(
        state["student"].params["w"]
    )
    np.testing.assert_allclose(np.asarray(state["teacher"]["w"]), expected, rtol=1e-6)


def test_self_training_rejects_netstate_teacher():
    step = make_self_training_step(lambda v, b, k: (jnp.sum(v["student"]["w"]), {}), threshold=None)
    state = _st_state()
    state["teacher"] = NetState.create(params=state["teacher"], tx=optax.sgd(0.1))
    with pytest.raises(TypeError, match="plain params"):
        step(state, None, jax.random.key(0))


def test_pseudo_labels_hand_made():
    probs = jnp.array(
        [
            [[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], [[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]],
            [[[0.4, 0.35, 0.25], [0.2, 0.75, 0.05]], [[0.5, 0.25, 0.25], [0.3, 0.3, 0.4]]],
        ]
    )  # [B=2, S=(2,2), K=3]
    labels, mask = jax.jit(functools.partial(pseudo_labels, threshold=0.5))(probs)
    assert labels.dtype == jnp.int32 and mask.dtype == jnp.float32
    assert labels.shape == mask.shape == (2, 2, 2)
    np.testing.assert_array_equal(labels, [[[0, 2], [1, 2]], [[0, 1], [0, 2]]])
    np.testing.assert_array_equal(mask, [[[1, 1], [1, 1]], [[0, 1], [1, 0]]])  # 0.5 >= 0.5 kept
    _, mask0 = pseudo_labels(probs, threshold=0.0)
    assert float(mask0.min()) == 1.0


# --------------------------------------------------------------------------- atlas building


class _TinyReg(nn.Module):
    @nn.compact
    def __call__(self, moving, fixed):
        x = jnp.concatenate([moving, fixed], axis=-1)
        disp = nn.Conv(2, (3, 3), kernel_init=nn.initializers.normal(0.5))(x)
        return {"disp": disp}


def test_warp_subjects_to_atlas_vmap_equals_loop():
    net = _TinyReg()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(3, 6, 5, 1)), jnp.float32)
    atlas = jnp.asarray(rng.uniform(size=(6, 5, 1)), jnp.float32)
    params = jax.jit(net.init)(jax.random.key(0), images[:1], atlas[None])
    warped, disps = jax.jit(functools.partial(warp_subjects_to_atlas, net.apply))(
        params, atlas, images
    )
    assert warped.shape == (3, 6, 5, 1) and disps.shape == (3, 6, 5, 2)
    assert float(jnp.abs(disps).max()) > 0.1  # a non-trivial field
    for n in range(3):
        d = net.apply(params, images[n : n + 1], atlas[None])["disp"]
        np.testing.assert_allclose(disps[n], d[0], atol=1e-5)
        np.testing.assert_allclose(warped[n], warp(images[n : n + 1], d)[0], atol=1e-5)
    with pytest.raises(ValueError, match="atlas"):
        warp_subjects_to_atlas(net.apply, params, atlas[..., :0], images)


def _shift_apply(params, moving, fixed):
    # "network": a constant translation, its params the shift vector
    return {"disp": jnp.broadcast_to(params["shift"], (*moving.shape[:-1], 2))}


def _atlas_loss(v, batch, key):
    warped, disps = warp_subjects_to_atlas(_shift_apply, v["reg"], v["atlas"], batch)
    sim = jnp.mean(mse(warped, jnp.broadcast_to(v["atlas"], warped.shape)))
    return sim + 0.1 * jnp.mean(disps**2), {"atlas_target": warped.mean(0), "sim": sim}


def _subjects():
    x = jnp.arange(8.0)[:, None] * jnp.ones((8, 6))
    base = jnp.sin(x / 2.0) + jnp.cos(jnp.arange(6.0) / 3.0)[None, :]
    return jnp.stack([base, 2 * base, base + 1])[..., None]  # [3, 8, 6, 1]


@pytest.mark.parametrize("decay", [0.0, 0.25])
def test_atlas_ema_mode(decay):
    images = _subjects()
    shift0 = jnp.array([0.3, -0.2])
    atlas0 = jnp.zeros((8, 6, 1))
    state = {
        "reg": NetState.create(params={"shift": shift0}, tx=optax.sgd(0.1)),
        "atlas": atlas0,
    }
    step = make_atlas_step(_atlas_loss, mode="ema", decay=decay)
    new, metrics = step(state, images, jax.random.key(0))
    # target from the pre-update network
    warped = jnp.stack(
        [
            jax.jit(warp)(
                images[n : n + 1], _shift_apply({"shift": shift0}, images[:1], None)["disp"]
            )[0]
            for n in range(3)
        ]
    )
    expected = decay * atlas0 + (1 - decay) * warped.mean(0)
    np.testing.assert_allclose(new["atlas"], expected, rtol=1e-5, atol=1e-6)
    assert "atlas_target" not in metrics and "sim" in metrics
    assert all(v.shape == () for v in metrics.values())
    # the net stepped once with the gradient (atlas constant)
    g = jax.jit(jax.grad(lambda p: _atlas_loss({"reg": p, "atlas": atlas0}, images, None)[0]))(
        {"shift": shift0}
    )
    np.testing.assert_allclose(new["reg"].params["shift"], shift0 - 0.1 * g["shift"], rtol=1e-5)
    assert int(new["reg"].step) == 1


def test_atlas_learned_mode_updates_both():
    images = _subjects()
    params = {"shift": jnp.array([0.3, -0.2])}
    atlas0 = jnp.full((8, 6, 1), 0.5)
    state = {
        "reg": NetState.create(params=params, tx=optax.sgd(0.1)),
        "atlas": NetState.create(params=atlas0, tx=optax.sgd(0.5)),
    }
    new, metrics = make_atlas_step(_atlas_loss, mode="learned")(state, images, jax.random.key(0))
    g_reg, g_atlas = jax.jit(
        jax.grad(lambda p, a: _atlas_loss({"reg": p, "atlas": a}, images, None)[0], argnums=(0, 1))
    )(params, atlas0)
    np.testing.assert_allclose(
        new["reg"].params["shift"], params["shift"] - 0.1 * g_reg["shift"], rtol=1e-5
    )
    np.testing.assert_allclose(new["atlas"].params, atlas0 - 0.5 * g_atlas, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g_atlas).max()) > 1e-3
    assert int(new["reg"].step) == int(new["atlas"].step) == 1
    assert "atlas_target" not in metrics and "grad_norm/atlas" in metrics


def test_atlas_contract_errors():
    state = {
        "reg": NetState.create(params={"shift": jnp.zeros(2)}, tx=optax.sgd(0.1)),
        "atlas": jnp.zeros((8, 6, 1)),
    }
    no_target = make_atlas_step(lambda v, b, k: (_atlas_loss(v, b, k)[0], {}), mode="ema")
    with pytest.raises(KeyError, match="atlas_target"):
        no_target(state, _subjects(), jax.random.key(0))
    bad_shape = make_atlas_step(
        lambda v, b, k: (_atlas_loss(v, b, k)[0], {"atlas_target": jnp.zeros(3)}), mode="ema"
    )
    with pytest.raises(ValueError, match="atlas shape"):
        bad_shape(state, _subjects(), jax.random.key(0))
    with pytest.raises(TypeError):  # learned mode needs a NetState template
        make_atlas_step(_atlas_loss, mode="learned")(state, _subjects(), jax.random.key(0))
    with pytest.raises(ValueError):
        make_atlas_step(_atlas_loss, mode="mean")


# --------------------------------------------------------------------------- refinement


def _blob(shift=0.0):
    i = jnp.arange(12.0)[:, None]
    j = jnp.arange(12.0)[None, :]
    return jnp.exp(-((i - 5.5 - shift) ** 2 + (j - 5.5) ** 2) / 8.0)[None, ..., None]


def _refine_loss(disp, batch, key):
    moving, fixed = batch
    return jnp.mean(mse(warp(moving, disp), fixed)) + 0.01 * jnp.mean(gradient_l2(disp)), {}


def test_refine_displacement_recovers_translation():
    fixed, moving = _blob(), _blob(shift=1.0)  # moving(x) = fixed(x - e0): u ≈ +e0
    disp0 = jnp.full((1, 12, 12, 2), 0.05)
    disp0_copy = np.array(disp0)
    disp, losses = refine(
        _refine_loss, disp0, (moving, fixed), steps=60, tx=optax.adam(0.05), key=jax.random.key(0)
    )
    assert losses.shape == (60,) and losses.dtype == jnp.float32
    loss_at = jax.jit(lambda d: _refine_loss(d, (moving, fixed), None)[0])
    np.testing.assert_allclose(losses[0], loss_at(disp0), rtol=1e-6)
    final = float(loss_at(disp))
    assert final < 0.2 * float(losses[0])
    assert float(losses[-1]) < float(losses[0])
    assert np.mean(np.diff(np.asarray(losses)) <= 1e-7) > 0.8  # monotone-ish
    centre = np.asarray(disp[0, 3:9, 3:9, 0])
    assert centre.mean() > 0.5  # moved towards the true +1 voxel shift
    np.testing.assert_array_equal(np.asarray(disp0), disp0_copy)  # copy semantics


def test_refine_equals_manual_loop_and_zero_steps():
    tx = optax.adam(0.1)
    target = jnp.array([1.0, -2.0, 0.5])

    def loss_fn(p, batch, key):
        noise = 0.1 * jax.random.normal(key, p["w"].shape)
        return jnp.sum((p["w"] - batch - noise) ** 2), {"unused": 0.0}

    params = {"w": jnp.zeros(3)}
    key = jax.random.key(7)
    out, losses = refine(loss_fn, params, target, steps=5, tx=tx, key=key)

    @jax.jit
    def manual(p, opt, i):
        (value, _), g = jax.value_and_grad(loss_fn, has_aux=True)(
            p, target, jax.random.fold_in(key, i)
        )
        u, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, u), opt, value

    p, opt = params, tx.init(params)
    for i in range(5):
        p, opt, value = manual(p, opt, jnp.uint32(i))
        np.testing.assert_allclose(losses[i], value, rtol=1e-5)
    np.testing.assert_allclose(out["w"], p["w"], rtol=1e-5)

    same, empty = refine(loss_fn, params, target, steps=0, tx=tx, key=key)
    assert _leaves_equal(same, params) and empty.shape == (0,)
    with pytest.raises(ValueError, match="steps"):
        refine(loss_fn, params, target, steps=-1, tx=tx, key=key)
