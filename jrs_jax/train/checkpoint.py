"""Checkpointing of a regime's state with ``orbax.checkpoint.CheckpointManager``.

One ``CheckpointManager`` per run directory keeps **both** the last ``max_to_keep``
checkpoints and the best one by a metric: its ``preservation_policy`` is
``AnyPreservationPolicy([LatestN(max_to_keep), BestN(metric, n=1)])`` (a checkpoint is kept
if either policy keeps it), so no second manager / ``best/`` folder is needed. Each step
directory holds two items:

* ``state``: the array leaves of the state pytree (``params``, ``opt_state``, ``step`` of every
  ``NetState``, plus any other leaf: EMA teacher, atlas, PRNG key data), saved with
  ``StandardSave`` as a nested dict keyed by the leaves' pytree paths;
* ``meta``: a JSON item ``{"extra": ..., "metrics": ...}`` (config, data-iterator position,
  seed, ...).

Restoring goes into the structure of a *template* state built the usual way from the config
(``NetState.create(params=init(...), tx=...)``): the template's tree definition (hence the static
``tx``) is reused and only the leaves come from disk. Typed PRNG keys in the state are stored
as ``jax.random.key_data`` and re-wrapped with the template key's implementation.

Atomicity is orbax's: a step is written to ``<step>.orbax-checkpoint-tmp-*`` and renamed on
commit, so an interrupted save leaves no step that ``latest_step()`` can see.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

__all__ = ["CheckpointNotFoundError", "Checkpointer"]

_STATE = "state"
_META = "meta"


class _SkipUntrackedMetricWarning(logging.Filter):
    """Drop orbax's warning for checkpoints saved without metrics (train-only checkpoints are
    meant to compete only for "latest"; BestN ignores them by design)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_SkipUntrackedMetricWarning())


class CheckpointNotFoundError(FileNotFoundError):
    """No (matching) checkpoint in the run directory."""


def _key_name(k: Any) -> str:
    if isinstance(k, jax.tree_util.DictKey):
        return str(k.key)
    if isinstance(k, jax.tree_util.GetAttrKey):
        return k.name
    if isinstance(k, jax.tree_util.SequenceKey):
        return str(k.idx)
    if isinstance(k, jax.tree_util.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def _leaf_paths(tree: Any) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    """(paths, leaves, treedef) of ``tree``; a path is a tuple of string key names."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [tuple(_key_name(k) for k in p) for p, _ in with_path]
    leaves = [leaf for _, leaf in with_path]
    if len(set(paths)) != len(paths):
        raise ValueError("state has leaves whose pytree paths collide as strings")
    return paths, leaves, treedef


def _nest(paths: list[tuple[str, ...]], leaves: list[Any]) -> dict:
    out: dict = {}
    for path, leaf in zip(paths, leaves):
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf
    return out


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_array(x: Any) -> Any:
    if _is_key(x):
        return jax.random.key_data(x)
    if isinstance(x, jax.Array | np.ndarray):
        return x
    return np.asarray(x)


def _flat_metadata(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat_metadata(v, (*prefix, str(k))))
        return out
    return {prefix: tree}


def _fmt(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _some(items: list[str], n: int = 8) -> str:
    items = sorted(items)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return f"{items[:n]}{more}"


class Checkpointer:
    """Saves and restores a regime's state (a pytree of ``NetState`` s and other arrays).

    Args:
      directory: run directory (created if missing); one ``CheckpointManager`` on it.
      max_to_keep: keep the last this many checkpoints (None: all).
      best_metric: metric name (a key of ``metrics`` given to :meth:`save`, e.g.
        ``"val/dice"``) whose best checkpoint is kept in addition to the last
        ``max_to_keep``; None: no best tracking (``restore(step="best")`` then fails).
      best_mode: ``"max"`` or ``"min"``.
      async_save: let orbax write in a background thread (call :meth:`wait_until_finished`
        or use ``save(..., wait=True)`` before depending on the files).

    Example:
      >>> with Checkpointer(run_dir, max_to_keep=3, best_metric="val/dice") as ckpt:
      ...     ckpt.save(step, state, metrics={"val/dice": 0.8}, extra={"seed": 0})
      ...     state, extra, step = ckpt.restore(template_state, step="latest")
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.best_metric = best_metric
        self.best_mode = best_mode
        best_fn = None
        policies: list[Any] = [LatestN(n=max_to_keep)]
        if best_metric is not None:

            def best_fn(metrics: dict) -> float:
                return float(metrics[best_metric])

            policies.append(
                BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    # -- queries ---------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Committed steps on disk, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Last committed step, or None when there is none."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """Best committed step by ``best_metric`` (None when none has the metric)."""
        if self.best_metric is None:
            return None
        return self._manager.best_step()

    def metrics(self, step: int) -> dict | None:
        """The metrics saved with ``step``."""
        return self._read_meta(step).get("metrics")

    # -- save / restore --------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        metrics: dict[str, float] | None = None,
        extra: Any = None,
        wait: bool = False,
    ) -> bool:
        """Save ``state`` (any pytree of arrays) at ``step``.

        Args:
          step: step number (must be new: orbax does not overwrite a step).
          state: the pytree; static fields (``NetState.tx``) are not saved.
          metrics: ``{name: number}``; must contain ``best_metric`` when it is set for the
            checkpoint to compete for "best".
          extra: JSON-serialisable object (config, iterator position, seed, ...).
          wait: block until the checkpoint is committed.

        Returns:
          whether a checkpoint was written.
        """
        step = int(step)
        if step in self._manager.all_steps():
            raise ValueError(f"checkpoint step {step} already exists in {self.directory}")
        if metrics is not None:
            metrics = {str(k): float(v) for k, v in metrics.items()}
            if self.best_metric is not None and self.best_metric not in metrics:
                raise ValueError(f"metrics {sorted(metrics)} lack best_metric {self.best_metric!r}")
        paths, leaves, _ = _leaf_paths(state)
        tree = _nest(paths, [_to_array(x) for x in leaves])
        meta = {"extra": extra, "metrics": metrics}
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(tree), _META: ocp.args.JsonSave(meta)}
            ),
            metrics=metrics,
            force=True,
        )
        if wait:
            self.wait_until_finished()
        return saved

    def _resolve_step(self, step: int | str | None) -> int:
        self._manager.reload()
        if step is None or step == "latest":
            found = self._manager.latest_step()
            what = "no checkpoint"
        elif step == "best":
            if self.best_metric is None:
                raise ValueError("restore(step='best') needs a Checkpointer with best_metric set")
            found = self._manager.best_step()
            what = f"no checkpoint with metric {self.best_metric!r}"
        else:
            found = int(step)
            what = f"no checkpoint at step {found}"
            if found not in self._manager.all_steps():
                found = None
        if found is None:
            raise CheckpointNotFoundError(
                f"{what} in {self.directory} (committed steps: {self.all_steps()})"
            )
        return found

    def _read_meta(self, step: int) -> dict:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
        )
        return restored[_META] or {}

    def metadata(self, step: int | str | None = None) -> dict:
        """The JSON item saved with a checkpoint, ``{"extra": ..., "metrics": ...}``, read
        without restoring the state (e.g. to check which method a run holds before building a
        template). ``step`` as in :meth:`restore`."""
        self.wait_until_finished()
        step = self._resolve_step(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
        )
        return dict(restored[_META] or {})

    def restore(self, template_state: Any, *, step: int | str | None = None) -> tuple:
        """Restore into the structure of ``template_state``.

        Args:
          template_state: a state of the same structure, shapes and dtypes (e.g. built from the
            config with ``NetState.create``); its static fields (``tx``) are kept.
          step: an int, ``None`` / ``"latest"`` or ``"best"``.

        Returns:
          ``(state, extra, step)``.

        Raises:
          CheckpointNotFoundError: no such checkpoint in the directory.
          ValueError: the template's structure, shapes or dtypes differ from the checkpoint's.
        """
        self.wait_until_finished()
        step = self._resolve_step(step)
        paths, leaves, treedef = _leaf_paths(template_state)
        arrays = [_to_array(x) for x in leaves]
        self._check_structure(step, paths, arrays)
        abstract = _nest(paths, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays])
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()}
            ),
        )
        flat = _flat_metadata(restored[_STATE])
        new_leaves = []
        for path, tmpl in zip(paths, leaves):
            value = flat[path]
            if _is_key(tmpl):
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(tmpl))
            new_leaves.append(value)
        state = jax.tree_util.tree_unflatten(treedef, new_leaves)
        meta = restored[_META] or {}
        return state, meta.get("extra"), step

    def _check_structure(self, step: int, paths: list, arrays: list) -> None:
        meta = self._manager.item_metadata(step)[_STATE]
        saved = _flat_metadata(getattr(meta, "tree", meta))
        want = dict(zip(paths, arrays))
        missing = [_fmt(p) for p in want if p not in saved]
        unexpected = [_fmt(p) for p in saved if p not in want]
        mismatched = []
        for p, a in want.items():
            if p in saved:
                m = saved[p]
                shape, dtype = tuple(getattr(m, "shape", ())), getattr(m, "dtype", None)
                if shape != tuple(a.shape) or (dtype is not None and np.dtype(dtype) != a.dtype):
                    mismatched.append(
                        f"{_fmt(p)}: checkpoint {dtype}{list(shape)} vs template "
                        f"{a.dtype}{list(a.shape)}"
                    )
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing in checkpoint: {_some(missing)}")
            if unexpected:
                parts.append(f"not in template: {_some(unexpected)}")
            if mismatched:
                parts.append(f"shape/dtype mismatch: {_some(mismatched)}")
            raise ValueError(
                f"template state does not match checkpoint step {step} in {self.directory}; "
                + "; ".join(parts)
            )

    # -- lifecycle -------------------------------------------------------------------------

    def wait_until_finished(self) -> None:
        """Block until any asynchronous save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
