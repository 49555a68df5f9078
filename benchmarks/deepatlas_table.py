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
    study = "deepatlas"
    if args and not args[0].startswith("-"):  # the variants come first
        study, args = f"deepatlas:{args[0]}", args[1:]
    sys.exit(main(["reproduce", study, *args]))
