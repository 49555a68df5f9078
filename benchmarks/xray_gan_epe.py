"""Endpoint error of the ``xray_gan`` study's runs, inside and outside the object.

    python benchmarks/xray_gan_epe.py [STUDY_OUT]

The known transform moves the whole grid, but the image shows it only where there is
structure: in the flat background a field can be wrong without any image term noticing. For
every run of the study (default ``benchmarks/results/xray_gan_study``) and every held-out
pair (fixed = reference, moving = floating): the mean endpoint error against the ground
truth over all voxels, over the reference's foreground (the object mask), and over the
background; also the error of the zero field. Means over pairs, then mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from jrs_jax.evaluation import evaluation_pairs, pair_batch_for
from jrs_jax.experiment import load_dataset, load_run
from jrs_jax.train import variables

PARTS = ("all", "object", "background")


def _epe(disp: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    err = np.linalg.norm(disp - gt, axis=-1)
    return float(err.mean()), float(err[mask].mean()), float(err[~mask].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/xray_gan_study")
    args = ap.parse_args()
    by_row: dict[str, list[np.ndarray]] = {}
    zero: list[np.ndarray] = []
    for run in sorted(glob.glob(os.path.join(args.out, "runs", "*"))):
        method, state, cfg = load_run(run)
        ds = load_dataset(cfg)
        pairs = evaluation_pairs(ds, mode=method.evaluation_mode)
        b = pair_batch_for(method, ds, pairs, method.evaluation_mode)
        pred = method.run(variables(state), b, "register")
        disp, gt = np.asarray(pred["disp"]), np.asarray(b["gt_disp"])
        masks = np.asarray(b["fixed_labels"]) > 0
        rows = [_epe(disp[i], gt[i], masks[i]) for i in range(len(pairs))]
        by_row.setdefault(os.path.basename(run).rsplit("-", 1)[0], []).append(np.mean(rows, 0))
        if not zero:
            zero.append(np.mean([_epe(0 * gt[i], gt[i], masks[i]) for i in range(len(pairs))], 0))
    print("row              " + "  ".join(f"{p:>15s}" for p in PARTS) + "   (seeds)")
    print("zero field       " + "  ".join(f"{v:15.3f}" for v in zero[0]))
    for row, vals in by_row.items():
        v = np.asarray(vals)
        cells = "  ".join(f"{m:7.3f} ± {s:5.3f}" for m, s in zip(v.mean(0), v.std(0)))
        print(f"{row:16s} {cells}   ({len(v)})")


if __name__ == "__main__":
    main()
