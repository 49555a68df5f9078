"""Generic evaluation: the modes pick the right pairs, metrics come from predict's keys, and
the ground-truth field scores an exact registration."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax import experiment, metrics
from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import Dataset, Subject, write_learn2reg_dataset
from jrs_jax.evaluation import evaluate, evaluation_pairs, label_dice, pair_batch_for, write_report
from jrs_jax.train import variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory):
    path = write_learn2reg_dataset(
        tmp_path_factory.mktemp("eval") / "d",
        key=4,
        shape=(48, 48),
        num_subjects=8,
        num_labelled=4,
        num_heldout=3,
        num_val_pairs=4,
    )
    cfg = load_config(os.path.join(ROOT, "configs", "voxelmorph.py:smoke"))
    cfg = apply_overrides(cfg, [f"data.dataset={path!r}"])
    ds = experiment.load_dataset(cfg)
    return experiment.resolve_config(cfg, ds), ds


@pytest.fixture(scope="module")
def ground_truth(predict_only):
    class GroundTruth(predict_only):
        """Predicts the dataset's ground-truth pair field (given in the batch) as ``disp``."""

        name = "ground_truth"
        tasks = {"register": ("moving", "fixed", "gt_disp")}  # noqa: RUF012

        def predict(self, variables, batch):
            return {"disp": batch["gt_disp"], "warped": batch["moving"]}

        def pair_metrics(self, prediction, batch):
            return {"mean_abs_disp": jnp.abs(prediction["disp"]).mean(axis=(1, 2, 3))}

    return GroundTruth


def test_pairs_mode_uses_the_validation_pairs(anatomy):
    _, ds = anatomy
    np.testing.assert_array_equal(evaluation_pairs(ds), np.asarray(ds.val_pairs))


def test_atlas_mode_registers_the_atlas_to_every_held_out_subject(anatomy):
    _, ds = anatomy
    pairs = evaluation_pairs(ds, mode="atlas")
    assert set(pairs[:, 1]) == {ds.labelled()[0]}
    assert sorted(pairs[:, 0]) == sorted(ds.held_out())
    assert set(evaluation_pairs(ds, mode="atlas", atlas=2)[:, 1]) == {2}


def test_ground_truth_field_scores_near_perfect_and_zero_epe(anatomy, ground_truth):
    cfg, ds = anatomy
    method = ground_truth(cfg, shape=ds.shape, num_classes=cfg["data"]["num_classes"])
    ev = evaluate(method, {}, ds)
    s = ev.summary
    assert s["val/epe"] == pytest.approx(0.0, abs=1e-6)
    assert s["val/reg_dice"] > 0.93 > 0.8 > s["val/reg_dice_identity"]  # nearest warps lose
    # thin structures twice (compose, then label lookup), so a perfect field scores < 1
    assert "val/mean_abs_disp" in s and s["val/mean_abs_disp"] > 0  # the method's own metric
    assert len(ev.pairs) == len(ds.val_pairs)


def test_voxelmorph_at_init_is_the_identity(anatomy):
    cfg, ds = anatomy
    method = experiment.build_method(cfg)
    ev = evaluate(method, variables(method.init(jax.random.key(0), ds)), ds, mode="atlas")
    assert ev.summary["val/reg_dice"] == pytest.approx(
        ev.summary["val/reg_dice_identity"], abs=0.02
    )
    assert ev.summary["val/epe"] > 0.1


def test_eval_refine_steps_refines_each_pair_on_its_own(anatomy):
    """``eval.refine_steps``: every pair is scored after its own refinement, equal to
    refining that pair alone with :func:`refine_variables` and predicting with the result;
    the trained variables are left as they were."""
    from jrs_jax.refinement import refine_variables
    from jrs_jax.spatial import warp

    cfg, ds = anatomy
    refined_cfg = {**cfg, "eval": {**cfg.get("eval", {}), "refine_steps": 15, "refine_lr": 0.01}}
    method, refining = experiment.build_method(cfg), experiment.build_method(refined_cfg)
    v = variables(method.init(jax.random.key(0), ds))
    before = jax.tree.map(np.asarray, v)
    plain = evaluate(method, v, ds, mode="atlas", max_pairs=2)
    ev = evaluate(refining, v, ds, mode="atlas", max_pairs=2)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, v))
    pair = evaluation_pairs(ds, mode="atlas")[1]
    b = pair_batch_for(refining, ds, pair[None], "atlas")
    one, losses = refine_variables(refining, v, b, steps=15, lr=0.01)
    assert losses[-1] < losses[0]
    disp = np.asarray(refining.run(one, b, "register")["disp"])[0]
    assert ev.pairs[1]["folding_percent"] == pytest.approx(metrics.folding_fraction(disp))
    moved = warp(jnp.asarray(b["moving"]), jnp.asarray(disp[None]))
    assert float(jnp.mean((moved - b["fixed"]) ** 2)) < float(
        jnp.mean((b["moving"] - b["fixed"]) ** 2)
    )
    assert ev.summary["val/reg_dice"] != pytest.approx(plain.summary["val/reg_dice"], abs=1e-4)


def test_eval_labels_restricts_dice(anatomy):
    _cfg, ds = anatomy
    a, b = ds.subjects[0].labels, ds.subjects[1].labels
    only2 = label_dice(a, b, labels=[2])
    assert only2 == pytest.approx(metrics.mean_dice(a, b, labels=[2], missing="zero"))
    assert only2 != pytest.approx(label_dice(a, b))


def test_multi_label_dice_is_per_channel():
    t = np.zeros((6, 6, 2), np.uint8)
    t[:3, :, 0] = 1
    t[:, :3, 1] = 1  # overlapping channels
    p = t.copy()
    p[:, :, 1] = 0  # channel 1 missed entirely
    assert label_dice(p, t, multi_label=True) == pytest.approx(0.5)
    assert label_dice(p, t, multi_label=True, labels=[0]) == pytest.approx(1.0)
    # a channel empty in both maps is not scored (as an absent integer label), not 0
    t3, p3 = np.concatenate([t, t[..., :1] * 0], -1), np.concatenate([p, p[..., :1] * 0], -1)
    assert label_dice(p3, t3, multi_label=True) == pytest.approx(0.5)


def test_unknown_mode_is_an_error(anatomy):
    cfg, ds = anatomy
    with pytest.raises(ValueError, match="unknown evaluation mode"):
        evaluation_pairs(ds, mode="nope")
    method = experiment.build_method(apply_overrides(cfg, ["eval.mode='nope'"]))
    with pytest.raises(ValueError, match=r"eval\.mode must be one of"):
        evaluate(method, variables(method.init(jax.random.key(0))), ds)


# --------------------------------------------------------------------------------------------
# endpoint error near region boundaries (sliding-motion ground truths)
# --------------------------------------------------------------------------------------------

SIDE = 16
#: The prediction's error: |e| = 5 in columns 6-9 (the band of width 2 around the boundary
#: between columns 7 and 8 of the region maps below), |e| = 1 elsewhere.
ERROR = np.zeros((SIDE, SIDE, 2), np.float32)
ERROR[..., 1] = 1.0
ERROR[:, 6:10] = (3.0, 4.0)


def _sliding_dataset(*, masks=(True, True, False)) -> Dataset:
    """Three labelled 2-D subjects with constant ground-truth fields; where ``masks``, a
    region map split between columns 7 and 8 (lobe 1 | lobe 2)."""
    regions = np.ones((SIDE, SIDE), np.int32)
    regions[:, 8:] = 2
    labels = np.zeros((SIDE, SIDE), np.int32)
    labels[4:12, 3:13] = 1
    subjects = [
        Subject(
            name=f"s{i}",
            image=np.full((SIDE, SIDE, 1), 0.1 * i, np.float32),
            labels=labels,
            affine=np.eye(4),
            spacing=(1.0, 1.0),
            image_path=f"s{i}.nii.gz",
            held_out=True,
            mask=regions if has_mask else None,
            field=np.full((SIDE, SIDE, 2), (0.5 * i, -0.25), np.float32),
            field_inv=np.full((SIDE, SIDE, 2), (-0.5 * i, 0.25), np.float32),
        )
        for i, has_mask in enumerate(masks)
    ]
    return Dataset(subjects=tuple(subjects), val_pairs=((0, 1), (1, 2), (2, 0)))


@pytest.fixture(scope="module")
def off_by_error(predict_only):
    class OffByError(predict_only):
        """Predicts the ground truth plus :data:`ERROR`."""

        name = "off_by_error"
        tasks = {"register": ("moving", "fixed", "gt_disp")}  # noqa: RUF012

        def predict(self, variables, batch):
            return {"disp": batch["gt_disp"] + ERROR, "warped": batch["moving"]}

    return OffByError


def test_boundary_and_interior_endpoint_error(off_by_error, tmp_path):
    ds = _sliding_dataset()
    method = off_by_error({"eval": {}}, shape=(SIDE, SIDE), num_classes=2)
    ev = evaluate(method, {}, ds, batch_size=2)  # pairs (0, 1), (1, 2) | (2, 0): two batches
    by_fixed = {r["fixed"]: r for r in ev.pairs}
    for name in ("s0", "s1"):  # fixed images with a mask
        row = by_fixed[name]
        assert row["epe"] == pytest.approx((4 * 5 + 12 * 1) / 16)
        assert row["epe_boundary"] == pytest.approx(5.0)
        assert row["epe_interior"] == pytest.approx(1.0)
    row = by_fixed["s2"]  # no mask: not scored, same keys
    assert np.isnan(row["epe_boundary"]) and np.isnan(row["epe_interior"])
    assert row["epe"] == pytest.approx(2.0)
    s = ev.summary
    assert s["val/epe"] == pytest.approx(2.0)
    assert s["val/epe_boundary"] == pytest.approx(5.0)
    assert s["val/epe_interior"] == pytest.approx(1.0)
    assert "boundary" in write_report(ev, str(tmp_path), title="t")  # uniform csv rows

    # eval.boundary_width: a band of columns 7-8 only
    narrow = off_by_error({"eval": {"boundary_width": 1}}, shape=(SIDE, SIDE), num_classes=2)
    s = evaluate(narrow, {}, ds).summary
    assert s["val/epe_boundary"] == pytest.approx(5.0)
    assert s["val/epe_interior"] == pytest.approx((2 * 5 + 12 * 1) / 14)
    assert s["val/epe"] == pytest.approx(2.0)


def test_no_boundary_endpoint_error_without_masks(off_by_error):
    ds = _sliding_dataset(masks=(False, False, False))
    method = off_by_error({"eval": {}}, shape=(SIDE, SIDE), num_classes=2)
    ev = evaluate(method, {}, ds)
    assert ev.summary["val/epe"] == pytest.approx(2.0)
    assert not {"epe_boundary", "epe_interior"} & set(ev.pairs[0])
    assert not {"val/epe_boundary", "val/epe_interior"} & set(ev.summary)


def test_per_label_dice_names_each_label_and_channel():
    from jrs_jax.evaluation import per_label_dice

    a = np.array([[1, 1, 0], [0, 2, 2]])
    b = np.array([[1, 0, 0], [0, 2, 3]])
    got = per_label_dice(a, b, names={0: "bg", 1: "organ", 2: "liver", 3: "kidney", 4: "gone"})
    assert got == pytest.approx(
        {"organ": 2 / 3, "liver": 2 / 3, "kidney": 0.0, "gone": np.nan}, nan_ok=True
    )
    assert per_label_dice(a, b, labels=[2]) == pytest.approx({"2": 2 / 3})
    p = np.zeros((2, 2, 2), np.uint8)
    t = np.zeros((2, 2, 2), np.uint8)
    p[0, :, 0] = 1
    t[0, 0, 0] = 1
    t[1, 1, 1] = 1  # channel 1: missed by the prediction -> 0
    got = per_label_dice(p, t, multi_label=True, names={0: "tract_a", 1: "tract_b"})
    assert got == pytest.approx({"tract_a": 2 / 3, "tract_b": 0.0})


def test_spurious_components_count_the_fragments_of_each_label(anatomy, predict_only):
    """A segmentation equal to the truth plus two stray islands of label 1 scores two spurious
    components of label 1 per subject (and none for the others); the truth itself none."""
    cfg, ds = anatomy

    class Islands(predict_only):
        name = "islands"
        tasks = {"segment": ("image", "labels")}  # noqa: RUF012

        def predict(self, variables, batch):
            lab = batch["labels"].at[:, 0, 0].set(1).at[:, -1, -1].set(1)
            return {"seg_probs": jax.nn.one_hot(lab, self.num_classes)}

    method = Islands(cfg, shape=ds.shape, num_classes=cfg["data"]["num_classes"])
    ev = evaluate(method, {}, ds)
    held = [i for i in ds.held_out() if ds.subjects[i].has_labels]
    assert len(ev.subjects) == len(held) > 0
    for row, i in zip(ev.subjects, held):
        lab = ds.subjects[i].labels
        assert lab[0, 0] == lab[-1, -1] == 0 and lab[:2, :2].max() == lab[-2:, -2:].max() == 0
        truth = metrics.spurious_components(lab, labels=[1, 2, 3, 4])
        assert row["seg_spurious"] == sum(truth.values()) + 2
        assert row[f"seg_spurious/{ds.label_names[1]}"] == truth[1] + 2
        assert row[f"seg_spurious/{ds.label_names[2]}"] == truth[2]
    expected = np.mean([row["seg_spurious"] for row in ev.subjects])
    assert ev.summary["val/seg_spurious"] == pytest.approx(expected)


def test_eval_labels_restricts_hd95(anatomy, predict_only):
    """Label 1 gets a stray 8x8 block in a corner, far from it (a large HD95); with
    ``eval.labels = [2]`` the HD95 reads only label 2, predicted exactly (0)."""
    cfg, ds = anatomy

    class Stray(predict_only):
        name = "stray"
        tasks = {"segment": ("image", "labels")}  # noqa: RUF012

        def predict(self, variables, batch):
            lab = batch["labels"].at[:, :8, :8].set(1)
            return {"seg_probs": jax.nn.one_hot(lab, self.num_classes)}

    k = cfg["data"]["num_classes"]
    every = evaluate(Stray(cfg, shape=ds.shape, num_classes=k), {}, ds, surface=True)
    only2 = {**cfg, "eval": {**cfg["eval"], "labels": [2]}}
    two = evaluate(Stray(only2, shape=ds.shape, num_classes=k), {}, ds, surface=True)
    assert every.summary["val/seg_hd95"] > 0.5
    assert two.summary["val/seg_hd95"] == 0.0
