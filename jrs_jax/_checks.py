"""Small argument checks shared by the spatial ops, losses and training code (clear errors,
static only)."""

from __future__ import annotations

from collections.abc import Sequence


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` naming both."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
    return value


def check_field(disp, *, name: str = "disp") -> int:
    """Check that ``disp`` is a ``[B, *S, D]`` field with ``D == len(S)`` in {2, 3}; return D."""
    ndim = disp.ndim - 2
    if ndim not in (2, 3) or disp.shape[-1] != ndim:
        raise ValueError(
            f"{name} must have shape [B, *S, D] with D = len(S) in (2, 3); got shape "
            f"{tuple(disp.shape)}"
        )
    return ndim


def check_image(image, ndim: int, *, name: str = "image") -> None:
    """Check that ``image`` is ``[B, *S, C]`` with ``len(S) == ndim``."""
    if image.ndim != ndim + 2:
        raise ValueError(
            f"{name} must have shape [B, *S, C] with {ndim} spatial axes (channels last); got "
            f"shape {tuple(image.shape)}"
        )


def check_label_map(lab, *, batched: bool = False, name: str = "labels") -> int:
    """Check that ``lab`` is a label map ``[*S]`` (``batched``: ``[B, *S]``) with ``len(S)``
    in {2, 3}; return ``len(S)``. A 4-D array without ``batched`` gets a hint."""
    spatial = lab.ndim - int(batched)
    if spatial not in (2, 3):
        raise ValueError(
            f"{name} must be [*S]{' with a batch axis [B, *S]' if batched else ''} with "
            f"len(S) in (2, 3); got shape {lab.shape}"
            + ("" if batched or lab.ndim != 4 else " (pass batched=True for a batch)")
        )
    return spatial
