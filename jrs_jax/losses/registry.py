"""Losses by name, for configs: ``similarity("local_ncc")``, ``regulariser("diffusion")``.

Each entry is the plain loss function (``[B]`` per-example values, lower is better);
keyword hyper-parameters come from the config next to the name. :func:`similarity_term` and
:func:`regulariser_term` build the :func:`~jrs_jax.losses.term` of a method config's ``loss``
section (``similarity`` + ``similarity_kwargs``; ``regulariser`` + ``regulariser_kwargs`` +
``reg_weight``), the two terms every registration objective starts from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .combine import Term, ref, term
from .regularisation import bending_energy, diffusion, gradient_l1, gradient_l2, huber_smoothness
from .similarity import l1, local_ncc, mse, mutual_information, ncc, ssim

__all__ = [
    "REGULARISERS",
    "SIMILARITIES",
    "regulariser",
    "regulariser_term",
    "similarity",
    "similarity_term",
]

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


def _takes_mask(fn: Callable) -> bool:
    return "mask" in inspect.signature(fn).parameters


def similarity_term(
    loss: Mapping[str, Any],
    *inputs: str,
    key: str = "similarity",
    weight: Any = 1.0,
    mask: str | None = None,
) -> Term:
    """``term(similarity(loss[key]), *inputs, weight=weight, **loss[key + "_kwargs"])``.

    ``inputs`` default to ``("warped", "fixed")``; ``key="label_similarity"`` reads a second
    similarity of the same section (e.g. between warped and fixed label maps).

    ``mask`` names a call-time input ``[B, *S]`` / ``[B, *S, 1]`` passed as the similarity's
    ``mask=`` (``ref(mask)``), for the similarities that take one (``mse``, ``l1``,
    ``local_ncc``): the images are then compared inside it only (e.g. ignoring a lesion or the
    region outside the body).

    Example:
      >>> t = similarity_term({"similarity": "local_ncc", "similarity_kwargs": {"window": 5}})
      >>> t.inputs, dict(t.hparams)
      (('warped', 'fixed'), {'window': 5})
      >>> similarity_term({"similarity": "local_ncc"}, mask="sim_mask").required_inputs()
      ('warped', 'fixed', 'sim_mask')
    """
    names = inputs or ("warped", "fixed")
    fn = similarity(loss[key])
    kwargs = dict(loss.get(f"{key}_kwargs", {}))
    if mask is not None:
        if not _takes_mask(fn):
            masked = [n for n, f in SIMILARITIES.items() if _takes_mask(f)]
            raise ValueError(f"similarity {loss[key]!r} takes no mask; these do: {masked}")
        kwargs["mask"] = ref(mask)
    return term(fn, *names, weight=weight, **kwargs)


def regulariser_term(
    loss: Mapping[str, Any], field: str = "disp", *, mask: str | None = None
) -> Term:
    """``term(regulariser(loss["regulariser"]), field, weight=loss["reg_weight"],
    **loss["regulariser_kwargs"])``.

    ``mask`` names a call-time input ``[B, *S]`` / ``[B, *S, 1]`` passed as the regulariser's
    ``mask=`` (``ref(mask)``): the field is then regularised only inside it (e.g. one region's
    field in discontinuity-preserving registration).

    Example:
      >>> loss = {"regulariser": "diffusion", "reg_weight": 0.1}
      >>> regulariser_term(loss, "disp_k", mask="region_k").required_inputs()
      ('disp_k', 'region_k')
    """
    kwargs = dict(loss.get("regulariser_kwargs", {}))
    if mask is not None:
        kwargs["mask"] = ref(mask)
    return term(regulariser(loss["regulariser"]), field, weight=float(loss["reg_weight"]), **kwargs)
