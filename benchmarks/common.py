"""Shared helpers for the benchmark scripts: timing, memory, tables."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (``fn`` must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def xla_temp_bytes(jitted, *args) -> int | None:
    """XLA's temporary allocation for one call of a jitted function (compiled memory analysis)."""
    try:
        stats = jitted.lower(*args).compile().memory_analysis()
    except Exception:  # backends without memory analysis
        return None
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes)


def fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    return f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.1f} s"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "—"
    return f"{b / 2**30:.2f} GiB" if b >= 2**28 else f"{b / 2**20:.0f} MiB"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_results(path: str, rows: list[dict], table: str) -> None:
    """Write ``rows`` as JSON and the table as markdown next to each other (atomically)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for suffix, text in ((".json", json.dumps(rows, indent=1)), (".md", table + "\n")):
        tmp = path + suffix + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path + suffix)
