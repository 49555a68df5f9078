"""Inference on files builds the batch each method declares; a missing input is one line
naming the option (exit 2), for a method that needs more than the image pair."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jrs_jax.config import apply_overrides, load_config, save_config
from jrs_jax.data import write_learn2reg_dataset
from jrs_jax.inference import FILE_OPTIONS, load_inputs
from jrs_jax.methods import METHODS, MissingInput, VoxelMorph, register_method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NeedsLabels(VoxelMorph):
    """VoxelMorph that also declares the moving labels as an input (as Cross-Stitch does)."""

    name = "vxm_needs_labels"
    tasks = {"register": ("moving", "fixed", "moving_labels")}  # noqa: RUF012

    def predict(self, variables, batch):
        out = super().predict(variables, batch)
        return {**out, "labels_seen": batch["moving_labels"].sum()}


@pytest.fixture(scope="module")
def run(tmp_path_factory, run_cli):
    register_method(NeedsLabels)
    d = tmp_path_factory.mktemp("inference")
    data = write_learn2reg_dataset(d / "data", key=2, shape=(16, 16), num_subjects=6)
    cfg = load_config(os.path.join(ROOT, "configs", "voxelmorph.py:smoke"))
    cfg = apply_overrides(cfg, [f"data.dataset={str(data)!r}"])
    cfg["method"] = NeedsLabels.name
    save_config(cfg, str(d / "config.json"))
    rc, _, err = run_cli(["train", d / "config.json", "--workdir", d / "run", "--no-progress"])
    assert rc == 0, err
    files = {
        "fixed": str(d / "data" / "imagesTr" / "sub_0004_0000.nii.gz"),
        "moving": str(d / "data" / "imagesTr" / "sub_0005_0000.nii.gz"),
        "moving_labels": str(d / "data" / "labelsTr" / "sub_0005_0000.nii.gz"),
    }
    yield d / "run", files
    METHODS.pop(NeedsLabels.name, None)


def test_missing_declared_input_is_one_line_naming_the_option(run, tmp_path, run_cli):
    workdir, files = run
    argv = ["register", "--checkpoint", workdir, "--fixed", files["fixed"]]
    argv += ["--moving", files["moving"], "--out", tmp_path / "out"]
    rc, _, err = run_cli(argv)
    assert rc == 2
    assert err == "jrs-jax: error: vxm_needs_labels needs --moving-labels to register\n"
    assert not (tmp_path / "out").exists()


def test_declared_inputs_reach_predict(run, tmp_path, run_cli):
    workdir, files = run
    argv = ["register", "--checkpoint", workdir, "--fixed", files["fixed"]]
    argv += ["--moving", files["moving"], "--moving-labels", files["moving_labels"]]
    rc, _, err = run_cli([*argv, "--out", tmp_path / "out"])
    assert rc == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "warped_labels.nii.gz" in summary["files"]


def test_load_inputs_builds_the_task_batch(run):
    from jrs_jax.experiment import load_run

    workdir, files = run
    method, _, cfg = load_run(workdir)
    batch, _inputs = load_inputs(method, cfg, "register", files)
    assert set(batch) == {"fixed", "moving", "moving_labels"}
    assert batch["moving"].shape == (1, 16, 16, 1) and batch["moving_labels"].dtype == np.int32
    with pytest.raises(MissingInput, match="needs --moving-labels"):
        load_inputs(method, cfg, "register", {**files, "moving_labels": None})
    with pytest.raises(ValueError, match="does not segment"):
        load_inputs(method, cfg, "segment", {"image": files["fixed"]})


def test_every_declared_key_has_a_command_line_option():
    for cls in METHODS.values():
        for keys in cls.tasks.values():
            assert set(keys) <= set(FILE_OPTIONS), cls.name


def test_a_checkpoint_of_another_method_is_one_line(run, tmp_path, run_cli):
    import shutil

    workdir, files = run
    fake = tmp_path / "fake"
    shutil.copytree(workdir, fake)
    cfg = load_config(os.path.join(ROOT, "configs", "deepatlas.py:smoke"))
    saved = json.loads((fake / "config.json").read_text())
    save_config({**cfg, "data": saved["data"]}, str(fake / "config.json"))
    argv = ["register", "--checkpoint", fake, "--fixed", files["fixed"]]
    rc, _, err = run_cli([*argv, "--moving", files["moving"], "--out", tmp_path / "out"])
    assert rc == 2
    assert err == (
        f"jrs-jax: error: {fake}: its checkpoints hold a 'vxm_needs_labels' model but "
        "config.json names method 'deepatlas'\n"
    )
    assert not (tmp_path / "out").exists()
