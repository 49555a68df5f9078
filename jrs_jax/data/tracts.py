"""The ``tracts`` scenario: overlapping tube-like structures ("white-matter tracts") with
multi-label maps, cross-sectional or longitudinal.

White-matter tracts cross each other: a voxel may belong to two of them, so a segmentation
is a set of binary maps, one per tract (sigmoid outputs, not a softmax over exclusive
classes). Methods for it (multi-label segmentation jointly with registration, longitudinal
consistency of tract segmentations) need data where the overlaps are known exactly.

Template (:func:`make_tract_template`; voxels, array axes; in 3-D the tracts lie on a
curved surface so that they cross as in 2-D):

- a brain: an ellipse(-oid) of white matter (tissue 1), its outer band a darker cortex
  (tissue 2), a dark ventricle (tissue 3) placed where it is farthest from the tracts,
  background 0 outside (``tissue``, int32 ``[*S]``);
- ``K = num_tracts`` tracts: smooth curved tubes (radius ``radius``, jittered per tract, 2-4
  voxels at 64^2, thinner in 3-D) around centrelines tangent to a circle about the brain's
  centre at ``K`` spread angles (a triangle for ``K = 3``), bent slightly, ending inside the
  brain. Every two tracts cross once, away from the others (for ``K = 3``; more tracts may
  share a crossing). ``tracts``: uint8 ``[*S, K]``, ``1`` where a voxel is within the
  tract's radius of its centreline; each tract is one connected tube.

Image (rendered by the model of :func:`~jrs_jax.data.make_subjects`: per-class means
jittered per subject, partial-volume blur, smooth multiplicative bias, noise): the tissue
means (background 0.02, white matter 0.45, cortex 0.3, ventricle 0.1) and, on tract voxels,
white matter plus the *sum* of the contrasts of the tracts there (tract ``k`` alone:
``0.45 + 0.25 + 0.02 (k - (K - 1) / 2)``): tracts are brighter than white matter and overlaps
brighter than any single tract, so the image shows every overlap where the labels have it.
``label_means`` (``K + 1`` values: white matter, then each tract alone) replaces them.

Subjects: the template pulled back by per-subject smooth random fields (the machinery of
:mod:`jrs_jax.data.longitudinal`: ``exp(v_s + j_st)``, subject-level ground truth fields
kept; each tract is the template's tube pulled back: the voxels whose template point, ``x +
disp(x)``, is within the tract's radius of its centreline). With ``num_timepoints >= 2``
each subject is scanned several times and one tract (``changing_tract``) thickens or thins
between scans:
its cross-section scaled about its centreline (in the subject's first scan) by ``(1 +
change_s / r)^t`` (``r`` the tract's radius, ``change_s`` voxels of radius per step), the
tissue around pushed or pulled along over ``change_width`` voxels; small jitter and
independent noise per scan, as :mod:`jrs_jax.data.longitudinal`.

Files (:func:`write_tracts_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset` with multi-label maps (``labelsTr/*`` uint8
``[*S3, K]``, ``jrs_jax.label_format = "multi"``, ``labels`` naming the channels ``tract_1``
...): read back with ``Dataset.multi_label`` True.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..spatial.warp import warp
from .longitudinal import (
    _check_change,
    _draw_change,
    _growth_fields,
    _largest_scale,
    _render_scans,
    _scan_layout,
    _scan_motion,
    _scan_names,
    _warp_template,
    _with_change,
    _within_subject_val_pairs,
)
from .sampling import as_rng
from .synthetic import (
    _as_key,
    _check_shape,
    _flat,
    _layout,
    _layout_info,
    _render_args,
    _val_pairs,
    _write_population,
)

__all__ = ["make_tract_subjects", "make_tract_template", "write_tracts_dataset"]

TISSUE_NAMES = ("background", "white_matter", "cortex", "ventricle")
TISSUE_MEANS = (0.02, 0.45, 0.3, 0.1)
MAX_TRACTS = 6  # the renderer has one class per set of overlapping tracts: 2^K - 1


def _tract_names(k: int) -> dict[int, str]:
    return {i: f"tract_{i + 1}" for i in range(k)}


# --------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------


def _crossing_angles(k: int) -> tuple[np.ndarray, float]:
    """Tangent-point angles of ``k`` lines about a circle (no two parallel) and the largest
    angle between two of them (``<= pi``)."""
    slots = k if k % 2 else k + 1  # even k: one slot left empty, else opposite lines
    phi = 2 * np.pi * np.arange(k) / slots
    gaps = np.abs(phi[:, None] - phi[None])
    gaps = np.minimum(gaps, 2 * np.pi - gaps)
    return phi, float(gaps.max())


def _normalised(p: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return np.linalg.norm((p - centre) / radii, axis=-1)


def _centrelines(rng: np.random.Generator, shape, centre, radii, k: int) -> list[np.ndarray]:
    """``k`` centrelines ``[P, D]`` (points every 0.25 voxel) inside the brain ellipse(-oid)
    ``(centre, radii)``; in 3-D on a shared smooth surface over axes 0, 1."""
    d = len(shape)
    rho = float(radii[:2].min())
    phi, widest = _crossing_angles(k)
    phi = phi + rng.uniform(0, 2 * np.pi)
    offset = rho * min(0.25, 0.6 * np.cos(widest / 2)) * rng.uniform(0.9, 1.1, k)
    s = np.arange(-3 * max(shape), 3 * max(shape), 0.25)
    tilt = rng.uniform(-0.15, 0.15, 3)
    lines = []
    for j in range(k):
        n = np.array([np.cos(phi[j]), np.sin(phi[j])])
        t = np.array([-n[1], n[0]])
        bend = rng.uniform(-0.08, 0.08) * rho
        half = 0.85 * rho
        xy = centre[:2] + offset[j] * n + s[:, None] * t + bend * (s[:, None] / half) ** 2 * n
        if d == 3:
            x, y = ((xy - centre[:2]) / radii[:2]).T
            z = centre[2] + radii[2] * (tilt[0] * x + tilt[1] * y + tilt[2] * (x**2 - y**2))
            pts = np.concatenate([xy, z[:, None]], -1)
        else:
            pts = xy
        inside = _normalised(pts, centre, radii) <= 0.85
        mid = int(np.argmin(np.abs(s)))
        if not inside[mid]:
            raise ValueError(f"shape {tuple(shape)} too small for {k} crossing tracts")
        lo, hi = mid, mid
        while lo > 0 and inside[lo - 1]:
            lo -= 1
        while hi < len(s) - 1 and inside[hi + 1]:
            hi += 1
        lines.append(pts[lo : hi + 1].astype(np.float32))
    return lines


def _grid(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(
        np.float32
    )


def _min_overlap(radii: Sequence[float], ndim: int) -> float:
    """A lower bound (half the continuous value) on the voxels two crossing tubes of radii
    ``r_i <= r_j`` share: the parallelogram ``4 r_i r_j / sin(angle) >= 4 r_i r_j`` (2-D),
    Steinmetz's ``16 r_i^3 / 3`` (3-D, perpendicular, smaller radius)."""
    r = sorted(float(x) for x in radii)[:2]
    return 0.5 * (4 * r[0] * r[1] if ndim == 2 else 16 * r[0] ** 3 / 3)


def make_tract_template(
    key: jax.Array,
    shape: Sequence[int],
    *,
    num_tracts: int = 3,
    radius: float | None = None,
) -> dict:
    """The tract template: a brain with crossing tubes (the model: module docstring).

    Args:
      key: PRNG key; the result is a deterministic function of ``key`` and the arguments.
      shape: spatial shape ``S`` (2-D or 3-D; 48^2 / 24^3 and up).
      num_tracts: ``K``, 2 to 6.
      radius: tube radius in voxels (jittered by +-15 % per tract); default ``3 min(S) /
        64`` in 2-D, ``2 min(S) / 32`` in 3-D (at least 1.2).

    Returns:
      dict: ``tracts`` uint8 ``[*S, K]``, ``tissue`` int32 ``[*S]`` (0 background, 1 white
      matter, 2 cortex, 3 ventricle), ``centrelines`` (``K`` float32 ``[P_k, D]`` arrays),
      ``radii`` float32 ``[K]``, ``distance`` float32 ``[*S, K]`` (to each centreline;
      ``tracts = distance <= radii``).

    Raises:
      ValueError: ``num_tracts`` out of range, or a shape too small for every pair of tracts
        to cross (fewer shared voxels than :func:`min_overlap`) and each to be one tube.
    """
    shape = _check_shape(shape)
    k, d = int(num_tracts), len(shape)
    if not 2 <= k <= MAX_TRACTS:
        raise ValueError(f"num_labels (tracts) must be in [2, {MAX_TRACTS}]; got {num_tracts}")
    rng = as_rng(key)
    half = (np.asarray(shape, np.float64) - 1) / 2
    centre = half + rng.uniform(-0.02, 0.02, d) * half
    radii = np.asarray([0.8, 0.7, 0.7][:d]) * half * rng.uniform(0.97, 1.03, d)
    if radius is None:
        radius = 3.0 * min(shape) / 64 if d == 2 else 2.0 * min(shape) / 32
    radius = max(float(radius), 1.2)
    tube_r = (radius * rng.uniform(0.85, 1.15, k)).astype(np.float32)
    lines = _centrelines(rng, shape, centre, radii, k)
    grid = _grid(shape)
    flat = grid.reshape(-1, d)
    dist = np.stack(
        [cKDTree(p).query(flat)[0].reshape(shape) for p in lines], -1
    )  # [*S, K] distance to each centreline
    tracts = (dist <= tube_r).astype(np.uint8)  # = _warp_tracts at disp 0
    # tissue: brain, its cortex band, a ventricle where the tracts are farthest
    q = _normalised(grid, centre, radii)
    cortex = max(1.5, 0.1 * float(radii.min()))
    tissue = np.where(q <= 1.0, 1, 0).astype(np.int32)
    tissue[(q <= 1.0) & (q > 1.0 - cortex / float(radii.min()))] = 2
    clear = np.min(dist - tube_r, axis=-1)
    clear[q > 0.6] = -np.inf
    at = np.unravel_index(int(np.argmax(clear)), shape)
    vent_r = float(np.clip(0.5 * (clear[at] - 1.0), 1.0, 0.15 * radii.min()))
    tissue[np.linalg.norm(grid - np.asarray(at, np.float32), axis=-1) <= vent_r] = 3
    _check_tracts(tracts, tube_r, f"shape {shape} with {k} tracts")
    return {
        "tracts": tracts,
        "tissue": tissue,
        "centrelines": lines,
        "radii": tube_r,
        "distance": dist.astype(np.float32),
    }


def _check_tracts(tracts: np.ndarray, radii, what: str) -> None:
    k, d = tracts.shape[-1], tracts.ndim - 1
    for i in range(k):
        n = ndimage.label(tracts[..., i])[1]
        if n != 1:
            raise ValueError(f"{what}: tract {i + 1} is in {n} pieces; use a larger shape")
        for j in range(i + 1, k):
            shared = int(np.sum(tracts[..., i] & tracts[..., j]))
            if shared < _min_overlap([radii[i], radii[j]], d):
                raise ValueError(
                    f"{what}: tracts {i + 1} and {j + 1} share {shared} voxels, fewer than "
                    f"{_min_overlap([radii[i], radii[j]], d):.0f}; use a larger shape or fewer "
                    "tracts"
                )


# --------------------------------------------------------------------------------------------
# subjects
# --------------------------------------------------------------------------------------------


@jax.jit
def _warp_tracts(distance, radii, disp):
    """The tracts of the template pulled back by every ``disp`` ``[M, *S, D]``: uint8 ``[M,
    *S, K]``, ``1`` where the template's distance to the centreline (``distance`` ``[*S,
    K]``, sampled linearly at ``x + disp(x)``) is within the radius (``radii`` ``[K]``): the
    sub-voxel tube, not a nearest-neighbour copy of the template's voxels."""
    m = jnp.broadcast_to(distance[None], (disp.shape[0], *distance.shape))
    return (warp(m, disp, order=1) <= radii).astype(jnp.uint8)


def _classes(tissue: np.ndarray, tracts: np.ndarray) -> np.ndarray:
    """Render classes ``[..., *S]``: the tissue where no tract is, ``3 + code`` on tracts
    (``code = sum_k 2^k tract_k``, one class per set of overlapping tracts)."""
    code = np.tensordot(tracts.astype(np.int32), 2 ** np.arange(tracts.shape[-1]), axes=1)
    return np.where(code > 0, len(TISSUE_NAMES) - 1 + code, tissue).astype(np.int32)


def _class_means(label_means, k: int) -> np.ndarray:
    """Mean of each render class (:func:`_classes`): tissue means, then white matter plus the
    contrasts of the tracts in each set. ``label_means``: white matter and each tract alone
    (``K + 1`` values)."""
    if label_means is None:
        wm = TISSUE_MEANS[1]
        alone = wm + 0.25 + 0.02 * (np.arange(k) - (k - 1) / 2)
    else:
        given = np.asarray(label_means, np.float64).reshape(-1)
        if given.shape != (k + 1,) or not np.all(np.isfinite(given)):
            raise ValueError(
                f"label_means must hold {k + 1} finite values for {k} tracts (white matter, "
                f"then each tract alone); got {list(np.ravel(label_means))}"
            )
        wm, alone = float(given[0]), given[1:]
    tissue = np.asarray(TISSUE_MEANS, np.float64)
    tissue[1] = wm
    codes = np.arange(1, 2**k)
    bits = (codes[:, None] >> np.arange(k)[None]) & 1
    sets = wm + bits @ (np.asarray(alone) - wm)
    return np.concatenate([tissue, sets]).astype(np.float32)


def make_tract_subjects(
    key: jax.Array,
    template: dict,
    *,
    num_subjects: int,
    num_timepoints: int = 1,
    changing_tract: int = 0,
    change: float | tuple[float, float] | None = None,
    direction: str = "random",
    change_width: float | None = None,
    jitter: float = 0.3,
    jitter_spacing: int | None = None,
    amplitude: float = 2.0,
    control_spacing: int = 12,
    intensity_jitter: float = 0.03,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict:
    """Draw subjects of the tract ``template`` (:func:`make_tract_template`), each scanned
    ``num_timepoints`` times (the model: module docstring).

    Args:
      key: PRNG key (the results are a deterministic function of the key and arguments).
      template: the dict of :func:`make_tract_template`.
      num_subjects: ``N``.
      num_timepoints: ``T`` scans per subject (1: cross-sectional).
      changing_tract: index ``0..K-1`` of the tract that thickens or thins (``T >= 2``).
      change: change of its radius per time step, voxels: a value or ``(low, high)``;
        default 15 % to 30 % of the tract's radius (``0.48..0.96`` voxels at 64^2).
      direction: ``"random"``, ``"grow"`` (thicken) or ``"shrink"`` (thin).
      change_width: decay width of the push on the tissue around (voxels; default 2).
      jitter, jitter_spacing, amplitude, control_spacing, intensity_jitter, bias,
        bias_spacing, noise, blur_sigma, steps: as
        :func:`~jrs_jax.data.make_longitudinal_subjects` (subject motion: 2 voxels every 12
        by default).
      label_means: ``K + 1`` values: white matter, then each tract alone (overlaps add the
        tracts' contrasts over white matter).

    Returns:
      dict of numpy arrays: ``images`` float32 ``[N, T, *S, 1]``, ``tracts`` uint8 ``[N, T,
      *S, K]``, ``tissue`` int32 ``[N, T, *S]``, ``disp`` / ``disp_inv`` float32 ``[N, T,
      *S, D]`` (template -> scan / scan -> template), ``volumes`` int64 ``[N, T, K]`` (voxels
      of each tract); with ``T >= 2`` also ``change`` float32 ``[N]`` (signed voxels of
      radius per step, > 0 thickens), ``radius_scale`` float32 ``[N, T]`` (``(1 + change /
      r)^t``), ``changing_tract``, ``width``.

    Example:
      >>> t = make_tract_template(jax.random.PRNGKey(0), (64, 64))
      >>> s = make_tract_subjects(jax.random.PRNGKey(1), t, num_subjects=2)
      >>> s["tracts"].shape
      (2, 1, 64, 64, 3)
    """
    tracts = np.asarray(template["tracts"], np.uint8)
    shape, k = tracts.shape[:-1], tracts.shape[-1]
    dist, radii = jnp.asarray(template["distance"]), jnp.asarray(template["radii"])
    d = len(shape)
    n, t = int(num_subjects), int(num_timepoints)
    if n < 1:
        raise ValueError(f"num_subjects must be >= 1; got {num_subjects}")
    if t < 1:
        raise ValueError(f"num_timepoints must be >= 1; got {num_timepoints}")
    means = _class_means(label_means, k)
    traced, static = _render_args(
        shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    out: dict = {}
    if t >= 2:
        c = int(changing_tract)
        if not 0 <= c < k:
            raise ValueError(f"changing_tract must be in [0, {k - 1}]; got {changing_tract}")
        r = float(template["radii"][c])
        change = (0.15 * r, 0.3 * r) if change is None else change
        lo, hi = _check_change(change, direction, r, t, f"tract {c + 1}")
        width = 2.0 if change_width is None else float(change_width)
        if width <= 0:
            raise ValueError(f"change_width must be > 0; got {change_width}")
    k_change, k_motion, k_render = jax.random.split(key, 3)
    u, u_inv = _scan_motion(
        k_motion,
        shape,
        n,
        t,
        amplitude=amplitude,
        jitter=jitter,
        control_spacing=control_spacing,
        jitter_spacing=jitter_spacing,
        steps=steps,
    )
    if t >= 2:
        rate = _draw_change(k_change, n, lo, hi, direction)
        first = np.asarray(_warp_tracts(dist, radii, u))[::t, ..., c] > 0
        offsets = _centreline_offsets(template["centrelines"][c], np.asarray(u_inv)[::t])
        growth = _growth_fields(first, offsets, _largest_scale(r, hi, t, direction), width)
        disp, disp_inv = _with_change(u, u_inv, growth, np.log1p(rate / r), t, steps)
        out = {
            "change": rate,
            "radius_scale": ((1.0 + rate[:, None] / r) ** np.arange(t)[None]).astype(np.float32),
            "changing_tract": c,
            "change_range": (lo, hi),
            "width": width,
        }
    else:
        disp, disp_inv = u, u_inv
    warped = np.asarray(_warp_tracts(dist, radii, disp))
    tissue = np.asarray(
        _warp_template(jnp.asarray(template["tissue"]), disp, num_classes=len(TISSUE_NAMES))
    )
    images = _render_scans(
        k_render,
        jnp.asarray(_classes(tissue, warped)),
        jnp.asarray(means),
        *traced,
        t=t,
        num_classes=len(means),
        **static,
    )
    warped = warped.reshape(n, t, *shape, k)
    return {
        "images": np.asarray(images, np.float32).reshape(n, t, *shape, 1),
        "tracts": warped,
        "tissue": tissue.reshape(n, t, *shape).astype(np.int32),
        "disp": np.asarray(disp, np.float32).reshape(n, t, *shape, d),
        "disp_inv": np.asarray(disp_inv, np.float32).reshape(n, t, *shape, d),
        "volumes": np.sum(warped, axis=tuple(range(2, 2 + d)), dtype=np.int64),
        **out,
    }


def _centreline_offsets(line: np.ndarray, u_inv: np.ndarray) -> np.ndarray:
    """``y - p(y)`` ``[N, *S, D]``: ``p`` the nearest point of the template centreline
    ``line`` ``[P, D]`` carried into each subject's scan (``p + u_inv(p)``, ``u_inv`` ``[N,
    *S, D]`` scan -> template)."""
    shape, d = u_inv.shape[1:-1], u_inv.shape[-1]
    flat = _grid(shape).reshape(-1, d)
    out = []
    for field in u_inv:
        at = [
            ndimage.map_coordinates(field[..., j], line.T, order=1, mode="nearest")
            for j in range(d)
        ]
        moved = line + np.stack(at, -1)
        idx = cKDTree(moved).query(flat)[1]
        out.append((flat - moved[idx]).reshape(*shape, d))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_tracts_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (64, 64),
    num_subjects: int = 20,
    num_labelled: int | None = None,
    num_heldout: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int = 3,
    spacing: float | Sequence[float] = 1.0,
    num_timepoints: int = 1,
    changing_tract: int = 0,
    change: float | tuple[float, float] | None = None,
    direction: str = "random",
    radius: float | None = None,
    name: str = "jrs_jax_tracts",
    **subject_kwargs,
) -> str:
    """Generate a tract population and write it in the Learn2Reg layout with multi-label
    maps (the ``tracts`` scenario, ``jrs-jax make-synthetic --scenario tracts``).

    ``num_labels`` is the number of tracts ``K`` (label channels). Cross-sectional
    (``num_timepoints=1``): the layout, split and validation pairs of
    :func:`~jrs_jax.data.write_learn2reg_dataset` (scans ``sub_NNNN_0000``). Longitudinal
    (``num_timepoints >= 2``): those of :func:`~jrs_jax.data.write_longitudinal_dataset`
    (scans ``sub_NNNN_tT`` of subject ``sub_NNNN``, within-subject validation pairs), the
    tract ``changing_tract`` thickening or thinning. Labels: uint8 ``[*S3, K]`` files
    (``label_format = "multi"``), channels named ``tract_1 .. tract_K``; the template file
    holds the template's tracts. Subject fields of every scan are written. The ``jrs_jax``
    block records the generator, seed, settings, the tracts' radii and, per scan, each
    tract's volume (and the change when longitudinal).

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing, name: as
        :func:`~jrs_jax.data.write_learn2reg_dataset` (longitudinal: as
        :func:`~jrs_jax.data.write_longitudinal_dataset`).
      num_labels: number of tracts (2 to 6).
      num_timepoints, changing_tract, change, direction: :func:`make_tract_subjects`.
      radius: the tubes' radius (:func:`make_tract_template`).
      **subject_kwargs: forwarded to :func:`make_tract_subjects` (``amplitude``, ``noise``,
        ``label_means``...).

    Returns:
      The path of ``dataset.json``.
    """
    t = int(num_timepoints)
    longitudinal = t >= 2
    lay = _layout(
        shape,
        num_subjects,
        num_labelled,
        num_heldout,
        None if longitudinal else num_val_pairs,
        spacing,
    )
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)
    if longitudinal:
        pairs = _within_subject_val_pairs(lay, t, num_val_pairs)
    else:
        pairs = _val_pairs(k_pairs, lay)
    template = make_tract_template(k_template, lay.shape, num_tracts=num_labels, radius=radius)
    s = make_tract_subjects(
        k_subjects,
        template,
        num_subjects=lay.n,
        num_timepoints=t,
        changing_tract=changing_tract,
        change=change,
        direction=direction,
        **subject_kwargs,
    )
    k = int(num_labels)
    scans = _scan_layout(lay, t)._replace(n_pairs=len(pairs))
    names = _scan_names(lay.n, t) if longitudinal else {}
    scan_names = names.get("names") or [f"sub_{i:04d}_0000" for i in range(lay.n)]
    volumes = _flat(s["volumes"])
    settings = {key_: (v if np.isscalar(v) else list(v)) for key_, v in subject_kwargs.items()}
    info = {
        "names": _tract_names(k),
        "radii": np.round(template["radii"], 4).tolist(),
        "image": (
            "tissue means (background, white matter, cortex, ventricle) and, on tracts, white "
            "matter plus the sum of the contrasts of the tracts there: overlaps brightest"
        ),
        # voxels of each tract (channel order) in each scan
        "volumes": {scan_names[i]: volumes[i].tolist() for i in range(len(scan_names))},
    }
    if longitudinal:
        info["changing_tract"] = int(s["changing_tract"])
        info["change"] = [float(c) for c in s["change_range"]]
        info["direction"] = direction
        info["width"] = float(s["width"])
        info["subject_change"] = {
            f"sub_{i:04d}": round(float(s["change"][i]), 6) for i in range(lay.n)
        }
        # the changing tract's radius relative to the subject's first scan
        info["radius_factor"] = {
            scan_names[i * t + tt]: round(float(s["radius_scale"][i, tt]), 6)
            for i in range(lay.n)
            for tt in range(t)
        }
    extra = {
        "generator": "jrs_jax.data.tracts",
        "seed": seed,
        **_layout_info(lay, k),
        "num_timepoints": t,
        "num_scans": scans.n,
        "subject_settings": settings,
        "tracts": info,
        "disp_convention": (
            "voxels along array axes; tracts_scan = warp(template tracts, disp_scan, order=0) "
            "per channel; ground truth compose(disp_fixed, disp_inv_moving)"
        ),
    }
    return _write_population(
        root,
        scans,
        template=template["tracts"],
        images=_flat(s["images"]),
        labels=_flat(s["tracts"]),
        pairs=pairs,
        fields=(_flat(s["disp"]), _flat(s["disp_inv"])),
        name=name,
        description="jrs_jax synthetic crossing tracts, multi-label (jrs_jax.data.tracts)",
        extra=extra,
        label_names=_tract_names(k),
        label_format="multi",
        **names,
    )
