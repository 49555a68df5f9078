"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

import jax
import numpy as np
import pytest

from jrs_jax import cli
from jrs_jax.methods import Method

# A persistent XLA compilation cache shared by the pytest-xdist workers (and by later runs):
# many tests compile the same computations (the conformance checks rebuild each method from
# one config), and a cache hit skips XLA's compilation. The key is the computation and the
# compile options and jax version, so a code change misses instead of reusing a stale
# executable. JRS_TEST_CACHE=DIR chooses the folder; JRS_TEST_CACHE=off disables it.
_CACHE = os.environ.get("JRS_TEST_CACHE") or os.path.join(
    tempfile.gettempdir(), f"jrs_jax_test_cache_{os.getuid() if hasattr(os, 'getuid') else 0}"
)
if _CACHE != "off":
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _run_cli(argv) -> tuple[int, str, str]:
    """``cli.main(argv)`` in-process with stdout / stderr captured: ``(rc, out, err)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def run_cli():
    """:func:`_run_cli`: the ``jrs-jax`` command line, in-process, output captured."""
    return _run_cli


class PredictOnly(Method):
    """Base of test doubles that predict but never train (subclasses set ``name``,
    ``tasks`` and ``predict``)."""

    def init(self, key, dataset=None):
        return {}

    def sample_batch(self, dataset, step):
        raise TypeError("a test double: it predicts, it does not train")

    def train_step(self, state, batch, key, step):
        raise TypeError("a test double: it predicts, it does not train")


def perturbed_state(state: dict, *, scale: float = 0.3, seed: int = 1) -> dict:
    """``state`` with ``scale * N(0, 1)`` added to every network's parameters (its
    ``NetState`` entries), so fields, maps and scores of a fresh init are not ~0."""
    import jax

    keys = iter(jax.random.split(jax.random.key(seed), 1000))

    def jitter(p):
        return p + scale * jax.random.normal(next(keys), p.shape)

    return {
        n: s.replace(params=jax.tree.map(jitter, s.params)) if hasattr(s, "params") else s
        for n, s in state.items()
    }


@pytest.fixture(scope="session")
def perturbed():
    """:func:`perturbed_state` ``(state, *, scale=0.3, seed=1)``: non-trivial network parameters."""
    return perturbed_state


@pytest.fixture(scope="session")
def predict_only():
    """:class:`PredictOnly`, the base class of predict-only test doubles."""
    return PredictOnly


def build_on(config_spec: str, data, *overrides: str):
    """``(resolved config, dataset, method)`` of ``config_spec`` (``configs/NAME.py:VARIANTS``)
    on the dataset at ``data``, with ``--set``-style ``overrides``."""
    from jrs_jax import experiment
    from jrs_jax.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(config_spec), [f"data.dataset={str(data)!r}", *overrides])
    ds = experiment.load_dataset(cfg)
    cfg = experiment.resolve_config(cfg, ds)
    return cfg, ds, experiment.build_method(cfg)


def pair_scans(path: str) -> str:
    """Rewrite a synthetic ``dataset.json`` so its scans pair into subjects of two time
    points (training scans ``2i, 2i + 1``; every held-out scan one subject ``"h"``): data on
    which within-subject methods train and evaluate, whatever the scenario. Returns ``path``."""
    import json

    with open(path) as f:
        meta = json.load(f)
    for i, entry in enumerate(meta["training"]):
        entry.update(subject=f"s{i // 2}", time=i % 2)
    held = meta["jrs_jax"]["heldout"]
    meta["jrs_jax"]["heldout"] = [
        {"image": p, "subject": "h", "time": t} for t, p in enumerate(held)
    ]
    with open(path, "w") as f:
        json.dump(meta, f)
    return path


@pytest.fixture(scope="session")
def paired_scans():
    """:func:`pair_scans` ``(path) -> path``: scans paired into two-time-point subjects."""
    return pair_scans


def overlapping_labels(dataset):
    """``dataset`` with multi-label maps: channel ``c`` = classes ``c + 1`` or ``c + 2`` of
    its integer labels, ``K - 2`` channels that overlap pairwise (neighbouring channels share
    a class): overlapping structures for sigmoid methods, whatever the scenario."""
    import dataclasses

    from jrs_jax.data import Dataset

    k = int(max(s.labels.max() for s in dataset.subjects if s.has_labels)) + 1

    def channels(lab):
        if lab is None:
            return None
        return np.stack([(lab == c + 1) | (lab == c + 2) for c in range(k - 2)], -1).astype(
            np.uint8
        )

    return Dataset(
        subjects=tuple(dataclasses.replace(s, labels=channels(s.labels)) for s in dataset.subjects),
        val_pairs=dataset.val_pairs,
        source=dataset.source,
        label_format="multi",
    )


@pytest.fixture(scope="session")
def as_multilabel():
    """:func:`overlapping_labels` ``(dataset) -> dataset`` with overlapping binary channels."""
    return overlapping_labels


def _oblique_affine(ndim: int = 3, seed: int = 0) -> np.ndarray:
    """Rotation x anisotropic spacing (0.8, 1.7, 2.9) + translation, as a 4x4 NIfTI affine."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.diag(r))
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 1.7, 2.9])
    affine[:3, 3] = rng.normal(scale=40.0, size=3)
    return affine


@pytest.fixture(scope="session")
def oblique_affine():
    """:func:`_oblique_affine` ``(ndim, seed=0) -> [4, 4]``: an oblique, anisotropic grid."""
    return _oblique_affine
