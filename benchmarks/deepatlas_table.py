"""The DeepAtlas comparison now is a study: ``jrs-jax reproduce deepatlas[:variants]``.

This script forwards to it, so the commands in ``benchmarks/results/deepatlas_analysis.md``
keep working. The old options map to study variants (``configs/studies/deepatlas.py``):

    python benchmarks/deepatlas_table.py                 # jrs-jax reproduce deepatlas
    python benchmarks/deepatlas_table.py --quick         # jrs-jax reproduce deepatlas --quick
    python benchmarks/deepatlas_table.py r4              # the joint stage at 4 : 1
    python benchmarks/deepatlas_table.py hidden,long     # any variants, comma-separated

Further ``reproduce`` options (``--seeds``, ``--out``, ``--no-progress``) pass through.
"""

from __future__ import annotations

import sys

from jrs_jax.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    variants = [a for a in args if not a.startswith("-") and (not args or a is args[0])]
    rest = [a for a in args if a not in variants]
    study = "deepatlas" + (f":{variants[0]}" if variants else "")
    sys.exit(main(["reproduce", study, *rest]))
