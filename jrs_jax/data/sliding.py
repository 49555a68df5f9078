"""The ``sliding`` scenario: organs that slide against their surroundings, with exact
ground truth for registration pairs.

Organs such as the heart, the lungs or the liver move differently from the tissue around
them and slide along their boundary: the true displacement is smooth inside each region and
jumps across the boundary. A smooth (diffeomorphic) ground truth cannot represent that, and
methods built for it (sliding-aware regularisers, region-wise motion) need data where the
jump is known exactly.

Model (layered motion; conventions of :mod:`jrs_jax.data.synthetic`: pull-back warps,
voxels along array axes, ``compose(u, v) = u + v(x + u)`` is ``phi_v o phi_u``). Subject
``i`` of template ``T`` (:func:`~jrs_jax.data.make_template`) has

- a *body layer* ``psi_b = x + u_b``, ``u_b = integrate_velocity(v_b)`` with ``v_b =
  random_velocity(amplitude, control_spacing)`` as :func:`~jrs_jax.data.make_subjects`: it
  moves the body, the background and every structure that does not slide;
- per sliding organ ``g = 1..G`` (a group of template labels, ``organs``; default the organ
  ``(2,)`` and the adjacent-slab structure ``(3, 4)``, each moving as one body) its own
  motion. ``motion="rotation"`` (the default): ``psi_g = R_g o psi_b o exp(w_g)``, a
  rotation ``R_g`` about the organ's template centroid whose arc on the organ's equivalent
  radius is uniform in ``shift`` (2..4 voxels): a near-round organ turns in place and
  slides *along* its boundary against the body (tangential jump, as lungs or liver slide
  against the wall; almost no occlusion). ``motion="shift"``:
  ``psi_g = psi_b o T_g o exp(w_g)``: the body motion composed with a translation ``T_g``
  by ``t_g`` (norm uniform in ``shift``, default 2..4 voxels; random direction, see below)
  and an optional smooth own motion ``w_g`` (``organ_amplitude``; 0 = a rigid shift). So
  ``u_g = compose(compose(u_w, t_g), u_b)`` and ``psi_g^-1 = exp(-w_g) o T_-t_g o
  psi_b^-1``, ``u_g_inv = compose(u_b_inv - t_g, u_w_inv)``.

Labels (nearest, pull-back): organ ``g`` occupies ``O_g = {x : T(x + u_g(x)) in group
g}`` and takes those labels; elsewhere the label is ``T_fill(x + u_b(x))``, where
``T_fill`` is the template with every sliding-organ voxel replaced by the label of its
nearest non-organ voxel (the surrounding tissue fills the space an organ vacates). Where two
organ layers claim a voxel the later group wins (rare: see the direction choice). Images are
rendered from the labels exactly as :func:`~jrs_jax.data.make_subjects` renders them, plus a
smooth tissue texture (``texture``) drawn in the template frame and carried by each voxel's
own layer motion, so that motion inside a region, and a rotation in place, can be seen.

Direction of ``t_g`` (``motion="shift"``): drawn among ``num_candidates`` random
``(direction, norm)`` candidates, the first one that keeps organ ``g`` off the background
(no organ voxel is face-adjacent to a background voxel of the body layer) and off the
organs placed before it; when no candidate does (tiny shapes), the one with the fewest
offending voxels. The organs hence stay inside the body.

Region mask (``Subject.mask``, ``masksTr/``): ``0`` = the body layer (one smooth motion:
body, background, non-sliding structures), ``g`` = sliding organ ``g``. Its boundaries are
exactly the discontinuities of the motion.

Ground truth. The subject field (template -> subject, on the subject grid) is ``u = u_g`` on
``O_g`` and ``u_b`` elsewhere, discontinuous at the organ boundaries with jump ``u_g - u_b``
(about ``t_g``). For a pair (fixed ``f``, moving ``m``) composing subject fields through the
template (``compose(disp[f], disp_inv[m])``, what :func:`~jrs_jax.data.pair_batch` does for
subject fields) is wrong in a band along the boundaries: a body-layer point of ``f`` whose
template point lies where the template has an organ would follow the organ's inverse. The
exact ground truth is layer-wise (:func:`sliding_pair_field`)::

    gt(x) = compose(u_f_g, u_m_g_inv)(x)   on O_g of the fixed subject
            compose(u_f_b, u_m_b_inv)(x)   elsewhere

so that ``warp(moving, gt) ~ fixed``. It maps every fixed voxel to the same tissue point of
the moving subject; that point is hidden when the moving subject's organ covers it
(occlusion: body tissue under an organ that slid over it), the only voxels where warping the
moving labels with ``gt`` cannot reproduce the fixed labels.

Files (:func:`write_sliding_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset` plus ``masksTr/`` and, for every
``registration_val`` pair, its exact ground truth ``fieldsVal/<fixed>_<moving>_disp.nii.gz``
(the entry's ``disp``; read into :attr:`Dataset.pair_fields <jrs_jax.data.Dataset>`).
Subject-level fields (``fieldsTr/``) are *not* written: they would be composed wrongly. The
in-memory generator (:func:`make_sliding_subjects`) returns them with the layer fields.
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
from ..spatial.warp import warp, warp_labels
from .synthetic import (
    _as_key,
    _check_means,
    _check_template,
    _layout,
    _layout_info,
    _render,
    _render_args,
    _val_pairs,
    _write_population,
    make_template,
)

__all__ = [
    "fill_organs",
    "make_sliding_subjects",
    "sliding_pair_field",
    "write_sliding_dataset",
]

DEFAULT_ORGANS = ((2,), (3, 4))

MASK_MEANING = (
    "0: body layer (body, background and non-sliding structures: one smooth motion psi_b); "
    "g = 1..G: sliding organ g (motion psi_b o T_g o exp(w_g)); mask boundaries are the "
    "motion discontinuities"
)


def _organ_groups(organs, template: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """``organs`` clipped to the labels of ``template`` (empty groups dropped)."""
    present = set(np.unique(template).tolist())
    groups, seen = [], set()
    for group in organs:
        labels = tuple(int(k) for k in np.atleast_1d(np.asarray(group, np.int64)))
        if any(k <= 0 for k in labels):
            raise ValueError(f"organ labels must be >= 1 (0 is background); got {group}")
        if seen & set(labels):
            raise ValueError(f"organ groups must not share labels; got {organs}")
        seen |= set(labels)
        kept = tuple(k for k in labels if k in present)
        if kept:
            groups.append(kept)
    if not groups:
        raise ValueError(
            f"no sliding organ: none of the labels of organs={organs} is in the template "
            f"(labels {sorted(present)})"
        )
    return tuple(groups)


def fill_organs(template, organs=DEFAULT_ORGANS) -> np.ndarray:
    """``T_fill``: ``template`` with every voxel of a sliding organ (any label of
    ``organs``) replaced by the label of its nearest non-organ voxel (Euclidean distance;
    :func:`scipy.ndimage.distance_transform_edt`), the tissue that fills an organ's place
    when it slides away."""
    template = _check_template(template)
    groups = _organ_groups(organs, template)
    inside = np.isin(template, [k for g in groups for k in g])
    if inside.all():
        raise ValueError("the sliding organs cover the whole template")
    idx = ndimage.distance_transform_edt(inside, return_distances=False, return_indices=True)
    return template[tuple(idx)].astype(np.int32)


def _grow(m: jnp.ndarray) -> jnp.ndarray:
    """``m`` (bool ``[N, *S]``) dilated by one voxel along every axis (face neighbours);
    outside the grid counts as set."""
    out = m
    for ax in range(1, m.ndim):
        pad = [(0, 0)] * m.ndim
        pad[ax] = (1, 1)
        p = jnp.pad(m, pad, constant_values=True)
        n = m.shape[ax]
        lo = tuple(slice(0, n) if a == ax else slice(None) for a in range(m.ndim))
        hi = tuple(slice(2, n + 2) if a == ax else slice(None) for a in range(m.ndim))
        out = out | p[lo] | p[hi]
    return out


def _spatial_sum(m: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum(m, axis=tuple(range(1, m.ndim)), dtype=jnp.int32)


# The generator runs as a few jitted pieces, each compiled once per shape and reused (the
# body and every organ share one motion and one placement function): compiling the spatial
# ops dominates the run time of small populations.


@partial(jax.jit, static_argnames=("shape", "n", "control_spacing", "steps"))
def _motion(key, amplitude, *, shape, n, control_spacing, steps):
    """``(exp(v), exp(-v))`` of ``N`` random velocities, ``[N, *S, D]`` each."""
    v = random_velocity(
        key, shape, batch_size=n, amplitude=amplitude, control_spacing=control_spacing
    )
    return integrate_velocity(v, steps=steps), integrate_velocity(-v, steps=steps)


@partial(jax.jit, static_argnames=("num_classes",))
def _body_layer(u_b, fill, *, num_classes):
    """Body-layer labels ``T_fill(x + u_b(x))`` and the voxels organs must avoid (the
    background and its face neighbours)."""
    n = u_b.shape[0]
    fill = jnp.broadcast_to(fill[None], (n, *fill.shape))
    labels = warp_labels(fill, u_b, num_classes=num_classes, mode="nearest")
    return labels, _grow(labels == 0)


def _lay_over(state, g, lab, region, u_g, u_g_inv, in_template):
    """Organ ``g`` (its labels ``lab`` on ``region``, fields ``u_g`` / ``u_g_inv``, template
    voxels ``in_template``) laid over ``state = (labels, mask, disp, disp_inv, taken)``; a
    later group wins where two claim a voxel."""
    labels, mask, disp, disp_inv, taken = state
    return (
        jnp.where(region, lab, labels),
        jnp.where(region, g, mask),
        jnp.where(region[..., None], u_g, disp),
        jnp.where(in_template[None, ..., None], u_g_inv, disp_inv),
        taken | region,
    )


@partial(jax.jit, static_argnames=("num_classes", "num_candidates"))
def _place_organ(
    key,
    g,
    state,
    u_b,
    u_b_inv,
    u_w,
    u_w_inv,
    template,
    group_of,
    outside,
    shift_lo,
    shift_hi,
    *,
    num_classes,
    num_candidates,
):
    """Draw organ ``g``'s shift among the candidates and lay it over ``state = (labels,
    mask, disp, disp_inv, taken)``; returns the new state and ``(u_g, u_g_inv, t_g)``."""
    n, ndim = u_b.shape[0], u_b.shape[-1]
    bcast = (n, *([1] * ndim), ndim)
    k_dir, k_norm = jax.random.split(key)
    dirs = jax.random.normal(k_dir, (num_candidates, n, ndim), jnp.float32)
    dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-6)
    norms = jax.random.uniform(
        k_norm, (num_candidates, n, 1), jnp.float32, minval=shift_lo, maxval=shift_hi
    )
    candidates = dirs * norms
    tmpl = jnp.broadcast_to(template[None], (n, *template.shape))

    def place(t):  # t [N, D] -> (u_g, labels, region) of organ g
        u_g = compose(u_w + t.reshape(bcast), u_b)
        lab = warp_labels(tmpl, u_g, num_classes=num_classes, mode="nearest")
        return u_g, lab, group_of[lab] == g

    def cost(t):
        region = place(t)[2]
        return 1000 * _spatial_sum(region & outside) + _spatial_sum(region & state[4])

    costs = jax.lax.map(cost, candidates)  # [K, N]
    best = jnp.argmin(costs, axis=0)  # the first candidate of least cost
    t = candidates[best, jnp.arange(n)]  # [N, D]
    u_g, lab, region = place(t)
    u_g_inv = compose(u_b_inv - t.reshape(bcast), u_w_inv)
    state = _lay_over(state, g, lab, region, u_g, u_g_inv, group_of[template] == g)
    return state, (u_g, u_g_inv, t)


def _rotation_matrices(key, n: int, ndim: int, angle_lo, angle_hi):
    """``N`` random rotations ``[N, D, D]`` (random sign in 2-D, random axis in 3-D) with
    angles uniform in ``[angle_lo, angle_hi]``, and their rotation vectors ``[N, 3]``."""
    k_angle, k_axis, k_sign = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,), jnp.float32, minval=angle_lo, maxval=angle_hi)
    if ndim == 2:
        angle = angle * jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0)
        c, s = jnp.cos(angle), jnp.sin(angle)
        rot = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)
        axis = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0]), (n, 3))
        return rot, axis * angle[:, None]
    axis = jax.random.normal(k_axis, (n, 3), jnp.float32)
    axis = axis / jnp.maximum(jnp.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
    k = jnp.zeros((n, 3, 3)).at[:, 0, 1].set(-axis[:, 2]).at[:, 0, 2].set(axis[:, 1])
    k = k.at[:, 1, 0].set(axis[:, 2]).at[:, 1, 2].set(-axis[:, 0])
    k = k.at[:, 2, 0].set(-axis[:, 1]).at[:, 2, 1].set(axis[:, 0])
    a = angle[:, None, None]
    rot = jnp.eye(3)[None] + jnp.sin(a) * k + (1 - jnp.cos(a)) * (k @ k)  # Rodrigues
    return rot, axis * angle[:, None]


@partial(jax.jit, static_argnames=("num_classes",))
def _rotate_organ(
    key,
    g,
    state,
    u_b,
    u_b_inv,
    u_w,
    u_w_inv,
    template,
    group_of,
    center,
    radius,
    disp_lo,
    disp_hi,
    *,
    num_classes,
):
    """Organ ``g`` turned about its template centroid ``center`` ``[D]`` by an angle whose
    arc on the organ's equivalent radius ``radius`` is in ``[disp_lo, disp_hi]`` voxels:
    ``psi_g = R_g o psi_b o exp(w_g)`` (``R_g`` in the template frame, where the organ is a
    near-round blob it maps onto itself, so the organ slides tangentially against the body);
    lays it over ``state`` as :func:`_place_organ` and returns ``(u_g, u_g_inv, rotvec)``."""
    n, shape = u_b.shape[0], u_b.shape[1:-1]
    rot, rotvec = _rotation_matrices(key, n, len(shape), disp_lo / radius, disp_hi / radius)
    grid = jnp.stack(
        jnp.meshgrid(*[jnp.arange(k, dtype=jnp.float32) for k in shape], indexing="ij"), -1
    )
    rel = grid - center  # [*S, D]
    u_r = jnp.einsum("nij,...j->n...i", rot, rel) - rel  # R (y - c) + c - y
    u_r_inv = jnp.einsum("nji,...j->n...i", rot, rel) - rel
    u_g = compose(compose(u_w, u_b), u_r)
    u_g_inv = compose(compose(u_r_inv, u_b_inv), u_w_inv)
    tmpl = jnp.broadcast_to(template[None], (n, *template.shape))
    lab = warp_labels(tmpl, u_g, num_classes=num_classes, mode="nearest")
    region = group_of[lab] == g
    state = _lay_over(state, g, lab, region, u_g, u_g_inv, group_of[template] == g)
    return state, (u_g, u_g_inv, rotvec)


@partial(jax.jit, static_argnames=("control_spacing",))
def _texture(key, disp, body, amount, *, control_spacing):
    """Tissue texture that moves with the tissue: a smooth unit-variance random field ``tex``
    in the template frame, pulled onto each subject by its field (``tex(x + u(x))``) and
    scaled by ``amount`` inside the body (``body`` bool ``[N, *S]``), ``[N, *S, 1]``."""
    shape = disp.shape[1:-1]
    tex = random_velocity(key, shape, amplitude=1.0, control_spacing=control_spacing)[..., :1]
    tex = (tex - tex.mean()) / jnp.maximum(tex.std(), 1e-6)
    tex = jnp.broadcast_to(tex, (disp.shape[0], *shape, 1))
    return amount * warp(tex, disp) * body[..., None]


_render_jit = jax.jit(_render, static_argnames=("num_classes", "bias_spacing", "blur_sigma"))


def make_sliding_subjects(
    key: jax.Array,
    template,
    *,
    num_subjects: int,
    organs: Sequence[Sequence[int]] = DEFAULT_ORGANS,
    shift: tuple[float, float] = (2.0, 4.0),
    organ_amplitude: float = 0.0,
    motion: str = "rotation",
    texture: float = 0.15,
    texture_spacing: int = 4,
    amplitude: float = 2.0,
    control_spacing: int = 16,
    num_candidates: int = 32,
    intensity_jitter: float = 0.03,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict:
    """Draw subjects of ``template`` whose organs slide (the model: module docstring).

    Args:
      key: PRNG key (the results are a deterministic function of the key and arguments).
      template: integer label map ``[*S]`` (e.g. :func:`~jrs_jax.data.make_template`).
      num_subjects: ``N``.
      organs: groups of template labels, each sliding as one body; clipped to the labels the
        template has (groups left empty are dropped). Groups must not share labels.
      shift: ``(low, high)`` in voxels: how far each organ moves against the body at its
        boundary: the norm of its translation (``motion="shift"``), or the arc its rotation
        turns on the organ's equivalent radius (``motion="rotation"``), uniform in it.
      organ_amplitude: control-point standard deviation of each organ's own smooth motion
        ``w_g`` (0: rigid).
      motion: ``"rotation"`` (default): each organ turns about its template centroid
        (random sign in 2-D, random axis in 3-D), ``psi_g = R_g o psi_b o exp(w_g)``; a
        near-round organ maps onto itself, so it slides *along* its boundary (the tangential
        jump of real sliding, almost no occlusion). ``"shift"``: the translation
        ``psi_g = psi_b o T_g o exp(w_g)`` of the module docstring (normal motion too: the
        organ covers body tissue on one side and uncovers it on the other).
      texture: amplitude of a smooth tissue texture that moves with the tissue (in the body;
        0 = piecewise-constant images). Without it the motion inside a homogeneous region,
        and a sliding rotation altogether, is invisible.
      texture_spacing: feature size of the texture (control-point spacing, voxels).
      amplitude, control_spacing, steps: the body motion, as
        :func:`~jrs_jax.data.make_subjects` (``control_spacing`` also for ``w_g``). The
        default control spacing is twice that of ``make_subjects``: a smoother body motion,
        whose variation between neighbouring voxels (under 1 voxel at 48^2 - 64^2; give 3-D
        volumes of ~24^3 a smaller ``amplitude``) stays well below the jumps at the organ
        boundaries (about ``shift``).
      num_candidates: random shifts tried per organ to keep it inside the body.
      intensity_jitter, bias, bias_spacing, noise, blur_sigma, label_means: the rendering of
        :func:`~jrs_jax.data.make_subjects`.

    Returns:
      dict (numpy arrays; ``G`` organs, ``L = G + 1`` layers, layer 0 the body):
      ``images`` float32 ``[N, *S, 1]``, ``labels`` int32 ``[N, *S]``, ``masks`` int32
      ``[N, *S]`` (0 body layer, ``g`` organ ``g``), ``disp`` float32 ``[N, *S, D]`` (the
      subject field: ``layer_disp`` of the voxel's layer, template -> subject), ``disp_inv``
      float32 ``[N, *S, D]`` (subject -> template on the template grid: ``layer_disp_inv``
      of the template voxel's layer; composing ``disp[f]`` with ``disp_inv[m]`` is *not* the
      pair ground truth near boundaries: use :func:`sliding_pair_field`), ``layer_disp`` /
      ``layer_disp_inv`` float32 ``[N, L, *S, D]`` (``u_b, u_1, ...`` and their inverses),
      ``shifts`` float32: ``motion="shift"``: the translations ``t_g`` ``[N, G, D]``;
      ``"rotation"``: rotation vectors (axis × angle, radians; 2-D ``(0, 0, angle)``)
      ``[N, G, 3]``; ``organs`` (the clipped groups, a tuple
      of tuples) and ``template_fill`` int32 ``[*S]`` (:func:`fill_organs`).

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (48, 48))
      >>> s = make_sliding_subjects(jax.random.PRNGKey(1), t, num_subjects=2)
      >>> int(s["masks"].max()), s["layer_disp"].shape
      (2, (2, 3, 48, 48, 2))
    """
    template = _check_template(template)
    if int(num_subjects) < 1:
        raise ValueError(f"num_subjects must be >= 1; got {num_subjects}")
    lo, hi = (float(s) for s in shift)
    if not 0.0 <= lo <= hi:
        raise ValueError(f"shift must be (low, high) with 0 <= low <= high; got {shift}")
    if float(organ_amplitude) < 0:
        raise ValueError(f"organ_amplitude must be >= 0; got {organ_amplitude}")
    if int(num_candidates) < 1:
        raise ValueError(f"num_candidates must be >= 1; got {num_candidates}")
    if motion not in ("rotation", "shift"):
        raise ValueError(f"motion must be 'rotation' or 'shift'; got {motion!r}")
    if float(texture) < 0:
        raise ValueError(f"texture must be >= 0; got {texture}")
    groups = _organ_groups(organs, template)
    fill = fill_organs(template, groups)
    num_classes = int(template.max()) + 1
    group_of = np.zeros(num_classes, np.int32)
    for g, group in enumerate(groups, 1):
        group_of[list(group)] = g
    means = _check_means(label_means, num_classes)
    traced, static = _render_args(
        template.shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    shape, n = template.shape, int(num_subjects)
    motion_of = partial(
        _motion, shape=shape, n=n, control_spacing=int(control_spacing), steps=int(steps)
    )
    k_vel, k_org, k_mean, k_bias, k_noise = jax.random.split(key, 5)
    k_tex = jax.random.fold_in(key, 7)
    u_b, u_b_inv = motion_of(k_vel, jnp.float32(amplitude))
    labels, outside = _body_layer(u_b, jnp.asarray(fill), num_classes=num_classes)
    tmpl, group_of = jnp.asarray(template, jnp.int32), jnp.asarray(group_of)
    state = (labels, jnp.zeros((n, *shape), jnp.int32), u_b, u_b_inv, jnp.zeros((n, *shape), bool))
    layers, layers_inv, shifts = [u_b], [u_b_inv], []
    for g in range(1, len(groups) + 1):
        k_place, k_w = jax.random.split(jax.random.fold_in(k_org, g))
        u_w, u_w_inv = motion_of(k_w, jnp.float32(organ_amplitude))
        common = (k_place, jnp.int32(g), state, u_b, u_b_inv, u_w, u_w_inv, tmpl, group_of)
        if motion == "rotation":
            inside = np.argwhere(np.isin(template, groups[g - 1])).astype(np.float32)
            radius = (
                np.sqrt(len(inside) / np.pi)
                if template.ndim == 2
                else np.cbrt(3 * len(inside) / (4 * np.pi))
            )
            state, (u_g, u_g_inv, t) = _rotate_organ(
                *common,
                jnp.asarray(inside.mean(0)),
                jnp.float32(max(radius, 1.0)),
                jnp.float32(lo),
                jnp.float32(hi),
                num_classes=num_classes,
            )
        else:
            state, (u_g, u_g_inv, t) = _place_organ(
                *common,
                outside,
                jnp.float32(lo),
                jnp.float32(hi),
                num_classes=num_classes,
                num_candidates=int(num_candidates),
            )
        layers.append(u_g)
        layers_inv.append(u_g_inv)
        shifts.append(t)
    labels, mask, disp, disp_inv, _ = state
    img = _render_jit(
        (k_mean, k_bias, k_noise),
        labels,
        jnp.asarray(means),
        *traced,
        num_classes=num_classes,
        **static,
    )
    if float(texture) > 0:
        img = img + _texture(
            k_tex,
            disp,
            labels > 0,
            jnp.float32(texture),
            control_spacing=max(2, int(texture_spacing)),
        )
    result = {
        "images": np.asarray(img, np.float32),
        "labels": np.asarray(labels, np.int32),
        "masks": np.asarray(mask, np.int32),
        "disp": np.asarray(disp, np.float32),
        "disp_inv": np.asarray(disp_inv, np.float32),
        "layer_disp": np.stack([np.asarray(x, np.float32) for x in layers], 1),
        "layer_disp_inv": np.stack([np.asarray(x, np.float32) for x in layers_inv], 1),
        # motion="shift": the translations t_g [N, G, D]; "rotation": rotation vectors
        # (axis * angle, radians; 2-D: (0, 0, angle)) [N, G, 3]
        "shifts": np.stack([np.asarray(x, np.float32) for x in shifts], 1),
    }
    result["organs"] = groups
    result["template_fill"] = fill
    return result


@jax.jit
def _pair_impl(mask, layers, layers_inv):
    """``[P, *S]``, ``[P, L, *S, D]`` x2 -> ``[P, *S, D]``: per voxel, the composition of
    the fixed layer ``mask`` with the moving subject's inverse of the same layer."""
    p, nl = layers.shape[:2]
    flat = compose(
        layers.reshape(p * nl, *layers.shape[2:]), layers_inv.reshape(p * nl, *layers.shape[2:])
    ).reshape(layers.shape)
    sel = mask[:, None, ..., None]
    return jnp.take_along_axis(flat, sel, axis=1)[:, 0]


def sliding_pair_field(subjects: dict, fixed, moving) -> np.ndarray:
    """The exact ground truth of the pair(s) (fixed, moving) of :func:`make_sliding_subjects`
    output ``subjects``: ``compose(layer_disp[f, g], layer_disp_inv[m, g])`` on the fixed
    subject's organ ``g`` (mask ``g``), the body layer's composition elsewhere, so that
    ``warp(moving, u) ~ fixed``.

    Args:
      subjects: the dict of :func:`make_sliding_subjects` (``masks``, ``layer_disp``,
        ``layer_disp_inv``).
      fixed, moving: subject indices: two ints, or two sequences of ``P`` ints.

    Returns:
      float32 ``[*S, D]`` for ints, ``[P, *S, D]`` for sequences.
    """
    f = np.asarray(fixed, np.int64)
    m = np.asarray(moving, np.int64)
    if f.shape != m.shape or f.ndim > 1:
        raise ValueError(
            f"fixed and moving must be two ints or two 1-D sequences of the same length; got "
            f"shapes {f.shape} and {m.shape}"
        )
    ff, mm = f.reshape(-1), m.reshape(-1)
    out = _pair_impl(
        jnp.asarray(subjects["masks"][ff]),
        jnp.asarray(subjects["layer_disp"][ff]),
        jnp.asarray(subjects["layer_disp_inv"][mm]),
    )
    out = np.asarray(out, np.float32)
    return out[0] if f.ndim == 0 else out


def write_sliding_dataset(
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
    organs: Sequence[Sequence[int]] = DEFAULT_ORGANS,
    shift: tuple[float, float] = (2.0, 4.0),
    organ_amplitude: float = 0.0,
    motion: str = "rotation",
    name: str = "jrs_jax_sliding",
    **render_kwargs,
) -> str:
    """Generate a sliding-organ population and write it in the Learn2Reg layout (the
    ``sliding`` scenario, ``jrs-jax make-synthetic --scenario sliding``).

    The layout, the split into training / held-out subjects and the validation pairs are
    those of :func:`~jrs_jax.data.write_learn2reg_dataset` (same key, same template), with
    the region masks in ``masksTr/`` (every subject) and the exact layer-wise ground truth of
    every ``registration_val`` pair in ``fieldsVal/<fixed>_<moving>_disp.nii.gz`` (the
    entry's ``disp``, on the fixed image's grid, ``warp(moving, disp) ~ fixed``); no
    subject-level fields (see the module docstring). The ``jrs_jax`` block records the
    generator, seed, settings, organ groups and shifts, and the mask meaning.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_labelled, num_heldout, num_val_pairs, num_labels, spacing,
        name: as :func:`~jrs_jax.data.write_learn2reg_dataset`.
      organs, shift, organ_amplitude, motion: the sliding organs
        (:func:`make_sliding_subjects`).
      **render_kwargs: forwarded to :func:`make_sliding_subjects` (``texture``,
        ``amplitude``, ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_sliding_dataset("/tmp/sliding", key=0, shape=(48, 48), num_subjects=8)
      >>> load_learn2reg(p).has_ground_truth(load_learn2reg(p).val_pairs)
      True
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    subjects = make_sliding_subjects(
        k_subjects,
        template,
        num_subjects=lay.n,
        organs=organs,
        shift=shift,
        organ_amplitude=organ_amplitude,
        motion=motion,
        **render_kwargs,
    )
    pairs = _val_pairs(k_pairs, lay)
    pair_fields = {}
    if pairs:
        f, m = (list(c) for c in zip(*pairs, strict=True))
        gt = sliding_pair_field(subjects, f, m)
        pair_fields = {p: gt[k] for k, p in enumerate(pairs)}
    groups = subjects["organs"]
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in render_kwargs.items()}
    extra = {
        "generator": "jrs_jax.data.sliding",
        "seed": seed,
        **_layout_info(lay, num_labels),
        "subject_settings": settings,
        "sliding": {
            "organs": [list(g) for g in groups],
            "shift": [float(s) for s in shift],
            "organ_amplitude": float(organ_amplitude),
            "mask": {
                "0": "body layer: body, background and non-sliding structures",
                **{
                    str(g): f"sliding organ {g}: labels {list(grp)}"
                    for g, grp in enumerate(groups, 1)
                },
            },
            "mask_meaning": MASK_MEANING,
            "motion": motion,
            "model": (
                "organ g: R_g o psi_b o exp(w_g) on mask g (R_g a rotation about the organ's "
                "template centroid); body layer psi_b elsewhere"
                if motion == "rotation"
                else "organ g: psi_b o T_g o exp(w_g) on mask g; body layer psi_b elsewhere"
            ),
            # translations t_g (shift) or rotation vectors axis * angle in radians (rotation)
            "organ_motions": {
                f"sub_{i:04d}": np.round(subjects["shifts"][i], 4).tolist() for i in range(lay.n)
            },
        },
        "pair_fields": (
            "registration_val 'disp': exact layer-wise ground truth of the pair, on the fixed "
            "grid: compose(u_fixed_g, u_moving_g_inv) on the fixed subject's mask g, the body "
            "layer's composition elsewhere; warp(moving, disp) ~ fixed"
        ),
        "subject_fields": (
            "not written: the motion is layered and discontinuous, and composing "
            "subject-to-template fields is wrong near organ boundaries; use the pair fields"
        ),
        "disp_convention": "voxels along array axes, pull-back: warp(moving, disp) ~ fixed",
    }
    return _write_population(
        root,
        lay,
        template=template,
        images=subjects["images"],
        labels=subjects["labels"],
        masks=subjects["masks"],
        pairs=pairs,
        pair_fields=pair_fields,
        name=name,
        description="jrs_jax synthetic sliding organs (jrs_jax.data.sliding)",
        extra=extra,
    )
