"""experiment.train_or_reuse: reuse a finished run, resume an unfinished one, refuse a stale one."""

from __future__ import annotations

import os

import pytest

from jrs_jax.config import apply_overrides, load_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.experiment import config_differences, train_or_reuse

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
