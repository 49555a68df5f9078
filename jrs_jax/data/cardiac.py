"""The ``cardiac`` scenario: beating-heart sequences (2-D+t short-axis slices, 3-D+t
ellipsoidal ventricles) labelled at end-diastole and end-systole only, with the labels of
every frame kept for evaluation.

Joint motion estimation and segmentation of cardiac cine MR (Qin et al. 2018) registers the
frames of one cardiac cycle to each other and segments them although manual labels exist at
two frames only, end-diastole (ED) and end-systole (ES); its claim is measured by Dice on the
*unlabelled* frames. This scenario gives such sequences with the labels of every frame known
(:attr:`Subject.hidden_labels <jrs_jax.data.Subject>`, never training labels) and the exact
motion.

Anatomy (classes). ``0`` background, ``1`` LV blood pool (bright), ``2`` LV myocardium (a
ring, 2-D, or an ellipsoidal shell, 3-D, mid-grey), ``3`` RV blood pool (a bright crescent
against the septum, on the +axis-1 side of the ring); the heart lies in textured surrounding
tissue (the body), itself in dark air. With ``num_labels=4`` the surrounding tissue is label
``4``; with ``num_labels=3`` (the default) it is background (it is in the image either way).
3-D volumes are short-axis stacks: the long axis of the ventricle is array axis 2.

Model (conventions of :mod:`jrs_jax.data.synthetic`: pull-back warps, voxels along array
axes). A *canonical heart* ``T`` is defined analytically on canonical coordinates ``z``
(normalised ``q = (z - c0) / r``, ``r = r0 (1, 1[, e])``: ``|q| < 1`` pool, ``|q| < 1 + w``
myocardium, ``1 + w <= |q| < 1 + w + d b(n)`` RV, ``b`` a bump of the direction
``n = q / |q|`` around +axis 1, 75 degrees either side; ``r0 = 0.15 min(S[:2])``, ``e =
1.6`` (capped at ``0.3 S[2] / r0``), ``w = 0.45``, ``d = 0.85``). Its motion over the cycle
acts on the *volume coordinate* ``rho = |q|^D`` along each ray (direction kept): frame ``t``
maps an ED point at ``rho`` to ``P_t(rho) = rho - V_t(rho)``, piecewise linear with

- ``V = a rho`` in the pool (``a = s_t f``): the pool shrinks to ``1 - s_t f`` of its ED
  volume, ``f`` the sequence's ``contraction`` (ejection fraction), ``s_t`` the cycle curve;
- ``V = a`` in the myocardium: the wall keeps its volume exactly (area in 2-D; in the images,
  through the anatomy map below, within ~5%) and thickens as the pool shrinks;
- ``V = a + g (rho - rho_epi)`` in the RV (``g = s_t f_rv``): the RV shrinks to
  ``1 - s_t f_rv``;
- ``V`` decreasing linearly to 0 over a band of tissue beyond (``band``), which stretches to
  fill the space; nothing moves farther out.

Then a rotation about the LV axis by ``s_t alpha k(rho)`` (2-D: the heart turns by up to
``alpha``, ``twist``) or ``s_t alpha k(rho) zeta`` (3-D: torsion, base and apex turning
opposite ways, ``zeta`` the normalised long-axis position), ``k`` 1 up to the epicardium and
decaying to 0 with the band. Both steps are volume preserving in the wall and invertible in
closed form, so the motion ``F_t`` (ED -> frame t) and its inverse ``M_t`` are exact.
Cycle curve (:func:`cardiac_cycle`): ``s_t = (1 - cos(pi t / t_es)) / 2`` in systole,
``(1 + cos(pi (t - t_es) / (T - t_es))) / 2`` in diastole: ``s = 0`` at ED (frame 0), 1 at ES
(``es_frame``), smooth and periodic (frame ``T`` would be ED again; the last frame is close to
it).

Sequences differ by an anatomy map ``A_i`` (image -> canonical, constant over the cycle):
``A_i(x) = x + exp(v_i)(x)``, ``v_i`` the generator of a similarity about the LV axis (size
and aspect, rotation and shift in the short-axis plane) plus a smooth random shape field,
windowed to 1 over the heart and 0 at the image border (the border stays in place, so every
canonical point lies on the grid and composing through it is accurate everywhere); and by
contraction ``f``, RV contraction, twist and intensities. Frame ``t`` of sequence ``i``::

    labels_t(x) = T(M_t(A_i(x)))
    field_t(x)      = M_t(A_i(x)) - x           (pulls the canonical heart onto frame t)
    field_inv_t(z)  = A_i^-1(F_t(z)) - z        (pulls frame t onto the canonical heart)

so, as in :mod:`jrs_jax.data.synthetic`, the ground truth of a pair (fixed ``a``, moving
``b``) is ``compose(field_a, field_inv_b)`` (what :func:`~jrs_jax.data.pair_batch` does with
``fields=True``), exact but for the interpolation of ``field_inv`` and the numerical inverse
``A_i^-1(z) = z + exp(-v_i)(z)`` (measured: < 0.05 voxel in the 2-D heart, < 0.15 in 3-D,
< 0.2 / 0.4 anywhere). Labels are evaluated analytically at every frame (no resampling of
labels); images are rendered from the classes as :func:`~jrs_jax.data.make_subjects` renders
them (per-sequence intensities and bias, shared by its frames, noise per frame) plus a tissue
texture carried by the motion.

Files (:func:`write_cardiac_dataset`): scans ``seq_NNNN_fTT`` (``Subject.subject =
"seq_NNNN"``, ``time = TT``), the ED / ES labels in ``labelsTr`` (the only training labels),
every frame's labels in ``labelsHidden`` (``jrs_jax.hidden_labels``, evaluation only),
subject fields in ``fieldsTr``, the canonical heart in ``template/``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..spatial.fields import integrate_velocity
from ..spatial.grid import identity_grid
from ..spatial.random import random_velocity
from ..spatial.warp import sample
from .datasets import Dataset, Subject
from .learn2reg import _to_file, write_learn2reg
from .nifti import save_image
from .sliding import _texture
from .synthetic import (
    _TEMPLATE_REL,
    _as_key,
    _check_shape,
    _layout,
    _layout_info,
    _render,
    _render_args,
)

__all__ = [
    "CARDIAC_LABELS",
    "cardiac_cycle",
    "cardiac_template",
    "make_cardiac_sequences",
    "write_cardiac_dataset",
]

#: Class names (``4`` only with ``num_labels=4``).
CARDIAC_LABELS = {
    0: "background",
    1: "lv_blood_pool",
    2: "lv_myocardium",
    3: "rv_blood_pool",
    4: "surrounding_tissue",
}

# rendered classes: 0 air, 1 LV pool, 2 myocardium, 3 RV pool, 4 surrounding tissue
_TISSUE = 4
_BASE_MEANS = (0.03, 0.92, 0.22, 0.88, 0.5)


def _means(label_means, num_labels: int) -> np.ndarray:
    """Mean intensity of the 5 rendered classes; ``label_means`` (one value per class
    ``0..num_labels``) replaces the first ``num_labels + 1``."""
    means = np.asarray(_BASE_MEANS, np.float32)
    if label_means is None:
        return means
    given = np.asarray(label_means, np.float32).reshape(-1)
    if given.shape != (num_labels + 1,) or not np.all(np.isfinite(given)):
        raise ValueError(
            f"label_means must hold one finite value per class 0..{num_labels} "
            f"({num_labels + 1} values); got {list(np.ravel(label_means))}"
        )
    means[: num_labels + 1] = given
    return means


# --------------------------------------------------------------------------------------------
# cycle and canonical heart
# --------------------------------------------------------------------------------------------


def cardiac_cycle(num_frames: int, es_frame: int) -> np.ndarray:
    """The contraction curve ``s_t`` of one cycle, float64 ``[T]``: 0 at ED (frame 0), 1 at
    ES (``es_frame``), half-cosines in between (smooth, periodic: frame ``T`` is ED again).

    Example:
      >>> np.round(cardiac_cycle(10, 4), 3)
      array([0.   , 0.146, 0.5  , 0.854, 1.   , 0.933, 0.75 , 0.5  , 0.25 , 0.067])
    """
    n, es = int(num_frames), int(es_frame)
    if n < 2:
        raise ValueError(f"num_frames must be >= 2; got {num_frames}")
    if not 1 <= es <= n - 1:
        raise ValueError(f"es_frame must be in [1, num_frames - 1 = {n - 1}]; got {es_frame}")
    t = np.arange(n, dtype=np.float64)
    systole = (1.0 - np.cos(np.pi * t / es)) / 2.0
    diastole = (1.0 + np.cos(np.pi * (t - es) / (n - es))) / 2.0
    return np.where(t <= es, systole, diastole)


class _Geometry(NamedTuple):
    """The canonical heart (static, hashable): centre ``c0`` and normalisation ``r`` (voxels,
    per axis), wall thickness ``w``, RV depth ``d`` and angular half width (its cosine), the
    moving tissue band, the body ellipse."""

    center: tuple[float, ...]
    radius: tuple[float, ...]
    wall: float
    rv_depth: float
    rv_cos: float
    band: float
    body_center: tuple[float, ...]
    body_radii: tuple[float, ...]


def _geometry(shape: tuple[int, ...]) -> _Geometry:
    m = min(shape[:2])
    r0 = 0.15 * m
    radius = (r0, r0) if len(shape) == 2 else (r0, r0, min(1.6 * r0, 0.3 * shape[2]))
    half = tuple((n - 1) / 2.0 for n in shape)
    center = (half[0], half[1] - 0.1 * m, *half[2:])
    return _Geometry(
        center=center,
        radius=radius,
        wall=0.45,
        rv_depth=0.85,
        rv_cos=math.cos(math.radians(75.0)),
        band=0.5,
        body_center=half,
        body_radii=tuple(0.46 * n for n in shape),
    )


def _knots(q: jnp.ndarray, geo: _Geometry):
    """``|q|^D``, the direction ``n`` and the ray's volume-coordinate knots ``(rho_epi,
    rho_rv, rho_far)`` (``rho_endo = 1``) at normalised points ``q`` ``[..., D]``."""
    d = q.shape[-1]
    norm = jnp.linalg.norm(q, axis=-1)
    n = q / jnp.maximum(norm, 1e-6)[..., None]
    bump = jnp.clip((n[..., 1] - geo.rv_cos) / (1.0 - geo.rv_cos), 0.0, 1.0) ** 0.6
    epi = 1.0 + geo.wall
    rv = epi + geo.rv_depth * bump
    return norm**d, n, (epi**d, rv**d, (rv + geo.band) ** d)


def _classes(q: jnp.ndarray, body: jnp.ndarray, geo: _Geometry) -> jnp.ndarray:
    """Rendered class (0 air, 1 LV pool, 2 myocardium, 3 RV pool, 4 tissue) of canonical ED
    points ``q`` (normalised) with ``body`` (inside the body ellipse), int32 ``[...]``."""
    rho, _, (epi, rv, _) = _knots(q, geo)
    out = jnp.where(body, _TISSUE, 0)
    out = jnp.where(rho < rv, 3, out)
    out = jnp.where(rho < epi, 2, out)
    return jnp.where(rho < 1.0, 1, out).astype(jnp.int32)


def _in_body(z: jnp.ndarray, geo: _Geometry) -> jnp.ndarray:
    c = jnp.asarray(geo.body_center, jnp.float32)
    r = jnp.asarray(geo.body_radii, jnp.float32)
    return jnp.sum(((z - c) / r) ** 2, axis=-1) < 1.0


def _normalise(z, geo):
    return (z - jnp.asarray(geo.center, jnp.float32)) / jnp.asarray(geo.radius, jnp.float32)


def _denormalise(q, geo):
    return q * jnp.asarray(geo.radius, jnp.float32) + jnp.asarray(geo.center, jnp.float32)


def cardiac_template(shape: Sequence[int], *, num_labels: int = 3) -> np.ndarray:
    """The canonical heart (at ED) on a grid of ``shape``: int32 ``[*S]`` with the classes of
    the module docstring (``num_labels=3``: surrounding tissue is 0; ``4``: label 4). Every
    sequence's ground-truth fields pull it onto its frames."""
    shape = _check_cardiac(shape, num_labels)
    return _labels_of(np.asarray(_template_classes(shape=shape, geo=_geometry(shape))), num_labels)


@partial(jax.jit, static_argnames=("shape", "geo"))
def _template_classes(*, shape, geo):
    z = identity_grid(shape)
    return _classes(_normalise(z, geo), _in_body(z, geo), geo)


def _labels_of(classes: np.ndarray, num_labels: int) -> np.ndarray:
    """Labels of rendered classes: the tissue (4) is background unless ``num_labels == 4``."""
    if num_labels == 4:
        return classes.astype(np.int32)
    return np.where(classes == _TISSUE, 0, classes).astype(np.int32)


def _check_cardiac(shape, num_labels) -> tuple[int, ...]:
    shape = _check_shape(shape)
    if min(shape) < 24:
        raise ValueError(
            f"shape must be at least 24 voxels along every axis for the cardiac scenario "
            f"(the myocardium is ~0.06 x the in-plane size thick); got {shape}"
        )
    if int(num_labels) not in (3, 4):
        raise ValueError(
            f"num_labels must be 3 (LV blood pool, LV myocardium, RV blood pool) or 4 (and "
            f"the surrounding tissue) for the cardiac scenario; got {num_labels}"
        )
    return shape


# --------------------------------------------------------------------------------------------
# motion
# --------------------------------------------------------------------------------------------


def _radial(q: jnp.ndarray, a, g, geo: _Geometry, *, inverse: bool) -> jnp.ndarray:
    """The radial step: ED -> frame (``P``) or its inverse, on normalised points ``[..., D]``
    (``a``, ``g``: the pool and RV volume fractions lost at this frame)."""
    d = q.shape[-1]
    rho, n, (epi, rv, far) = _knots(q, geo)
    h = a + g * (rv - epi)  # V at the RV's outer wall
    if inverse:  # knots of P: (1 - a, epi - a, rv - h, far)
        p = rho
        out = jnp.where(p < far, rv + (p - (rv - h)) * (far - rv) / (far - rv + h), p)
        out = jnp.where(p < rv - h, epi + (p - (epi - a)) / (1.0 - g), out)
        out = jnp.where(p < epi - a, p + a, out)
        out = jnp.where(p < 1.0 - a, p / (1.0 - a), out)
    else:
        v = jnp.where(rho < far, h * (far - rho) / jnp.maximum(far - rv, 1e-6), 0.0)
        v = jnp.where(rho < rv, a + g * (rho - epi), v)
        v = jnp.where(rho < epi, a, v)
        v = jnp.where(rho < 1.0, a * rho, v)
        out = rho - v
    return n * jnp.maximum(out, 0.0)[..., None] ** (1.0 / d)


def _rotate(q: jnp.ndarray, angle_max, geo: _Geometry, *, inverse: bool) -> jnp.ndarray:
    """Rotation about the LV axis (the in-plane axes 0, 1) by ``angle_max k(rho)`` (3-D:
    ``x zeta``); it keeps ``rho`` and ``zeta``, so its inverse turns by the opposite angle."""
    d = q.shape[-1]
    rho = jnp.linalg.norm(q, axis=-1) ** d
    epi = (1.0 + geo.wall) ** d
    far = (1.0 + geo.wall + geo.rv_depth + geo.band) ** d
    angle = angle_max * jnp.clip((far - rho) / (far - epi), 0.0, 1.0)
    if d == 3:
        angle = angle * jnp.clip(q[..., 2] / (1.0 + geo.wall), -1.0, 1.0)
    if inverse:
        angle = -angle
    c, s = jnp.cos(angle), jnp.sin(angle)
    x, y = q[..., 0], q[..., 1]
    return jnp.stack([c * x - s * y, s * x + c * y, *[q[..., k] for k in range(2, d)]], -1)


def _motion(z, a, g, angle, geo: _Geometry, *, inverse: bool):
    """``F_t`` (ED -> frame, ``inverse=False``) or ``M_t = F_t^-1`` on canonical points."""
    q = _normalise(z, geo)
    if inverse:
        q = _radial(_rotate(q, angle, geo, inverse=True), a, g, geo, inverse=True)
    else:
        q = _rotate(_radial(q, a, g, geo, inverse=False), angle, geo, inverse=False)
    return _denormalise(q, geo)


# --------------------------------------------------------------------------------------------
# sequences
# --------------------------------------------------------------------------------------------


class _Ranges(NamedTuple):
    """Per-sequence parameter ranges (static, hashable)."""

    contraction: tuple[float, float]
    rv_contraction: tuple[float, float]
    twist: tuple[float, float]  # degrees
    size: tuple[float, float]
    aspect: float
    orientation: float  # degrees
    position: float  # fraction of the in-plane size


def _draw(key, ranges: _Ranges, ndim: int, m: int) -> dict:
    """One sequence's parameters (traced scalars / vectors; the anatomy's scale, rotation and
    shift act in the short-axis plane, axes 0 and 1)."""
    ks = jax.random.split(key, 7)

    def uniform(k, lo_hi, shape=()):
        return jax.random.uniform(k, shape, jnp.float32, minval=lo_hi[0], maxval=lo_hi[1])

    in_plane = jnp.asarray([1.0, 1.0, 0.0][:ndim], jnp.float32)
    aspect = uniform(ks[4], (1.0 - ranges.aspect, 1.0 + ranges.aspect), (ndim,))
    scale = uniform(ks[3], ranges.size) * aspect
    return {
        "contraction": uniform(ks[0], ranges.contraction),
        "rv_contraction": uniform(ks[1], ranges.rv_contraction),
        "twist": jnp.deg2rad(uniform(ks[2], ranges.twist)),
        "scale": jnp.where(in_plane > 0, scale, 1.0),
        "rotation": jnp.deg2rad(uniform(ks[5], (-ranges.orientation, ranges.orientation))),
        "shift": in_plane * uniform(ks[6], (-ranges.position * m, ranges.position * m), (ndim,)),
    }


# the anatomy map moves the heart (|q| < 2.3 at ED) as a similarity and leaves the image border
# in place: its velocity is windowed by the in-plane distance from the image centre, in r0
# units (the heart lies within 2.4 r0 of it, the border 3.3 r0 away)
_WINDOW = (2.4, 3.3)


def _anatomy_velocity(x, par, shape_v, geo: _Geometry) -> jnp.ndarray:
    """Velocity ``[*S, D]`` of the anatomy map (image -> canonical, pull-back): the generator of
    the inverse similarity (``scale``, ``rotation`` about the LV axis, ``shift``) plus the
    random shape field, windowed: 1 over the heart, 0 at the image border."""
    c0 = jnp.asarray(geo.center, jnp.float32)
    rel = x - c0
    gen = -jnp.log(par["scale"]) * rel - par["shift"]
    w = par["rotation"]
    gen = gen.at[..., 0].add(w * rel[..., 1]).at[..., 1].add(-w * rel[..., 0])
    mid = (x - jnp.asarray(geo.body_center, jnp.float32))[..., :2]
    d = jnp.linalg.norm(mid, axis=-1) / geo.radius[0]
    lo, hi = _WINDOW
    window = jnp.cos(0.5 * jnp.pi * jnp.clip((d - lo) / (hi - lo), 0.0, 1.0)) ** 2
    return window[..., None] * (gen + shape_v)


@partial(
    jax.jit,
    static_argnames=(
        "shape",
        "geo",
        "ranges",
        "shape_spacing",
        "texture_spacing",
        "bias_spacing",
        "blur_sigma",
        "steps",
    ),
)
def _sequence(
    key,
    cycle,
    means,
    shape_amplitude,
    texture,
    intensity_jitter,
    bias,
    noise,
    *,
    shape,
    geo,
    ranges,
    shape_spacing,
    texture_spacing,
    bias_spacing,
    blur_sigma,
    steps,
):
    """One sequence of ``T = len(cycle)`` frames: images ``[T, *S, 1]``, rendered classes
    ``[T, *S]``, fields ``[T, *S, D]`` x2 and its parameters."""
    ndim = len(shape)
    k_par, k_shape, k_mean, k_bias, k_noise, k_tex = jax.random.split(key, 6)
    par = _draw(k_par, ranges, ndim, min(shape[:2]))
    x = identity_grid(shape)
    shape_v = random_velocity(
        k_shape, shape, amplitude=shape_amplitude, control_spacing=shape_spacing
    )[0]
    v = _anatomy_velocity(x, par, shape_v, geo)[None]
    w, w_inv = jnp.split(integrate_velocity(jnp.concatenate([v, -v]), steps=steps), 2)
    anat = x + w[0]  # A_i: image -> canonical, on the grid

    def anat_inv(z):  # A_i^-1 at canonical points z
        return z + sample(w_inv, z[None])[0]

    def frame(s):
        a, g, angle = s * par["contraction"], s * par["rv_contraction"], s * par["twist"]
        ed = _motion(anat, a, g, angle, geo, inverse=True)  # canonical ED point of each x
        cls = _classes(_normalise(ed, geo), _in_body(ed, geo), geo)
        field_inv = anat_inv(_motion(x, a, g, angle, geo, inverse=False)) - x
        return cls, ed - x, field_inv

    classes, field, field_inv = jax.vmap(frame)(cycle)
    noise_keys = jax.random.split(k_noise, cycle.shape[0])

    def render(cls, k):
        return _render(
            (k_mean, k_bias, k),
            cls[None],
            means,
            intensity_jitter,
            bias,
            noise,
            num_classes=5,
            bias_spacing=bias_spacing,
            blur_sigma=blur_sigma,
        )[0]

    images = jax.vmap(render)(classes, noise_keys)
    images = images + _texture(
        k_tex, field, classes == _TISSUE, texture, control_spacing=texture_spacing
    )
    return images, classes, field, field_inv, par


def make_cardiac_sequences(
    key: jax.Array,
    *,
    shape: Sequence[int] = (64, 64),
    num_sequences: int,
    num_frames: int = 10,
    es_frame: int | None = None,
    num_labels: int = 3,
    contraction: tuple[float, float] = (0.45, 0.65),
    rv_contraction: tuple[float, float] = (0.35, 0.55),
    twist: tuple[float, float] = (3.0, 8.0),
    size: tuple[float, float] = (0.92, 1.08),
    aspect: float = 0.06,
    orientation: float = 10.0,
    position: float = 0.05,
    shape_amplitude: float | None = None,
    shape_spacing: int | None = None,
    texture: float = 0.1,
    texture_spacing: int = 4,
    intensity_jitter: float = 0.04,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict:
    """Draw beating-heart sequences (the model: module docstring).

    Args:
      key: PRNG key (sequence ``i`` depends on the key and its index only, not on how many
        sequences are drawn).
      shape: spatial shape ``S`` (2-D ``(H, W)`` or 3-D ``(X, Y, Z)``, long axis 2; every
        axis >= 24).
      num_sequences: ``N``.
      num_frames: ``T`` frames of one cardiac cycle (ED is frame 0).
      es_frame: the ES frame (default ``round(0.4 T)``).
      num_labels: 3 (surrounding tissue is background) or 4 (it is label 4).
      contraction: ``(low, high)``: the fraction of the LV pool volume (2-D: area) lost at ES
        (ejection fraction), uniform per sequence.
      rv_contraction: the same for the RV pool.
      twist: ``(low, high)`` degrees: the rotation at ES (2-D: the heart turns; 3-D: base and
        apex turn opposite ways), uniform per sequence.
      size, aspect: scale of the heart and body (uniform in ``size``) times a per-axis aspect
        factor uniform in ``1 +- aspect``.
      orientation: rotation of the anatomy about the long axis, uniform in ``+-orientation``
        degrees.
      position: shift of the heart in the short-axis plane, per axis uniform in
        ``+-position x min(S[:2])`` voxels (size, aspect, orientation and shift are those of
        the similarity generating the anatomy map: the heart's, approximately).
      shape_amplitude, shape_spacing: the smooth random shape field ``v_i`` (control-point
        standard deviation in voxels, default ``0.02 min(S[:2])``; spacing default
        ``max(4, min(S[:2]) // 4)``).
      texture, texture_spacing: amplitude and feature size of the tissue texture (moves with
        the tissue; 0: none).
      intensity_jitter, bias, bias_spacing, noise, blur_sigma: rendering as
        :func:`~jrs_jax.data.make_subjects` (means jittered and bias drawn per sequence,
        noise per frame).
      steps: scaling-and-squaring steps of the shape field.
      label_means: mean intensity of the classes ``0..num_labels`` (default: air 0.03, LV
        pool 0.92, myocardium 0.22, RV pool 0.88, tissue 0.5).

    Returns:
      dict of numpy arrays (``N`` sequences, ``T`` frames): ``images`` float32
      ``[N, T, *S, 1]``, ``labels`` int32 ``[N, T, *S]`` (every frame: the loader's hidden
      labels), ``disp`` / ``disp_inv`` float32 ``[N, T, *S, D]`` (canonical heart -> frame /
      frame -> canonical heart), ``template`` int32 ``[*S]`` (:func:`cardiac_template`),
      ``cycle`` float64 ``[T]`` (:func:`cardiac_cycle`), ``es_frame`` int, and per sequence
      float32: ``contraction`` ``[N]``, ``rv_contraction`` ``[N]``, ``twist`` ``[N]``
      (degrees), ``scale`` ``[N, D]``, ``rotation`` ``[N]`` (degrees), ``shift`` ``[N, D]``.

    Example:
      >>> s = make_cardiac_sequences(jax.random.PRNGKey(0), shape=(48, 48), num_sequences=2)
      >>> s["images"].shape, s["es_frame"]
      ((2, 10, 48, 48, 1), 4)
    """
    shape = _check_cardiac(shape, num_labels)
    n, t = int(num_sequences), int(num_frames)
    if n < 1:
        raise ValueError(f"num_sequences must be >= 1; got {num_sequences}")
    es = round(0.4 * t) if es_frame is None else int(es_frame)
    cycle = cardiac_cycle(t, es)
    for name, (lo, hi), top in (
        ("contraction", contraction, 0.9),
        ("rv_contraction", rv_contraction, 0.9),
        ("twist", twist, 30.0),
    ):
        if not 0.0 <= float(lo) <= float(hi) <= top:
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= high <= {top}")
    lo, hi = (float(v) for v in size)
    if not 0.5 <= lo <= hi <= 1.5:
        raise ValueError(f"size must be (low, high) with 0.5 <= low <= high <= 1.5; got {size}")
    if not 0.0 <= float(aspect) < 0.5:
        raise ValueError(f"aspect must be in [0, 0.5); got {aspect}")
    if float(texture) < 0:
        raise ValueError(f"texture must be >= 0; got {texture}")
    m = min(shape[:2])
    means = _means(label_means, int(num_labels))
    traced, static = _render_args(
        shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    ranges = _Ranges(
        contraction=tuple(float(v) for v in contraction),
        rv_contraction=tuple(float(v) for v in rv_contraction),
        twist=tuple(float(v) for v in twist),
        size=(lo, hi),
        aspect=float(aspect),
        orientation=float(orientation),
        position=float(position),
    )
    run = partial(
        _sequence,
        shape=shape,
        geo=_geometry(shape),
        ranges=ranges,
        shape_spacing=int(shape_spacing) if shape_spacing else max(4, m // 4),
        texture_spacing=max(2, int(texture_spacing)),
        steps=int(steps),
        **static,
    )
    amp = 0.02 * m if shape_amplitude is None else float(shape_amplitude)
    parts = [
        run(
            jax.random.fold_in(key, i),
            jnp.asarray(cycle, jnp.float32),
            jnp.asarray(means),
            jnp.float32(amp),
            jnp.float32(texture),
            *traced,
        )
        for i in range(n)
    ]
    out = {
        k: np.stack([np.asarray(p[j], np.float32) for p in parts])
        for j, k in ((0, "images"), (2, "disp"), (3, "disp_inv"))
    }
    out["labels"] = _labels_of(np.stack([np.asarray(p[1]) for p in parts]), int(num_labels))
    for k in ("contraction", "rv_contraction", "twist", "scale", "rotation", "shift"):
        out[k] = np.stack([np.asarray(p[4][k], np.float32) for p in parts])
    out["twist"] = np.rad2deg(out["twist"]).astype(np.float32)
    out["rotation"] = np.rad2deg(out["rotation"]).astype(np.float32)
    out["template"] = cardiac_template(shape, num_labels=num_labels)
    out["cycle"] = cycle
    out["es_frame"] = es
    return out


# --------------------------------------------------------------------------------------------
# Learn2Reg folder
# --------------------------------------------------------------------------------------------


def _sequence_val_pairs(lay, num_frames: int, num_val_pairs: int | None) -> list[tuple[int, int]]:
    """Scan-index pairs of the held-out sequences: ``(ED, t)`` for every later frame ``t`` of
    each (sequence-major), then ``num_val_pairs`` more: consecutive frames ``(t, t + 1)``,
    ``t >= 1``, then the other within-sequence pairs, interleaved across sequences."""
    t = num_frames
    seqs = range(lay.n_train, lay.n)
    ed = [(i * t, i * t + f) for i in seqs for f in range(1, t)]
    consecutive = [(a, a + 1) for a in range(1, t - 1)]
    others = [(a, b) for a in range(1, t) for b in range(t) if a != b and b != 0 and b != a + 1]
    others += [(a, 0) for a in range(1, t)]
    more = [(i * t + a, i * t + b) for a, b in consecutive + others for i in seqs]
    extra = 0 if num_val_pairs is None else int(num_val_pairs)
    if not 0 <= extra <= len(more):
        raise ValueError(
            f"num_val_pairs (pairs beyond the {len(ed)} (ED, t) pairs of the held-out "
            f"sequences) must be in [0, {len(more)}]; got {num_val_pairs}"
        )
    return ed + more[:extra]


def write_cardiac_dataset(
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
    num_frames: int = 10,
    es_frame: int | None = None,
    name: str = "jrs_jax_cardiac",
    **sequence_kwargs,
) -> str:
    """Generate beating-heart sequences and write them in the Learn2Reg layout (the
    ``cardiac`` scenario, ``jrs-jax make-synthetic --scenario cardiac``).

    Each *subject* is one sequence of ``num_frames`` scans ``seq_NNNN_fTT`` (``subject =
    "seq_NNNN"``, ``time = TT``). Sequences ``0 .. N - H - 1`` are training sequences (the
    first ``num_labelled`` of them have training labels), the last ``H = num_heldout`` are
    held out. Files under ``root``::

        imagesTr/seq_NNNN_fTT.nii.gz        every frame
        labelsTr/seq_NNNN_fTT.nii.gz        ED (frame 0) and ES frames only: the training
                                            labels (labelled training and held-out sequences)
        labelsHidden/seq_NNNN_fTT.nii.gz    every frame of every sequence: evaluation only
                                            (Subject.hidden_labels, jrs_jax.hidden_labels)
        fieldsTr/seq_NNNN_fTT_disp(_inv).nii.gz   canonical heart <-> frame (module docstring)
        template/template_0000.nii.gz       the canonical heart (cardiac_template)

    ``registration_val``: within-sequence pairs of the held-out sequences, fixed = the ED
    frame and moving = each later frame (``H (T - 1)`` pairs; they reference every held-out
    frame, which the reader loads through the pairs), then ``num_val_pairs`` more:
    consecutive frames ``(t, t + 1)`` first, interleaved across sequences. The ground truth of
    any within-sequence pair is ``pair_batch(..., fields=True)``. The ``jrs_jax`` block
    records the generator, seed, settings, ``ed_frame``, ``es_frame``, the cycle curve per
    frame and every sequence's parameters.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape: spatial shape (2-D ``(H, W)``, 3-D ``(X, Y, Z)`` short-axis stack, long axis 2).
      num_subjects: ``N`` sequences.
      num_labelled: training sequences with (ED / ES) training labels (default all).
      num_heldout: held-out sequences ``H`` (default ``max(2, N // 5)``).
      num_val_pairs: validation pairs beyond the ``H (T - 1)`` ED pairs (default 0).
      num_labels: 3 or 4 (:func:`make_cardiac_sequences`).
      spacing: voxel size in mm.
      num_frames, es_frame: the cycle (:func:`cardiac_cycle`).
      name: dataset name.
      **sequence_kwargs: forwarded to :func:`make_cardiac_sequences` (``contraction``,
        ``twist``, ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_cardiac_dataset("/tmp/heart", key=0, shape=(48, 48), num_subjects=4)
      >>> ds = load_learn2reg(p)
      >>> [s.time for s in ds.subjects if s.has_labels][:2]
      [0, 4]
    """
    _check_cardiac(shape, num_labels)
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, 0, spacing)
    key, seed = _as_key(key)
    t = int(num_frames)
    pairs = _sequence_val_pairs(lay, t, num_val_pairs)
    seqs = make_cardiac_sequences(
        key,
        shape=lay.shape,
        num_sequences=lay.n,
        num_frames=t,
        es_frame=es_frame,
        num_labels=num_labels,
        **sequence_kwargs,
    )
    es = seqs["es_frame"]
    ndim = len(lay.shape)
    subjects = []
    for i in range(lay.n):
        labelled = i < lay.n_lab or i >= lay.n_train
        for f in range(t):
            subjects.append(
                Subject(
                    name=f"seq_{i:04d}_f{f:02d}",
                    image=seqs["images"][i, f],
                    labels=seqs["labels"][i, f] if labelled and f in (0, es) else None,
                    affine=lay.affine,
                    spacing=tuple(lay.spacing3[:ndim]),
                    image_path="",
                    held_out=i >= lay.n_train,
                    subject=f"seq_{i:04d}",
                    time=f,
                    field=seqs["disp"][i, f],
                    field_inv=seqs["disp_inv"][i, f],
                    hidden_labels=seqs["labels"][i, f],
                )
            )
    dataset = Dataset(
        subjects=tuple(subjects),
        val_pairs=tuple(pairs),
        modalities=("cine",),
        label_names={k: CARDIAC_LABELS[k] for k in range(int(num_labels) + 1)},
    )
    root = os.fspath(root)
    save_image(
        os.path.join(root, _TEMPLATE_REL[2:]),
        _to_file(seqs["template"], ndim),
        affine=lay.affine,
    )
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in sequence_kwargs.items()}
    per_sequence = {
        f"seq_{i:04d}": {
            "contraction": round(float(seqs["contraction"][i]), 5),
            "rv_contraction": round(float(seqs["rv_contraction"][i]), 5),
            "twist_deg": round(float(seqs["twist"][i]), 4),
            "scale": np.round(seqs["scale"][i], 5).tolist(),
            "rotation_deg": round(float(seqs["rotation"][i]), 4),
            "shift": np.round(seqs["shift"][i], 4).tolist(),
        }
        for i in range(lay.n)
    }
    extra = {
        "generator": "jrs_jax.data.cardiac",
        "seed": seed,
        **_layout_info(lay, num_labels),
        "subject_settings": settings,
        "cardiac": {
            "num_frames": t,
            "ed_frame": 0,
            "es_frame": es,
            "cycle": np.round(seqs["cycle"], 6).tolist(),
            "labelled_frames": [0, es],
            "sequences": per_sequence,
            "model": (
                "frame t: LV pool volume x (1 - cycle[t] contraction), myocardium volume "
                "kept, RV pool x (1 - cycle[t] rv_contraction), rotation cycle[t] twist; "
                "labels_t(x) = template(M_t(A_i(x)))"
            ),
            "subjects": "one subject per sequence (subject = seq_NNNN, time = frame)",
            "training_labels": "ED and ES frames only (labelsTr); none for unlabelled sequences",
            "hidden_labels": (
                "labelsHidden: the labels of every frame, for evaluation only (never training)"
            ),
            "val_pairs": (
                "held-out sequences: (fixed = ED frame, moving = frame t) for every t >= 1, "
                f"then {len(pairs) - lay.h * (t - 1)} more within-sequence pairs (consecutive "
                "frames first)"
            ),
        },
        "disp_convention": (
            "voxels along array axes, pull-back: disp pulls the template (canonical heart) "
            "onto the frame, disp_inv the frame onto the template; pair (fixed a, moving b): "
            "compose(disp_a, disp_inv_b)"
        ),
    }
    return write_learn2reg(
        root,
        dataset,
        name=name,
        description="jrs_jax synthetic beating-heart sequences (jrs_jax.data.cardiac)",
        extra=extra,
    )
