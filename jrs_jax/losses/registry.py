"""Losses by name, for configs: ``similarity("local_ncc")``, ``regulariser("diffusion")``.

Each entry is the plain loss function (``[B]`` per-example values, lower is better);
keyword hyper-parameters come from the config next to the name.
"""

from __future__ import annotations

from collections.abc import Callable

from .regularisation import bending_energy, diffusion, gradient_l1, gradient_l2, huber_smoothness
from .similarity import l1, local_ncc, mse, mutual_information, ncc, ssim

__all__ = ["REGULARISERS", "SIMILARITIES", "regulariser", "similarity"]

#: Image dissimilarities ``f(warped, fixed, **kw) -> [B]``.
SIMILARITIES: dict[str, Callable] = {
    "local_ncc": local_ncc,
    "ncc": ncc,
    "mse": mse,
    "l1": l1,
    "mutual_information": mutual_information,
    "ssim": ssim,
}

#: Field regularisers ``f(disp, **kw) -> [B]``.
REGULARISERS: dict[str, Callable] = {
    "diffusion": diffusion,
    "gradient_l2": gradient_l2,
    "gradient_l1": gradient_l1,
    "bending_energy": bending_energy,
    "huber_smoothness": huber_smoothness,
}


def _get(table: dict[str, Callable], kind: str, name: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}")
    return table[name]


def similarity(name: str) -> Callable:
    """The similarity loss called ``name`` (see :data:`SIMILARITIES`)."""
    return _get(SIMILARITIES, "similarity", name)


def regulariser(name: str) -> Callable:
    """The regulariser called ``name`` (see :data:`REGULARISERS`)."""
    return _get(REGULARISERS, "regulariser", name)
