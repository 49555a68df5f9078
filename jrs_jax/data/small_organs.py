"""The ``small_organs`` scenario: a few large structures and many small ones next to them.

Head-and-neck radiotherapy contours many small organs at risk (optic nerves and chiasm,
cochleae, lenses, parotid and submandibular glands) of a few voxels across, each lying
against a much larger structure (brain stem, mandible, eyes). Overlap scores of such
organs drop sharply with a voxel of misalignment, and a segmenter or registration tuned on
the large structures can lose them altogether: methods for them need data where the small
structures are small, and close to (but distinct from) large ones.

Template (:func:`make_small_organs_template`; ``D = 2`` or ``3``, voxels along array axes):

- label 1, ``"body"``: a large ellipse / ellipsoid about the centre (radii ~0.85 of the
  half-size), holding everything else;
- labels ``2 .. L + 1``, ``"large_1" .. "large_L"`` (``num_large``, default 3): ellipses /
  ellipsoids inside the body (radii ~0.22 of the half-size: 7 voxels at 64^2), evenly
  spaced on a circle about the centre, jittered by the key;
- labels ``L + 2 .. L + S + 1``, ``"organ_1" .. "organ_S"`` (``num_small``, default 5 in
  2-D, 7 in 3-D): discs / balls of radius ``r`` uniform in ``small_radius`` (default ``(2,
  4)`` voxels in 2-D, ``(2, 5)`` in 3-D), organ ``j`` next to large structure ``j mod L``
  (its *host*): in a random direction from the host's centre, ``g + r`` beyond its surface,
  ``g`` uniform in ``[0, max_gap]``. A placement is kept only if, on the voxel grid, the
  organ overlaps no large structure (it is drawn only where the body is), lies at most
  ``max_gap`` voxels from its host (gap = distance between the nearest voxel centres minus
  1; 0 when touching), at least one voxel away from the other small organs and from the
  background, and its equivalent radius (of the disc / ball of its volume) is within half a
  voxel of ``small_radius``; else it is redrawn (a ``ValueError`` if no placement is found).

Population: the subjects of :func:`~jrs_jax.data.make_subjects` (the ``anatomy`` model:
smooth random diffeomorphisms, known fields, jittered label means, blur, bias, noise), with
a milder default deformation (``amplitude=1.0`` voxels every ``control_spacing=12``) so
that every small organ survives in every subject (the nearest-neighbour warp of a 2-voxel
disc keeps most of it). Default means: background 0.05, body 0.4, large structures 0.7,
0.55, 0.85 (cycling), small organs alternately 1.0 and 0.15: each small organ contrasts
with the body and its host.

Files (:func:`write_small_organs_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset` (same split, pairs, fields). The ``jrs_jax``
block's ``small_organs`` entry records the labels of the large and small structures and per
small organ its host, radius, centre and measured gap in the template.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from scipy import ndimage

from .sampling import as_rng
from .synthetic import (
    _as_key,
    _check_shape,
    _layout,
    _val_pairs,
    _write_subjects,
    make_subjects,
)

__all__ = ["make_small_organs_template", "small_organ_labels", "write_small_organs_dataset"]

#: Defaults by number of spatial axes: small organs and their radius range (voxels).
DEFAULT_NUM_SMALL = {2: 5, 3: 7}
DEFAULT_SMALL_RADIUS = {2: (2.0, 4.0), 3: (2.0, 5.0)}
_LARGE_MEANS = (0.7, 0.55, 0.85)
_SMALL_MEANS = (1.0, 0.15)
_LARGE_RADIUS = {2: 0.22, 3: 0.3}  # of the half-size: 7 voxels at 64^2, 4.7 at 32^3
_ATTEMPTS = 400  # placements tried per small organ


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _count(name: str, value, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float)):
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    if int(value) != value or int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return int(value)


def _check_radius(small_radius, ndim: int) -> tuple[float, float]:
    if small_radius is None:
        return DEFAULT_SMALL_RADIUS[ndim]
    try:
        vals = [float(v) for v in np.atleast_1d(np.asarray(small_radius, dtype=float)).ravel()]
    except (TypeError, ValueError):
        vals = []
    if len(vals) not in (1, 2) or not np.all(np.isfinite(vals)) or not 1.0 <= vals[0] <= vals[-1]:
        raise ValueError(
            f"small_radius must be a value or (low, high) with 1 <= low <= high voxels; "
            f"got {small_radius!r}"
        )
    return vals[0], vals[-1]


def _check_gap(max_gap) -> float:
    try:
        g = float(max_gap)
    except (TypeError, ValueError):
        g = float("nan")
    if not np.isfinite(g) or g < 0:
        raise ValueError(f"max_gap must be a finite number >= 0 (voxels); got {max_gap!r}")
    return g


def small_organ_labels(num_large: int, num_small: int) -> dict[int, str]:
    """Class names: ``0`` background, ``1`` body, ``large_1..``, ``organ_1..``."""
    names = {0: "background", 1: "body"}
    names |= {2 + k: f"large_{k + 1}" for k in range(num_large)}
    names |= {2 + num_large + j: f"organ_{j + 1}" for j in range(num_small)}
    return names


def _default_means(num_large: int, num_small: int) -> np.ndarray:
    large = [_LARGE_MEANS[k % len(_LARGE_MEANS)] for k in range(num_large)]
    small = [_SMALL_MEANS[j % len(_SMALL_MEANS)] for j in range(num_small)]
    return np.asarray([0.05, 0.4, *large, *small], np.float32)


# --------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------


def _equivalent_radius(mask: np.ndarray) -> float:
    n = float(np.sum(mask))
    return float(np.sqrt(n / np.pi) if mask.ndim == 2 else np.cbrt(3.0 * n / (4.0 * np.pi)))


def _direction(rng: np.random.Generator, ndim: int) -> np.ndarray:
    v = rng.normal(size=ndim)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _ellipsoid(grid: np.ndarray, centre, radii) -> np.ndarray:
    return np.sum(((grid - centre) / radii) ** 2, axis=-1) <= 1.0


def make_small_organs_template(
    key,
    shape: Sequence[int],
    *,
    num_large: int = 3,
    num_small: int | None = None,
    small_radius: float | tuple[float, float] | None = None,
    max_gap: float = 2.0,
) -> tuple[np.ndarray, dict]:
    """The template of the module docstring: body, ``num_large`` large structures and
    ``num_small`` small organs each next to a large one.

    Args:
      key: PRNG key or integer seed (the result is a deterministic function of it and the
        arguments).
      shape: spatial shape ``S`` (2 or 3 axes, each >= 32).
      num_large: ``L >= 1`` large structures.
      num_small: ``S >= 1`` small organs (default 5 in 2-D, 7 in 3-D).
      small_radius: their radius: a value or ``(low, high)`` voxels (default ``(2, 4)`` in
        2-D, ``(2, 5)`` in 3-D).
      max_gap: the largest gap (voxels between the nearest voxel centres) to the host.

    Returns:
      ``(template, info)``: int32 ``[*S]`` with classes ``0 .. L + S + 1`` (every one
      present) and ``info`` with ``large_labels``, ``small_labels``, ``hosts`` (the host
      label of each small organ), ``radii`` (drawn), ``centres`` (voxels), ``gaps``
      (measured) and ``equivalent_radii`` (measured), lists in organ order.

    Raises:
      ValueError: a bad setting (naming it), or small organs that cannot all be placed
        (a larger shape, fewer or smaller organs help).

    Example:
      >>> t, info = make_small_organs_template(0, (64, 64))
      >>> int(t.max()), info["small_labels"]
      (9, [5, 6, 7, 8, 9])
    """
    shape = _check_shape(shape)
    if min(shape) < 32:
        raise ValueError(f"shape must have every axis >= 32 for small organs; got {shape}")
    ndim = len(shape)
    num_large = _count("num_large", num_large, 1)
    num_small = _count("num_small", DEFAULT_NUM_SMALL[ndim] if num_small is None else num_small, 1)
    lo, hi = _check_radius(small_radius, ndim)
    max_gap = _check_gap(max_gap)
    rng = as_rng(key)
    grid = np.moveaxis(np.indices(shape, dtype=np.float64), 0, -1)
    half = (np.asarray(shape, np.float64) - 1.0) / 2.0
    h = float(half.min())
    lab = np.zeros(shape, np.int32)
    body_radii = half * (0.85 + 0.03 * rng.uniform(-1, 1, ndim))
    lab[_ellipsoid(grid, half, body_radii)] = 1
    # large structures: evenly spaced on a circle (axes 0, 1) about the centre, jittered
    large, large_labels = [], []
    phase = rng.uniform(0, 2 * np.pi)
    for k in range(num_large):
        angle = phase + 2 * np.pi * k / num_large
        centre = half.copy()
        dist = 0.0 if num_large == 1 else 0.4 * h
        centre[:2] += dist * np.array([np.cos(angle), np.sin(angle)])
        centre += 0.03 * h * rng.uniform(-1, 1, ndim)
        radii = _LARGE_RADIUS[ndim] * h * (1.0 + 0.1 * rng.uniform(-1, 1, ndim))
        lab[_ellipsoid(grid, centre, radii) & (lab == 1)] = 2 + k
        large.append((centre, radii))
        large_labels.append(2 + k)
    inside = ndimage.binary_erosion(lab > 0, structure=np.ones((3,) * ndim, bool))
    is_large = np.isin(lab, large_labels)
    dist_to = {k: ndimage.distance_transform_edt(lab != k) for k in large_labels}
    small_labels = [2 + num_large + j for j in range(num_small)]
    info = {"hosts": [], "radii": [], "centres": [], "gaps": [], "equivalent_radii": []}
    taken = np.zeros(shape, bool)  # small organs dilated by a voxel
    for j, label in enumerate(small_labels):
        host = large_labels[j % num_large]
        centre_h, radii_h = large[j % num_large]
        for _ in range(_ATTEMPTS):
            r = rng.uniform(lo, hi)
            g = rng.uniform(0.0, max_gap)
            d = _direction(rng, ndim)
            surface = 1.0 / np.sqrt(np.sum((d / radii_h) ** 2))  # host centre -> surface
            centre = centre_h + d * (surface + g + r + 0.5)
            disc = np.sum((grid - centre) ** 2, axis=-1) <= r * r
            if not disc.any() or np.any(disc & (~inside | is_large | taken)):
                continue
            gap = float(dist_to[host][disc].min()) - 1.0
            eq = _equivalent_radius(disc)
            if gap <= max_gap and lo - 0.5 <= eq <= hi + 0.5:
                break
        else:
            raise ValueError(
                f"could not place small organ {j + 1} of num_small={num_small} (radius "
                f"{small_radius or (lo, hi)}, max_gap={max_gap}) next to large structure "
                f"{host} in shape {shape}; use a larger shape, fewer or smaller organs"
            )
        lab[disc] = label
        taken |= ndimage.binary_dilation(disc, structure=np.ones((3,) * ndim, bool))
        info["hosts"].append(host)
        info["radii"].append(round(float(r), 4))
        info["centres"].append(np.round(centre, 4).tolist())
        info["gaps"].append(round(gap, 4))
        info["equivalent_radii"].append(round(eq, 4))
    return lab, {"large_labels": large_labels, "small_labels": small_labels, **info}


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _check_num_labels(num_labels, total: int) -> None:
    if num_labels is not None and int(num_labels) not in (4, total):
        raise ValueError(
            f"num_labels must be {total} for these small-organ settings (body + num_large + "
            f"num_small foreground classes), or None / 4 (the default of `jrs-jax "
            f"make-synthetic --labels`, taken to mean the same); got {num_labels}"
        )


def write_small_organs_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (64, 64),
    num_subjects: int = 20,
    num_labelled: int | None = None,
    num_heldout: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int | None = None,
    spacing: float | Sequence[float] = 1.0,
    num_large: int = 3,
    num_small: int | None = None,
    small_radius: float | tuple[float, float] | None = None,
    max_gap: float = 2.0,
    amplitude: float = 1.0,
    control_spacing: int = 12,
    label_means: Sequence[float] | None = None,
    name: str = "jrs_jax_small_organs",
    **subject_kwargs,
) -> str:
    """Generate a small-organ population and write it in the Learn2Reg layout (the
    ``small_organs`` scenario, ``jrs-jax make-synthetic --scenario small_organs``).

    The template is :func:`make_small_organs_template`'s (the key's first split), the
    subjects :func:`~jrs_jax.data.make_subjects`' of it (its second), the layout, split,
    held-out validation pairs and field files those of
    :func:`~jrs_jax.data.write_learn2reg_dataset`. ``labels`` names the classes
    (``"body"``, ``"large_k"``, ``"organ_j"``).

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing, name: as
        :func:`~jrs_jax.data.write_learn2reg_dataset` (every axis >= 32).
      num_labels: ``1 + num_large + num_small`` foreground classes, fixed by the template;
        ``None`` or that number; 4, the command line's default ``--labels``, is accepted
        and means the same; anything else is a ``ValueError``.
      num_large, num_small, small_radius, max_gap: the template
        (:func:`make_small_organs_template`).
      amplitude, control_spacing: the subjects' deformations (mild by default, so that the
        small organs survive).
      label_means: one mean per class (default: the module docstring's).
      **subject_kwargs: forwarded to :func:`~jrs_jax.data.make_subjects` (``noise``,
        ``bias``, ...).

    Returns:
      The path of ``dataset.json``.

    Raises:
      ValueError: a bad setting (naming it).

    Example:
      >>> p = write_small_organs_dataset("/tmp/so", key=0, num_subjects=6)
      >>> load_learn2reg(p).label_names[5]
      'organ_1'
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    ndim = len(lay.shape)
    n_small = _count("num_small", DEFAULT_NUM_SMALL[ndim] if num_small is None else num_small, 1)
    n_large = _count("num_large", num_large, 1)
    total = 1 + n_large + n_small
    _check_num_labels(num_labels, total)
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)
    template, organs = make_small_organs_template(
        k_template,
        lay.shape,
        num_large=n_large,
        num_small=n_small,
        small_radius=small_radius,
        max_gap=max_gap,
    )
    means = _default_means(n_large, n_small) if label_means is None else label_means
    subjects = make_subjects(
        k_subjects,
        template,
        num_subjects=lay.n,
        amplitude=amplitude,
        control_spacing=control_spacing,
        label_means=means,
        **subject_kwargs,
    )
    labels = small_organ_labels(n_large, n_small)
    settings = dict(amplitude=amplitude, control_spacing=control_spacing, **subject_kwargs)
    if label_means is not None:
        settings["label_means"] = list(label_means)
    return _write_subjects(
        root,
        lay,
        template=template,
        subjects=subjects,
        pairs=_val_pairs(k_pairs, lay),
        name=name,
        description="jrs_jax synthetic small organs next to large ones (jrs_jax.data.small_organs)",
        generator="jrs_jax.data.small_organs",
        seed=seed,
        num_labels=total,
        settings={k: v for k, v in settings.items() if v is not None},
        info={
            "small_organs": {
                "num_large": n_large,
                "num_small": n_small,
                "small_radius": list(_check_radius(small_radius, ndim)),
                "max_gap": float(max_gap),
                "means": np.round(np.asarray(means, float), 6).tolist(),
                "gap_definition": (
                    "distance between the nearest voxel centres of the organ and its host "
                    "minus 1 (voxels between them; 0 when touching)"
                ),
                **organs,
            }
        },
        convention=(
            "voxels along array axes; labels_i = warp_labels(template, disp_i, "
            "mode='nearest'); warp(image_i, disp_inv_i) is in template space"
        ),
        label_names=labels,
    )
