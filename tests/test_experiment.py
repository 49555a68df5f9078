"""experiment.train_or_reuse: reuse a finished run, resume an unfinished one, refuse a stale one."""

from __future__ import annotations

import dataclasses
import os

import pytest

from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.experiment import (
    build_method,
    config_differences,
    first_pair,
    load_dataset,
    resolve_config,
    train_or_reuse,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_differences():
    saved = {"a": 1, "b": {"c": [1, 2], "d": 5, "shape": [8, 8]}, "only_saved": 0}
    assert config_differences({"a": 1, "b": {"c": (1, 2), "d": None}}, saved) == []
    assert config_differences({"a": 2, "b": {"c": [1, 3], "e": 1}}, saved) == ["a", "b.c", "b.e"]
    assert config_differences({"b": 3}, saved) == ["b"]
    assert config_differences({"x": {"y": 1}}, saved) == ["x.y"]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    path = write_learn2reg_dataset(root, key=0, shape=(16, 16), num_subjects=6, num_heldout=2)
    c = load_config(os.path.join(ROOT, "configs", "voxelmorph.py:smoke"))
    return apply_overrides(c, [f"data.dataset={path}", "train.steps=2", "train.ckpt_every=2"])


def test_reuse_resume_and_refuse(cfg, tmp_path):
    work = tmp_path / "run"
    first = train_or_reuse(cfg, workdir=work, progress=False, figures=False)
    assert first["reused"] is False
    again = train_or_reuse(cfg, workdir=work, progress=False, figures=False)
    assert again["reused"] is True and again["evaluation"] == first["evaluation"]

    other = apply_overrides(cfg, ["optim.learning_rate=0.5"])
    with pytest.raises(ValueError, match=r"another config .*optim\.learning_rate"):
        train_or_reuse(other, workdir=work, progress=False, figures=False)

    longer = apply_overrides(cfg, ["train.steps=4"])  # unfinished for 4 steps: resumed
    out = train_or_reuse(longer, workdir=work, progress=False, figures=False)
    assert out["reused"] is False and out["step"] == 4


def test_first_pair_has_the_ground_truth_and_the_prediction(cfg):
    import jax
    import numpy as np

    from jrs_jax.data.sampling import pair_batch
    from jrs_jax.evaluation import evaluation_pairs

    ds = load_dataset(cfg)
    method = build_method(resolve_config(cfg, ds))
    state = method.init(jax.random.key(0), ds)  # untrained: only shapes and keys matter
    batch, pred = first_pair(method, state, ds)
    pairs = evaluation_pairs(ds, mode=method.evaluation_mode)
    want = pair_batch(ds, pairs[:1], fields=True)
    assert batch["fixed"].shape == (1, 16, 16, 1)
    assert batch["gt_disp"].shape == pred["disp"].shape == (1, 16, 16, 2)
    for k in ("fixed", "moving", "fixed_labels", "gt_disp"):
        np.testing.assert_array_equal(batch[k], want[k])
    assert np.abs(batch["gt_disp"]).max() > 0
    assert np.all(np.isfinite(np.asarray(pred["disp"])))

    bare = tuple(s.replace(field=None, field_inv=None) for s in ds.subjects)
    no_gt = dataclasses.replace(ds, subjects=bare)
    batch, pred = first_pair(method, state, no_gt)
    assert "gt_disp" not in batch and pred["disp"].shape == (1, 16, 16, 2)
