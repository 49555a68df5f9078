"""X-ray GAN (Mahapatra et al., MLMI 2018): the loss terms, the Otsu mask, the variants, the
pluggable feature loss, a few stable train steps."""

from __future__ import annotations

import itertools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_on, pair_scans, perturbed_state

from jrs_jax import losses
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.methods import XrayGAN
from jrs_jax.methods.xray_gan import (
    deformation_agreement,
    feature_loss,
    log_dice,
    mse_norm,
    registration_mask,
)
from jrs_jax.spatial import otsu_threshold, warp
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "configs", "xray_gan.py")
W = {"adv": 0.3, "dice": 0.7, "agreement": 0.5, "cycle": 2.0, "smooth": 0.2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 x 16 anatomy with one foreground label (K = 2), scans paired into 2-scan subjects
    (subject fields: every pair has a ground truth)."""
    root = tmp_path_factory.mktemp("xray") / "data"
    path = write_learn2reg_dataset(
        root, key=4, shape=(16, 16), num_subjects=8, num_labelled=6, num_heldout=2, num_labels=1
    )
    return pair_scans(path)


def _build(data, variant="smoke", *sets):
    """The method (weights ``W`` for the full model, with or without the feature loss; the
    other variants' own weights), its dataset and a perturbed state."""
    full = variant in ("smoke", "smoke,feature")
    weights = [f"loss.{k}_weight={v}" for k, v in W.items()] if full else []
    _cfg, ds, method = build_on(f"{SPEC}:{variant}", data, *weights, *sets)
    state = perturbed_state(method.init(jax.random.key(0), ds), scale=0.2)
    return method, ds, state


@pytest.fixture(scope="module")
def full(data):
    return _build(data)


def _batch(method, ds, step=0):
    return {k: jnp.asarray(v) for k, v in method.sample_batch(ds, step).items()}


def test_generator_loss_is_the_documented_composition(full):
    method, ds, state = full
    assert isinstance(method, XrayGAN) and set(state) == {"G", "F", "D_X", "D_Y"}
    v, b = variables(state), _batch(method, ds)
    total, parts = jax.jit(method.generator_loss)(v, b, jax.random.key(0))

    # by hand, from the networks
    flt, ref = b["moving"], b["fixed"]
    ref_mask = (b["fixed_labels"] > 0).astype(jnp.float32)
    m3 = ref_mask[..., None]
    u_g, feats = method.register(v["G"], flt, ref, m3)
    u_g = u_g["disp"]
    u_f = method.register(v["F"], ref, flt, m3)[0]["disp"]
    reg, f_reg = warp(flt, u_g), warp(ref, u_f)
    mask = registration_mask(feats, temperature=0.05)
    dice = 1 - losses.soft_dice(mask["soft"][..., None], m3)
    e = jnp.mean((u_g - b["gt_disp"]) ** 2, (1, 2, 3))
    s = jnp.mean(b["gt_disp"] ** 2, (1, 2, 3))

    def lsgan_g(scores):
        return 0.5 * jnp.mean((scores - 1) ** 2, (1, 2, 3))

    cyc_flt, cyc_ref = warp(reg, u_f), warp(f_reg, u_g)
    expected = {
        "g_nmi": losses.mutual_information(reg, ref, normalized=True),
        "g_ssim": losses.ssim(reg, ref),
        "g_adv": lsgan_g(method.disc.apply(v["D_Y"], reg)),
        "g_dice": -jnp.log(dice),
        "g_agreement": -jnp.log(1 - e / (e + s + 0.01)),
        "g_smooth": losses.diffusion(u_g),
        "f_nmi": losses.mutual_information(f_reg, flt, normalized=True),
        "f_ssim": losses.ssim(f_reg, flt),
        "f_adv": lsgan_g(method.disc.apply(v["D_X"], f_reg)),
        "f_smooth": losses.diffusion(u_f),
        "cycle": jnp.mean(jnp.abs(cyc_flt - flt), (1, 2, 3))
        + jnp.mean(jnp.abs(cyc_ref - ref), (1, 2, 3)),
    }
    assert set(parts) == set(expected)
    for k, val in expected.items():
        np.testing.assert_allclose(parts[k], jnp.mean(val), rtol=2e-4, atol=1e-6, err_msg=k)
    weight = {
        "g_adv": W["adv"],
        "f_adv": W["adv"],
        "g_dice": W["dice"],
        "cycle": W["cycle"],
        "g_agreement": W["agreement"],
        "g_smooth": W["smooth"],
        "f_smooth": W["smooth"],
    }
    per_ex = sum(weight.get(k, 1.0) * val for k, val in expected.items())
    np.testing.assert_allclose(total, jnp.mean(per_ex), rtol=2e-4)
    # signs: −NMI in [−2, −1], 1 − SSIM and the rest >= 0; non-trivial fields and masks
    assert -2 <= float(parts["g_nmi"]) <= -1 and float(parts["g_ssim"]) > 0
    assert float(parts["g_agreement"]) > 0 and float(parts["cycle"]) > 0
    assert 0 < float(jnp.mean(mask["hard"])) < 1


def test_discriminator_loss_is_lsgan_on_both_domains(full):
    method, ds, state = full
    v, b = variables(state), _batch(method, ds)
    total, parts = jax.jit(method.discriminator_loss)(v, b, jax.random.key(0))
    flt, ref = b["moving"], b["fixed"]
    m3 = (b["fixed_labels"] > 0).astype(jnp.float32)[..., None]
    reg = warp(flt, method.register(v["G"], flt, ref, m3)[0]["disp"])
    f_reg = warp(ref, method.register(v["F"], ref, flt, m3)[0]["disp"])

    def d(params, real, fake):
        r, f = method.disc.apply(params, real), method.disc.apply(params, fake)
        return 0.5 * jnp.mean((r - 1) ** 2, (1, 2, 3)) + 0.5 * jnp.mean(f**2, (1, 2, 3))

    np.testing.assert_allclose(parts["d_y"], jnp.mean(d(v["D_Y"], ref, reg)), rtol=1e-5)
    np.testing.assert_allclose(parts["d_x"], jnp.mean(d(v["D_X"], flt, f_reg)), rtol=1e-5)
    np.testing.assert_allclose(total, parts["d_x"] + parts["d_y"], rtol=1e-5)


def test_deformation_agreement_is_zero_for_the_truth_and_grows_with_the_error():
    gt = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
    noise = jax.random.normal(jax.random.key(1), gt.shape)
    np.testing.assert_allclose(deformation_agreement(gt, gt), 0.0, atol=1e-7)
    values = [deformation_agreement(gt + a * noise, gt) for a in (0.1, 0.5, 1.0, 3.0)]
    assert all(bool(jnp.all(x < y)) for x, y in itertools.pairwise(values))
    r = mse_norm(gt + noise, gt)
    assert bool(jnp.all((r >= 0) & (r < 1)))
    np.testing.assert_allclose(deformation_agreement(gt + noise, gt), -jnp.log(1 - r), rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(deformation_agreement(noise, jnp.zeros_like(gt)))))


def test_the_mask_is_the_otsu_split_of_the_summed_normalised_features(full):
    method, ds, state = full
    v, b = variables(state), _batch(method, ds)
    pred = method.run(v, b, "register")
    m3 = (b["fixed_labels"] > 0).astype(jnp.float32)[..., None]
    _, feats = method.register(v["G"], b["moving"], b["fixed"], m3)
    assert feats.shape == (*b["fixed"].shape[:-1], 4)  # the smoke decoder's last width
    lo = feats.min((1, 2), keepdims=True)
    hi = feats.max((1, 2), keepdims=True)
    summed = ((feats - lo) / (hi - lo + 1e-6)).sum(-1)  # the paper's sum (Otsu: scale-free)
    t = otsu_threshold(summed)
    hard = np.asarray(summed > t[:, None, None])
    np.testing.assert_array_equal(np.asarray(pred["mask"]) > 0.5, hard)
    assert 0 < hard.mean() < 1
    np.testing.assert_array_equal(np.asarray(method.labels(pred)), hard.astype(np.int32))
    np.testing.assert_allclose(pred["seg_probs"][..., 1], pred["mask_soft"], rtol=1e-6)
    # pair metric: Dice of the hard mask with the fixed foreground
    ref = np.asarray(b["fixed_labels"]) > 0
    want = 2 * (hard & ref).sum((1, 2)) / (hard.sum((1, 2)) + ref.sum((1, 2)))
    np.testing.assert_allclose(method.pair_metrics(pred, b)["mask_dice"], want, rtol=1e-6)
    # the soft mask's gradient reaches G (log-Dice), none flows through the threshold
    grad = jax.grad(
        lambda p: log_dice(method.forward({"G": p}, b)["mask_soft"], m3[..., 0]).mean()
    )(v["G"])
    assert float(max(jnp.abs(g).max() for g in jax.tree.leaves(grad))) > 0
    # polarity "reference": the side overlapping the reference mask more
    flipped = registration_mask(feats, polarity="reference", reference=m3[..., 0])
    for j in range(hard.shape[0]):
        side = flipped["hard"][j]
        other = 1 - side
        r = m3[j, ..., 0]
        d = lambda a, r=r: float(2 * (a * r).sum() / (a.sum() + r.sum()))
        assert d(side) >= d(other)


def test_no_cycle_builds_no_F_and_no_D_X(data):
    method, ds, state = _build(data, "smoke,no_cycle")
    assert set(state) == {"G", "D_Y"} and method.gens == ("G",)
    b = _batch(method, ds)
    _, parts = method.generator_loss(variables(state), b, jax.random.key(0))
    assert not {k for k in parts if k.startswith("f_")} and "cycle" not in parts
    _, parts = method.discriminator_loss(variables(state), b, jax.random.key(0))
    assert set(parts) == {"d_y"}
    new, metrics = method.train_step(state, method.sample_batch(ds, 0), jax.random.key(0), 0)
    assert int(new["G"].step) == 1 and int(new["D_Y"].step) == 1
    assert "grad_norm/F" not in metrics


def test_voxelmorph_baseline_is_g_alone_with_nmi_ssim_smoothness(data):
    method, ds, state = _build(data, "smoke,voxelmorph")
    assert set(state) == {"G"} and not method.mask_input
    b = method.sample_batch(ds, 0)
    assert "gt_disp" not in b  # no agreement: no ground truth needed
    _, parts = method.generator_loss(variables(state), _batch(method, ds), jax.random.key(0))
    assert set(parts) == {"g_nmi", "g_ssim", "g_smooth"}
    method, ds, state = _build(data, "smoke,vxm_agreement")
    assert set(state) == {"G"}
    _, parts = method.generator_loss(variables(state), _batch(method, ds), jax.random.key(0))
    assert set(parts) == {"g_nmi", "g_ssim", "g_smooth", "g_agreement"}


class TinyExtractor(nn.Module):
    """A small random conv net: two feature maps (a multi-layer perceptual loss)."""

    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(4, (3, 3))(x))
        return [a, nn.relu(nn.Conv(4, (3, 3), strides=2)(a))]


def test_the_feature_loss_takes_any_flax_extractor(full, data):
    method, ds, state = full
    net = TinyExtractor()
    x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 1))
    params = net.init(jax.random.key(3), x)
    extract = lambda im: net.apply(params, im)
    np.testing.assert_allclose(feature_loss(extract, x, x), 0.0, atol=1e-7)
    assert bool(jnp.all(feature_loss(extract, x, x[:, ::-1]) > 0))

    v, b = variables(state), _batch(method, ds)

    def grad_g(m):
        g = jax.grad(lambda p: m.generator_loss({**v, "G": p}, b, jax.random.key(0))[0])(v["G"])
        return jnp.concatenate([a.ravel() for a in jax.tree.leaves(g)])

    base = grad_g(method)
    with_feat, ds2, _ = _build(data, "smoke,feature")  # weight 1
    with pytest.raises(ValueError, match="feature extractor"):  # weight 1, no extractor
        with_feat.generator_loss(v, b, jax.random.key(0))
    with_feat.set_feature_extractor(net, params)
    _, parts = with_feat.generator_loss(v, b, jax.random.key(0))
    assert float(parts["g_feature"]) > 0 and float(parts["f_feature"]) > 0
    assert float(jnp.abs(grad_g(with_feat) - base).max()) > 1e-6  # it changes the gradient
    other = XrayGAN(
        with_feat.config, shape=(16, 16), num_classes=2, feature_extractor=(net, params)
    )
    np.testing.assert_allclose(
        other.generator_loss(v, b, jax.random.key(0))[1]["g_feature"], parts["g_feature"], rtol=1e-6
    )
    _, metrics = with_feat.train_step(
        with_feat.init(jax.random.key(0), ds2), with_feat.sample_batch(ds2, 0), jax.random.key(0), 0
    )
    assert np.isfinite(float(metrics["G+F/g_feature"]))


def test_a_few_steps_are_finite_and_lower_the_generator_loss(data):
    method, ds, _ = _build(data)
    state = method.init(jax.random.key(0), ds)
    batch = method.sample_batch(ds, 0)
    first = None
    for t in range(12):  # the same batch: the loss on it must go down
        state, m = method.train_step(state, batch, jax.random.key(t), t)
        assert all(np.isfinite(float(x)) for x in jax.tree.leaves(m)), m
        first = float(m["loss/G+F"]) if first is None else first
    for n in ("G", "F", "D_X", "D_Y"):
        assert int(state[n].step) == 12
    after, _ = method.generator_loss(
        variables(state), {k: jnp.asarray(x) for k, x in batch.items()}, jax.random.key(0)
    )
    assert float(after) < first


def test_training_pairs_reference_first_and_missing_ground_truth_is_one_line(data, tmp_path):
    method, ds, _ = _build(data)
    pairs = method.training_pairs(ds)
    times = [(ds.subjects[f].time, ds.subjects[m].time) for f, m in pairs]
    assert times and all(a < b for a, b in times)
    assert {ds.subjects[f].subject for f, _ in pairs} == {ds.subjects[m].subject for _, m in pairs}
    np.testing.assert_array_equal(
        method.sample_batch(ds, 3)["fixed"], method.sample_batch(ds, 3)["fixed"]
    )
    # a dataset without fields
    root = tmp_path / "nofields"
    path = pair_scans(
        write_learn2reg_dataset(
            root, key=1, shape=(16, 16), num_subjects=6, num_labelled=4, num_heldout=2, num_labels=1
        )
    )
    meta = json.loads(open(path).read())
    del meta["jrs_jax"]["fields"]
    with open(path, "w") as f:
        json.dump(meta, f)
    method, ds, _ = _build(path)
    with pytest.raises(ValueError) as err:
        method.sample_batch(ds, 0)
    msg = str(err.value)
    assert "xray_gan" in msg and "ground-truth" in msg and "\n" not in msg
