"""`jrs-jax demo` end to end (shortened): table, files, figures, the register hint, reuse."""

from __future__ import annotations

import json
import os

from jrs_jax import cli, demo


def test_demo_quick_runs_writes_everything_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(demo.LENGTHS, "quick", (6, 2, 2))
    out = tmp_path / "jrs_demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for line in (
        "registration Dice, before",
        "segmentation Dice, U-Net alone",
        "segmentation Dice, DeepAtlas (joint)",
        "jrs-jax register --checkpoint",
    ):
        assert line in text
    with open(out / "results.json") as f:
        res = json.load(f)
    assert 0.0 <= res["deepatlas"]["val/reg_dice"] <= 1.0
    assert 0.0 <= res["unet_seg"]["val/seg_dice"] <= 1.0
    for name in (
        "deepatlas_registration.png",
        "deepatlas_segmentation.png",
        "deepatlas_curves.png",
        "unet_seg_segmentation.png",
    ):
        with open(out / "figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").exists() and (out / "deepatlas" / "checkpoints").is_dir()
    assert not os.path.exists(out / "data.partial")
    # a second run reuses both finished runs and prints the same table
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing the finished run") == 2
    assert (
        text.split("jrs-jax demo")[-1].split("\n")[2:7]
        == again.split("jrs-jax demo")[-1].split("\n")[2:7]
    )


def test_demo_baseline_gets_as_many_updates_as_the_segmentation_network():
    from jrs_jax.methods import update_counts

    for kw in ({}, {"quick": True}, {"three_d": True}):
        da, seg = demo.demo_configs("data.json", **kw)
        n = update_counts(da)
        assert seg["train"]["steps"] == n["seg"] > da["schedule"]["seg_pretrain"], kw
        assert seg["data"]["num_labelled"] == da["data"]["num_labelled"]
        assert n["reg"] + n["seg"] == da["train"]["steps"]
