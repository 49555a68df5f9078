"""Where the endpoint error of a sliding-data study comes from (see
``benchmarks/results/ddir_analysis.md``).

    python benchmarks/sliding_diagnostics.py STUDY_OUT [SEED]

For every run of seed ``SEED`` (default 0) in ``STUDY_OUT/runs``, on the study's validation
pairs: the endpoint error of the zero field and of the prediction in the ±2-voxel band
around the fixed mask's region boundaries, split into the band's organ side and body side;
deep inside the organs (more than 2 voxels from a boundary); in the body away from the
organs; and the normal / tangential parts of the error on the organ side of the band (the
normal of the boundary estimated from the organ's centroid, the organs being near-round).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

from jrs_jax.data import pair_batch
from jrs_jax.evaluation import evaluation_pairs
from jrs_jax.experiment import load_dataset, load_run
from jrs_jax.metrics import boundary_band
from jrs_jax.train import variables


def _parts(u, g, mask, labels):
    err = np.linalg.norm(u - g, axis=-1)
    band = np.stack([boundary_band(m, width=2) for m in mask])
    organ, body = mask > 0, (mask == 0) & (labels > 0)
    out = {
        "band": err[band].mean(),
        "band organ side": err[band & organ].mean(),
        "band body side": err[band & body].mean(),
        "organ interior": err[~band & organ].mean(),
        "body away": err[~band & body].mean(),
    }
    radial = np.zeros_like(u)
    for b in range(len(mask)):
        for k in np.unique(mask[b])[1:]:
            idx = np.argwhere(mask[b] == k)
            r = idx - idx.mean(0)
            r /= np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-6)
            radial[(b, *idx.T)] = r
    sel = band & organ
    d = (u - g)[sel]
    normal = np.abs(np.sum(d * radial[sel], -1))
    out["organ side normal"] = normal.mean()
    out["organ side tangential"] = np.sqrt(np.maximum((d**2).sum(-1) - normal**2, 0)).mean()
    return out


def main(out: str, seed: int = 0) -> None:
    rows = {}
    for wd in sorted(glob.glob(os.path.join(out, "runs", "*"))):
        cfg = json.load(open(os.path.join(wd, "config.json")))
        if int(cfg.get("seed", 0)) != seed:
            continue
        method, state, cfg = load_run(wd)
        ds = load_dataset(cfg)
        pairs = evaluation_pairs(ds, mode="pairs")
        b = pair_batch(ds, pairs, fields=True)
        pred = method.run(variables(state), b, "register")
        args = (b["gt_disp"], b["fixed_mask"], b["fixed_labels"])
        if not rows:
            rows["zero field"] = _parts(np.zeros_like(b["gt_disp"]), *args)
        rows[os.path.basename(wd).rsplit("-", 1)[0]] = _parts(np.asarray(pred["disp"]), *args)
    keys = list(next(iter(rows.values())))
    print("| row | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
