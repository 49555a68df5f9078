"""The training loop: progress bar, JSON-lines log, validation, checkpoints, resume, NaN stop.

:func:`fit` drives any step function ``(state, batch, key, step) -> (state, metrics)`` (a
method's ``train_step``) with batches from ``sample_batch(step)``. It is deterministic:
the batch of step ``t`` is a pure function of ``(seed, t)`` and its PRNG key is
``fold_in(key(seed), t)``, so

* the same config and seed give the same parameters (on CPU, bit for bit);
* ``resume=True`` after a kill (even ``SIGKILL`` mid-save) restores the last committed
  checkpoint and produces exactly the steps an uninterrupted run would have produced from
  there (the log is truncated to that checkpoint first);
* a NaN or Inf in any metric stops the run with :class:`TrainingDiverged`, naming the step
  and the terms; nothing is saved after the last finite step, so the last checkpoint on
  disk is the last good one.

Files in ``workdir``: ``metrics.jsonl`` (one JSON object per line: ``{"step", "split":
"train"|"val", ...}``, train values averaged over the ``log_every`` steps before ``step``)
and ``checkpoints/`` (orbax; the last ``keep`` plus the best by ``best_metric``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .checkpoint import Checkpointer
from .parallel import data_mesh, replicate, shard_batch
from .steps import non_finite

__all__ = ["TrainingDiverged", "fit", "read_log"]


class TrainingDiverged(FloatingPointError):
    """A loss became NaN/Inf; the message names the step, the terms and the last checkpoint."""


def read_log(path: str) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a torn last line from a kill is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _truncate_log(path: str, step: int) -> None:
    """Keep only the records with ``step <= step`` (atomic rewrite)."""
    records = [r for r in read_log(path) if int(r.get("step", 0)) <= step]
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _fmt(values: dict[str, Any], limit: int = 4) -> dict[str, str]:
    skip = ("step", "split", "seconds")
    items = [
        (k, v)
        for k, v in values.items()
        if k not in skip and not k.startswith("grad_norm") and isinstance(v, float)
    ]
    return {k: f"{v:.4g}" for k, v in items[:limit]}


def fit(
    train_step: Callable[[Any, dict, jax.Array, int], tuple[Any, dict]],
    state: Any,
    *,
    sample_batch: Callable[[int], dict[str, np.ndarray]],
    workdir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    eval_every: int = 0,
    ckpt_every: int = 0,
    log_every: int = 10,
    keep: int = 2,
    best_metric: str | None = None,
    best_mode: str = "max",
    resume: bool = False,
    progress: bool = True,
    data_parallel: bool | str = "auto",
    extra: Any = None,
    desc: str = "train",
) -> dict:
    """Train ``state`` for ``steps`` steps (see the module docstring).

    Args:
      train_step: ``(state, batch, key, step) -> (state, metrics)``; may donate ``state``.
      state: the initial state (also the template for restoring checkpoints).
      sample_batch: ``step -> {name: [B, ...] array}``, a pure function of ``step``.
      workdir: run directory (created).
      steps: total number of steps of the run.
      seed: PRNG seed of the step keys.
      evaluate: ``state -> {"val/<name>": float}``, run every ``eval_every`` steps and at the end.
      eval_every, ckpt_every: periods in steps (0: only at the end).
      log_every: steps per train record / progress-bar update.
      keep: checkpoints kept (plus the best by ``best_metric``).
      best_metric, best_mode: validation metric deciding the best checkpoint.
      resume: continue from the last checkpoint in ``workdir`` (from scratch if none).
      progress: show a tqdm progress bar with the live loss terms.
      data_parallel: ``"auto"`` (when more than one device is visible), True or False;
        shards batches over a ``"data"`` mesh axis (:mod:`jrs_jax.train.parallel`).
      extra: JSON-serialisable data stored with every checkpoint (e.g. the config).
      desc: progress bar label.

    Returns:
      ``{"state", "step", "train": last train record, "val": last validation metrics,
      "best_step", "workdir", "train_seconds", "first_step_seconds"}``.

    Raises:
      TrainingDiverged: a non-finite metric.
      FileExistsError: ``workdir`` holds checkpoints and ``resume`` is False.
    """
    from tqdm.auto import tqdm

    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "metrics.jsonl")
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=max(1, int(keep)),
        best_metric=best_metric if evaluate is not None else None,
        best_mode=best_mode,
    )
    try:
        start = 0
        latest = ckpt.latest_step()
        if latest is not None and not resume:
            raise FileExistsError(
                f"{workdir} already holds checkpoints (last step {latest}); pass resume=True "
                "(--resume) to continue, or use another workdir"
            )
        if resume and latest is not None:
            state, _, start = ckpt.restore(state, step="latest")
            _truncate_log(log_path, start)
        elif os.path.exists(log_path):
            os.remove(log_path)
        n_dev = jax.device_count()
        parallel = n_dev > 1 if data_parallel == "auto" else bool(data_parallel)
        mesh = data_mesh() if parallel else None
        if mesh is not None:
            state = replicate(state, mesh)
        root = jax.random.key(int(seed))
        last_saved = start if latest is not None and resume else None
        val: dict[str, float] = {}
        record: dict = {}
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t_start = time.perf_counter()
        first_step_s = None
        bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
        for t in range(start, int(steps)):
            batch = sample_batch(t)
            batch = shard_batch(batch, mesh) if mesh is not None else batch
            t0 = time.perf_counter()
            state, metrics = train_step(state, batch, jax.random.fold_in(root, t), t)
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if first_step_s is None:
                first_step_s = time.perf_counter() - t0
            bad = non_finite(values)
            if bad:
                ckpt.wait_until_finished()
                where = (
                    f"the last good checkpoint is step {last_saved} in {ckpt.directory}"
                    if last_saved is not None
                    else "no checkpoint was saved before it"
                )
                _append(log_path, {"step": t + 1, "split": "error", "non_finite": bad})
                raise TrainingDiverged(
                    f"non-finite loss at step {t + 1}: {', '.join(bad)}; training stopped and "
                    f"{where}. Lower the learning rate or check the loss weights and data."
                )
            for k, v in values.items():  # per-key counts: phases may log different terms
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            done = t + 1
            if done % max(1, log_every) == 0 or done == steps:
                means = {k: v / counts[k] for k, v in sums.items()}
                record = {"step": done, "split": "train", **means}
                record["seconds"] = round(time.perf_counter() - t_start, 3)
                _append(log_path, record)
                bar.set_postfix(_fmt(record), refresh=False)
                sums, counts = {}, {}
            bar.update(1)
            is_eval = evaluate is not None and (
                done == steps or (eval_every > 0 and done % eval_every == 0)
            )
            is_ckpt = done == steps or (ckpt_every > 0 and done % ckpt_every == 0) or is_eval
            if is_eval:
                val = {k: float(v) for k, v in evaluate(state).items()}
                _append(log_path, {"step": done, "split": "val", **val})
                bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in val.items()))
            if is_ckpt:
                metrics_for_best = val if is_eval and best_metric in val else None
                ckpt.save(done, state, metrics=metrics_for_best, extra=extra)
                last_saved = done
        bar.close()
        if not val and evaluate is not None:  # e.g. resuming a finished run: report it anyway
            val = {k: float(v) for k, v in evaluate(state).items()}
        ckpt.wait_until_finished()
        return {
            "state": state,
            "step": int(steps),
            "train": record,
            "val": val,
            "best_step": ckpt.best_step(),
            "workdir": workdir,
            "train_seconds": time.perf_counter() - t_start,
            "first_step_seconds": first_step_s,
        }
    finally:
        ckpt.close()
