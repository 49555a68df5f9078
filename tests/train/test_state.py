"""NetState and make_optimizer: updates equal hand-written optax, per-network states."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrs_jax.train import NetState, make_optimizer


def _quadratic(params, target):
    return jnp.sum((params["w"] - target) ** 2) + jnp.sum(params["b"] ** 2)


def _params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))}


def test_apply_gradients_equals_optax_by_hand():
    tx = optax.adam(1e-2)
    params = _params()
    target = jnp.ones((4, 3))
    state = NetState.create(params=params, tx=tx)
    opt_state = tx.init(params)
    p = params

    @jax.jit
    def step(state):
        return state.apply_gradients(jax.grad(_quadratic)(state.params, target))

    for _ in range(5):
        state = step(state)
        updates, opt_state = tx.update(jax.grad(_quadratic)(p, target), opt_state, p)
        p = optax.apply_updates(p, updates)
    for k in p:
        np.testing.assert_allclose(state.params[k], p[k], rtol=1e-6, atol=1e-7)
    assert int(state.step) == 5


def test_pytree_of_states_steps_only_the_trained_network():
    """Alternating training: the frozen partner keeps params, optimiser state and step."""
    tx = make_optimizer(learning_rate=1e-2)
    states = {
        "reg": NetState.create(params=_params(0), tx=tx),
        "seg": NetState.create(params=_params(1), tx=tx),
    }

    @functools.partial(jax.jit, static_argnames="name", donate_argnums=0)
    def step(states, name):
        grads = jax.grad(_quadratic)(states[name].params, 0.0)
        return {**states, name: states[name].apply_gradients(grads)}

    seg_before = jax.tree.map(np.asarray, states["seg"])
    reg_before = np.asarray(states["reg"].params["w"])
    states = step(states, "reg")
    seg_after = states["seg"]
    for a, b in zip(jax.tree.leaves(seg_before), jax.tree.leaves(seg_after)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert int(states["reg"].step) == 1 and int(states["seg"].step) == 0
    assert np.abs(np.asarray(states["reg"].params["w"]) - reg_before).max() > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"name": "adamw", "weight_decay": 1e-4},
        {"name": "sgd", "momentum": 0.9},
        {"schedule": "cosine", "total_steps": 20, "warmup_steps": 5},
        {"schedule": "linear", "total_steps": 20, "warmup_steps": 5},
        {"schedule": "linear", "total_steps": 20},
        {"clip_norm": 1.0},
    ],
)
def test_make_optimizer_minimises_a_quadratic(kwargs):
    kwargs = {"learning_rate": 5e-2, **kwargs}
    state = NetState.create(params=_params(), tx=make_optimizer(**kwargs))
    target = jnp.ones((4, 3))
    loss0 = float(_quadratic(state.params, target))
    step = jax.jit(lambda s: s.apply_gradients(jax.grad(_quadratic)(s.params, target)))
    for _ in range(20):
        state = step(state)
    assert float(_quadratic(state.params, target)) < 0.8 * loss0


def test_warmup_starts_at_zero_and_clipping_bounds_the_update():
    tx = make_optimizer(name="sgd", momentum=0.0, learning_rate=1.0, warmup_steps=10)
    state = NetState.create(params={"w": jnp.zeros(2)}, tx=tx)
    state = state.apply_gradients({"w": jnp.ones(2)})
    np.testing.assert_array_equal(state.params["w"], 0.0)  # lr(0) = 0 during warm-up
    tx = make_optimizer(name="sgd", momentum=0.0, learning_rate=1.0, clip_norm=0.5)
    state = NetState.create(params={"w": jnp.zeros(2)}, tx=tx)
    state = state.apply_gradients({"w": jnp.full(2, 100.0)})
    np.testing.assert_allclose(np.linalg.norm(state.params["w"]), 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "rmsprop"}, "rmsprop"),
        ({"schedule": "step"}, "step"),
        ({"schedule": "cosine"}, "total_steps"),
        ({"weight_decay": 1e-4}, "adamw"),
    ],
)
def test_make_optimizer_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)
