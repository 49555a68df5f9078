"""``jrs-jax reproduce``: studies train every row x seed, reuse finished runs, and report
mean ± std and per-seed paired gaps that equal the runs' own numbers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jrs_jax.config import ConfigError
from jrs_jax.studies import default_out, list_studies, load_study, paired_gaps, run_study

TINY = """
def get_study(arg=None):
    smoke = {"train.steps": 4, "train.eval_every": 2, "train.ckpt_every": 4}
    rows = [
        {"name": "vxm", "label": "VoxelMorph", "config": "voxelmorph.py:smoke", "set": smoke},
        {"name": "vxm_dice", "config": "voxelmorph.py:smoke,dice", "set": smoke},
        {"name": "vxm_early", "label": "VoxelMorph at step 2", "from": "vxm", "at_step": 2},
        {"name": "vxm_refined", "from": "vxm",
         "evaluate": {"set": {"eval.refine_steps": 5, "eval.refine_lr": 0.05}}},
    ]
    return {
        "name": "tiny",
        "claim": "Dice supervision helps",
        "data": {"scenario": "anatomy", "seed": 0, "settings": {
            "shape": [16, 16], "num_subjects": 6, "num_heldout": 2, "num_val_pairs": 2}},
        "seeds": [0, 1],
        "groups": [{"name": "all", "rows": rows}],
        "columns": {"val/reg_dice": "registration Dice"},
        "gaps": [{"row": "vxm_dice", "baseline": "vxm", "metric": "val/reg_dice"}],
        "field_figure": True,
    }
"""

SLIDING = """
def get_study(arg=None):
    smoke = {"train.steps": 2, "train.eval_every": 2, "train.ckpt_every": 2}
    rows = [{"name": "vxm", "label": "VoxelMorph", "config": "voxelmorph.py:smoke", "set": smoke}]
    return {
        "name": "tiny_sliding",
        "claim": "fields slide",
        "data": {"scenario": "sliding", "seed": 0, "settings": {
            "shape": [16, 16], "num_subjects": 4, "num_heldout": 2, "num_val_pairs": 1}},
        "seeds": [0],
        "groups": [{"name": "one organ", "rows": rows}],
        "columns": {"val/reg_dice": "registration Dice"},
        "field_figure": True,
    }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    path = d / "tiny.py"
    path.write_text(TINY)
    study = load_study(str(path))
    result = run_study(study, out=str(d / "out"), progress=False, log=lambda *_: None)
    return study, result, d / "out"


def test_study_writes_table_json_and_plot(tiny):
    _study, _result, out = tiny
    assert {"table.md", "table.json", "table.png"} <= set(os.listdir(out))
    text = (out / "table.md").read_text()
    assert "| VoxelMorph |" in text and "Paired gaps" in text and "Dice supervision" in text
    saved = json.loads((out / "table.json").read_text())
    assert len(saved["records"]) == 8  # 4 rows x 2 seeds


def test_gaps_are_the_per_seed_differences_of_the_runs(tiny):
    _, result, _ = tiny
    rec = {(r["row"], r["seed"]): r["val/reg_dice"] for r in result["records"]}
    (gap,) = result["gaps"]
    assert gap["seeds"] == [0, 1]
    expected = [rec[("vxm_dice", s)] - rec[("vxm", s)] for s in (0, 1)]
    assert gap["gaps"] == pytest.approx(expected)
    assert gap["won"] == sum(e > 0 for e in expected)
    # seeds differ: the rows are really trained per seed (other init, other batches)
    runs = {(r["row"], r["seed"]): r["workdir"] for r in result["records"]}
    assert runs[("vxm", 0)] != runs[("vxm", 1)]
    losses = [
        [
            json.loads(x)["loss"]
            for x in open(os.path.join(runs[("vxm", s)], "metrics.jsonl"))
            if '"train"' in x
        ]
        for s in (0, 1)
    ]
    assert losses[0] and losses[0] != losses[1]


def test_from_row_reads_the_validation_at_its_step(tiny):
    _, result, _ = tiny
    early = [r for r in result["records"] if r["row"] == "vxm_early"]
    late = {r["seed"]: r for r in result["records"] if r["row"] == "vxm"}
    for r in early:
        assert r["workdir"] == late[r["seed"]]["workdir"]  # the same run, at step 2
        log = [
            json.loads(line)
            for line in open(os.path.join(r["workdir"], "metrics.jsonl"))
            if '"val"' in line
        ]
        at2 = next(x for x in log if x["step"] == 2)
        assert r["val/reg_dice"] == at2["val/reg_dice"]


def test_evaluate_row_re_evaluates_the_trained_run(tiny):
    """An ``evaluate`` row scores ``from``'s run again with its config changed for the
    evaluation only (here: test-time refinement), without training: same run folder, same
    update count, another score, cached in the run folder, equal to evaluating by hand."""
    from jrs_jax.evaluation import evaluate
    from jrs_jax.experiment import build_method, load_dataset, load_run
    from jrs_jax.train import variables

    _, result, _ = tiny
    base = {r["seed"]: r for r in result["records"] if r["row"] == "vxm"}
    for r in (r for r in result["records"] if r["row"] == "vxm_refined"):
        b = base[r["seed"]]
        assert r["workdir"] == b["workdir"] and r["updates"] == b["updates"]
        assert r["val/reg_dice"] != pytest.approx(b["val/reg_dice"], abs=1e-6)
        assert len(os.listdir(os.path.join(r["workdir"], "evaluations"))) == 1
    r = next(r for r in result["records"] if r["row"] == "vxm_refined")
    _, state, cfg = load_run(r["workdir"], step="latest")
    cfg["eval"].update(refine_steps=5, refine_lr=0.05)
    ev = evaluate(
        build_method(cfg), variables(state), load_dataset(cfg), max_pairs=24, batch_size=8
    )
    assert ev.summary["val/reg_dice"] == pytest.approx(r["val/reg_dice"])


def test_rerun_reuses_finished_runs(tiny):
    study, result, out = tiny
    mtimes = {
        r["workdir"]: os.path.getmtime(os.path.join(r["workdir"], "results.json"))
        for r in result["records"]
    }
    again = run_study(study, out=str(out), progress=False, log=lambda *_: None)
    assert [r["val/reg_dice"] for r in again["records"]] == [
        r["val/reg_dice"] for r in result["records"]
    ]
    for w, t in mtimes.items():
        assert os.path.getmtime(os.path.join(w, "results.json")) == t


def _capture_field_comparison(monkeypatch):
    from jrs_jax import viz

    calls, real = [], viz.field_comparison

    def spy(fields, **kw):
        calls.append({"fields": dict(fields), **kw})
        return real(fields, **kw)

    monkeypatch.setattr(viz, "field_comparison", spy)
    return calls


def _first_batch(workdir):
    from jrs_jax.data.sampling import pair_batch
    from jrs_jax.evaluation import evaluation_pairs
    from jrs_jax.experiment import load_dataset, load_run

    method, _, cfg = load_run(workdir)
    ds = load_dataset(cfg)
    return pair_batch(ds, evaluation_pairs(ds, mode=method.evaluation_mode)[:1], fields=True)


def test_field_figure_shows_each_row_against_the_ground_truth(tiny, monkeypatch, tmp_path):
    from jrs_jax.studies import _field_figures

    study, result, out = tiny
    assert (out / "figures" / "all_fields.png").read_bytes()[:4] == b"\x89PNG"
    calls = _capture_field_comparison(monkeypatch)
    _field_figures(study, result["records"], str(tmp_path), seed=0)
    assert os.listdir(tmp_path) == ["all_fields.png"]
    (call,) = calls
    # registering rows of seed 0 in table order (a row without a label shows its name);
    # the "from" row is the same run as "vxm": not shown twice
    assert list(call["fields"]) == ["VoxelMorph", "vxm_dice"]
    runs = {r["row"]: r["workdir"] for r in result["records"] if r["seed"] == 0}
    batch = _first_batch(runs["vxm"])
    np.testing.assert_allclose(call["gt"], batch["gt_disp"][0])  # anatomy: composed fields
    assert "fixed_mask" not in batch  # no region masks: the fixed labels bound the regions
    np.testing.assert_array_equal(call["regions"], batch["fixed_labels"][0])
    assert all(u.shape == (16, 16, 2) for u in call["fields"].values())
    assert not np.allclose(call["fields"]["VoxelMorph"], call["fields"]["vxm_dice"])


@pytest.mark.slow  # ~10 s: generating sliding data compiles its own kernels
def test_field_figure_of_sliding_data_shows_the_regions_and_exact_gt(tmp_path, monkeypatch):
    path = tmp_path / "tiny_sliding.py"
    path.write_text(SLIDING)
    calls = _capture_field_comparison(monkeypatch)
    out = tmp_path / "out"
    result = run_study(load_study(str(path)), out=str(out), progress=False, log=lambda *_: None)
    assert (out / "figures" / "one_organ_fields.png").read_bytes()[:4] == b"\x89PNG"
    (call,) = calls
    assert list(call["fields"]) == ["VoxelMorph"]
    batch = _first_batch(result["records"][0]["workdir"])
    assert "fixed_mask" in batch
    np.testing.assert_allclose(call["gt"], batch["gt_disp"][0])  # the stored pair field
    np.testing.assert_array_equal(call["regions"], batch["fixed_mask"][0])  # organ regions
    assert set(np.unique(call["regions"])) >= {0, 1}


def test_paired_gaps_skip_seeds_missing_a_side():
    study = {
        "groups": [{"name": "g", "rows": [{"name": "a"}, {"name": "b"}]}],
        "gaps": [{"row": "a", "baseline": "b", "metric": "m"}],
    }
    recs = [
        {"group": "g", "row": "a", "seed": 0, "m": 0.9},
        {"group": "g", "row": "b", "seed": 0, "m": 0.8},
        {"group": "g", "row": "a", "seed": 1, "m": 0.5},
    ]
    (gap,) = paired_gaps(study, recs)
    assert gap["seeds"] == [0] and gap["gaps"] == pytest.approx([0.1]) and gap["won"] == 1


def test_a_win_on_a_lower_is_better_metric_is_a_negative_gap():
    study = {
        "groups": [{"name": "g", "rows": [{"name": "a"}, {"name": "b"}]}],
        "gaps": [
            {"row": "a", "baseline": "b", "metric": "val/folding_percent"},
            {"row": "a", "baseline": "b", "metric": "val/reg_dice"},
            {"row": "a", "baseline": "b", "metric": "val/reg_dice", "better": "lower"},
        ],
    }
    recs = [{"group": "g", "row": "a", "seed": s, "val/folding_percent": 0.1} for s in (0, 1)]
    recs += [{"group": "g", "row": "b", "seed": s, "val/folding_percent": 0.2} for s in (0, 1)]
    for r, d in zip(recs, (0.9, 0.7, 0.8, 0.8)):
        r["val/reg_dice"] = d
    fold, dice, dice_lower = paired_gaps(study, recs)
    assert (fold["better"], fold["won"]) == ("lower", 2)  # 0.1 - 0.2 < 0 on both seeds
    assert (dice["better"], dice["won"]) == ("higher", 1)  # +0.1 and -0.1
    assert (dice_lower["better"], dice_lower["won"]) == ("lower", 1)


def test_unknown_study_names_the_known_ones(run_cli):
    with pytest.raises(ConfigError, match=r"unknown study 'nope'.*deepatlas"):
        load_study("nope")
    rc, _, err = run_cli(["reproduce", "nope"])
    assert rc == 2 and err.count("\n") == 1 and "deepatlas" in err


def test_each_variant_gets_its_own_default_folder():
    plain, r4q = load_study("deepatlas"), load_study("deepatlas:r4", quick=True)
    assert r4q["variants"] == ["r4", "quick"] and plain["variants"] == []
    assert (
        default_out(plain)
        != default_out(r4q)
        == os.path.join("jrs_reproduce", "deepatlas-r4-quick")
    )
    assert "4:1" in r4q["budget"] and "20 reg pretrain" in r4q["budget"]  # both took effect


def test_list_names_every_study_and_its_claim(run_cli):
    rc, out, _ = run_cli(["reproduce", "--list"])
    assert rc == 0
    for name, study in list_studies().items():
        assert name in out and study["claim"] in out


def test_every_study_has_three_seeds_and_gaps_against_a_baseline():
    for name, study in list_studies().items():
        assert len(study["seeds"]) >= 3, name
        assert study.get("gaps"), name


@pytest.mark.slow
def test_reproduce_deepatlas_quick_runs(tmp_path, run_cli):
    rc, out, err = run_cli(
        ["reproduce", "deepatlas", "--quick", "--out", tmp_path, "--no-progress"]
    )
    assert rc == 0, err
    assert "Paired gaps" in out and "DeepAtlas" in out
    saved = json.loads((tmp_path / "table.json").read_text())
    rows = {r["row"] for r in saved["records"]}
    assert rows == {"reg_unsup", "reg_labels", "seg_alone", "semi", "deepatlas"}
