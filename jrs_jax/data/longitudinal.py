"""The ``longitudinal`` scenario: several scans of each subject, a large variation across
subjects and a small, local change within a subject.

Longitudinal methods (one network segmenting every time point of a subject and registering
them, consistency losses across time points) need data where a subject's scans differ by far
less than two subjects do, with a known change between time points: a structure that grows
or shrinks (atrophy, a growing lesion or ventricle), the rest of the anatomy unchanged but
for small positioning differences.

Model (conventions of :mod:`jrs_jax.data.synthetic`: pull-back warps, voxels along array
axes, ``compose(u, v) = u + v(x + u)`` is ``phi_v o phi_u``). Subject ``s`` of template
``T`` (:func:`~jrs_jax.data.make_template`) scanned at times ``t = 0 .. T - 1``:

- *across subjects* (large): a stationary velocity ``v_s = random_velocity(amplitude,
  control_spacing)`` as :func:`~jrs_jax.data.make_subjects` draws, with a larger default
  amplitude and smoother field; per-subject label means (``intensity_jitter``) and bias
  field, shared by the subject's scans;
- *within a subject* (small): scan ``t`` has ``exp(v_s + j_st)`` with ``j_st`` a small,
  very smooth per-scan jitter (``jitter`` voxels of control-point standard deviation, control
  points every ``jitter_spacing`` voxels), and the changing structure (template label
  ``changing_label``) scaled by ``k_s^t``, ``k_s = 1 + a_s / R_s``, about its centroid
  ``c_s`` in the subject's first scan (``t = 0``, unchanged): ``R_s`` is its equivalent
  radius there and ``a_s`` the subject's change per time step in voxels of that radius
  (magnitude uniform in ``change``, sign from ``direction``), so the structure's radius grows
  or shrinks by ``a_s`` voxels per step and its volume by the factor ``k_s^(D t)`` (in the
  scan's own frame: the subject's deformation does not distort it). Independent image noise
  per scan.

The change is the flow ``D_st = exp(-t log(k_s) g_s)`` of the growth velocity ``g_s``
(:func:`growth_velocity`): ``g_s(y) = (y - c_s) tau(y)``, ``tau = 1`` (a uniform scaling) on
the structure at its largest (dilated by a voxel) and decaying like a Gaussian of the
distance to it, width ``change_width`` (2 voxels) beyond: the tissue around the structure is
pushed away or pulled in, less and less further out, and the other structures hardly move.
Scan ``(s, t)`` is the template pulled back by ``exp(v_s + j_st) o D_st`` (the change first,
in the scan's frame)::

    disp[s, t]     = compose(d_st, exp(v_s + j_st))     template -> scan (d_st: D_st - id)
    disp_inv[s, t] = compose(exp(-(v_s + j_st)), d_st_inv)
    labels[s, t]   = warp_labels(template, disp[s, t], mode="nearest")

so for two scans of one subject (fixed ``f``, moving ``m``) ``compose(disp[f],
disp_inv[m])``, what :func:`~jrs_jax.data.pair_batch` composes from subject fields, is the
within-subject ground truth (``warp(moving, u) ~ fixed``): the growth between the two time
points and the jitter difference, exact up to interpolation.

Files (:func:`write_longitudinal_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset`, one entry per scan ``sub_NNNN_tT`` with
``subject = "sub_NNNN"`` and ``time = T`` (``Dataset.subject_ids`` / ``Dataset.scans``
group them), subject-level ground-truth fields of every scan, and ``registration_val`` the
within-subject ordered pairs (both orders) of the held-out subjects.

The machinery (growth velocity, scan fields, rendering, scan layout and within-subject
pairs) is shared with :mod:`jrs_jax.data.tracts`, where the change is a thickening of one
tract about its centreline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from ..spatial.fields import compose, integrate_velocity
from ..spatial.random import random_velocity
from ..spatial.warp import warp_labels
from .synthetic import (
    _as_key,
    _check_means,
    _check_template,
    _flat,
    _Layout,
    _layout,
    _layout_info,
    _render,
    _render_args,
    _write_population,
    make_template,
)

__all__ = [
    "growth_velocity",
    "make_longitudinal_subjects",
    "write_longitudinal_dataset",
]

DIRECTIONS = ("random", "grow", "shrink")


# --------------------------------------------------------------------------------------------
# the change: growth about a centre (a point, or a tract's centreline)
# --------------------------------------------------------------------------------------------


def growth_velocity(offset, distance, *, width: float) -> np.ndarray:
    """The growth velocity ``g = offset * tau``, float32 ``[*S, D]``.

    ``offset`` ``[*S, D]`` is the vector from the centre of the growth to each voxel: ``y -
    c`` for a blob about its centroid, ``y - p(y)`` (``p`` the nearest centreline point) for a
    tube; ``distance`` ``[*S]`` is each voxel's distance (voxels) to the zone that must scale
    exactly (the structure at its largest; 0 inside). ``tau = exp(-distance^2 / (2
    width^2))``. The flow ``exp(-lam * g)`` scales that zone by ``e^lam`` about the centre
    (``lam > 0`` grows, ``< 0`` shrinks; exactly when the zone is star-shaped about it) and
    fades out over ``width`` voxels outside it: the tissue around is pushed away or pulled in.
    """
    offset = np.asarray(offset, np.float32)
    tau = np.exp(-(np.asarray(distance, np.float32) ** 2) / (2.0 * float(width) ** 2))
    return (offset * tau[..., None]).astype(np.float32)


def _zone_distance(mask: np.ndarray, offset: np.ndarray, scale: float) -> np.ndarray:
    """Distance ``[*S]`` (voxels) to the zone that must scale exactly: the structure
    ``mask`` (bool ``[*S]``) scaled by ``scale`` about its centre (``offset`` ``[*S, D]`` from
    :func:`growth_velocity`), with the structure itself, dilated by one voxel; 0 inside."""
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in mask.shape], indexing="ij"), -1)
    back = (grid - offset * (1.0 - 1.0 / float(scale))).reshape(-1, mask.ndim).T
    zone = ndimage.map_coordinates(mask.astype(np.float32), back, order=0, mode="constant")
    zone = ndimage.binary_dilation((zone.reshape(mask.shape) > 0.5) | mask)
    return ndimage.distance_transform_edt(~zone).astype(np.float32)


def _growth_fields(masks: np.ndarray, offsets: np.ndarray, scale: float, width: float):
    """:func:`growth_velocity` of each subject's structure ``masks[s]`` (bool ``[N, *S]``)
    about its centre (``offsets`` ``[N, *S, D]``), exact out to ``scale`` times its size:
    float32 ``[N, *S, D]``."""
    return np.stack(
        [
            growth_velocity(off, _zone_distance(m, off, scale), width=width)
            for m, off in zip(masks, offsets, strict=True)
        ]
    )


def _check_change(change, direction: str, radius: float, num_timepoints: int, what: str):
    """``(low, high)`` from ``change`` (a value or a range, voxels per step), checked: the
    structure (equivalent radius ``radius``) must keep at least one voxel of radius when it
    shrinks for ``num_timepoints - 1`` steps."""
    lo, hi = (float(change), float(change)) if np.isscalar(change) else map(float, change)
    if not 0.0 <= lo <= hi:
        raise ValueError(
            f"change must be a value or (low, high) with 0 <= low <= high; got {change}"
        )
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    steps = num_timepoints - 1
    if direction != "grow" and (hi >= radius or radius * (1.0 - hi / radius) ** steps < 1.0):
        raise ValueError(
            f"change={change} is too large for {what} (equivalent radius {radius:.2f} voxels): "
            f"shrinking by {hi:g} voxels per step for {steps} steps leaves less than one voxel "
            "of radius; use a smaller change, fewer time points or direction='grow'"
        )
    return lo, hi


@partial(jax.jit, static_argnames=("n",))
def _change_draws(key, *, n):
    k_mag, k_sign = jax.random.split(key)
    return jax.random.uniform(k_mag, (n,)), jax.random.bernoulli(k_sign, 0.5, (n,))


def _draw_change(key, n: int, lo: float, hi: float, direction: str) -> np.ndarray:
    """Signed change per time step of each subject, float32 ``[N]`` (voxels of radius):
    magnitude uniform in ``[lo, hi]``, sign from ``direction``."""
    u, coin = (np.asarray(x) for x in _change_draws(key, n=n))
    mag = lo + (hi - lo) * u.astype(np.float64)
    sign = {"grow": 1.0, "shrink": -1.0}.get(direction)
    sign = np.where(coin, 1.0, -1.0) if sign is None else sign
    return (mag * sign).astype(np.float32)


def _equivalent_radius(mask: np.ndarray) -> float:
    """Radius of the disc / ball of the volume of the boolean ``mask`` (voxels)."""
    n = float(np.sum(mask))
    return float(np.sqrt(n / np.pi) if mask.ndim == 2 else np.cbrt(3.0 * n / (4.0 * np.pi)))


def _largest_scale(radius: float, hi: float, num_timepoints: int, direction: str) -> float:
    """The largest linear scale the structure reaches: ``(1 + hi / R)^(T - 1)`` (1 if it
    only shrinks)."""
    return 1.0 if direction == "shrink" else (1.0 + hi / radius) ** (num_timepoints - 1)


# --------------------------------------------------------------------------------------------
# scans: fields, labels, images (jitted, compiled once per shape)
# --------------------------------------------------------------------------------------------


# A few jitted pieces whose shapes repeat within a run (``[2 N T, *S, D]`` fields): each is
# compiled once per shape and reused; compiling the spatial ops dominates small runs.
_integrate = jax.jit(integrate_velocity, static_argnames=("steps",))
_compose = jax.jit(compose)


@partial(jax.jit, static_argnames=("shape", "n", "t", "control_spacing", "jitter_spacing"))
def _scan_velocities(key, amplitude, jitter, *, shape, n, t, control_spacing, jitter_spacing):
    """``[w, -w]`` ``[2 N T, *S, D]`` with ``w[s T + t] = v_s + j_st``: the subject's
    velocity (``amplitude``, ``control_spacing``) plus the scan's jitter."""
    k_vel, k_jit = jax.random.split(key)
    v = random_velocity(
        k_vel, shape, batch_size=n, amplitude=amplitude, control_spacing=control_spacing
    )
    j = random_velocity(
        k_jit, shape, batch_size=n * t, amplitude=jitter, control_spacing=jitter_spacing
    )
    d = len(shape)
    w = (v[:, None] + j.reshape(n, t, *shape, d)).reshape(n * t, *shape, d)
    return jnp.concatenate([w, -w])


def _scan_motion(
    key, shape, n: int, t: int, *, amplitude, jitter, control_spacing, jitter_spacing, steps
) -> tuple[jax.Array, jax.Array]:
    """``(exp(v_s + j_st), exp(-(v_s + j_st)))``, ``[N T, *S, D]`` each (row ``s T + t``)."""
    w = _scan_velocities(
        key,
        jnp.float32(amplitude),
        jnp.float32(jitter),
        shape=tuple(shape),
        n=n,
        t=t,
        control_spacing=int(control_spacing),
        jitter_spacing=max(8, max(shape) // 2) if jitter_spacing is None else int(jitter_spacing),
    )
    u = _integrate(w, steps=int(steps))
    return u[: n * t], u[n * t :]


def _with_change(u, u_inv, growth: np.ndarray, log_scale: np.ndarray, t: int, steps: int):
    """The scan fields with the change: ``D_st = exp(-t log_scale[s] growth[s])`` in the
    scan's own frame first, ``(compose(d_st, u), compose(u_inv, d_st_inv))`` (``u``,
    ``u_inv`` ``[N T, *S, D]`` from :func:`_scan_motion`; ``growth`` ``[N, *S, D]``)."""
    n = growth.shape[0]
    lam = (log_scale[:, None] * np.arange(t)[None]).astype(np.float32)  # [N, T]
    g = -lam.reshape(n, t, *([1] * (growth.ndim - 1))) * growth[:, None]
    g = jnp.asarray(g.reshape(n * t, *growth.shape[1:]))
    grow = _integrate(jnp.concatenate([g, -g]), steps=int(steps))  # same shape as u, u_inv
    out = _compose(jnp.concatenate([grow[: n * t], u_inv]), jnp.concatenate([u, grow[n * t :]]))
    return out[: n * t], out[n * t :]


@partial(jax.jit, static_argnames=("num_classes",))
def _warp_template(template, disp, *, num_classes):
    """``[*S]`` integer template pulled back by every ``disp`` ``[M, *S, D]`` (nearest)."""
    tmpl = jnp.broadcast_to(template[None], (disp.shape[0], *template.shape))
    return warp_labels(tmpl, disp, num_classes=num_classes, mode="nearest")


@partial(jax.jit, static_argnames=("t", "num_classes", "bias_spacing", "blur_sigma"))
def _render_scans(
    key, labels, means, intensity_jitter, bias, noise, *, t, num_classes, bias_spacing, blur_sigma
):
    """Images ``[N * T, *S, 1]`` of class maps ``[N * T, *S]`` (row ``s T + t``) with the
    model of :func:`~jrs_jax.data.make_subjects`; the label means and the bias field are the
    subject's (the same keys for its ``T`` scans), the noise is drawn per scan."""
    k_mean, k_bias, k_noise = jax.random.split(key, 3)
    n = labels.shape[0] // t

    def scan_t(k, lab):  # the scans of time t: the subjects' means and bias, new noise
        return _render(
            (k_mean, k_bias, k),
            lab,
            means,
            intensity_jitter,
            bias,
            noise,
            num_classes=num_classes,
            bias_spacing=bias_spacing,
            blur_sigma=blur_sigma,
        )

    per_time = labels.reshape(n, t, *labels.shape[1:])
    images = jax.vmap(scan_t, in_axes=(0, 1), out_axes=1)(jax.random.split(k_noise, t), per_time)
    return images.reshape(n * t, *labels.shape[1:], 1)


def make_longitudinal_subjects(
    key: jax.Array,
    template,
    *,
    num_subjects: int,
    num_timepoints: int = 2,
    changing_label: int = 2,
    change: float | tuple[float, float] = (1.0, 2.0),
    direction: str = "random",
    change_width: float | None = None,
    jitter: float = 0.3,
    jitter_spacing: int | None = None,
    amplitude: float = 3.0,
    control_spacing: int = 12,
    intensity_jitter: float = 0.05,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict:
    """Draw subjects of ``template``, each scanned ``num_timepoints`` times, whose structure
    ``changing_label`` grows or shrinks between scans (the model: module docstring).

    Args:
      key: PRNG key (the results are a deterministic function of the key and arguments).
      template: integer label map ``[*S]`` (e.g. :func:`~jrs_jax.data.make_template`).
      num_subjects: ``N`` subjects (persons).
      num_timepoints: ``T >= 2`` scans per subject.
      changing_label: the template label that changes (default 2, the organ of
        :func:`~jrs_jax.data.make_template`: compact and nested in the body; label 1, the body,
        holds every other structure, which would scale with it).
      change: change of the structure's equivalent radius per time step, in voxels: a value
        or ``(low, high)`` (magnitude uniform in it per subject).
      direction: ``"random"`` (each subject grows or shrinks with probability 1/2),
        ``"grow"`` or ``"shrink"``.
      change_width: decay width (voxels) of the push on the surrounding tissue beyond the
        scaled zone (default 2).
      jitter: control-point standard deviation (voxels) of the per-scan smooth jitter.
      jitter_spacing: its control-point spacing (default ``max(8, max(S) // 2)``: global).
      amplitude, control_spacing: the across-subject velocities (as
        :func:`~jrs_jax.data.make_subjects`; larger and smoother by default: ``3`` voxels
        every ``12``; give 3-D volumes of ~32^3 a smaller amplitude).
      intensity_jitter, bias, bias_spacing, noise, blur_sigma, steps, label_means: as
        :func:`~jrs_jax.data.make_subjects`; the label means and the bias field are drawn per
        subject (shared by its scans), the noise per scan.

    Returns:
      dict of numpy arrays (``N`` subjects, ``T`` time points): ``images`` float32 ``[N, T,
      *S, 1]``, ``labels`` int32 ``[N, T, *S]``, ``disp`` / ``disp_inv`` float32 ``[N, T, *S,
      D]`` (template -> scan / scan -> template), ``change`` float32 ``[N]`` (signed voxels
      of radius per step; > 0 grows), ``scale`` float32 ``[N, T]`` (the structure's linear
      scale ``(1 + change / R_s)^t``; its volume factor is ``scale^D``), ``volumes`` int64
      ``[N, T]`` (voxels of ``changing_label`` in each scan), ``centroids`` float32 ``[N,
      D]`` and ``radii`` float32 ``[N]`` (``c_s``, ``R_s`` in each subject's first scan);
      and ``changing_label``, ``width``, ``template_volume``.

    Raises:
      ValueError: bad settings (naming the setting): ``num_timepoints < 2``, a
        ``changing_label`` the template does not have, a ``change`` that would make the
        structure vanish, an unknown ``direction``...

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (48, 48))
      >>> s = make_longitudinal_subjects(jax.random.PRNGKey(1), t, num_subjects=2)
      >>> s["labels"].shape, s["volumes"].shape
      ((2, 2, 48, 48), (2, 2))
    """
    template = _check_template(template)
    n, t = int(num_subjects), int(num_timepoints)
    if n < 1:
        raise ValueError(f"num_subjects must be >= 1; got {num_subjects}")
    if t < 2:
        raise ValueError(f"num_timepoints must be >= 2 for longitudinal data; got {num_timepoints}")
    label = int(changing_label)
    present = sorted(int(k) for k in np.unique(template) if k > 0)
    if label not in present:
        raise ValueError(
            f"changing_label={changing_label} is not a foreground label of the template "
            f"(labels {present}; with num_labels=1 only the body, label 1, exists)"
        )
    num_classes = int(template.max()) + 1
    means = _check_means(label_means, num_classes)
    radius = _equivalent_radius(template == label)
    lo, hi = _check_change(change, direction, radius, t, f"label {label}")
    width = 2.0 if change_width is None else float(change_width)
    if width <= 0:
        raise ValueError(f"change_width must be > 0; got {change_width}")
    traced, static = _render_args(
        template.shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    shape, d = template.shape, template.ndim
    k_change, k_motion, k_render = jax.random.split(key, 3)
    rate = _draw_change(k_change, n, lo, hi, direction)
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
    tmpl = jnp.asarray(template, jnp.int32)
    # the structure in each subject's first scan, before any change: the centre of its change
    first = np.asarray(_warp_template(tmpl, u, num_classes=num_classes))[::t] == label
    centroids = np.stack([np.argwhere(m).mean(0) for m in first]).astype(np.float32)
    radii = np.asarray([_equivalent_radius(m) for m in first], np.float32)
    _check_change(change, direction, float(radii.min()), t, f"label {label} of a subject")
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
    offsets = (grid[None] - centroids.reshape(n, *([1] * d), d)).astype(np.float32)
    growth = _growth_fields(
        first, offsets, _largest_scale(float(radii.min()), hi, t, direction), width
    )
    disp, disp_inv = _with_change(u, u_inv, growth, np.log1p(rate / radii), t, steps)
    labels = _warp_template(tmpl, disp, num_classes=num_classes)
    images = _render_scans(
        k_render, labels, jnp.asarray(means), *traced, t=t, num_classes=num_classes, **static
    )
    labels = np.asarray(labels, np.int32).reshape(n, t, *shape)
    return {
        "images": np.asarray(images, np.float32).reshape(n, t, *shape, 1),
        "labels": labels,
        "disp": np.asarray(disp, np.float32).reshape(n, t, *shape, d),
        "disp_inv": np.asarray(disp_inv, np.float32).reshape(n, t, *shape, d),
        "change": rate,
        "scale": ((1.0 + rate[:, None] / radii[:, None]) ** np.arange(t)[None]).astype(np.float32),
        "volumes": np.sum(labels == label, axis=tuple(range(2, 2 + d)), dtype=np.int64),
        "changing_label": label,
        "centroids": centroids,
        "radii": radii,
        "width": width,
        "template_volume": int(np.sum(template == label)),
    }


# --------------------------------------------------------------------------------------------
# files: scans of subjects, within-subject validation pairs
# --------------------------------------------------------------------------------------------


def _scan_layout(lay: _Layout, t: int) -> _Layout:
    """The layout of ``lay``'s subjects with ``t`` scans each, counted in scans (row ``s t +
    tt`` is scan ``tt`` of subject ``s``)."""
    return lay._replace(n=lay.n * t, h=lay.h * t, n_train=lay.n_train * t, n_lab=lay.n_lab * t)


def _scan_names(n: int, t: int) -> dict[str, list]:
    """``names`` (``sub_NNNN_tT``), ``subject_ids`` (``sub_NNNN``) and ``times`` of the rows
    of :func:`_scan_layout`."""
    rows = [(s, tt) for s in range(n) for tt in range(t)]
    return {
        "names": [f"sub_{s:04d}_t{tt}" for s, tt in rows],
        "subject_ids": [f"sub_{s:04d}" for s, _ in rows],
        "times": [tt for _, tt in rows],
    }


def _pair_ranks(t: int) -> list[tuple[int, int]]:
    """The ordered ``(fixed, moving)`` time pairs of ``t`` scans, in the order they are
    picked: consecutive ones (later fixed), consecutive ones (earlier fixed), the others."""
    forward = [(a + 1, a) for a in range(t - 1)]
    backward = [(a, a + 1) for a in range(t - 1)]
    rest = [(a, b) for a in range(t) for b in range(t) if abs(a - b) > 1]
    return forward + backward + rest


def _within_subject_val_pairs(lay: _Layout, t: int, num_val_pairs) -> list[tuple[int, int]]:
    """Ordered pairs (both orders) of two scans of one held-out subject of ``lay``
    (subjects), as rows of :func:`_scan_layout`: all of them (``num_val_pairs=None``, or more
    than exist), else ``num_val_pairs`` picked round-robin over the subjects in the order of
    :func:`_pair_ranks` (a subject's scans are covered first: the reader loads only held-out
    scans that a pair references); listed subject by subject, fixed-major by time."""
    ranked = [(s * t + a, s * t + b) for a, b in _pair_ranks(t) for s in range(lay.n_train, lay.n)]
    k = len(ranked) if num_val_pairs is None else int(num_val_pairs)
    if k < 0:
        raise ValueError(f"num_val_pairs must be >= 0 (or None for all); got {num_val_pairs}")
    return sorted(ranked[:k])


def write_longitudinal_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (64, 64),
    num_subjects: int = 20,
    num_labelled: int | None = None,
    num_heldout: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int = 4,
    spacing: float | Sequence[float] = 1.0,
    num_timepoints: int = 2,
    changing_label: int = 2,
    change: float | tuple[float, float] = (1.0, 2.0),
    direction: str = "random",
    name: str = "jrs_jax_longitudinal",
    **subject_kwargs,
) -> str:
    """Generate a longitudinal population and write it in the Learn2Reg layout (the
    ``longitudinal`` scenario, ``jrs-jax make-synthetic --scenario longitudinal``).

    Layout (``NNNN`` subject, ``T`` time point)::

        dataset.json
        imagesTr/sub_NNNN_tT.nii.gz        every scan ("subject": "sub_NNNN", "time": T)
        labelsTr/sub_NNNN_tT.nii.gz        labels of every scan
        fieldsTr/sub_NNNN_tT_disp.nii.gz   template -> scan ground truth (and _disp_inv)
        template/template_0000.nii.gz

    ``num_subjects`` counts subjects (persons), each with ``num_timepoints`` scans. The first
    ``num_labelled`` training subjects list labels for all their scans; the last
    ``num_heldout`` subjects are held out (labels on disk, found by the reader) and
    ``registration_val`` holds their within-subject ordered pairs, both orders:
    ``num_val_pairs`` of them (``None``: all; capped at the ``H T (T - 1)`` that exist),
    picked round-robin over the subjects, consecutive time points first, so that a few
    pairs reference every held-out scan (the reader loads only those), listed subject by
    subject. Held-out scans no pair references are written but not read back. The
    ``jrs_jax`` block records the generator, seed, settings, the
    changing label, each subject's change and the per-scan volume of the changing structure.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_labelled, num_heldout, num_labels, spacing, name: as
        :func:`~jrs_jax.data.write_learn2reg_dataset` (subjects, not scans).
      num_val_pairs: within-subject validation pairs (default and at most all).
      num_timepoints, changing_label, change, direction: the longitudinal change
        (:func:`make_longitudinal_subjects`).
      **subject_kwargs: forwarded to :func:`make_longitudinal_subjects` (``jitter``,
        ``amplitude``, ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_longitudinal_dataset("/tmp/long", key=0, shape=(48, 48), num_subjects=6)
      >>> ds = load_learn2reg(p)
      >>> len(ds), len(ds.subject_ids())
      (12, 6)
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, None, spacing)
    t = int(num_timepoints)
    pairs = _within_subject_val_pairs(lay, t, num_val_pairs)
    key, seed = _as_key(key)
    k_template, k_subjects, _ = jax.random.split(key, 3)  # the template of `anatomy`
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    s = make_longitudinal_subjects(
        k_subjects,
        template,
        num_subjects=lay.n,
        num_timepoints=t,
        changing_label=changing_label,
        change=change,
        direction=direction,
        **subject_kwargs,
    )
    scans = _scan_layout(lay, t)._replace(n_pairs=len(pairs))
    names = _scan_names(lay.n, t)
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in subject_kwargs.items()}
    extra = {
        "generator": "jrs_jax.data.longitudinal",
        "seed": seed,
        **_layout_info(lay, num_labels),
        "num_timepoints": t,
        "num_scans": scans.n,
        "subject_settings": settings,
        "longitudinal": _change_info(s, lay, t, names["names"], change, direction),
        "disp_convention": (
            "voxels along array axes; labels_scan = warp_labels(template, disp_scan, "
            "mode='nearest'); within-subject ground truth compose(disp_fixed, disp_inv_moving)"
        ),
    }
    return _write_population(
        root,
        scans,
        template=template,
        images=_flat(s["images"]),
        labels=_flat(s["labels"]),
        pairs=pairs,
        fields=(_flat(s["disp"]), _flat(s["disp_inv"])),
        name=name,
        description="jrs_jax synthetic longitudinal scans (jrs_jax.data.longitudinal)",
        extra=extra,
        **names,
    )


def _change_info(s: dict, lay: _Layout, t: int, names, change, direction) -> dict:
    """The ``longitudinal`` entry of the ``jrs_jax`` block."""
    d = len(lay.shape)
    return {
        "changing_label": int(s["changing_label"]),
        "change": [float(c) for c in np.broadcast_to(np.asarray(change, float), (2,))],
        "direction": direction,
        "width": float(s["width"]),
        "model": (
            "scan (s, t): the template pulled back by exp(v_s + j_st) o D_st; D_st scales the "
            "changing structure of the subject's first scan about its centroid by "
            "(1 + change_s / radius_s)^t (exactly on it, the push on the tissue around fading "
            "over 'width' voxels)"
        ),
        "template_volume": int(s["template_volume"]),
        # per subject: signed change of the equivalent radius per time step (voxels; > 0
        # grows), the structure's equivalent radius and centroid in its first scan
        "subjects": {
            f"sub_{i:04d}": {
                "change": round(float(s["change"][i]), 6),
                "radius": round(float(s["radii"][i]), 6),
                "centroid": np.round(s["centroids"][i], 4).tolist(),
            }
            for i in range(lay.n)
        },
        # expected volume of the changing structure relative to the subject's first scan
        "volume_factor": {
            names[i * t + tt]: round(float(s["scale"][i, tt]) ** d, 6)
            for i in range(lay.n)
            for tt in range(t)
        },
        # voxels of the changing label in each scan (as written)
        "volumes": {
            names[i * t + tt]: int(s["volumes"][i, tt]) for i in range(lay.n) for tt in range(t)
        },
    }
