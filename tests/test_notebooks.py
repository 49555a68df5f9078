"""The notebooks run end to end (smoke mode) and each .ipynb matches its .py."""

from __future__ import annotations

import json
import os
import runpy
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks", "01_deepatlas_quickstart")
NB_OWN = os.path.join(ROOT, "notebooks", "02_your_own_method")


def _py_cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) of the py:percent cells (header comment block dropped)."""
    cells, kind, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip()))
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind is not None:
            lines.append(line[2:] if kind == "markdown" and line.startswith("# ") else line)
    cells.append((kind, "\n".join(lines).strip()))
    return cells


@pytest.mark.parametrize("path", [NB, NB_OWN], ids=os.path.basename)
def test_ipynb_is_paired_with_the_py_file(path):
    with open(path + ".py") as f:
        py = [src for kind, src in _py_cells(f.read()) if kind == "code"]
    with open(path + ".ipynb") as f:
        nb = json.load(f)
    ipynb = ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "code"]
    name = os.path.relpath(path, ROOT)
    assert ipynb == py, f"run `jupytext --sync {name}.py`"


def test_quickstart_runs_in_smoke_mode(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("JRS_SMOKE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(NB + ".py", run_name="__main__")
    ev = ns["result"]["evaluation"]
    assert set(ev) >= {"val/reg_dice", "val/seg_dice", "val/folding_percent"}
    assert float(ns["parts"]["sim"]) < -0.5  # the velocity fit improved LNCC from ~-0.3
    assert ns["fig"] is not None


def test_own_method_notebook_runs_in_smoke_mode(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from jrs_jax.methods import METHODS

    monkeypatch.setenv("JRS_SMOKE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.chdir(tmp_path)
    try:
        ns = runpy.run_path(NB_OWN + ".py", run_name="__main__")
        assert METHODS["segreg"] is ns["SegRegConsistency"]
    finally:
        METHODS.pop("segreg", None)  # keep the registry as the other tests expect it
    assert ns["WORK"].startswith(str(tmp_path))
    result, steps, n_reg = ns["result"], ns["steps"], ns["n_reg"]

    # both rows for both seeds, equal update budgets (VoxelMorph = F_R's updates, 4 : 1)
    recs = {(r["row"], r["seed"]): r for r in result["records"]}
    assert sorted(recs) == [(row, s) for row in ("segreg", "voxelmorph") for s in (0, 1)]
    assert n_reg == 16 and steps == 20
    assert [recs["voxelmorph", s]["updates"] for s in (0, 1)] == [n_reg, n_reg]
    assert [recs["segreg", s]["updates"] for s in (0, 1)] == [steps, steps]
    for (row, _), r in recs.items():
        assert np.isfinite(r["val/reg_dice"]) and 0 <= r["val/reg_dice"] <= 1
        assert ("val/seg_dice" in r) == (row == "segreg")

    # one paired gap per group, per seed: the records' own differences
    [gap] = result["gaps"]
    assert (gap["row"], gap["baseline"], gap["metric"]) == ("segreg", "voxelmorph", "val/reg_dice")
    assert gap["seeds"] == [0, 1]
    want = [
        recs["segreg", s]["val/reg_dice"] - recs["voxelmorph", s]["val/reg_dice"] for s in (0, 1)
    ]
    assert gap["gaps"] == pytest.approx(want)
    assert "| SegRegConsistency |" in result["table"] and "| VoxelMorph |" in result["table"]
    assert os.path.getsize(os.path.join(ns["WORK"], "study", "table.png")) > 0

    # the reloaded run: each network stepped by its own optimiser as the schedule says
    state = ns["state"]
    assert int(state["reg"].step) == n_reg and int(state["seg"].step) == steps - n_reg
    disp = np.asarray(ns["pred"]["disp"])
    assert disp.shape == (1, 32, 32, 2) and np.all(np.isfinite(disp))
    assert np.asarray(ns["pred"]["warped"]).shape == (1, 32, 32, 1)
    assert ns["fig"] is not None
