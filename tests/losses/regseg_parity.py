"""Shared plumbing of the regularisation/segmentation parity tests (not a test module).

``regseg_reference.npz`` holds seeded inputs and the peers' values, written once by
``tests/reference/make_regseg_reference.py``; each test module maps reference names to our
own losses with an ``ours(name, inputs)`` function.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np

REF_DIR = pathlib.Path(__file__).parents[1] / "reference"
REF = REF_DIR / "regseg_reference.npz"


def load_reference():
    """``(inputs, refs)``: input arrays by name, reference values by reference name."""
    data = np.load(REF)
    inputs = {k: data[k] for k in data.files if not k.startswith(("ref_", "versions"))}
    refs = dict(zip([str(n) for n in data["ref_names"]], data["ref_values"]))
    return inputs, refs


def generator():
    """The reference generator script as a module (one shared instance: its results are cached)."""
    name = "_jrs_make_regseg_reference"
    if name not in sys.modules:
        path = REF_DIR / "make_regseg_reference.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
    return sys.modules[name]


def check_parity(ours, inputs, refs, rtol):
    """Compare ``ours(name, inputs)`` with every reference it claims; return the names."""
    checked = []
    for name, want in refs.items():
        got = ours(name, inputs)
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, err_msg=name)
            checked.append(name)
    return checked
