"""Data parallelism over all visible devices with ``jax.sharding`` (Mesh + NamedSharding).

The state is replicated, every batch array is split along its leading (batch) axis over a
1-D mesh axis ``"data"``, and the jitted steps are left to XLA's SPMD partitioner: the
gradient of a mean loss over a sharded batch is all-reduced automatically, so a step on
``n`` devices computes the same update as on one (up to float summation order).

Multi-host (several machines, e.g. a TPU pod or a GPU cluster): call
``jax.distributed.initialize()`` (with ``coordinator_address``, ``num_processes`` and
``process_id`` outside managed clusters) in every process **before** any other JAX call;
``jax.devices()`` then lists the devices of all hosts and :func:`data_mesh` spans them.
Each process must feed the same global batch (our batches are a pure function of
``(seed, step)``, so they do); ``shard_batch`` places the slices each host owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all of them)."""
    devs = np.asarray(list(devices) if devices is not None else jax.devices())
    return Mesh(devs, ("data",))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` on all devices of ``mesh`` (replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Split each ``[B, ...]`` array of ``batch`` along ``B`` over the ``"data"`` axis.

    Raises:
      ValueError: ``B`` not divisible by the number of devices (naming the array).
    """
    n = mesh.devices.size
    out = {}
    for name, x in batch.items():
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"batch array {name!r} of shape {x.shape} cannot be split over {n} devices: "
                f"the batch size must be a multiple of {n}"
            )
        out[name] = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    return out
