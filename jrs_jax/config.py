"""Experiment configurations: plain nested dicts, loaded from ``configs/*.py`` files.

A config file defines ``get_config(arg: str | None) -> dict``; ``arg`` is the text after a
colon in the path (``configs/voxelmorph.py:diffeo,smoke``), a comma-separated list of
variant flags the file understands. Every config file understands ``smoke``, which shrinks
the run (tiny shapes, a few steps) for tests. Values are JSON types only, so the resolved
config is written next to the run as ``config.json`` and is all that is needed to rebuild
the networks later (``jrs-jax register --checkpoint RUN``).

Overrides use dotted keys and Python/JSON literals, checked against the existing value::

    >>> cfg = {"train": {"steps": 100, "lr": 1e-4}, "method": "voxelmorph"}
    >>> apply_overrides(cfg, ["train.steps=5", "train.lr=3e-4"])["train"]
    {'steps': 5, 'lr': 0.0003}
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ConfigError",
    "apply_overrides",
    "load_config",
    "parse_flags",
    "save_config",
    "shrink_for_smoke",
    "use_3d_data",
]


class ConfigError(ValueError):
    """A config file, variant or override that cannot be used (the message says which)."""


def parse_flags(arg: str | None, known: Iterable[str]) -> set[str]:
    """The set of comma-separated flags in ``arg``; unknown flags raise ``ConfigError``."""
    flags = {f.strip() for f in (arg or "").split(",") if f.strip()}
    known = set(known)
    unknown = flags - known
    if unknown:
        raise ConfigError(
            f"unknown config variant(s) {sorted(unknown)}; this config knows {sorted(known)}"
        )
    return flags


def _split_spec(spec: str) -> tuple[str, str | None]:
    path, sep, arg = str(spec).partition(":")
    # Windows drive letters are not a concern here; a colon always starts the variant list.
    return path, (arg if sep else None)


def load_config(spec: str | os.PathLike) -> dict:
    """Load ``PATH.py[:ARG]`` (calls ``get_config(ARG)``) or ``PATH.json`` (a saved config).

    Raises:
      ConfigError: missing file, no ``get_config``, a non-dict result, or non-JSON values.
    """
    path, arg = _split_spec(os.fspath(spec))
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    if path.endswith(".json"):
        if arg is not None:
            raise ConfigError(f"{path}: a JSON config takes no ':{arg}' variant")
        try:
            with open(path) as f:
                cfg = json.load(f)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
    elif path.endswith(".py"):
        name = "jrs_jax_config_" + os.path.splitext(os.path.basename(path))[0]
        spec_ = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec_)
        try:
            spec_.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"{path}: failed to import ({type(exc).__name__}: {exc})") from exc
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config(arg)")
        cfg = module.get_config(arg)
    else:
        raise ConfigError(f"{path}: expected a .py config (with get_config) or a .json config")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: get_config returned {type(cfg).__name__}, expected a dict")
    try:
        json.dumps(cfg)
    except TypeError as exc:
        raise ConfigError(f"{path}: config values must be JSON types ({exc})") from exc
    return cfg


def _parse_value(text: str) -> Any:
    low = text.strip()
    if low in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[low]
    try:
        return ast.literal_eval(low)
    except (ValueError, SyntaxError):
        return low  # a bare string


def _compatible(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return not (isinstance(old, int) and isinstance(new, float) and not new.is_integer())
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return True
    return type(old) is type(new)


def apply_overrides(config: Mapping, overrides: Iterable[str]) -> dict:
    """A copy of ``config`` with ``key.sub=value`` overrides applied.

    Values are parsed as Python literals (``3``, ``1e-4``, ``(16, 32)``, ``'ncc'``), ``true``
    / ``false`` / ``null``, or else kept as strings. The key must exist and the new value must
    have a compatible type (an int may become a float only if the key held a float; tuples
    become lists), so a typo never silently adds an unused setting.

    Raises:
      ConfigError: malformed override, unknown key (naming the known keys at that level), or
        an incompatible type.
    """
    cfg = copy.deepcopy(dict(config))
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = key.strip().split(".")
        node = cfg
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {item!r}: {where!r} is not a config section")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node:
            raise ConfigError(
                f"override {item!r}: unknown key {key.strip()!r}; known keys here: {sorted(node)}"
            )
        value = _parse_value(text)
        if isinstance(value, tuple):
            value = list(value)
        old = node[leaf]
        if isinstance(old, dict):
            raise ConfigError(f"override {item!r}: {key.strip()!r} is a section, not a value")
        if not _compatible(old, value):
            raise ConfigError(
                f"override {item!r}: {key.strip()!r} holds {type(old).__name__} {old!r}, "
                f"got {type(value).__name__} {value!r}"
            )
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float):
            value = int(value)  # a whole float (checked by _compatible) for an int key
        node[leaf] = value
    return cfg


def save_config(config: Mapping, path: str | os.PathLike) -> None:
    """Write ``config`` as indented JSON, atomically."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(config, indent=1, sort_keys=True) + "\n"  # fails before any file exists
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def use_3d_data(config: dict) -> dict:
    """The ``3d`` variant shared by the configs: the 3-D synthetic folder, batch size 1."""
    config["data"].update(dataset="jrs_synthetic_3d/dataset.json", batch_size=1)
    config["eval"]["batch_size"] = 1
    return config


def shrink_for_smoke(config: dict, *, models=("model",), steps: int = 4, every: int = 2) -> dict:
    """The ``smoke`` variant shared by the configs: two-level 4/8-channel networks in the
    ``models`` sections, batch 2, ``steps`` steps, validation and checkpoints every ``every``,
    two evaluation pairs."""
    for section in models:
        config[section].update(features=[4, 8], decoder_features=[8, 4])
    config["data"]["batch_size"] = 2
    config["train"].update(steps=steps, log_every=1, eval_every=every, ckpt_every=every)
    config["eval"].update(max_pairs=2, batch_size=2)
    return config
