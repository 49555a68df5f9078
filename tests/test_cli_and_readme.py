"""The README's API example runs as written, and the CLI's example command works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jrs_jax import cli

ROOT = Path(__file__).resolve().parents[1]


def test_readme_api_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    total, parts = scope["total"], scope["parts"]
    assert np.isfinite(float(total))
    assert set(parts) == {"sim", "smooth"}
    grad = np.asarray(scope["grad"])
    assert grad.shape == (1, 64, 64, 2) and np.abs(grad).max() > 0


def test_cli_example_prints_table(capsys):
    assert cli.main(["example", "--size", "24"]) == 0
    out = capsys.readouterr().out
    assert "Dice, warped back vs fixed labels" in out
    # warping back with exp(v) recovers the labels better than leaving them moved
    nums = dict(re.findall(r"  (Dice, [^\n]*?labels)\s+([0-9.]+)", out))
    assert float(nums["Dice, warped back vs fixed labels"]) > float(
        nums["Dice, moving vs fixed labels"]
    )


def test_cli_bad_argument_is_one_line_error():
    res = subprocess.run(
        [sys.executable, "-m", "jrs_jax.cli", "example", "--size", "3"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "--size must be at least 8" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("argv", [["--version"]])
def test_cli_version(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "jrs-jax" in capsys.readouterr().out
