"""The ``lesion`` scenario: a structure absent from the template, grown in each patient with a
mass effect whose displacement is kept as the ground truth, plus a label for it.

Registration of a patient with a lesion (tumour, haemorrhage, stroke) to a healthy atlas
has no correspondence inside the lesion, and the tissue around it is pushed aside (the
*mass effect*): methods that segment the lesion jointly with the registration (excluding it
from the similarity, or modelling the push) need data where both the lesion and the true
deformation around it are known.

Model (conventions of :mod:`jrs_jax.data.synthetic`: pull-back warps ``warp(I, u)(x) = I(x +
u(x))``, voxels along array axes, ``compose(u, v) = u + v(x + u)`` is ``phi_v o phi_u``).
The template ``T`` (:func:`~jrs_jax.data.make_template`) has the tissue labels ``1 .. K -
1``; the lesion is label ``K`` (``"lesion"``), in no template voxel.

- *Atlas* (subject 0, a labelled training subject): the template itself, lesion-free,
  rendered with ``field = field_inv = 0``.
- *Patient* ``s >= 1``: a smooth random deformation ``u_s = exp(v_s)`` as the ``anatomy``
  scenario draws (:func:`~jrs_jax.spatial.random_velocity`, ``amplitude``,
  ``control_spacing``), then a lesion of radius ``r_s`` (uniform in ``lesion_radius``)
  centred at ``c_s``, a voxel of the deformed anatomy at least ``r_s + 1`` voxels inside
  the foreground (uniform among those). The *mass effect* pushes the tissue outwards from
  ``c_s`` (:func:`mass_effect_field`): a tissue point at distance ``rho - a(rho)`` from the
  centre moves to distance ``rho``, with the radial push::

      a(rho) = A t exp((1 - t^2) / 2),   t = rho / r_s,   A = mass_effect

  largest (``A`` voxels) at the lesion boundary ``rho = r_s``, decaying outside (``0.45 A``
  at ``2 r_s``, ``0.055 A`` at ``3 r_s``) and vanishing at the centre. As a pull-back
  displacement ``m_s(q) = -a(rho) (q - c_s) / rho`` it points *towards* the centre. The map
  is smooth and invertible when ``A e^(1/2) / r_s < 1``; ``mass_effect <= lesion_radius[0] /
  2`` is required (then ``det J >= (1 - 0.83)^D`` at the centre, inside the lesion, and
  ``> 1`` beyond ``rho = r_s``). Its inverse is computed by inverting the monotonic radial
  profile ``rho -> rho - a(rho)`` numerically (a fine table, linear interpolation).
- The patient's scan is the template pulled back by ``field = compose(m_s, u_s)`` (the
  deformation of the anatomy, then the push about the lesion in the scan's frame), its
  labels ``warp_labels(T, field, mode="nearest")`` with the disc / ball ``|x - c_s| <=
  r_s`` painted ``K`` (the lesion replaces the tissue the push has not moved out of it: a
  partly infiltrating, partly displacing lesion); ``field_inv = compose(exp(-v_s),
  m_s^-1)``.
- Images: the rendering of :func:`~jrs_jax.data.make_subjects` (per-subject jittered label
  means, partial-volume blur, smooth multiplicative bias, Gaussian noise) with the lesion's
  own mean ``lesion_mean`` (default: the middle of the widest gap between the tissue means
  in ``[0, 1]``; 0.2 for the default means: a hypo-intense lesion).

Ground truth. For the pair (fixed = patient ``s``, moving = atlas) :func:`~jrs_jax.data.
pair_batch`'s ``compose(fixed.field, moving.field_inv)`` is exactly ``field_s`` (the atlas'
fields are 0): it warps the atlas labels onto the patient's outside the lesion exactly (the
patient's labels *are* the template pulled back by it); inside the lesion there is no
correspondence (the field maps it to the compressed tissue it replaced). Patient pairs
compose through the template as the anatomy's do.

Files (:func:`write_lesion_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset` (same split, held-out validation pairs, field
files of every scan), ``num_labels + 1`` classes (background, ``num_labels - 1`` tissue
labels, the lesion). The ``jrs_jax`` block's ``lesion`` entry records the lesion label,
settings, atlas name, and per scan its lesion centre (voxels, array axes), radius and push
(``null`` / 0 for the atlas).
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
    _label_names,
    _layout,
    _render_args,
    _render_jit,
    _val_pairs,
    _write_subjects,
    make_template,
)

__all__ = ["make_lesion_subjects", "mass_effect_field", "write_lesion_dataset"]

LESION_NAME = "lesion"
#: ``mass_effect / lesion_radius[0]`` at most (keeps the push invertible, ``det J > 0``).
MAX_PUSH_RATIO = 0.5
_SQRT_E = float(np.exp(0.5))  # the largest slope of t exp((1 - t^2) / 2), at t = 0
_MIN_MEAN_GAP = 0.05  # the lesion's mean differs from every tissue mean by at least this

CONVENTION = (
    "voxels along array axes; field = compose(mass_effect, exp(v)) pulls the template onto "
    "the scan: labels = warp_labels(template, field, mode='nearest') outside the lesion; "
    "the atlas (subject 0) has field = field_inv = 0, so the pair (fixed = patient, moving = "
    "atlas) has ground truth field(patient)"
)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _number(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def _check_radius(lesion_radius) -> tuple[float, float]:
    """``(low, high)`` voxels from a value or a range, with ``1 <= low <= high``."""
    vals = np.atleast_1d(np.asarray(lesion_radius, dtype=object)).ravel()
    if vals.size not in (1, 2):
        raise ValueError(f"lesion_radius must be a value or (low, high); got {lesion_radius!r}")
    lo, hi = (_number("lesion_radius", v) for v in (vals[0], vals[-1]))
    if not 1.0 <= lo <= hi:
        raise ValueError(
            f"lesion_radius must be a value or (low, high) with 1 <= low <= high voxels; "
            f"got {lesion_radius!r}"
        )
    return lo, hi


def _check_push(mass_effect, radius: tuple[float, float]) -> float:
    push = _number("mass_effect", mass_effect)
    if not 0.0 <= push <= MAX_PUSH_RATIO * radius[0]:
        raise ValueError(
            f"mass_effect must be in [0, {MAX_PUSH_RATIO:g} * lesion_radius low] = "
            f"[0, {MAX_PUSH_RATIO * radius[0]:g}] voxels to keep the displacement invertible; "
            f"got {mass_effect!r}"
        )
    return push


def _lesion_mean(lesion_mean, tissue: np.ndarray) -> float:
    """The lesion's mean intensity: ``lesion_mean``, checked distinct from the ``tissue``
    means, or the middle of the widest gap between them (and 0, 1)."""
    if lesion_mean is None:
        edges = np.unique(np.clip(np.concatenate([[0.0, 1.0], tissue]), 0.0, 1.0))
        k = int(np.argmax(np.diff(edges)))
        return float((edges[k] + edges[k + 1]) / 2.0)
    mean = _number("lesion_mean", lesion_mean)
    if np.min(np.abs(tissue - mean)) < _MIN_MEAN_GAP:
        raise ValueError(
            f"lesion_mean must differ from every tissue mean "
            f"{np.round(tissue.astype(float), 4).tolist()} by at least {_MIN_MEAN_GAP}; "
            f"got {lesion_mean!r}"
        )
    return mean


def _class_means(label_means, lesion_mean, num_tissue: int) -> np.ndarray:
    """float32 ``[K + 1]``: the tissue classes' means (``label_means`` of the template's
    ``K`` classes, or of all ``K + 1``, the last one the lesion's) and the lesion's."""
    if label_means is not None and np.size(label_means) == num_tissue + 1:
        if lesion_mean is not None:
            raise ValueError(
                "give the lesion's mean either as the last of label_means or as lesion_mean, "
                "not both"
            )
        means = np.asarray(label_means, np.float32)
        lesion_mean, label_means = float(means[-1]), means[:-1]
    tissue = _check_means(label_means, num_tissue)
    return np.append(tissue, np.float32(_lesion_mean(lesion_mean, tissue))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the mass effect
# --------------------------------------------------------------------------------------------


def _push_profile(rho, radius: float, push: float):
    """Radial push ``a(rho) = A t exp((1 - t^2) / 2)``, ``t = rho / r`` (voxels)."""
    t = np.asarray(rho, np.float64) / radius
    return push * t * np.exp((1.0 - t**2) / 2.0)


def mass_effect_field(
    shape: Sequence[int], centre: Sequence[float], radius: float, push: float
) -> tuple[np.ndarray, np.ndarray]:
    """The pull-back displacement of a lesion's mass effect and its inverse (the model of
    the module docstring), float32 ``[*S, D]`` each.

    ``m(q) = -a(rho) (q - c) / rho`` (``rho = |q - c|``, ``a`` the radial push, largest:
    ``push`` voxels at ``rho = radius``) points towards the centre ``c``: the scan at ``q``
    shows the tissue that lay ``a(rho)`` voxels closer to the centre, i.e. the tissue is
    pushed outwards. The inverse ``m_inv(p) = (p - c) (rho(sigma) / sigma - 1)`` (``sigma =
    |p - c|``, ``rho(sigma)`` solving ``rho - a(rho) = sigma``) comes from a table of the
    monotonic radial map (8192 radii, linear interpolation): exact at the voxel centres to
    ~1e-4 voxels (``q = p + m_inv(p)`` has ``q + m(q) = p``); ``compose(m, m_inv)`` deviates
    from 0 by the linear interpolation of the fields, most (~0.2 voxel for ``A / r = 0.4``)
    at the compressed centre.

    Args:
      shape: spatial shape ``S`` (2 or 3 axes).
      centre: ``c``, ``D`` values in voxels along array axes.
      radius: the lesion radius ``r`` (> 0).
      push: the largest push ``A`` (``0 <= A < r / e^(1/2)`` keeps it invertible).

    Returns:
      ``(m, m_inv)``.

    Raises:
      ValueError: ``radius <= 0`` or a non-invertible ``push``.
    """
    shape = tuple(int(n) for n in shape)
    radius, push = float(radius), float(push)
    if radius <= 0 or not 0 <= push * _SQRT_E / radius < 1:
        raise ValueError(
            f"need radius > 0 and 0 <= push < radius / e^(1/2) for an invertible mass effect; "
            f"got radius={radius}, push={push}"
        )
    c = np.asarray(centre, np.float64).reshape(-1)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    off = np.moveaxis(grid, 0, -1) - c  # [*S, D]
    rho = np.linalg.norm(off, axis=-1)
    # a(rho) / rho = (A / r) exp((1 - t^2) / 2): smooth at the centre too
    ratio = (push / radius) * np.exp((1.0 - (rho / radius) ** 2) / 2.0)
    m = -off * ratio[..., None]
    # inverse of the radial map f(rho) = rho - a(rho) (strictly increasing), as rho / f(rho)
    top = float(np.max(rho)) + push + 1.0
    rho_tab = np.linspace(0.0, top, 8192)
    f_tab = rho_tab - _push_profile(rho_tab, radius, push)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale_tab = np.where(rho_tab > 0, rho_tab / f_tab, 1.0 / (1.0 - push / radius * _SQRT_E))
    scale = np.interp(rho, f_tab, scale_tab)  # rho(sigma) / sigma at sigma = |p - c|
    m_inv = off * (scale - 1.0)[..., None]
    return m.astype(np.float32), m_inv.astype(np.float32)


# --------------------------------------------------------------------------------------------
# subjects (jitted pieces compiled once per shape)
# --------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("n", "num_classes", "control_spacing", "steps"))
def _healthy(key, template, amplitude, *, n, num_classes, control_spacing, steps):
    """``(u, u_inv, labels)``: ``exp(+-v_s)`` ``[N, *S, D]`` with ``v_0 = 0`` (the atlas) and
    the template pulled back by ``u`` ``[N, *S]``."""
    shape = template.shape
    v = random_velocity(
        key, shape, batch_size=n, amplitude=amplitude, control_spacing=control_spacing
    )
    v = v.at[0].set(0.0)
    u = integrate_velocity(v, steps=steps)
    u_inv = integrate_velocity(-v, steps=steps)
    tmpl = jnp.broadcast_to(template[None], (n, *shape))
    return u, u_inv, warp_labels(tmpl, u, num_classes=num_classes, mode="nearest")


@partial(jax.jit, static_argnames=("num_classes",))
def _with_mass_effect(template, u, u_inv, m, m_inv, *, num_classes):
    """``(field, field_inv, labels)``: ``compose(m, u)``, ``compose(u_inv, m_inv)`` and the
    template pulled back by the field."""
    field = compose(m, u)
    field_inv = compose(u_inv, m_inv)
    tmpl = jnp.broadcast_to(template[None], (u.shape[0], *template.shape))
    return field, field_inv, warp_labels(tmpl, field, num_classes=num_classes, mode="nearest")


@partial(jax.jit, static_argnames=("n",))
def _draws(key, *, n):
    return jax.random.uniform(key, (n, 2), jnp.float32)


def _place_lesions(key, healthy: np.ndarray, lo: float, hi: float):
    """Radius ``[N]`` (uniform in ``[lo, hi]``) and centre ``[N, D]`` of each patient's lesion
    (rows ``1..``; row 0, the atlas: radius 0, centre NaN): a voxel at least ``radius + 1``
    voxels inside the foreground of ``healthy`` ``[N, *S]``, uniform among those."""
    n, d = healthy.shape[0], healthy.ndim - 1
    u = np.asarray(_draws(key, n=n), np.float64)
    radii = np.zeros(n, np.float32)
    centres = np.full((n, d), np.nan, np.float32)
    for s in range(1, n):
        r = lo + (hi - lo) * u[s, 0]
        depth = ndimage.distance_transform_edt(healthy[s] > 0)
        cand = np.argwhere(depth >= r + 1.0)
        if len(cand) == 0:
            raise ValueError(
                f"lesion_radius={r:.2f} voxels does not fit inside the foreground of subject "
                f"{s} (deepest voxel {depth.max():.1f} voxels from the background); use a "
                "smaller lesion_radius or a larger shape"
            )
        radii[s] = r
        centres[s] = cand[min(int(u[s, 1] * len(cand)), len(cand) - 1)]
    return radii, centres


def make_lesion_subjects(
    key: jax.Array,
    template,
    *,
    num_subjects: int,
    lesion_radius: float | tuple[float, float] = (4.0, 7.0),
    mass_effect: float = 1.5,
    lesion_mean: float | None = None,
    amplitude: float = 2.0,
    control_spacing: int = 8,
    intensity_jitter: float = 0.03,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict:
    """An atlas (subject 0: ``template`` itself) and ``N - 1`` patients of it, each with a
    lesion (label ``K = template.max() + 1``) and its mass effect (the model of the module
    docstring).

    Args:
      key: PRNG key (the results are a deterministic function of the key and arguments).
      template: integer label map ``[*S]`` without the lesion label (e.g.
        :func:`~jrs_jax.data.make_template`).
      num_subjects: ``N >= 2`` (the atlas and ``N - 1`` patients).
      lesion_radius: lesion radius in voxels: a value or ``(low, high)`` (uniform per
        patient), ``low >= 1``.
      mass_effect: the largest push ``A`` of the tissue, voxels (at the lesion boundary),
        ``0 <= A <= lesion_radius low / 2``.
      lesion_mean: the lesion's mean intensity (default: the middle of the widest gap
        between the tissue means in ``[0, 1]``); must differ from every tissue mean by 0.05.
      amplitude, control_spacing, steps: the patients' smooth deformations (as
        :func:`~jrs_jax.data.make_subjects`).
      intensity_jitter, bias, bias_spacing, noise, blur_sigma: the rendering (as
        ``make_subjects``; the lesion's mean is jittered too).
      label_means: the template classes' means (``K`` values), or those and the lesion's
        (``K + 1``; then no ``lesion_mean``).

    Returns:
      dict: ``images`` float32 ``[N, *S, 1]``, ``labels`` int32 ``[N, *S]`` (classes ``0..K``),
      ``disp`` / ``disp_inv`` float32 ``[N, *S, D]`` (template -> scan / scan -> template; 0
      for the atlas), ``mass_effect`` float32 ``[N, *S, D]`` (``m_s``, 0 for the atlas),
      ``centres`` float32 ``[N, D]`` (NaN for the atlas), ``radii`` / ``push`` float32
      ``[N]`` (0 for the atlas), ``means`` float32 ``[K + 1]`` (the base class means, the
      lesion's last), ``lesion_label`` ``K``.

    Raises:
      ValueError: a bad setting (naming it), or a lesion that fits nowhere inside the
        foreground.

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (64, 64), num_labels=3)
      >>> s = make_lesion_subjects(jax.random.PRNGKey(1), t, num_subjects=3)
      >>> s["lesion_label"], [bool((lab == 4).any()) for lab in s["labels"]]
      (4, [False, True, True])
    """
    template = _check_template(template)
    n = int(num_subjects)
    if n < 2:
        raise ValueError(f"num_subjects must be >= 2 (the atlas and a patient); got {num_subjects}")
    if template.max() < 1:
        raise ValueError("the template needs at least one foreground label")
    lo, hi = _check_radius(lesion_radius)
    push = _check_push(mass_effect, (lo, hi))
    lesion = int(template.max()) + 1
    num_classes = lesion + 1
    means = _class_means(label_means, lesion_mean, lesion)
    traced, static = _render_args(
        template.shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    shape, d = template.shape, template.ndim
    k_vel, k_place, k_render = jax.random.split(key, 3)
    tmpl = jnp.asarray(template, jnp.int32)
    u, u_inv, healthy = _healthy(
        k_vel,
        tmpl,
        jnp.float32(_number("amplitude", amplitude)),
        n=n,
        num_classes=lesion,
        control_spacing=int(control_spacing),
        steps=int(steps),
    )
    radii, centres = _place_lesions(k_place, np.asarray(healthy), lo, hi)
    pushes = np.where(radii > 0, push, 0.0).astype(np.float32)
    m = np.zeros((n, *shape, d), np.float32)
    m_inv = np.zeros_like(m)
    for s in range(1, n):
        m[s], m_inv[s] = mass_effect_field(shape, centres[s], radii[s], pushes[s])
    disp, disp_inv, labels = _with_mass_effect(
        tmpl, u, u_inv, jnp.asarray(m), jnp.asarray(m_inv), num_classes=lesion
    )
    labels = np.array(labels, np.int32)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
    for s in range(1, n):
        labels[s][np.linalg.norm(grid - centres[s], axis=-1) <= radii[s]] = lesion
    images = _render_jit(
        tuple(jax.random.split(k_render, 3)),
        jnp.asarray(labels),
        jnp.asarray(means),
        *traced,
        num_classes=num_classes,
        **static,
    )
    return {
        "images": np.asarray(images, np.float32),
        "labels": labels,
        "disp": np.asarray(disp, np.float32),
        "disp_inv": np.asarray(disp_inv, np.float32),
        "mass_effect": m,
        "centres": centres,
        "radii": radii,
        "push": pushes,
        "means": means,
        "lesion_label": lesion,
    }


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_lesion_dataset(
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
    lesion_radius: float | tuple[float, float] = (4.0, 7.0),
    mass_effect: float = 1.5,
    lesion_mean: float | None = None,
    name: str = "jrs_jax_lesion",
    **subject_kwargs,
) -> str:
    """Generate an atlas and patients with lesions (:func:`make_lesion_subjects`) and write
    them in the Learn2Reg layout (the ``lesion`` scenario, ``jrs-jax make-synthetic
    --scenario lesion``).

    Layout, split, held-out validation pairs, field files, 2-D storage and affine: those of
    :func:`~jrs_jax.data.write_learn2reg_dataset` (``sub_NNNN_0000``; ``sub_0000_0000`` is
    the atlas, the first training subject, labelled). ``labels`` names the classes, the last
    (``num_labels``) ``"lesion"``; the template file has no lesion. The ``jrs_jax`` block's
    ``lesion`` entry records the lesion label, the settings, the atlas and, per scan in
    order, ``{"name", "centre", "radius", "push"}`` (``centre`` ``null`` for the atlas).

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape, num_subjects, num_heldout, num_val_pairs, spacing, name: as
        :func:`~jrs_jax.data.write_learn2reg_dataset` (``num_subjects >= 3``).
      num_labelled: labelled training subjects (default all; >= 1: the atlas).
      num_labels: foreground classes including the lesion (``>= 2``): the template has
        ``num_labels - 1`` tissue labels, the lesion is label ``num_labels``.
      lesion_radius, mass_effect, lesion_mean: the lesions (:func:`make_lesion_subjects`).
      **subject_kwargs: forwarded to :func:`make_lesion_subjects` (``amplitude``,
        ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Raises:
      ValueError: a bad setting (naming it).

    Example:
      >>> p = write_lesion_dataset("/tmp/lesion", key=0, num_subjects=6)
      >>> ds = load_learn2reg(p)
      >>> ds.label_names[4]
      'lesion'
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    if lay.n_lab < 1:
        raise ValueError(
            f"num_labelled must be >= 1: subject 0, the lesion-free atlas, is labelled; "
            f"got {num_labelled}"
        )
    k = int(num_labels)
    if k < 2:
        raise ValueError(
            f"num_labels must be >= 2 (tissue labels 1..num_labels - 1 and the lesion); "
            f"got {num_labels}"
        )
    radius = _check_radius(lesion_radius)
    _check_push(mass_effect, radius)
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)
    template = make_template(k_template, lay.shape, num_labels=k - 1)
    s = make_lesion_subjects(
        k_subjects,
        template,
        num_subjects=lay.n,
        lesion_radius=lesion_radius,
        mass_effect=mass_effect,
        lesion_mean=lesion_mean,
        **subject_kwargs,
    )
    names = [f"sub_{i:04d}_0000" for i in range(lay.n)]
    label_names = {int(c): v for c, v in _label_names(k).items()} | {k: LESION_NAME}
    info = {
        "lesion": {
            "label": k,
            "name": LESION_NAME,
            "atlas": names[0],
            "lesion_radius": list(radius),
            "mass_effect": float(mass_effect),
            "means": np.round(s["means"].astype(float), 6).tolist(),
            "model": (
                "atlas = template (no lesion, zero fields); patient: field = compose(m, exp(v)), "
                "m(q) = -a(rho) (q - c) / rho, a(rho) = push t exp((1 - t^2) / 2), t = rho / "
                "radius (pull-back: points towards the centre; the tissue is pushed out); "
                "lesion label painted on |x - c| <= radius"
            ),
            "subjects": [
                {
                    "name": names[i],
                    "centre": None if i == 0 else np.round(s["centres"][i], 4).tolist(),
                    "radius": round(float(s["radii"][i]), 4),
                    "push": round(float(s["push"][i]), 4),
                }
                for i in range(lay.n)
            ],
        },
    }
    return _write_subjects(
        root,
        lay,
        template=template,
        subjects=s,
        pairs=_val_pairs(k_pairs, lay),
        name=name,
        description="jrs_jax synthetic anatomy with lesions and mass effect (jrs_jax.data.lesion)",
        generator="jrs_jax.data.lesion",
        seed=seed,
        num_labels=k,
        settings={k: v for k, v in subject_kwargs.items() if v is not None},
        info=info,
        convention=CONVENTION,
        label_names=label_names,
    )
