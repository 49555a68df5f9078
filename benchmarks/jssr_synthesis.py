"""Synthesis error of the ``jssr`` study's generators, against the true modality-Y image.

    python benchmarks/jssr_synthesis.py [STUDY_OUT]

The ``multimodal`` scenario renders every subject in both modalities, so the image a
perfect generator would produce from the moving image ``x`` (channel 0) is the same
subject's channel 1, ``y_x``, on ``x``'s grid. For every JSSR-family run of the study
(default ``benchmarks/results/jssr_study``) and every held-out validation pair: the mean
absolute error ``|G(x) − y_x|`` (intensities in ``[0, 1]``), next to the error of no
synthesis, ``|x − y_x|``, and the residual of the registration term, ``|τ(G(x)) − y|``,
against that of the identity, ``|G(x) − y|``. Medians over pairs, then mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import glob
import os

import jax.numpy as jnp
import numpy as np

from jrs_jax.experiment import load_dataset, load_run
from jrs_jax.train import variables


def _errors(method, state, ds) -> dict[str, float]:
    v = variables(state)
    rows = []
    for f, m in ds.val_pairs:
        x = jnp.asarray(ds.subjects[m].image[None, ..., 0:1])
        y_x = ds.subjects[m].image[None, ..., 1:2]
        y = jnp.asarray(ds.subjects[f].image[None, ..., 1:2])
        pred = method.run(v, {"moving": x, "fixed": y}, "register")
        g = np.asarray(pred["synth"])
        rows.append(
            (
                np.abs(g - y_x).mean(),
                np.abs(np.asarray(x) - y_x).mean(),
                np.abs(np.asarray(pred["warped_synth"]) - np.asarray(y)).mean(),
                np.abs(g - np.asarray(y)).mean(),
            )
        )
    med = np.median(np.asarray(rows), axis=0)
    return dict(zip(("synth", "no_synth", "registered", "identity"), med, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/jssr_study")
    args = ap.parse_args()
    by_row: dict[str, list[dict]] = {}
    for run in sorted(glob.glob(os.path.join(args.out, "runs", "*"))):
        method, state, cfg = load_run(run)
        if cfg["method"] != "jssr":
            continue
        row = os.path.basename(run).rsplit("-", 1)[0]
        by_row.setdefault(row, []).append(_errors(method, state, load_dataset(cfg)))
    print("row            |G(x)-y_x|      |x-y_x|        |τ(G(x))-y|    |G(x)-y|   (seeds)")
    for row, runs in by_row.items():
        cells = []
        for k in ("synth", "no_synth", "registered", "identity"):
            vals = np.asarray([r[k] for r in runs])
            cells.append(f"{vals.mean():.4f} ± {vals.std():.4f}")
        print(f"{row:14s} " + "  ".join(cells) + f"   ({len(runs)})")


if __name__ == "__main__":
    main()
