"""Tests for the samplers / batch builders of :mod:`jrs_jax.data.sampling` on single-channel
synthetic data (batch keys unchanged, ground-truth pair fields) and the lazily loaded fields
of :func:`jrs_jax.data.load_learn2reg` (the rich multi-modal, longitudinal cases are in
``test_rich_dataset.py``)."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrs_jax.data import (
    all_pairs,
    load_learn2reg,
    make_subjects,
    make_template,
    pair_batch,
    sample_pairs,
    subject_batch,
    within_subject_pairs,
    write_learn2reg_dataset,
)
from jrs_jax.metrics import mean_dice
from jrs_jax.spatial import compose, warp_labels


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn96")
    return write_learn2reg_dataset(root, key=0, shape=(96, 96), num_subjects=5, num_heldout=2)


def test_batch_keys_unchanged_for_single_channel_integer_labels(synthetic):
    ds = load_learn2reg(synthetic)
    assert ds.num_channels == 1 and ds.modalities == ("synthetic",) and not ds.multi_label
    assert ds.num_label_channels is None and not ds.has_masks and ds.has_fields
    assert ds.label_names == {
        0: "background",
        1: "body",
        2: "organ",
        3: "structure_a",
        4: "structure_b",
    }
    b = pair_batch(ds, [[0, 1], [2, 3]])
    want = {
        "fixed": (np.float32, (2, 96, 96, 1)),
        "moving": (np.float32, (2, 96, 96, 1)),
        "fixed_labels": (np.int32, (2, 96, 96)),
        "moving_labels": (np.int32, (2, 96, 96)),
        "fixed_has_label": (np.bool_, (2,)),
        "moving_has_label": (np.bool_, (2,)),
    }
    assert {k: (v.dtype.type, v.shape) for k, v in b.items()} == want
    s = subject_batch(ds, [0, 4])
    assert {k: (v.dtype.type, v.shape) for k, v in s.items()} == {
        "image": (np.float32, (2, 96, 96, 1)),
        "labels": (np.int32, (2, 96, 96)),
        "has_label": (np.bool_, (2,)),
    }
    assert set(ds.stack([0])) == {"images", "labels", "has_label"}
    # default: every scan is its own subject
    assert ds.subject_ids() == [s.name for s in ds.subjects]
    assert [s.time for s in ds.subjects] == [0] * len(ds)
    with pytest.raises(ValueError, match="no subject has 2 or more scans"):
        within_subject_pairs(0, ds, ds.training(), 2)


def test_gt_disp_aligns_labels(synthetic):
    ds = load_learn2reg(synthetic)
    pairs = all_pairs(range(len(ds)))
    b = pair_batch(ds, pairs, fields=True)
    assert b["gt_disp"].shape == (len(pairs), 96, 96, 2) and b["gt_disp"].dtype == np.float32
    f = np.stack([ds.subjects[i].field for i in pairs[:, 0]])
    m = np.stack([ds.subjects[i].field_inv for i in pairs[:, 1]])
    np.testing.assert_allclose(b["gt_disp"], compose(jnp.asarray(f), jnp.asarray(m)), atol=1e-5)

    def dice(disp):
        w = np.asarray(
            warp_labels(
                jnp.asarray(b["moving_labels"]), jnp.asarray(disp), num_classes=5, mode="nearest"
            )
        )
        return np.array([mean_dice(w[i], b["fixed_labels"][i]) for i in range(len(pairs))])

    good = dice(b["gt_disp"])
    assert good.min() > 0.95, good
    # no displacement, or the ground truth of the swapped pair, align far worse
    before = dice(np.zeros_like(b["gt_disp"]))
    swapped = dice(pair_batch(ds, pairs[:, ::-1], fields=True)["gt_disp"])
    assert good.mean() > before.mean() + 0.05 and before.mean() > swapped.mean()


def test_fields_are_the_generated_ones_and_lazy(synthetic):
    key = jax.random.PRNGKey(0)
    k_template, k_subjects, _ = jax.random.split(key, 3)
    template = make_template(k_template, (96, 96))
    gen = make_subjects(k_subjects, template, num_subjects=5)
    lazy = load_learn2reg(synthetic)
    s = lazy.subjects[0]
    assert s.has_field and "field" in s.__dict__
    assert not isinstance(s.__dict__["field"], np.ndarray)  # not read yet
    # copies (split_labelled, Subject.replace) and pickling keep the fields unread
    again = pickle.loads(pickle.dumps(lazy.split_labelled(1, key_or_seed=0)))
    assert not isinstance(again.subjects[0].__dict__["field_inv"], np.ndarray)
    eager = load_learn2reg(synthetic, fields=True)
    for ds in (lazy, eager, again):
        for sub in ds.subjects:
            i = int(sub.name.split("_")[1])  # sub_NNNN_0000 (held-out ones in val order)
            np.testing.assert_array_equal(sub.field, gen["disp"][i])
            np.testing.assert_array_equal(sub.field_inv, gen["disp_inv"][i])
    assert isinstance(s.__dict__["field"], np.ndarray)  # cached after the first access
    with pytest.raises(AttributeError):
        s.field = None  # still frozen
    none = load_learn2reg(synthetic, fields=False)
    assert not none.has_fields and none.subjects[0].field is None
    with pytest.raises(ValueError, match="has none"):
        pair_batch(none, [[0, 1]], fields=True)
    with pytest.raises(ValueError, match="fields must be"):
        load_learn2reg(synthetic, fields="yes")
    # 2-D fields read as 3-D data get a zero third component
    as3d = load_learn2reg(synthetic, ndim=3)
    u = as3d.subjects[1].field
    assert as3d.subjects[1].name == "sub_0001_0000" and u.shape == (96, 96, 1, 3)
    np.testing.assert_array_equal(u[:, :, 0, :2], gen["disp"][1])
    assert np.all(u[..., 2] == 0)


def test_sample_pairs_not_distinct():
    a = sample_pairs(0, [4, 5, 6], 600, distinct=False)
    assert a.shape == (600, 2) and a.dtype == np.int64
    assert len({tuple(r) for r in a.tolist()}) == 9  # self pairs included
    np.testing.assert_array_equal(a, sample_pairs(0, [4, 5, 6], 600, distinct=False))
    assert sample_pairs(0, [7], 3, distinct=False).tolist() == [[7, 7]] * 3
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(0, [7], 3)
