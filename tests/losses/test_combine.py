"""Tests for jrs_jax.losses.combine (weighted terms, schedules, jit/grad, composition)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.losses.combine import (
    MissingInputError,
    Objective,
    combine,
    constant,
    cosine_ramp,
    linear_ramp,
    piecewise,
    ramp,
    ref,
    term,
)
from jrs_jax.losses.similarity import local_ncc, mse


def sq_norm(u, *, scale=1.0):
    """Toy regulariser: per-example scale * mean(u^2)."""
    return scale * jnp.mean(jnp.square(u).reshape(u.shape[0], -1), axis=1)


def data(seed=0):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.random((2, 8, 8, 1)), jnp.float32)
    f = jnp.asarray(rng.random((2, 8, 8, 1)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    m = jnp.asarray(rng.random((2, 8, 8)) > 0.3, jnp.float32)
    return {"warped": w, "fixed": f, "disp": u, "roi": m}


OBJ = combine(
    sim=term(local_ncc, "warped", "fixed", weight=1.0, window=3),
    smooth=term(sq_norm, "disp", weight=ramp(0.0, 2.0, steps=10), scale=0.5),
    seg=term(mse, "warped", "fixed", weight=0.25, mask=ref("roi")),
)


def hand(step, x):
    sim = local_ncc(x["warped"], x["fixed"], window=3)
    smooth = 0.5 * jnp.mean(jnp.square(x["disp"]).reshape(2, -1), axis=1)
    seg = mse(x["warped"], x["fixed"], mask=x["roi"])
    w_smooth = 2.0 * min(max(step / 10, 0.0), 1.0)
    per_example = 1.0 * sim + w_smooth * smooth + 0.25 * seg
    return per_example, {"sim": sim.mean(), "smooth": smooth.mean(), "seg": seg.mean()}


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def test_schedules_python_and_traced_steps():
    cases = [
        (constant(0.3), {0: 0.3, 10**6: 0.3}),
        (linear_ramp(0.0, 1.0, steps=100, begin=50), {0: 0.0, 50: 0.0, 100: 0.5, 150: 1.0}),
        (ramp(2.0, 1.0, steps=4), {-3: 2.0, 0: 2.0, 1: 1.75, 4: 1.0, 9: 1.0}),
        (linear_ramp(0.0, 3.0, steps=0, begin=5), {4: 0.0, 5: 3.0, 6: 3.0}),
        (cosine_ramp(1.0, 0.0, steps=10), {0: 1.0, 5: 0.5, 10: 0.0, 20: 0.0}),
        (cosine_ramp(0.0, 1.0, steps=8, begin=2), {2: 0.0, 4: (1 - math.cos(math.pi / 4)) / 2}),
        (piecewise([100, 200], [0.0, 1.0, 2.0]), {0: 0.0, 99: 0.0, 100: 1.0, 199: 1.0, 250: 2.0}),
        (piecewise([], [4.0]), {0: 4.0, 7: 4.0}),
    ]
    for sched, want in cases:
        steps = np.array(list(want), np.int32)
        expected = np.array(list(want.values()), np.float32)
        eager = np.array([float(sched(int(s))) for s in steps])
        traced = jax.jit(jax.vmap(sched))(jnp.asarray(steps))
        np.testing.assert_allclose(eager, expected, rtol=1e-6, atol=1e-7, err_msg=repr(sched))
        np.testing.assert_allclose(traced, expected, rtol=1e-6, atol=1e-7, err_msg=repr(sched))
    assert "linear_ramp(0.0, 1.0, steps=100, begin=50)" in repr(cases[1][0])


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="len\\(values\\)"):
        piecewise([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        piecewise([2, 1], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="steps"):
        linear_ramp(0.0, 1.0, steps=-1)


# --------------------------------------------------------------------------------------------
# objective values
# --------------------------------------------------------------------------------------------


def test_total_and_parts_equal_hand_computed_sum():
    x = data()
    for step in (0, 3, 10, 25):
        total, parts = OBJ(step=step, **x)
        per_example, want_parts = hand(step, x)
        np.testing.assert_allclose(total, per_example.mean(), rtol=1e-6)
        assert total.shape == ()
        assert list(parts) == ["sim", "smooth", "seg"]
        for k in want_parts:
            np.testing.assert_allclose(parts[k], want_parts[k], rtol=1e-6)  # unweighted
        total_none, _ = OBJ(step=step, reduce="none", **x)
        assert total_none.shape == (2,)
        np.testing.assert_allclose(total_none, per_example, rtol=1e-6)
    np.testing.assert_allclose(OBJ.weights(step=5)["smooth"], 1.0)
    assert OBJ.inputs == ("warped", "fixed", "disp", "roi")


def test_under_jit_with_traced_step():
    x = data(1)
    f = jax.jit(OBJ)
    f_none = jax.jit(functools.partial(OBJ, reduce="none"))
    for step in (0, 4, 100):
        total, parts = f(step=jnp.asarray(step), **x)
        per_example, want_parts = hand(step, x)
        np.testing.assert_allclose(total, per_example.mean(), rtol=1e-6)
        np.testing.assert_allclose(f_none(step=step, **x)[0], per_example, rtol=1e-6)
        np.testing.assert_allclose(parts["smooth"], want_parts["smooth"], rtol=1e-6)


def test_zero_weight_term_is_logged_but_not_added():
    x = data(2)
    obj = combine(
        sim=term(mse, "warped", "fixed", weight=0.0),
        reg=term(sq_norm, "disp", weight=2.0),
        late=term(sq_norm, "disp", weight=piecewise([5], [0.0, 1.0])),
    )
    total, parts = jax.jit(obj)(step=0, **x)
    reg = sq_norm(x["disp"])
    np.testing.assert_allclose(total, 2.0 * reg.mean(), rtol=1e-6)
    np.testing.assert_allclose(parts["sim"], mse(x["warped"], x["fixed"]).mean(), rtol=1e-6)
    np.testing.assert_allclose(parts["late"], reg.mean(), rtol=1e-6)
    assert parts["sim"] > 0
    # the statically zero term gets no gradient; the scheduled one gets it when the weight is on
    g = jax.grad(lambda w, u: obj(step=0, warped=w, fixed=x["fixed"], disp=u)[0], (0, 1))
    gw, gu = g(x["warped"], x["disp"])
    assert np.all(gw == 0)
    np.testing.assert_allclose(gu, jax.grad(lambda u: 2.0 * sq_norm(u).mean())(x["disp"]),
                               rtol=1e-6)  # fmt: skip
    total_all_zero, parts_all_zero = combine(a=term(mse, "warped", "fixed", weight=0))(**x)
    assert float(total_all_zero) == 0.0 and parts_all_zero["a"] > 0


def test_grad_through_combine_equals_grad_of_hand_sum():
    x = data(3)
    step = 7

    def via_combine(w, u):
        return OBJ(step=step, warped=w, fixed=x["fixed"], disp=u, roi=x["roi"])

    def via_hand(w, u):
        return hand(step, {**x, "warped": w, "disp": u})[0].mean()

    (total, parts), g = jax.jit(jax.value_and_grad(via_combine, argnums=(0, 1), has_aux=True))(
        x["warped"], x["disp"]
    )
    g_hand = jax.grad(via_hand, argnums=(0, 1))(x["warped"], x["disp"])
    np.testing.assert_allclose(total, via_hand(x["warped"], x["disp"]), rtol=1e-6)
    assert set(parts) == {"sim", "smooth", "seg"}
    for a, b in zip(g, g_hand):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_missing_input_error_names_term_and_input():
    x = data()
    with pytest.raises(MissingInputError, match="term 'smooth' needs input 'disp'"):
        OBJ(step=0, warped=x["warped"], fixed=x["fixed"], roi=x["roi"])
    with pytest.raises(ValueError, match="needs input 'roi'"):  # from ref(...)
        OBJ(step=0, warped=x["warped"], fixed=x["fixed"], disp=x["disp"])
    with pytest.raises(ValueError, match="term 'p' needs input 'fixed'"):  # plain callable
        combine(p=lambda warped, fixed: mse(warped, fixed))(warped=x["warped"])
    with pytest.raises(ValueError, match=r"scheduled weight.*step="):
        OBJ(**x)


def test_other_errors():
    x = data()
    with pytest.raises(ValueError, match="reduce"):
        OBJ(step=0, reduce="sum", **x)
    with pytest.raises(ValueError, match="duplicate term name 'sim'"):
        OBJ.extend(sim=term(mse, "warped", "fixed"))
    with pytest.raises(ValueError, match=r"per-example values \[B\]"):
        combine(bad=term(lambda w: w, "warped"))(**x)
    with pytest.raises(ValueError, match="returned 3 values"):
        combine(a=term(mse, "warped", "fixed"), b=lambda: jnp.zeros(3))(**x)
    with pytest.raises(TypeError, match="must be a Term"):
        combine(a=3.0)
    with pytest.raises(ValueError, match="finite"):
        term(mse, "a", "b", weight=float("nan"))
    with pytest.raises(KeyError, match="nope"):
        OBJ.without("nope")


# --------------------------------------------------------------------------------------------
# composition and plain callables
# --------------------------------------------------------------------------------------------


def test_extend_combine_replace_without_and_plain_callables():
    x = data(4)
    extra = term(sq_norm, "disp", weight=3.0)
    ext = OBJ.extend(extra=extra)
    assert isinstance(ext, Objective) and list(ext.terms) == ["sim", "smooth", "seg", "extra"]
    assert list(OBJ.terms) == ["sim", "smooth", "seg"]  # immutable
    same = combine(**OBJ.terms, extra=extra)
    also = combine(OBJ, {"extra": extra})
    t_ext, p_ext = ext(step=3, **x)
    for other in (same, also):
        t, p = other(step=3, **x)
        np.testing.assert_allclose(t, t_ext, rtol=1e-7)
        assert p.keys() == p_ext.keys()
    np.testing.assert_allclose(t_ext, OBJ(step=3, **x)[0] + 3.0 * sq_norm(x["disp"]).mean(),
                               rtol=1e-6)  # fmt: skip

    only_sim = ext.without("smooth", "seg", "extra")
    want = local_ncc(x["warped"], x["fixed"], window=3).mean()
    np.testing.assert_allclose(only_sim(**x)[0], want, rtol=1e-6)
    doubled = only_sim.replace(sim=term(local_ncc, "warped", "fixed", weight=2.0, window=3))
    np.testing.assert_allclose(doubled(**x)[0], 2 * only_sim(**x)[0], rtol=1e-6)

    # plain callables: called with the inputs they name (or all of them with **kwargs)
    obj = combine(
        a=lambda warped, fixed: mse(warped, fixed),
        b=lambda **inputs: sq_norm(inputs["disp"]),
        c=term(lambda warped, fixed, scale: scale * mse(warped, fixed), weight=0.5, scale=4.0),
    )
    total, parts = jax.jit(obj)(**x)
    m, r = mse(x["warped"], x["fixed"]), sq_norm(x["disp"])
    np.testing.assert_allclose(total, (m + r + 0.5 * 4.0 * m).mean(), rtol=1e-6)
    np.testing.assert_allclose(parts["c"], 4.0 * m.mean(), rtol=1e-6)
    assert obj.inputs == ("warped", "fixed")  # b takes **kwargs: needs nothing named
    assert "sim=term(local_ncc, 'warped', 'fixed', weight=1.0, window=3)" in repr(OBJ)


def test_scalar_terms_broadcast_and_dtype():
    x = data(5)
    obj = combine(
        sim=term(mse, "warped", "fixed"),
        const=lambda: jnp.asarray(2.0, jnp.bfloat16),  # a scalar term (e.g. a parameter norm)
    )
    total, parts = obj(reduce="none", **x)
    assert total.shape == (2,) and total.dtype == jnp.float32
    np.testing.assert_allclose(total, mse(x["warped"], x["fixed"]) + 2.0, rtol=1e-6)
    assert parts["const"].dtype == jnp.float32
