"""The quickstart notebook runs end to end (smoke mode) and its .ipynb matches the .py."""

from __future__ import annotations

import json
import os
import runpy

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks", "01_deepatlas_quickstart")


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


def test_ipynb_is_paired_with_the_py_file():
    with open(NB + ".py") as f:
        py = [src for kind, src in _py_cells(f.read()) if kind == "code"]
    with open(NB + ".ipynb") as f:
        nb = json.load(f)
    ipynb = ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "code"]
    assert ipynb == py, "run `jupytext --sync notebooks/01_deepatlas_quickstart.py`"


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
