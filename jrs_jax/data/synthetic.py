"""Built-in synthetic anatomy: a template, a population of deformed subjects, Learn2Reg files.

A toy "anatomy" shared by the population (:func:`make_template`), subjects drawn from it by
random diffeomorphisms with known ground-truth displacements (:func:`make_subjects`), and a
writer for the Learn2Reg folder layout (:func:`write_learn2reg_dataset`), for tests, tutorials
and sanity checks of registration / segmentation models without downloading data.

Conventions (those of :mod:`jrs_jax.spatial`)
-------------------------------------------
- Label maps are integer ``[*S]`` (template) / ``[N, *S]`` (subjects), background 0;
  images ``[N, *S, 1]`` float32; displacements ``[N, *S, D]`` in voxels along array axes.
- Direction of the ground truth. Subject ``i`` has a stationary velocity ``v_i`` and
  ``disp[i] = u_i = integrate_velocity(v_i)``, ``disp_inv[i] = integrate_velocity(-v_i)``.
  Warps pull back (``warp(I, u)(x) = I(x + u(x))``), and the subject *is* the template
  pulled back by ``u_i``::

      labels[i] = warp_labels(template, u_i, mode="nearest")      # exactly
      template ~ warp_labels(labels[i], disp_inv[i], mode="nearest")   # subject -> template
      template image space ~ warp(images[i], disp_inv[i])

  i.e. ``disp_inv[i]`` is the displacement a registration network predicts for the pair
  (fixed = template, moving = subject ``i``), and ``disp[i]`` the one for (fixed = subject
  ``i``, moving = template). For a subject pair (fixed ``f``, moving ``m``) the ground truth
  with ``warp(moving, u) ~ fixed`` is ``u = compose(disp[f], disp_inv[m])``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from ..spatial.fields import integrate_velocity
from ..spatial.filters import gaussian_filter
from ..spatial.random import random_velocity
from ..spatial.warp import warp_labels
from .datasets import Dataset, Subject
from .learn2reg import _to_file, write_learn2reg
from .nifti import save_image

__all__ = ["make_subjects", "make_template", "write_learn2reg_dataset"]

LABEL_NAMES = ("background", "body", "organ", "structure_a", "structure_b")


def _label_names(num_classes: int) -> dict[str, str]:
    return {
        str(k): LABEL_NAMES[k] if k < len(LABEL_NAMES) else f"structure_{k - 2}"
        for k in range(num_classes)
    }


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise ValueError(f"shape must be 2-D or 3-D with every axis >= 8; got {shape}")
    return shape


# --------------------------------------------------------------------------------------------
# Template
# --------------------------------------------------------------------------------------------


def _ellipse(c: jnp.ndarray, center, radii) -> jnp.ndarray:
    """Level set ``1 - |(c - center) / radii|^2`` (> 0 inside); ``c`` is ``[*S, D]``."""
    return 1.0 - jnp.sum(((c - center) / radii) ** 2, axis=-1)


@partial(jax.jit, static_argnames=("shape", "num_slabs"))
def _template_fields(key: jax.Array, shape: tuple[int, ...], num_slabs: int):
    """Smoothed indicators of body, organ and the adjacent structures (``[*S]`` each) and the
    slab index ``[*S]`` of the structures' region."""
    ndim = len(shape)
    k_warp, k_c, k_r = jax.random.split(key, 3)
    half = jnp.asarray([(n - 1) / 2.0 for n in shape], jnp.float32)
    grid = jnp.stack(
        jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in shape], indexing="ij"), -1
    )
    # low-frequency random perturbation of the coordinates (normalised units ~0.06).
    spacing = max(4, min(shape) // 3)
    pert = random_velocity(
        k_warp, shape, amplitude=0.06 * min(shape) / 2.0, control_spacing=spacing
    )
    c = (grid + pert[0]) / half - 1.0  # [*S, D] in about [-1, 1]

    def jit(k, base, scale):
        base = jnp.asarray(base[:ndim], jnp.float32)
        return base + scale * jax.random.uniform(k, (ndim,), minval=-1.0, maxval=1.0)

    kc = jax.random.split(k_c, 3)
    kr = jax.random.split(k_r, 3)
    body = _ellipse(c, jit(kc[0], (0.0, 0.0, 0.0), 0.04), jit(kr[0], (0.8, 0.7, 0.75), 0.05))
    organ = _ellipse(c, jit(kc[1], (-0.3, -0.25, 0.0), 0.04), jit(kr[1], (0.3, 0.32, 0.3), 0.03))
    s_center = jit(kc[2], (0.3, 0.15, 0.0), 0.04)
    s_radii = jit(kr[2], (0.3, 0.42, 0.32), 0.03)
    struct = _ellipse(c, s_center, s_radii)
    # slabs along axis 1 of the structures' ellipse: adjacent labels 3, 4, ...
    t = (c[..., 1] - s_center[1]) / s_radii[1]  # in [-1, 1] inside
    slab = jnp.clip(jnp.floor((t + 1.0) / 2.0 * num_slabs), 0, num_slabs - 1).astype(jnp.int32)

    sigma = max(0.5, min(shape) / 40.0)
    ind = jnp.stack([body > 0, organ > 0, struct > 0], -1).astype(jnp.float32)
    smooth = gaussian_filter(ind[None], sigma, padding="edge")[0]
    return smooth[..., 0], smooth[..., 1], smooth[..., 2], slab


def make_template(key: jax.Array, shape: Sequence[int], *, num_labels: int = 4) -> np.ndarray:
    """One plausible "anatomy" shared by a synthetic population.

    Structures (all boundaries smooth: Gaussian-smoothed indicators of randomly jittered
    ellipses/ellipsoids, thresholded at 0.5, on coordinates perturbed by a low-frequency
    :func:`~jrs_jax.spatial.random_velocity`):

    - 0: background;
    - 1: the body, a large ellipse(-oid);
    - 2: an organ nested in the body (guaranteed: every voxel of label 2 is at least one
      voxel, in the full 3^D neighbourhood, away from the background);
    - 3, 4, ..., ``num_labels``: adjacent slabs of a second inner ellipse, each touching the
      next (3 and 4 share a boundary), also strictly inside the body.

    Args:
      key: PRNG key; the result is a deterministic function of ``key`` and ``shape``.
      shape: spatial shape ``S`` (2 or 3 axes, each >= 8; 32^2 / 16^3 and up work).
      num_labels: number of foreground labels (``>= 1``); the map has ``num_labels + 1``
        classes ``0..num_labels``.

    Returns:
      ``int32`` numpy ``[*S]``; every label ``0..num_labels`` is present.

    Raises:
      ValueError: bad shape / ``num_labels``, or a label vanished (shape too small for
        that many structures).

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (32, 32))
      >>> t.shape, sorted(np.unique(t).tolist())
      ((32, 32), [0, 1, 2, 3, 4])
    """
    shape = _check_shape(shape)
    num_labels = int(num_labels)
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1; got {num_labels}")
    num_slabs = max(1, num_labels - 2)
    body, organ, struct, slab = (np.asarray(a) for a in _template_fields(key, shape, num_slabs))
    lab = np.zeros(shape, np.int32)
    lab[body > 0.5] = 1
    if num_labels >= 3:
        lab[struct > 0.5] = 3 + slab[struct > 0.5]
    if num_labels >= 2:
        lab[organ > 0.5] = 2
    # strict nesting: inner structures stay one voxel (full neighbourhood) inside the body.
    inner = ndimage.binary_erosion(lab > 0, structure=np.ones((3,) * len(shape), bool))
    lab[(lab > 1) & ~inner] = 1
    missing = sorted(set(range(num_labels + 1)) - set(np.unique(lab).tolist()))
    if missing:
        raise ValueError(
            f"labels {missing} vanished for shape {shape} and num_labels={num_labels}; "
            "use a larger shape or fewer labels"
        )
    return lab


# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------


def _base_means(num_classes: int) -> np.ndarray:
    """Mean intensity per label: well separated, adjacent structures contrasted."""
    fixed = [0.05, 0.35, 0.8, 0.6, 0.95]
    means = [
        fixed[k] if k < len(fixed) else 0.3 + 0.65 * ((k * 0.618034) % 1.0)
        for k in range(num_classes)
    ]
    return np.asarray(means, np.float32)


def _render(
    keys,
    labels,
    base_means,
    intensity_jitter,
    bias,
    noise,
    *,
    num_classes,
    bias_spacing,
    blur_sigma,
):
    """Images float32 ``[N, *S, 1]`` of label maps ``[N, *S]``, traced inside the jitted
    generators: jittered per-label means, partial-volume blur, smooth multiplicative bias,
    Gaussian noise (the model of :func:`make_subjects`). ``keys``: (mean, bias, noise) keys."""
    k_mean, k_bias, k_noise = keys
    n, shape = labels.shape[0], labels.shape[1:]
    means = base_means[None] + intensity_jitter * jax.random.normal(
        k_mean, (n, num_classes), jnp.float32
    )
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [N, *S, K]
    img = jnp.sum(onehot * means.reshape(n, *([1] * len(shape)), num_classes), -1)[..., None]
    if blur_sigma > 0:  # partial-volume effect
        img = gaussian_filter(img, blur_sigma, padding="edge")
    log_bias = random_velocity(
        k_bias, shape, batch_size=n, amplitude=bias, control_spacing=bias_spacing
    )[..., :1]
    img = img * jnp.exp(log_bias)
    img = img + noise * jax.random.normal(k_noise, img.shape, jnp.float32)
    return img.astype(jnp.float32)


@partial(jax.jit, static_argnames=("num_classes", "bias_spacing", "blur_sigma"))
def _render_jit(
    keys, labels, means, intensity_jitter, bias, noise, *, num_classes, bias_spacing, blur_sigma
):
    """:func:`_render` compiled on its own, for scenarios that render label maps they made
    outside a jitted generator (lesions painted in, a second modality, a shifted copy);
    ``keys``: the (mean, bias, noise) keys."""
    return _render(
        keys,
        labels,
        means,
        intensity_jitter,
        bias,
        noise,
        num_classes=num_classes,
        bias_spacing=bias_spacing,
        blur_sigma=blur_sigma,
    )


def _check_template(template) -> np.ndarray:
    template = np.asarray(template)
    if template.ndim not in (2, 3) or template.dtype.kind not in "iu":
        raise ValueError(
            f"template must be an integer [*S] label map with 2 or 3 axes; got "
            f"{template.dtype} {template.shape}"
        )
    return template


def _check_means(label_means, num_classes: int) -> np.ndarray:
    """``label_means`` (default: :func:`_base_means`) as float32 ``[K]``."""
    if label_means is None:
        return _base_means(num_classes)
    means = np.asarray(label_means, np.float32)
    if means.shape != (num_classes,) or not np.all(np.isfinite(means)):
        raise ValueError(
            f"label_means must hold one finite value per class 0..{num_classes - 1} "
            f"({num_classes} values); got {list(np.ravel(label_means))}"
        )
    return means


def _render_args(shape, *, intensity_jitter, bias, bias_spacing, noise, blur_sigma):
    """``(traced, static)`` arguments of :func:`_render` from the public settings:
    ``(intensity_jitter, bias, noise)`` as float32 scalars, ``{bias_spacing, blur_sigma}``."""
    traced = (jnp.float32(intensity_jitter), jnp.float32(bias), jnp.float32(noise))
    static = dict(
        bias_spacing=int(bias_spacing) if bias_spacing is not None else max(4, max(shape) // 2),
        blur_sigma=float(blur_sigma),
    )
    return traced, static


@partial(
    jax.jit,
    static_argnames=(
        "num_subjects",
        "num_classes",
        "control_spacing",
        "bias_spacing",
        "blur_sigma",
        "steps",
    ),
)
def _subjects_impl(
    key,
    template,
    base_means,
    amplitude,
    intensity_jitter,
    bias,
    noise,
    *,
    num_subjects,
    num_classes,
    control_spacing,
    bias_spacing,
    blur_sigma,
    steps,
):
    shape = template.shape
    n = num_subjects
    k_vel, k_mean, k_bias, k_noise = jax.random.split(key, 4)
    v = random_velocity(
        k_vel, shape, batch_size=n, amplitude=amplitude, control_spacing=control_spacing
    )
    u = integrate_velocity(v, steps=steps)
    u_inv = integrate_velocity(-v, steps=steps)
    tmpl = jnp.broadcast_to(template[None], (n, *shape))
    labels = warp_labels(tmpl, u, num_classes=num_classes, mode="nearest")
    img = _render(
        (k_mean, k_bias, k_noise),
        labels,
        base_means,
        intensity_jitter,
        bias,
        noise,
        num_classes=num_classes,
        bias_spacing=bias_spacing,
        blur_sigma=blur_sigma,
    )
    return img, labels.astype(jnp.int32), u, u_inv


def make_subjects(
    key: jax.Array,
    template,
    *,
    num_subjects: int,
    amplitude: float = 2.0,
    control_spacing: int = 8,
    intensity_jitter: float = 0.03,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
    label_means: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Draw subjects from ``template`` by random diffeomorphisms and render their images.

    Subject ``i``: velocity ``v_i = random_velocity(..., amplitude, control_spacing)``,
    ``u_i = integrate_velocity(v_i)`` and ``labels_i = warp_labels(template, u_i,
    mode="nearest")`` (pull-back, border padding). The image is rendered from ``labels_i``:
    per-label mean intensity (fixed base means, jittered per subject by ``N(0,
    intensity_jitter^2)``), Gaussian blur of ``blur_sigma`` voxels (partial volume),
    multiplicative bias ``exp(b)`` with ``b`` a smooth field of standard deviation ``bias``
    (control points every ``bias_spacing`` voxels, default ``max(S) // 2``), plus Gaussian
    noise of standard deviation ``noise``. Values lie roughly in ``[0, 1]`` (not clipped).

    ``label_means`` replaces the base means. Giving two touching structures the same mean
    makes their boundary invisible in the image, as for many real structures (hippocampus /
    amygdala, left / right halves): image similarity can no longer align it and a
    segmenter must infer it from shape, which is where labels and atlases carry information
    the image does not. E.g. ``label_means=(0.05, 0.35, 0.8, 0.6, 0.6)`` hides the 3 | 4
    boundary of the default template.

    Direction: ``disp[i]`` pulls the template onto subject ``i``; ``disp_inv[i]`` pulls
    subject ``i`` back to the template (``warp(images[i], disp_inv[i])`` is in template space);
    see the module docstring. The heavy part runs in one jitted call.

    Args:
      key: PRNG key (results are a deterministic function of the key and the arguments).
      template: integer label map ``[*S]`` (e.g. from :func:`make_template`).
      num_subjects: ``N``.
      amplitude: control-point standard deviation of the velocities, in voxels.
      control_spacing: voxels between velocity control points (larger = smoother).
      intensity_jitter: per-subject standard deviation of the label means.
      bias: standard deviation of the log bias field.
      bias_spacing: control-point spacing of the bias field (default ``max(S) // 2``).
      noise: standard deviation of the additive Gaussian noise.
      blur_sigma: partial-volume blur in voxels (0 = none).
      steps: scaling-and-squaring steps.
      label_means: mean intensity of each class ``0..K-1`` (``K`` values; default: fixed,
        well-separated means, touching structures contrasted).

    Returns:
      numpy dict: ``images`` float32 ``[N, *S, 1]``, ``labels`` int32 ``[N, *S]``, ``disp``
      float32 ``[N, *S, D]`` (``u_i``), ``disp_inv`` float32 ``[N, *S, D]`` (``exp(-v_i)``).

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (32, 32))
      >>> s = make_subjects(jax.random.PRNGKey(1), t, num_subjects=2)
      >>> s["images"].shape, s["labels"].shape, s["disp"].shape
      ((2, 32, 32, 1), (2, 32, 32), (2, 32, 32, 2))
    """
    template = _check_template(template)
    if int(num_subjects) < 1:
        raise ValueError(f"num_subjects must be >= 1; got {num_subjects}")
    shape = template.shape
    num_classes = int(template.max()) + 1
    means = _check_means(label_means, num_classes)
    traced, static = _render_args(
        shape,
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    img, lab, u, u_inv = _subjects_impl(
        key,
        jnp.asarray(template, jnp.int32),
        jnp.asarray(means),
        jnp.float32(amplitude),
        *traced,
        num_subjects=int(num_subjects),
        num_classes=num_classes,
        control_spacing=int(control_spacing),
        steps=int(steps),
        **static,
    )
    return {
        "images": np.asarray(img, np.float32),
        "labels": np.asarray(lab, np.int32),
        "disp": np.asarray(u, np.float32),
        "disp_inv": np.asarray(u_inv, np.float32),
    }


# --------------------------------------------------------------------------------------------
# Learn2Reg folder
# --------------------------------------------------------------------------------------------


def _flat(a: np.ndarray) -> np.ndarray:
    """``[N, T, ...]`` -> ``[N * T, ...]``: scans of subjects as rows (row ``T s + t`` is scan
    ``t`` of subject ``s``; the writers of several scans per subject)."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _as_key(key) -> tuple[jax.Array, object]:
    """(PRNG key, JSON-serialisable description of it)."""
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key)), int(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key, np.asarray(jax.random.key_data(key)).tolist()
    return jnp.asarray(key), np.asarray(key).tolist()


def write_learn2reg_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (128, 128),
    num_subjects: int = 20,
    num_labelled: int | None = None,
    num_heldout: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int = 4,
    spacing: float | Sequence[float] = 1.0,
    name: str = "jrs_jax_synthetic",
    **subject_kwargs,
) -> str:
    """Generate a synthetic population and write it in the Learn2Reg layout.

    Layout under ``root`` (``NNNN`` = subject index, zero-padded, from 0)::

        dataset.json
        imagesTr/sub_NNNN_0000.nii.gz      float32 image, every subject
        labelsTr/sub_NNNN_0000.nii.gz      int32 labels, every subject (listed in
                                           ``training`` only for the labelled ones)
        fieldsTr/sub_NNNN_disp.nii.gz      ground truth ``disp[i]``  ([*S3, D] 4-D file)
        fieldsTr/sub_NNNN_disp_inv.nii.gz  ground truth ``disp_inv[i]``
        template/template_0000.nii.gz      the template label map

    Subjects ``0 .. N - H - 1`` are the training subjects (``training`` lists them; the first
    ``num_labelled`` have a ``label`` entry, the others only ``image``), the last ``H =
    num_heldout`` are held out: they are not in ``training``, and ``registration_val`` pairs
    ``{"fixed", "moving"}`` are drawn among them (distinct ordered pairs, shuffled with the
    key). Paths in the JSON are relative to the JSON file (``"./imagesTr/..."``). Field
    files hold voxel displacements along array axes (jrs_jax convention, *not* ITK's); see the
    module docstring for their direction (``disp`` pulls the template onto the subject).

    2-D data: the files are 3-D NIfTI volumes with a singleton third axis (images / labels
    ``[H, W, 1]``, fields ``[H, W, 1, 2]``), ``tensorImageSize`` is ``"3D"`` and the
    ``jrs_jax`` block records ``"ndim": 2``: drop the third axis after loading.

    Affine: diagonal ``spacing`` (scalar or per axis; the singleton axis of 2-D data gets
    ``1.0`` unless three values are given), origin 0. All files go through
    :func:`~jrs_jax.data.save_image` (atomic writes). The same key gives identical arrays.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape: spatial shape ``S`` (2-D or 3-D).
      num_subjects: ``N``.
      num_labelled: training subjects listed with labels (default: all of them).
      num_heldout: held-out subjects ``H`` (default ``max(2, N // 5)``).
      num_val_pairs: registration pairs (default ``H``, at most ``H (H - 1)``).
      num_labels: foreground labels of the template.
      spacing: voxel size in mm.
      name: dataset name.
      **subject_kwargs: forwarded to :func:`make_subjects` (``amplitude``, ``noise``, ...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_learn2reg_dataset("/tmp/syn", key=0, shape=(32, 32), num_subjects=6)
      >>> json.load(open(p))["numTraining"]
      4
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    subjects = make_subjects(k_subjects, template, num_subjects=lay.n, **subject_kwargs)
    return _write_subjects(
        root,
        lay,
        template=template,
        subjects=subjects,
        pairs=_val_pairs(k_pairs, lay),
        name=name,
        description="jrs_jax synthetic anatomy (jrs_jax.data.synthetic)",
        generator="jrs_jax.data.synthetic",
        seed=seed,
        num_labels=num_labels,
        settings=subject_kwargs,
        convention=(
            "voxels along array axes; labels_i = warp_labels(template, disp_i, "
            "mode='nearest'); warp(image_i, disp_inv_i) is in template space"
        ),
    )


def _write_subjects(
    root,
    lay,
    *,
    template,
    subjects: dict,
    pairs,
    name: str,
    description: str,
    generator: str,
    seed,
    num_labels: int,
    settings: dict,
    convention: str,
    info: dict | None = None,
    **population,
) -> str:
    """:func:`_write_population` of one scan per subject drawn from ``template``
    (``subjects``: ``images``, ``labels``, ``disp``, ``disp_inv`` as :func:`make_subjects`
    returns them) with the ``jrs_jax`` block every such writer records (generator, seed,
    layout, the subject ``settings``, the writer's own ``info`` entries, the field
    ``convention``); ``population``: more :func:`_write_population` keywords."""
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in settings.items()}
    return _write_population(
        root,
        lay,
        template=template,
        images=subjects["images"],
        labels=subjects["labels"],
        pairs=pairs,
        fields=(subjects["disp"], subjects["disp_inv"]),
        name=name,
        description=description,
        extra={
            "generator": generator,
            "seed": seed,
            **_layout_info(lay, num_labels),
            "subject_settings": settings,
            **(info or {}),
            "disp_convention": convention,
        },
        **population,
    )


class _Layout(NamedTuple):
    """Checked population settings of a Learn2Reg writer."""

    shape: tuple[int, ...]
    n: int  # subjects
    h: int  # held out (the last h)
    n_train: int
    n_lab: int  # labelled training subjects (the first n_lab)
    n_pairs: int  # registration_val pairs
    spacing: list[float]  # as given: ndim (or 3) values
    spacing3: list[float]  # of the 3-D file grid
    affine: np.ndarray


def _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing) -> _Layout:
    shape = _check_shape(shape)
    ndim = len(shape)
    n = int(num_subjects)
    h = max(2, n // 5) if num_heldout is None else int(num_heldout)
    if h < 2 or h >= n:
        raise ValueError(f"need 2 <= num_heldout < num_subjects; got {h} of {n}")
    n_train = n - h
    n_lab = n_train if num_labelled is None else int(num_labelled)
    if not 0 <= n_lab <= n_train:
        raise ValueError(f"num_labelled must be in [0, {n_train}]; got {n_lab}")
    n_pairs = h if num_val_pairs is None else int(num_val_pairs)
    if not 0 <= n_pairs <= h * (h - 1):
        raise ValueError(f"num_val_pairs must be in [0, {h * (h - 1)}]; got {n_pairs}")
    sp = [float(spacing)] * ndim if np.isscalar(spacing) else [float(s) for s in spacing]
    if len(sp) not in (ndim, 3) or min(sp) <= 0:
        raise ValueError(f"spacing must be positive, one value or one per axis; got {spacing}")
    sp3 = [*sp, 1.0] if len(sp) == 2 else sp[:3]
    return _Layout(shape, n, h, n_train, n_lab, n_pairs, sp, sp3, np.diag([*sp3, 1.0]))


def _layout_info(lay: _Layout, num_labels: int) -> dict:
    """The ``jrs_jax`` block entries every synthetic writer records."""
    return {
        "ndim": len(lay.shape),
        "shape": list(lay.shape),
        "spacing": lay.spacing,
        "num_subjects": lay.n,
        "num_labelled": lay.n_lab,
        "num_heldout": lay.h,
        "num_labels": int(num_labels),
        "template": _TEMPLATE_REL,
    }


def _val_pairs(key, lay: _Layout) -> list[tuple[int, int]]:
    """``n_pairs`` distinct ordered pairs of held-out subjects, shuffled with ``key``."""
    heldout = list(range(lay.n_train, lay.n))
    all_pairs = [(f, m) for f in heldout for m in heldout if f != m]
    order = np.asarray(jax.random.permutation(key, len(all_pairs)))
    return [all_pairs[j] for j in order[: lay.n_pairs]]


_TEMPLATE_REL = "./template/template_0000.nii.gz"


def _write_population(
    root,
    lay: _Layout,
    *,
    template: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    name: str,
    description: str,
    extra: dict,
    masks: np.ndarray | None = None,
    fields: tuple[np.ndarray, np.ndarray] | None = None,
    pair_fields: dict | None = None,
    names: Sequence[str] | None = None,
    subject_ids: Sequence[str] | None = None,
    times: Sequence[int] | None = None,
    label_names: dict[int, str] | None = None,
    label_format: str = "integer",
    modalities: Sequence[str] = ("synthetic",),
    label_modality: int | None = None,
) -> str:
    """Write a synthetic population (scan ``i`` named ``sub_NNNN_0000``, or ``names[i]``,
    of subject ``subject_ids[i]`` at time ``times[i]`` when given) with its template through
    :func:`~jrs_jax.data.write_learn2reg`; returns the path of ``dataset.json``. Rows are
    scans: ``lay`` counts scans (several scans of a subject: scale its counts by the scans
    per subject). ``label_names`` replaces the default class names. ``label_format="multi"``:
    ``labels`` (and ``template``) are multi-label maps ``[*S, K]``, written as uint8.
    ``images`` are ``[N, *S, C]`` with one name per channel in ``modalities`` (``C > 1``:
    nnU-Net files ``<name>_0000.nii.gz``...); ``label_modality``: as
    :attr:`Dataset.label_modality <jrs_jax.data.Dataset>`."""
    ndim = len(lay.shape)
    n_lab, n_train = lay.n_lab, lay.n_train
    # every subject keeps its labels on disk (labelsTr); only the first n_lab training
    # subjects list them in the JSON, the held-out ones get them by the labelsTr guess.
    subjects_ = tuple(
        Subject(
            name=f"sub_{i:04d}_0000" if names is None else names[i],
            image=images[i],
            labels=labels[i] if (i < n_lab or i >= n_train) else None,
            affine=lay.affine,
            spacing=tuple(lay.spacing3[:ndim]),
            image_path="",
            held_out=i >= n_train,
            mask=None if masks is None else masks[i],
            field=None if fields is None else fields[0][i],
            field_inv=None if fields is None else fields[1][i],
            subject=None if subject_ids is None else subject_ids[i],
            time=0 if times is None else int(times[i]),
        )
        for i in range(lay.n)
    )
    if label_names is None:
        label_names = {int(k): v for k, v in _label_names(int(template.max()) + 1).items()}
    dataset = Dataset(
        subjects=subjects_,
        val_pairs=tuple(pairs),
        modalities=tuple(modalities),
        label_names=dict(label_names),
        pair_fields=dict(pair_fields or {}),
        label_format=label_format,
        label_modality=label_modality,
    )
    root = os.fspath(root)
    for i in range(n_lab, n_train):  # unlabelled training subjects: labels on disk anyway
        p = os.path.join(root, "labelsTr", f"{subjects_[i].name}.nii.gz")
        save_image(p, _to_file(labels[i], ndim), affine=lay.affine)
    save_image(
        os.path.join(root, _TEMPLATE_REL[2:]),
        _to_file(template.astype(np.uint8 if dataset.multi_label else np.int32), ndim),
        affine=lay.affine,
    )
    return write_learn2reg(root, dataset, name=name, description=description, extra=extra)
