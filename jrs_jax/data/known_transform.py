"""The ``known_transform`` scenario: pairs made by applying a recorded transform to one image.

Registration networks trained with a supervised (ground-truth field) loss need pairs whose
transform is known exactly. The X-ray GAN registration of Mahapatra et al. (MLMI 2018)
builds its training pairs so: a chest X-ray (the *reference*) and the same X-ray moved by a
random rigid transform and a random elastic deformation (the *floating* image); the
transform is the ground truth. This scenario does the same with the synthetic anatomy.

Model (conventions of :mod:`jrs_jax.spatial`: pull-back warps ``warp(I, u)(x) = I(x +
u(x))``, voxels along array axes, ``compose(u, v) = u + v(x + u)`` is ``phi_v o phi_u``):

- *Sources*: ``N`` subjects drawn as the ``anatomy`` scenario draws them
  (:func:`~jrs_jax.data.make_template` + :func:`~jrs_jax.data.make_subjects`), by default
  with ``num_labels=1``: one foreground object mask (the body), as the lung-field masks of
  chest X-rays. With the same key, shape, ``num_labels`` and render settings the sources are
  exactly the subjects of :func:`~jrs_jax.data.write_learn2reg_dataset`.
- *Rigid part* of subject ``s``: a rotation by ``theta_s`` uniform in ``[-rotation,
  rotation]`` degrees about the image centre ``c = (n - 1) / 2`` and a translation ``t_s``
  uniform in ``[-translation, translation]`` voxels per axis. The *content* moves: a point
  ``p`` of the reference appears at ``M_s(p) = R_s (p - c) + c + t_s`` in the floating image
  (before the elastic part). 2-D: ``R = [[cos, -sin], [sin, cos]]`` in array axes (0, 1);
  3-D: a rotation by ``theta_s`` about a uniformly random unit axis ``a_s`` (Rodrigues).
- *Elastic part*: ``e_s = exp(v_s)`` (:func:`~jrs_jax.spatial.integrate_velocity`) of a
  smooth random velocity (:func:`~jrs_jax.spatial.random_velocity`, control-point standard
  deviation ``elastic_amplitude`` voxels, one control point every ``control_spacing``
  voxels); its inverse is ``exp(-v_s)``. It acts last, in the floating image's frame.
- *Floating image*: ``T_s`` is the pull-back displacement with ``phi_T = M_s^-1 o phi_e``,
  i.e. ``T_s(x) = e_s(x) + r_s(x + e_s(x))`` with the affine ``r_s(y) = M_s^-1(y) - y``
  evaluated exactly (no interpolation, so ``T_s`` is the analytic rotation field when the
  elastic part is zero), and::

      image_1  = warp(image_0, T_s)                          (border padding)
      labels_1 = warp_labels(labels_0, T_s, mode="nearest")

  the image is *warped*, not re-rendered: the pair differs only by ``T_s`` (and by the
  interpolation of the source's noise), plus, optionally, independent Gaussian noise of
  standard deviation ``pair_noise`` (default 0) added to the floating image only.
- *Inverse*: ``T_s^-1(p) = r_inv(p) + exp(-v_s)(p + r_inv(p))`` with ``r_inv(p) = M_s(p) -
  p = (R_s - I)(p - c) + t_s`` exact and ``exp(-v_s)`` sampled linearly (border padding) at
  ``M_s(p)``: exact up to the interpolation of the elastic part where ``M_s(p)`` is inside
  the image.

Fields per scan (``Subject.field`` pulls a common reference onto the scan, ``field_inv`` the
scan onto the reference; here the reference is the subject's own time-0 scan)::

    time 0 (reference, "sub_SSSS_t0"): field = 0,      field_inv = 0
    time 1 (floating,  "sub_SSSS_t1"): field = T_s,    field_inv = T_s^-1

so :func:`~jrs_jax.data.pair_batch`'s ``compose(fixed.field, moving.field_inv)`` is exact for
both orders: the pair (fixed = time 0, moving = time 1) has ground truth ``T_s^-1``
(``warp(floating, gt) ~ reference``; its mean vector is about ``t_s``: the rotation part
averages to 0 over the grid), the pair (fixed = time 1, moving = time 0) ``T_s``. The fields
of different subjects do *not* share a reference: there is no ground truth for a pair of two
subjects (even though ``Dataset.has_ground_truth`` cannot tell).

Scaling of the elastic defaults: the paper's B-spline displacements of +-1 to 15 pixels are
at X-ray resolution (~512-1024 px); on a 64^2 grid that is about +-1 to 2 voxels, and we
default to somewhat more: ``elastic_amplitude=1.5`` voxels of control-point standard
deviation, ``control_spacing=16`` voxels. The elastic part then moves voxels by about 1-2
voxels typically and up to ~4-5 (its per-subject maximum is recorded), with Jacobian
determinants above ~0.5 (no folding). Rotation and translation defaults (10 degrees, 8
voxels) are the paper's ranges scaled the same way (~+-10 degrees, a few % of the image).

Files (:func:`write_known_transform_dataset`): the Learn2Reg layout, two scans per subject
(``sub_SSSS_t0``, ``sub_SSSS_t1``; ``subject = "sub_SSSS"``, ``time`` 0 / 1), subject-level
fields in ``fieldsTr/``, and ``registration_val`` one pair (fixed = time 0, moving = time 1)
per held-out subject. For training pairs with their ground truth use
``pair_batch(ds, within_subject_pairs(rng, ds, ds.training(), B), fields=True)`` (both
orders are drawn, each with its exact ground truth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..spatial.fields import integrate_velocity
from ..spatial.grid import identity_grid
from ..spatial.random import random_velocity
from ..spatial.warp import warp, warp_labels
from .longitudinal import _scan_layout, _scan_names
from .synthetic import (
    _as_key,
    _check_shape,
    _flat,
    _layout,
    _layout_info,
    _write_population,
    make_subjects,
    make_template,
)

__all__ = ["make_known_transform_pairs", "write_known_transform_dataset"]

CONVENTION = (
    "pair (fixed = time 0, moving = time 1): ground truth = field_inv of the time-1 scan: "
    "warp(moving, gt) ~ fixed; the reverse pair's is the time-1 field; time-0 fields are 0"
)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _nonneg(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
    return v


def _integer(name: str, value, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float)):
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    if int(value) != value or int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return int(value)


def _check_translation(translation, ndim: int) -> np.ndarray:
    t = np.atleast_1d(np.asarray(translation, dtype=object))
    if t.size == 1:
        t = np.repeat(t, ndim)
    if t.shape != (ndim,):
        raise ValueError(
            f"translation must be one value or one per axis ({ndim}); got {translation!r}"
        )
    return np.asarray([_nonneg("translation", v) for v in t], np.float32)


def _check_settings(
    shape, *, translation, rotation, elastic_amplitude, control_spacing, steps, pair_noise
):
    """Checked settings: ``(translation [D], rotation, amplitude, control_spacing, steps,
    pair_noise)``; ``ValueError`` naming the bad one."""
    translation = _check_translation(translation, len(shape))
    rotation = _nonneg("rotation", rotation)
    if rotation > 180:
        raise ValueError(f"rotation must be in [0, 180] degrees; got {rotation}")
    amplitude = _nonneg("elastic_amplitude", elastic_amplitude)
    control_spacing = _integer("control_spacing", control_spacing, 2)
    steps = _integer("steps", steps, 0)
    pair_noise = _nonneg("pair_noise", pair_noise)
    return translation, rotation, amplitude, control_spacing, steps, pair_noise


# --------------------------------------------------------------------------------------------
# the transforms
# --------------------------------------------------------------------------------------------


def _rotations(theta: jnp.ndarray, axis: jnp.ndarray | None) -> jnp.ndarray:
    """``[N, D, D]`` rotation matrices by ``theta`` (radians) in array axes; 3-D: about the
    unit ``axis`` ``[N, 3]`` (Rodrigues)."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    if axis is None:
        return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)
    a0, a1, a2 = axis[:, 0], axis[:, 1], axis[:, 2]
    z = jnp.zeros_like(a0)
    k = jnp.stack(
        [jnp.stack([z, -a2, a1], -1), jnp.stack([a2, z, -a0], -1), jnp.stack([-a1, a0, z], -1)],
        -2,
    )
    eye = jnp.eye(3, dtype=theta.dtype)
    return eye + s[:, None, None] * k + (1 - c)[:, None, None] * (k @ k)


def _affine_apply(a: jnp.ndarray, t: jnp.ndarray, y: jnp.ndarray, centre: jnp.ndarray):
    """``a (y - c) + c + t`` for points ``y`` ``[N, *S, D]``, ``a`` ``[N, D, D]``, ``t``
    ``[N, D]``."""
    n, d = t.shape
    bshape = (n, *([1] * (y.ndim - 2)), d)
    return jnp.einsum("nkl,n...l->n...k", a, y - centre) + centre + t.reshape(bshape)


@partial(jax.jit, static_argnames=("shape", "n", "control_spacing", "steps", "num_classes"))
def _transform_impl(
    key,
    images,
    labels,
    rotation,
    translation,
    amplitude,
    pair_noise,
    *,
    shape,
    n,
    control_spacing,
    steps,
    num_classes,
):
    d = len(shape)
    k_rot, k_axis, k_trans, k_vel, k_noise = jax.random.split(key, 5)
    theta_deg = jax.random.uniform(k_rot, (n,), jnp.float32, -1.0, 1.0) * rotation
    trans = jax.random.uniform(k_trans, (n, d), jnp.float32, -1.0, 1.0) * translation
    axis = None
    if d == 3:
        axis = jax.random.normal(k_axis, (n, 3), jnp.float32)
        axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    rot = _rotations(jnp.deg2rad(theta_deg), axis)  # the content's motion M(p) = R(p-c)+c+t
    rot_t = jnp.swapaxes(rot, -1, -2)
    centre = jnp.asarray([(k - 1) / 2.0 for k in shape], jnp.float32)
    grid = jnp.broadcast_to(identity_grid(shape)[None], (n, *shape, d))

    v = (
        random_velocity(k_vel, shape, batch_size=n, amplitude=1.0, control_spacing=control_spacing)
        * amplitude
    )
    e = integrate_velocity(v, steps=steps)
    e_inv = integrate_velocity(-v, steps=steps)
    # pull-back of the floating scan: phi_T = M^-1 o phi_e, M^-1(y) = R^T (y - c - t) + c
    y = grid + e
    disp = _affine_apply(rot_t, -jnp.einsum("nkl,nl->nk", rot_t, trans), y, centre) - grid
    # its inverse: phi_T^-1 = phi_e^-1 o M, exp(-v) sampled at M(p)
    r_inv = _affine_apply(rot, trans, grid, centre) - grid
    disp_inv = r_inv + warp(e_inv, r_inv, padding="border")

    floating = warp(images, disp, padding="border")
    floating = floating + pair_noise * jax.random.normal(k_noise, floating.shape, floating.dtype)
    lab1 = None
    if num_classes is not None:
        lab1 = warp_labels(labels, disp, num_classes=num_classes, mode="nearest")
    e_max = jnp.max(jnp.linalg.norm(e, axis=-1).reshape(n, -1), axis=-1)
    matrix = jnp.concatenate([rot, trans[..., None]], -1)  # [N, D, D + 1]
    return floating, lab1, disp, disp_inv, theta_deg, trans, axis, matrix, e_max


def make_known_transform_pairs(
    key: jax.Array,
    source,
    *,
    num_subjects: int | None = None,
    labels=None,
    translation: float | Sequence[float] = 8.0,
    rotation: float = 10.0,
    elastic_amplitude: float = 1.5,
    control_spacing: int = 16,
    steps: int = 7,
    pair_noise: float = 0.0,
    **render_kwargs,
) -> dict[str, np.ndarray | None]:
    """Reference / floating pairs: each source image and itself moved by a recorded random
    rigid + elastic transform (the model of the module docstring).

    Sources: either an integer template label map ``[*S]`` (e.g. from
    :func:`~jrs_jax.data.make_template`), from which ``num_subjects`` subjects are drawn by
    :func:`~jrs_jax.data.make_subjects` (``render_kwargs``: its ``amplitude``, ``noise``,
    ``label_means``...; its own ``control_spacing`` cannot be passed: the name is the elastic
    part's here), or float images ``[N, *S, C]`` (any images, e.g. real X-rays; ``labels``:
    optional integer ``[N, *S]``; no ``render_kwargs``). 2-D and 3-D.

    Args:
      key: PRNG key (the result is a deterministic function of the key and the arguments).
      source: template ``[*S]`` (integer) or images ``[N, *S, C]`` (float).
      num_subjects: ``N`` for a template (required); with images ``None`` or ``N``.
      labels: label maps of the images (images only).
      translation: maximal translation per axis in voxels (a value or one per axis).
      rotation: maximal rotation in degrees (``[0, 180]``).
      elastic_amplitude: control-point standard deviation of the elastic velocity, voxels
        (0: rigid only).
      control_spacing: voxels between its control points (integer >= 2).
      steps: scaling-and-squaring steps of the elastic part.
      pair_noise: standard deviation of independent Gaussian noise added to the floating
        images.
      **render_kwargs: forwarded to :func:`~jrs_jax.data.make_subjects` (template only).

    Returns:
      numpy dict: ``images`` float32 ``[N, 2, *S, C]`` (time 0 = source, time 1 =
      floating), ``labels`` int32 ``[N, 2, *S]`` (``None`` for images without labels),
      ``disp`` / ``disp_inv`` float32 ``[N, 2, *S, D]`` (the scans' ``field`` /
      ``field_inv``: zeros at time 0, ``T`` / ``T^-1`` at time 1), ``rotation`` float32
      ``[N]`` (degrees), ``translation`` float32 ``[N, D]`` (voxels), ``axis`` float32
      ``[N, 3]`` (3-D; ``None`` in 2-D), ``rigid`` float32 ``[N, D, D + 1]`` (``[R | t]``:
      ``affine_to_displacement(rigid, S)`` is the rigid part of the pair ground truth
      ``disp_inv[:, 1]``), ``elastic_max`` float32 ``[N]`` (largest elastic displacement,
      voxels).

    Raises:
      ValueError: a bad source or setting (naming it).
    """
    src = np.asarray(source)
    template = src.dtype.kind in "iu"
    if template:
        if src.ndim not in (2, 3):
            raise ValueError(
                f"a template must be an integer [*S] map with 2 or 3 axes; got {src.shape}"
            )
        if num_subjects is None or int(num_subjects) < 1:
            raise ValueError(f"num_subjects must be >= 1 for a template source; got {num_subjects}")
        shape = _check_shape(src.shape)
    elif src.dtype.kind == "f":
        if render_kwargs:
            raise ValueError(f"render settings {sorted(render_kwargs)} need a template source")
        if src.ndim not in (4, 5):
            raise ValueError(f"images must be [N, *S, C] with 2 or 3 spatial axes; got {src.shape}")
        if num_subjects is not None and int(num_subjects) != src.shape[0]:
            raise ValueError(f"num_subjects={num_subjects} but {src.shape[0]} images were given")
        shape = _check_shape(src.shape[1:-1])
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != src.shape[:-1] or labels.dtype.kind not in "iu":
                raise ValueError(
                    f"labels must be integer {src.shape[:-1]}; got {labels.dtype} {labels.shape}"
                )
    else:
        raise ValueError(f"source must be an integer template or float images; got {src.dtype}")
    translation, rotation, amplitude, spacing, steps, noise = _check_settings(
        shape,
        translation=translation,
        rotation=rotation,
        elastic_amplitude=elastic_amplitude,
        control_spacing=control_spacing,
        steps=steps,
        pair_noise=pair_noise,
    )
    if template:
        k_src, key = jax.random.split(key)
        subj = make_subjects(k_src, src, num_subjects=int(num_subjects), **render_kwargs)
        images, labels = subj["images"], subj["labels"]
    else:
        images = src.astype(np.float32)
    n = images.shape[0]
    num_classes = None if labels is None else int(np.max(labels)) + 1
    out = _transform_impl(
        key,
        jnp.asarray(images),
        None if labels is None else jnp.asarray(labels, jnp.int32),
        jnp.float32(rotation),
        jnp.asarray(translation),
        jnp.float32(amplitude),
        jnp.float32(noise),
        shape=shape,
        n=n,
        control_spacing=spacing,
        steps=steps,
        num_classes=num_classes,
    )
    floating, lab1, disp, disp_inv, theta, trans, axis, matrix, e_max = (
        None if a is None else np.asarray(a, np.float32) for a in out
    )
    zeros = np.zeros_like(disp)
    return {
        "images": np.stack([images, floating], 1),
        "labels": None if labels is None else np.stack([labels, lab1], 1).astype(np.int32),
        "disp": np.stack([zeros, disp], 1),
        "disp_inv": np.stack([zeros, disp_inv], 1),
        "rotation": theta,
        "translation": trans,
        "axis": axis,
        "rigid": matrix,
        "elastic_max": e_max,
    }


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_known_transform_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (64, 64),
    num_subjects: int = 20,
    num_heldout: int | None = None,
    num_labelled: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int = 1,
    spacing: float | Sequence[float] = 1.0,
    translation: float | Sequence[float] = 8.0,
    rotation: float = 10.0,
    elastic_amplitude: float = 1.5,
    control_spacing: int = 16,
    pair_noise: float = 0.0,
    name: str = "jrs_jax_known_transform",
    **render_kwargs,
) -> str:
    """Generate reference / floating pairs with known transforms and write them in the
    Learn2Reg layout (the ``known_transform`` scenario, ``jrs-jax make-synthetic --scenario
    known_transform``).

    Layout (``SSSS`` subject)::

        dataset.json
        imagesTr/sub_SSSS_t0.nii.gz        reference ("subject": "sub_SSSS", "time": 0)
        imagesTr/sub_SSSS_t1.nii.gz        floating  (time 1)
        labelsTr/sub_SSSS_tT.nii.gz        labels of every scan
        fieldsTr/sub_SSSS_tT_disp.nii.gz   the scan's field (and _disp_inv): 0 at time 0
        template/template_0000.nii.gz

    ``num_subjects`` counts subjects (source images), each with its two scans. The first
    ``num_labelled`` training subjects list labels for both scans; the last ``num_heldout``
    subjects are held out, and ``registration_val`` holds one pair (fixed = time 0, moving =
    time 1) per held-out subject, of the first ``num_val_pairs`` of them (default, and at
    most, all: a larger value is capped, so the command line's ``H (H - 1)`` gives all ``H``).
    The ``jrs_jax`` block records the generator, seed, settings, the convention, and per
    subject the rotation (degrees; 3-D also the axis), translation (voxels), the rigid
    matrix ``[R | t]`` and the largest elastic displacement.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_labelled, num_heldout, spacing, name: as
        :func:`~jrs_jax.data.write_learn2reg_dataset` (subjects, not scans).
      num_val_pairs: validation pairs, one per held-out subject (default all ``H``).
      num_labels: foreground labels of the template (default 1: one object mask).
      translation, rotation, elastic_amplitude, control_spacing, pair_noise: the transforms
        (:func:`make_known_transform_pairs`).
      **render_kwargs: forwarded to :func:`~jrs_jax.data.make_subjects` (``amplitude``,
        ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_known_transform_dataset("/tmp/kt", key=0, shape=(48, 48), num_subjects=6)
      >>> ds = load_learn2reg(p)
      >>> len(ds), len(ds.subject_ids()), ds.val_pairs[0]
      (12, 6, (8, 9))
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, None, spacing)
    trans_max, _, _, spacing_used, _, _ = _check_settings(
        lay.shape,
        translation=translation,
        rotation=rotation,
        elastic_amplitude=elastic_amplitude,
        control_spacing=control_spacing,
        steps=7,
        pair_noise=pair_noise,
    )
    k = lay.h if num_val_pairs is None else int(num_val_pairs)
    if k < 0:
        raise ValueError(f"num_val_pairs must be >= 0 (or None for all); got {num_val_pairs}")
    heldout = range(lay.n_train, lay.n)
    pairs = [(2 * s, 2 * s + 1) for s in heldout][:k]
    key, seed = _as_key(key)
    k_template, k_subjects, k_transform = jax.random.split(key, 3)  # the template of `anatomy`
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    subj = make_subjects(k_subjects, template, num_subjects=lay.n, **render_kwargs)
    s = make_known_transform_pairs(
        k_transform,
        subj["images"],
        labels=subj["labels"],
        translation=translation,
        rotation=rotation,
        elastic_amplitude=elastic_amplitude,
        control_spacing=control_spacing,
        pair_noise=pair_noise,
    )
    scans = _scan_layout(lay, 2)._replace(n_pairs=len(pairs))
    names = _scan_names(lay.n, 2)
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in render_kwargs.items()}
    extra = {
        "generator": "jrs_jax.data.known_transform",
        "seed": seed,
        **_layout_info(lay, num_labels),
        "num_timepoints": 2,
        "num_scans": scans.n,
        "subject_settings": settings,
        "known_transform": {
            "translation": [float(v) for v in trans_max],
            "rotation": float(rotation),
            "elastic_amplitude": float(elastic_amplitude),
            "control_spacing": spacing_used,
            "pair_noise": float(pair_noise),
            "model": (
                "time 1 = warp(time 0, T), T(x) = e(x) + r(x + e(x)): the content moved by "
                "M(p) = R (p - c) + c + t (rotation about the centre c = (n - 1) / 2, "
                "translation t), then the elastic e = exp(v); field_inv(time 1) = T^-1"
            ),
            "convention": CONVENTION,
            "subjects": {
                f"sub_{i:04d}": {
                    "rotation": round(float(s["rotation"][i]), 6),
                    "translation": np.round(s["translation"][i], 6).tolist(),
                    **({} if s["axis"] is None else {"axis": np.round(s["axis"][i], 6).tolist()}),
                    "rigid": np.round(s["rigid"][i], 6).tolist(),
                    "elastic_max": round(float(s["elastic_max"][i]), 4),
                }
                for i in range(lay.n)
            },
        },
        "disp_convention": CONVENTION,
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
        description="jrs_jax synthetic pairs with known transforms (jrs_jax.data.known_transform)",
        extra=extra,
        **names,
    )
