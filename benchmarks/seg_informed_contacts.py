"""Contact preservation of the ``seg_informed_2d`` study's runs, split by pair kind.

    python benchmarks/seg_informed_contacts.py [STUDY_OUT] [--seed 0]

For every run of the study (default ``benchmarks/results/seg_informed_2d_study``) of the
given seed: the contact-count error, the contact state kept, the Dice and the tongue Dice on
the held-out within-speaker pairs, grouped by what the pair asks of the field (tongue on the
palate "C" or separated "S", moving -> fixed), and the identity's scores on the same pairs.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from jrs_jax.evaluation import evaluate
from jrs_jax.experiment import load_dataset, load_run
from jrs_jax.metrics import contact_count
from jrs_jax.train import variables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/seg_informed_2d_study")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    identity_done = False
    for run in sorted(glob.glob(os.path.join(args.out, "runs", "*"))):
        method, state, cfg = load_run(run)
        if cfg["seed"] != args.seed:
            continue
        ds = load_dataset(cfg)
        a, b = method.contact
        ev = evaluate(method, variables(state), ds, max_pairs=cfg["eval"]["max_pairs"])
        idx = {s.name: i for i, s in enumerate(ds.subjects)}
        groups: dict[str, list] = {}
        for r in ev.pairs:
            m, f = (ds.subjects[idx[r[k]]].labels for k in ("moving", "fixed"))
            cm, cf = contact_count(m, a, b), contact_count(f, a, b)
            kind = ("C" if cm else "S") + "->" + ("C" if cf else "S")
            row = (abs(cm - cf), float((cm > 0) == (cf > 0)), r["dice_identity"])
            row += (r["contact_error"], r["contact_kept"], r["dice"])
            groups.setdefault(kind, []).append(row)
        if not identity_done:
            print("identity")
            for kind, v in sorted(groups.items()):
                v = np.asarray(v)
                print(
                    f"  {kind} n={len(v)} error={v[:, 0].mean():.2f} kept={v[:, 1].mean():.2f}"
                    f" dice={v[:, 2].mean():.3f}"
                )
            identity_done = True
        print(os.path.basename(run))
        for kind, v in sorted(groups.items()):
            v = np.asarray(v)
            print(
                f"  {kind} n={len(v)} error={v[:, 3].mean():.2f} kept={v[:, 4].mean():.2f}"
                f" dice={v[:, 5].mean():.3f}"
            )


if __name__ == "__main__":
    main()
