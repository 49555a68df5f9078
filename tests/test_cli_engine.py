"""End-to-end CLI: make-synthetic -> train -> register / segment / evaluate, and user errors.

Everything runs in-process through ``jrs_jax.cli.main(argv)`` on one 32x32 synthetic dataset
and two smoke runs (a VoxelMorph run and a U-Net segmentation run) shared by the session.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jrs_jax import cli, metrics
from jrs_jax.data import load_ants_warp, load_subject
from jrs_jax.spatial import warp

ROOT = Path(__file__).resolve().parents[1]
VXM = str(ROOT / "configs" / "voxelmorph.py")
SEG = str(ROOT / "configs" / "unet_seg.py")
PNG = b"\x89PNG\r\n\x1a\n"
# the fixed image gets its own (anisotropic, shifted) grid so that outputs provably take it
FIXED_AFFINE = np.array(
    [[1.5, 0.0, 0.0, -10.0], [0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 3.0, 2.0], [0.0, 0.0, 0.0, 1.0]]
)


def _image(ds: Path, i: int) -> Path:
    return ds / "imagesTr" / f"sub_{i:04d}_0000.nii.gz"


def _labels(ds: Path, i: int) -> Path:
    return ds / "labelsTr" / f"sub_{i:04d}_0000.nii.gz"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


# --------------------------------------------------------------------------------------------
# session fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synth(tmp_path_factory, run_cli):
    """(dataset folder, make-synthetic stdout)."""
    ds = tmp_path_factory.mktemp("cli") / "synth"
    rc, out, err = run_cli(
        ["make-synthetic", "--out", ds, "--shape", "32", "32", "--subjects", "8", "--seed", "1"]
    )
    assert rc == 0, err
    return ds, out


@pytest.fixture(scope="session")
def dataset(synth) -> Path:
    return synth[0]


def _train_argv(config: str, ds: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        "train",
        config,
        "--set",
        f"data.dataset={ds / 'dataset.json'}",
        *extra,
        "--workdir",
        workdir,
        "--no-progress",
    ]


# a large learning rate so that 4 steps already give a visible (non-identity) displacement
VXM_SETS = ("--set", "optim.learning_rate=0.05")


@pytest.fixture(scope="session")
def vxm_run(dataset, tmp_path_factory, run_cli):
    """(run dir, train stdout) of a registration-only smoke run."""
    workdir = tmp_path_factory.mktemp("runs") / "vxm"
    rc, out, err = run_cli(_train_argv(VXM + ":smoke", dataset, workdir, *VXM_SETS))
    assert rc == 0, err
    return workdir, out


@pytest.fixture(scope="session")
def seg_run(dataset, tmp_path_factory, run_cli):
    """(run dir, train stdout) of a segmentation-only smoke run."""
    workdir = tmp_path_factory.mktemp("runs") / "seg"
    rc, out, err = run_cli(_train_argv(SEG + ":smoke", dataset, workdir))
    assert rc == 0, err
    return workdir, out


@pytest.fixture(scope="session")
def fixed_copy(dataset, tmp_path_factory):
    """Subject 6 (held out) and its labels re-written on FIXED_AFFINE."""
    d = tmp_path_factory.mktemp("fixed")
    img = np.asarray(nib.load(_image(dataset, 6)).dataobj, np.float32)
    lab = np.asarray(nib.load(_labels(dataset, 6)).dataobj, np.int32)
    nib.save(nib.Nifti1Image(img, FIXED_AFFINE), d / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(lab, FIXED_AFFINE), d / "fixed_labels.nii.gz")
    return d / "fixed.nii.gz", d / "fixed_labels.nii.gz"


@pytest.fixture(scope="session")
def registered(vxm_run, dataset, fixed_copy, tmp_path_factory, run_cli):
    """(output folder, stdout) of ``register`` with labels on both sides."""
    out_dir = tmp_path_factory.mktemp("register") / "out"
    fixed, fixed_labels = fixed_copy
    rc, out, err = run_cli(
        [
            "register",
            "--checkpoint",
            vxm_run[0],
            "--fixed",
            fixed,
            "--moving",
            _image(dataset, 7),
            "--fixed-labels",
            fixed_labels,
            "--moving-labels",
            _labels(dataset, 7),
            "--out",
            out_dir,
        ]
    )
    assert rc == 0, err
    return out_dir, out


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "x.nii.gz").write_text("this is not a NIfTI file\n")
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((32, 32, 1, 3), np.float32), np.eye(4)), d / "4d.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((32, 32, 5), np.float32), np.eye(4)), d / "3d.nii.gz")
    lab3d = rng.integers(0, 3, (32, 32, 5)).astype(np.int32)
    nib.save(nib.Nifti1Image(lab3d, np.eye(4)), d / "3d_labels.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((40, 24, 1), np.float32), np.eye(4)), d / "other.nii.gz")
    nan = rng.random((32, 32, 1), np.float32)
    nan[3, 4, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), d / "nan.nii.gz")
    (d / "not_a_run").mkdir()
    return d


# --------------------------------------------------------------------------------------------
# make-synthetic and train
# --------------------------------------------------------------------------------------------


def test_make_synthetic_writes_dataset(synth):
    ds, out = synth
    assert "wrote 8 subjects (32x32, 2 held out)" in out
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["jrs_jax"]["ndim"] == 2
    assert len(meta["training"]) == 6
    assert len(meta["registration_val"]) == 2  # ordered pairs of the 2 held-out subjects
    for i in range(8):
        img = nib.load(_image(ds, i))
        assert img.shape == (32, 32, 1)
        lab = np.asarray(nib.load(_labels(ds, i)).dataobj)
        assert lab.dtype.kind in "iu" and lab.max() > 0
    for entry in meta["training"]:
        assert (ds / entry["image"]).is_file()


def test_make_synthetic_label_means(tmp_path, capsys):
    """``--label-means`` reaches the renderer and is recorded; a wrong count is a user error."""
    ds = tmp_path / "hidden"
    argv = ["make-synthetic", "--out", ds, "--shape", "32", "32", "--subjects", "4"]
    means = ["0.05", "0.35", "0.8", "0.6", "0.6"]
    assert cli.main([str(a) for a in [*argv, "--label-means", *means]]) == 0
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["jrs_jax"]["subject_settings"] == {"label_means": [0.05, 0.35, 0.8, 0.6, 0.6]}
    capsys.readouterr()
    bad = [*argv, "--out", tmp_path / "bad", "--label-means", "0.1", "0.2"]
    _user_error(capsys, bad, "label_means")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_train_writes_a_complete_run(vxm_run, dataset):
    run, out = vxm_run
    assert f"run: {run}" in out and "(4 steps" in out
    assert "val/reg_dice" in out

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "voxelmorph"
    assert cfg["data"]["shape"] == [32, 32]
    top = max(int(np.asarray(nib.load(_labels(dataset, i)).dataobj).max()) for i in range(8))
    assert cfg["data"]["num_classes"] == top + 1
    assert cfg["optim"]["learning_rate"] == 0.05  # the --set override is what was saved
    assert cfg["data"]["dataset"] == str(dataset / "dataset.json")

    log = _read_jsonl(run / "metrics.jsonl")
    train = [r for r in log if r["split"] == "train"]
    val = [r for r in log if r["split"] == "val"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert val and val[-1]["step"] == 4 and "val/reg_dice" in val[-1]

    ckpts = run / "checkpoints"
    assert ckpts.is_dir() and "4" in os.listdir(ckpts)

    res = json.loads((run / "results.json").read_text())
    assert res["method"] == "voxelmorph" and res["steps"] == 4
    assert 0.0 <= res["val/reg_dice"] <= 1.0

    assert _is_png(run / "figures" / "curves.png")
    assert _is_png(run / "figures" / "registration.png")
    assert not (run / "figures" / "segmentation.png").exists()
    assert not [p for p in run.rglob("*.tmp")]


def test_train_segmentation_run(seg_run):
    run, out = seg_run
    assert "val/seg_dice" in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "unet_seg" and cfg["data"]["shape"] == [32, 32]
    log = _read_jsonl(run / "metrics.jsonl")
    assert {"train", "val"} <= {r["split"] for r in log}
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    assert _is_png(run / "figures" / "curves.png")
    assert _is_png(run / "figures" / "segmentation.png")
    assert not (run / "figures" / "registration.png").exists()


# --------------------------------------------------------------------------------------------
# register
# --------------------------------------------------------------------------------------------


def test_register_writes_outputs(registered):
    out_dir, out = registered
    for name in (
        "warped.nii.gz",
        "disp.nii.gz",
        "warp_ants.nii.gz",
        "warped_labels.nii.gz",
        "summary.json",
    ):
        assert (out_dir / name).is_file(), name
    assert _is_png(out_dir / "registration.png")
    assert "Dice:" in out and "folding" in out
    assert not [p for p in out_dir.iterdir() if ".tmp" in p.name]


def test_register_disp_reproduces_warped(registered, dataset):
    out_dir, _ = registered
    disp = np.asarray(nib.load(out_dir / "disp.nii.gz").dataobj, np.float32)
    assert disp.shape == (32, 32, 1, 2)
    disp = disp[:, :, 0]
    # the check below is only meaningful for a displacement that actually moves voxels
    assert np.abs(disp).max() > 0.2

    moving = load_subject(_image(dataset, 7), ndim=2).image  # normalised, [32, 32, 1]
    expected = np.asarray(warp(moving[None], disp[None]))[0, ..., 0]
    warped = np.asarray(nib.load(out_dir / "warped.nii.gz").dataobj, np.float32)
    assert warped.shape == (32, 32, 1)
    np.testing.assert_allclose(warped[:, :, 0], expected, atol=1e-5)
    assert np.abs(warped[:, :, 0] - moving[..., 0]).max() > 1e-2  # not just the moving image

    stats = metrics.summarize_jacobian(disp)
    summary = json.loads((out_dir / "summary.json").read_text())
    for k in ("folding_percent", "sdlogj", "jac_min", "jac_max"):
        assert summary["jacobian"][k] == pytest.approx(stats[k], rel=1e-4, abs=1e-6), k


def test_register_outputs_are_on_the_fixed_grid(registered):
    out_dir, _ = registered
    for name in ("warped.nii.gz", "disp.nii.gz", "warp_ants.nii.gz", "warped_labels.nii.gz"):
        np.testing.assert_allclose(nib.load(out_dir / name).affine, FIXED_AFFINE, atol=1e-6)


def test_register_ants_warp_round_trip(registered):
    out_dir, _ = registered
    disp = np.asarray(nib.load(out_dir / "disp.nii.gz").dataobj, np.float32)[:, :, 0]
    back, affine = load_ants_warp(out_dir / "warp_ants.nii.gz")
    assert back.shape == (32, 32, 2)
    np.testing.assert_allclose(back, disp, atol=1e-4)
    np.testing.assert_allclose(affine, FIXED_AFFINE, atol=1e-6)
    # on disk: ITK layout (X, Y, 1, 1, 2), LPS millimetres = diag(-1, -1) @ spacing * voxels
    raw = np.asarray(nib.load(out_dir / "warp_ants.nii.gz").dataobj, np.float64)
    assert raw.shape == (32, 32, 1, 1, 2)
    np.testing.assert_allclose(raw[:, :, 0, 0, 0], -1.5 * disp[..., 0], atol=1e-4)
    np.testing.assert_allclose(raw[:, :, 0, 0, 1], -2.0 * disp[..., 1], atol=1e-4)


def test_register_warped_labels_and_dice(registered, dataset, fixed_copy):
    out_dir, _ = registered
    img = nib.load(out_dir / "warped_labels.nii.gz")
    assert img.get_data_dtype().kind in "iu"
    wl = np.asarray(img.dataobj)
    assert wl.shape == (32, 32, 1)
    moving = np.asarray(nib.load(_labels(dataset, 7)).dataobj)
    assert set(np.unique(wl)) <= set(np.unique(moving))
    assert len(np.unique(wl)) > 1

    summary = json.loads((out_dir / "summary.json").read_text())
    fixed = np.asarray(nib.load(fixed_copy[1]).dataobj)
    assert summary["dice_before"] == pytest.approx(metrics.mean_dice(moving[..., 0], fixed[..., 0]))
    assert summary["dice_after"] == pytest.approx(metrics.mean_dice(wl[..., 0], fixed[..., 0]))
    assert 0.0 < summary["dice_after"] <= 1.0
    assert "warped_labels.nii.gz" in summary["files"]


def test_register_refine_reports_before_and_after(
    vxm_run, registered, dataset, fixed_copy, tmp_path, capsys
):
    """``--refine N``: N Adam steps on the pair's unsupervised objective; the objective goes
    down, the "before" metrics are the unrefined registration's, and the outputs are the
    refined field's."""
    fixed, fixed_labels = fixed_copy
    out_dir = tmp_path / "refined"
    argv = ["register", "--checkpoint", vxm_run[0], "--fixed", fixed, "--moving"]
    argv += [_image(dataset, 7), "--fixed-labels", fixed_labels, "--moving-labels"]
    argv += [_labels(dataset, 7), "--out", out_dir, "--refine", "30", "--refine-lr", "0.01"]
    rc = cli.main([str(a) for a in argv])
    assert rc == 0, capsys.readouterr().err
    assert "refined 30 steps" in capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())
    plain = json.loads((registered[0] / "summary.json").read_text())
    r = summary["refine"]
    assert r["steps"] == 30 and r["lr"] == 0.01 and r["seconds"] > 0
    assert r["loss_after"] < r["loss_before"]
    assert r["dice_before"] == pytest.approx(plain["dice_after"])
    assert r["dice_after"] == pytest.approx(summary["dice_after"])
    assert r["folding_percent_before"] == pytest.approx(plain["jacobian"]["folding_percent"])
    assert r["folding_percent_after"] == pytest.approx(summary["jacobian"]["folding_percent"])
    disp = np.asarray(nib.load(out_dir / "disp.nii.gz").dataobj)
    before = np.asarray(nib.load(registered[0] / "disp.nii.gz").dataobj)
    assert np.abs(disp - before).max() > 1e-3  # the refined field is written


def test_register_without_labels(vxm_run, dataset, tmp_path, capsys):
    rc = cli.main(
        [
            "register",
            "--checkpoint",
            str(vxm_run[0] / "checkpoints"),  # the checkpoints/ folder works as well
            "--step",
            "latest",
            "--fixed",
            str(_image(dataset, 6)),
            "--moving",
            str(_image(dataset, 7)),
            "--out",
            str(tmp_path / "reg"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "reg" / "summary.json").read_text())
    assert "dice_before" not in summary and "dice_after" not in summary
    assert "jacobian" in summary
    assert not (tmp_path / "reg" / "warped_labels.nii.gz").exists()
    assert "Dice:" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# segment / evaluate
# --------------------------------------------------------------------------------------------


def test_segment_writes_labels(seg_run, fixed_copy, tmp_path, capsys):
    run, _ = seg_run
    image = fixed_copy[0]
    rc = cli.main(
        ["segment", "--checkpoint", str(run), "--image", str(image), "--out", str(tmp_path)]
    )
    assert rc == 0, capsys.readouterr().err
    assert "labels.nii.gz" in capsys.readouterr().out
    img = nib.load(tmp_path / "labels.nii.gz")
    assert img.shape == nib.load(image).shape == (32, 32, 1)
    np.testing.assert_allclose(img.affine, FIXED_AFFINE, atol=1e-6)
    assert img.get_data_dtype().kind in "iu"
    labels = np.asarray(img.dataobj)
    num_classes = json.loads((run / "config.json").read_text())["data"]["num_classes"]
    assert labels.min() >= 0 and labels.max() < num_classes
    assert _is_png(tmp_path / "segmentation.png")
    counts = json.loads((tmp_path / "summary.json").read_text())["voxels_per_label"]
    assert sum(counts.values()) == 32 * 32


def test_evaluate_registration_run(vxm_run, tmp_path, capsys):
    run, _ = vxm_run
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(run), "--out", str(out), "--no-hd95"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    md = (out / "evaluation.md").read_text()
    assert "| metric | mean ± std |" in md and "registration dice" in md
    assert md.strip() in printed  # the table is printed
    with open(out / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "dice" in rows[0]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert not (out / "subjects.csv").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary, dict) and summary


def test_evaluate_segmentation_run_default_out(seg_run, capsys):
    run, _ = seg_run
    assert cli.main(["evaluate", "--checkpoint", str(run), "--no-hd95"]) == 0
    printed = capsys.readouterr().out
    out = run / "evaluation"
    assert "segmentation dice" in printed
    assert "segmentation dice" in (out / "evaluation.md").read_text()
    with open(out / "subjects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2  # the two held-out labelled subjects
    assert not (out / "pairs.csv").exists()
    assert json.loads((out / "summary.json").read_text())


# --------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------


def _user_error(capsys, argv, *needles) -> str:
    """Run ``argv``; assert exit 2 and exactly one ``jrs-jax: error:`` line naming ``needles``."""
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("jrs-jax: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_resume_finished_run_is_a_no_op(seg_run, dataset, capsys):
    run, _ = seg_run
    steps_before = sorted(os.listdir(run / "checkpoints"))
    results_before = json.loads((run / "results.json").read_text())
    rc = cli.main([str(a) for a in _train_argv(SEG + ":smoke", dataset, run, "--resume")])
    assert rc == 0, capsys.readouterr().err
    assert "(4 steps" in capsys.readouterr().out
    assert sorted(os.listdir(run / "checkpoints")) == steps_before
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4
    assert results["val/seg_dice"] == results_before["val/seg_dice"]  # re-evaluated, same model
    train = [r for r in _read_jsonl(run / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]


def test_train_again_without_resume_refuses(seg_run, dataset, capsys):
    run, _ = seg_run
    saved = (run / "config.json").read_bytes()
    _user_error(capsys, _train_argv(SEG + ":smoke", dataset, run), "--resume")
    # also with a different config: the run's config.json must not be overwritten
    argv = _train_argv(SEG + ":smoke", dataset, run, "--set", "model.features=(2, 4)")
    _user_error(capsys, argv, "--resume")
    assert (run / "config.json").read_bytes() == saved


def test_resume_with_changed_config_refuses(vxm_run, dataset, capsys):
    run, _ = vxm_run
    saved = (run / "config.json").read_bytes()
    argv = _train_argv(
        VXM + ":smoke", dataset, run, *VXM_SETS, "--set", "loss.reg_weight=2.0", "--resume"
    )
    _user_error(capsys, argv, "config", "--resume")
    assert (run / "config.json").read_bytes() == saved


# --------------------------------------------------------------------------------------------
# user errors: one line, exit status 2
# --------------------------------------------------------------------------------------------


def _error_cases(dataset: Path, vxm: Path, seg: Path, bad: Path, out: Path) -> dict:
    fixed, moving = _image(dataset, 6), _image(dataset, 7)

    def reg(fixed=fixed, moving=moving, checkpoint=vxm, *extra):
        return [
            "register",
            "--checkpoint",
            checkpoint,
            "--fixed",
            fixed,
            "--moving",
            moving,
            "--out",
            out,
            *extra,
        ]

    return {
        "missing_config": (["train", bad / "nope.py", "--workdir", out], [str(bad / "nope.py")]),
        "unknown_variant": (
            ["train", VXM + ":smoke,bogus", "--workdir", out],
            ["bogus", "diffeo", "smoke"],
        ),
        "unknown_set_key": (
            ["train", VXM + ":smoke", "--set", "train.stepz=3", "--workdir", out],
            ["train.stepz", "steps"],
        ),
        "missing_fixed": (reg(fixed=bad / "none.nii.gz"), ["none.nii.gz", "not found"]),
        "not_nifti": (reg(fixed=bad / "x.nii.gz"), ["x.nii.gz", "NIfTI"]),
        "four_d": (reg(moving=bad / "4d.nii.gz"), ["4d.nii.gz", "4-D"]),
        "three_d_for_2d_model": (reg(moving=bad / "3d.nii.gz"), ["3d.nii.gz", "[H, W, 1]"]),
        "three_d_labels_for_2d_model": (
            reg(fixed, moving, vxm, "--moving-labels", bad / "3d_labels.nii.gz"),
            ["3d_labels.nii.gz", "[H, W, 1]"],
        ),
        "shape_mismatch": (reg(moving=bad / "other.nii.gz"), ["other.nii.gz", "shape"]),
        "nan_image": (reg(moving=bad / "nan.nii.gz"), ["nan.nii.gz", "NaN"]),
        "not_a_run": (reg(checkpoint=bad / "not_a_run"), ["not_a_run", "config.json"]),
        "missing_step": (reg(fixed, moving, vxm, "--step", "99"), ["99"]),
        "segment_with_registration_run": (
            ["segment", "--checkpoint", vxm, "--image", fixed, "--out", out],
            ["does not segment"],
        ),
        "register_with_segmentation_run": (reg(checkpoint=seg), ["does not register"]),
        "negative_refine": (reg(fixed, moving, vxm, "--refine", "-3"), ["--refine", "-3"]),
        "zero_refine_lr": (
            reg(fixed, moving, vxm, "--refine", "2", "--refine-lr", "0"),
            ["--refine-lr", "positive"],
        ),
        "refine_a_segmentation_run": (
            reg(fixed, moving, seg, "--refine", "2"),
            ["cannot refine", "does not register"],
        ),
        "evaluate_missing_dataset": (
            ["evaluate", "--checkpoint", vxm, "--dataset", bad / "nods.json"],
            ["nods.json", "not found"],
        ),
    }


ERROR_CASES = [
    "missing_config",
    "unknown_variant",
    "unknown_set_key",
    "missing_fixed",
    "not_nifti",
    "four_d",
    "three_d_for_2d_model",
    "three_d_labels_for_2d_model",
    "shape_mismatch",
    "nan_image",
    "not_a_run",
    "missing_step",
    "segment_with_registration_run",
    "register_with_segmentation_run",
    "negative_refine",
    "zero_refine_lr",
    "refine_a_segmentation_run",
    "evaluate_missing_dataset",
]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_user_error_is_one_line(case, dataset, vxm_run, seg_run, bad_files, tmp_path, capsys):
    cases = _error_cases(dataset, vxm_run[0], seg_run[0], bad_files, tmp_path / "out")
    argv, needles = cases[case]
    _user_error(capsys, argv, *needles)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_default_dataset_suggests_make_synthetic(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./jrs_synthetic here
    msg = _user_error(capsys, ["train", VXM + ":smoke", "--no-progress"], "make-synthetic")
    assert "jrs_synthetic/dataset.json" in msg
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


def test_bad_step_argument_is_an_argparse_error(vxm_run, dataset, tmp_path, capsys):
    argv = ["register", "--checkpoint", str(vxm_run[0]), "--step", "abc"]
    argv += ["--fixed", str(_image(dataset, 6)), "--moving", str(_image(dataset, 7))]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("jrs-jax register: error: argument --step")
    assert "'abc'" in err


def test_console_script_prints_no_traceback(vxm_run, dataset):
    # a real process (logging from orbax / absl included): refuses to overwrite a finished run
    run, _ = vxm_run
    saved = (run / "config.json").read_bytes()
    script = Path(sys.executable).parent / "jrs-jax"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "jrs_jax.cli"]
    args = _train_argv(VXM + ":smoke", dataset, run, *VXM_SETS)
    res = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jrs-jax: error: "), res.stderr
    assert "--resume" in lines[0] and str(run) in lines[0]
    assert (run / "config.json").read_bytes() == saved
