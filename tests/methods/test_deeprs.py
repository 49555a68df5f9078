"""DeepRS: the losses equal their documented compositions; DSS; pairs; the D, R, S step."""

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
from jrs_jax.methods.deeprs import dss_alpha
from jrs_jax.spatial import integrate_velocity, warp, warp_labels
from jrs_jax.train import make_update, variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETS = [
    "loss.adv_weight=0.3",
    "loss.drc_weight=2.0",
    "loss.cc_weight=1.5",
    "loss.reg_weight=0.7",
    "loss.acm_weight=2.5",
    "loss.ce_weight=0.5",
    "loss.beta=0.25",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return write_learn2reg_dataset(
        root, key=3, shape=(16, 16), num_subjects=8, num_labelled=2, num_heldout=2
    )


def _build(data, *sets, variant="smoke", base=SETS):
    cfg = load_config(os.path.join(ROOT, "configs", f"deeprs.py:{variant}"))
    cfg = apply_overrides(cfg, [f"data.dataset={data}", *base, *sets])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    method = experiment.build_method(cfg)
    # non-trivial networks (perturbed parameters): fields, maps and scores are not ~0
    state = perturbed_state(method.init(jax.random.key(0)))
    batch = {k: jnp.asarray(v) for k, v in method.sample_batch(ds, 0).items()}
    return method, ds, state, batch


@pytest.fixture(scope="module")
def setup(data):
    return _build(data)


def _nets(method, v, batch, key):
    """By hand: phi, x_w, the DSS field, the augmented image and label map."""
    m, f = batch["moving"], batch["fixed"]
    disp = method.reg_net.apply(v["reg"], m, f)["disp"]
    alpha = dss_alpha(key, m.shape[0], low=0.5, high=1.5)
    field = disp * alpha[:, None, None, None]
    return m, f, disp, warp(m, disp), field, warp(m, field)


def test_losses_equal_the_documented_compositions(setup):
    method, _, state, batch = setup
    v, key, k = variables(state), jax.random.key(7), method.num_classes
    D = lambda x, f: method.disc_net.apply(v["disc"], x, f)
    S = lambda x: method.seg_net.apply(v["seg"], x)
    m, f, disp, x_w, field, x_hat = _nets(method, v, batch, key)

    # L_D = -log sigma(D(x_r, x_f)) - log(1 - sigma(D(x_w, x_f))), x_r = beta m + (1-beta) f
    x_r = 0.25 * m + 0.75 * f
    want_d = jnp.mean(
        -jnp.log(jax.nn.sigmoid(D(x_r, f))).mean((1, 2, 3))
        - jnp.log(1 - jax.nn.sigmoid(D(x_w, f))).mean((1, 2, 3))
    )
    got_d, _ = jax.jit(method.disc_loss)(v, batch, key)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5)

    # L_reg = 0.3 L_adv + 2 L_drc + 1.5 L_cc + 0.7 L_R
    adv = -jnp.log(jax.nn.sigmoid(D(x_w, f))).mean((1, 2, 3))
    drc = jnp.mean((jax.nn.softmax(S(x_hat)) - jax.nn.softmax(S(f))) ** 2, (1, 2, 3))
    cc = losses.local_ncc(x_w, f, window=9, convention="voxelmorph")
    want_r = jnp.mean(0.3 * adv + 2.0 * drc + 1.5 * cc + 0.7 * losses.diffusion(disp))
    got_r, parts = jax.jit(method.reg_loss)(v, batch, key)
    np.testing.assert_allclose(got_r, want_r, rtol=1e-5)
    np.testing.assert_allclose(parts["drc"], drc.mean(), rtol=1e-5)

    # L_seg = 2.5 mean_x[-sigma(D(x_hat, f)) sum_k y_hat log S(f)] + 0.5 CE(S(x_hat), y_hat)
    y_hat = warp_labels(batch["moving_labels"], field, num_classes=k, mode="soft")
    conf = jax.nn.sigmoid(D(x_hat, f))  # [B, *S, 1]
    acm = -jnp.sum(conf * y_hat * jax.nn.log_softmax(S(f)), -1).mean((1, 2))
    ce = -jnp.sum(y_hat * jax.nn.log_softmax(S(x_hat)), -1).mean((1, 2))
    got_s, parts = jax.jit(method.seg_loss)(v, batch, key)
    np.testing.assert_allclose(got_s, jnp.mean(2.5 * acm + 0.5 * ce), rtol=1e-5)
    np.testing.assert_allclose(parts["acm"], acm.mean(), rtol=1e-5)


def test_gradients_reach_the_right_networks(setup):
    method, _, state, batch = setup
    v, key = variables(state), jax.random.key(2)
    # the seg loss does not depend on R or D (phi_hat and the confidence map are constants)
    g = jax.grad(lambda v: method.seg_loss(v, batch, key)[0])(v)
    assert all(
        float(jnp.abs(x).max()) == 0.0 for n in ("reg", "disc") for x in jax.tree.leaves(g[n])
    )
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g["seg"])) > 0
    # DRC reaches R through W(x_m, phi_hat)
    g = jax.grad(lambda v: method.reg_loss(v, batch, key)[1]["drc"])(v)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g["reg"])) > 0


def test_step_is_d_then_r_then_s_each_once(setup):
    method, _, state, batch = setup
    key = jax.random.key(11)
    copy = jax.tree.map(jnp.copy, state)
    new, metrics = method.train_step(jax.tree.map(jnp.copy, state), batch, key, 0)
    assert {n: int(new[n].step) for n in new} == {"reg": 1, "seg": 1, "disc": 1}
    assert {"loss/disc", "loss/reg", "loss/seg", "reg/drc", "seg/acm", "grad_norm/seg"} <= set(
        metrics
    )
    # by hand: D with its key, then R against the updated D, then S with the updated R, D
    k_adv, k_seg = jax.random.split(key)
    k_disc, k_reg = jax.random.split(k_adv)
    s = copy
    s, _ = make_update(method.disc_loss, train="disc")(s, batch, jax.random.fold_in(k_disc, 0))
    s, _ = make_update(method.reg_loss, train="reg")(s, batch, k_reg)
    s, _ = make_update(method.seg_loss, train="seg")(s, batch, k_seg)
    for n in ("reg", "seg", "disc"):
        for a, b in zip(jax.tree.leaves(new[n].params), jax.tree.leaves(s[n].params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dss_off_and_velocity(data, setup):
    method, _, state, batch = setup
    out = method.reg_net.apply(state["reg"].params, batch["moving"], batch["fixed"])
    key = jax.random.key(4)
    alpha = dss_alpha(key, 2, low=0.5, high=1.5)
    assert float(alpha.min()) >= 0.5 and float(alpha.max()) <= 1.5 and alpha[0] != alpha[1]
    np.testing.assert_allclose(
        method.sampled_field(key, out), out["disp"] * alpha[:, None, None, None]
    )
    off, _, st, b = _build(data, "dss.enabled=false")
    out = off.reg_net.apply(st["reg"].params, b["moving"], b["fixed"])
    np.testing.assert_array_equal(off.sampled_field(key, out), out["disp"])
    vel, _, st, b = _build(data, 'reg_model.output="velocity"', 'dss.on="velocity"')
    out = vel.reg_net.apply(st["reg"].params, b["moving"], b["fixed"])
    want = integrate_velocity(out["velocity"] * alpha[:, None, None, None], steps=7)
    np.testing.assert_allclose(vel.sampled_field(key, out), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="velocity"):
        _build(data, 'dss.on="velocity"')


def test_ablation_acm_off_leaves_only_ce(data):
    method, _, state, batch = _build(data, variant="smoke,no_acm", base=())
    v, key = variables(state), jax.random.key(3)
    total, parts = method.seg_loss(v, batch, key)
    np.testing.assert_allclose(total, parts["ce"], rtol=1e-6)
    assert float(parts["acm"]) > 0  # still logged


def test_pairs_move_a_labelled_subject_onto_any_other(setup):
    method, ds, _, _ = setup
    assert len(ds.labelled()) == 2 and len(ds.unlabelled()) == 4
    fixed = []
    for t in range(40):
        b = method.sample_batch(ds, t)
        assert b["moving_has_label"].all()
        assert all(not np.array_equal(m, f) for m, f in zip(b["moving"], b["fixed"]))
        fixed += list(b["fixed_has_label"])
    # the fixed image is uniform over the 5 other training subjects: 1 of them labelled
    assert 0.05 < np.mean(fixed) < 0.4
