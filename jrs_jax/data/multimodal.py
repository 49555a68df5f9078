"""The ``multimodal`` scenario: two modalities of the same anatomy (cross-modal registration).

Each subject is ONE deformation of the template (exactly as :func:`~jrs_jax.data.make_subjects`:
same labels, same ground-truth fields), rendered TWICE with different label -> intensity
maps: modality ``X`` (image channel 0) with the default base means of the built-in anatomy,
modality ``Y`` (channel 1) with another map (:func:`modality_means`):

- ``contrast="inverted"``: ``Y = 1 - X`` per label (a T1 / T2-like inversion: the background
  is bright, the organ dark);
- ``contrast="scrambled"``: a fixed permutation of the X means such that *no* monotonic
  function maps the X means onto the Y means (intensity-based similarity that assumes one,
  e.g. NCC, cannot align the two; a mutual-information-like or learned one can).

Both renderings share the label map; their intensity jitter, bias field and noise are drawn
from independent keys. With the key of :func:`~jrs_jax.data.write_learn2reg_dataset`, the X
channel and the deformation are those of the ``anatomy`` scenario.

Learn2Reg layout (:func:`write_multimodal_dataset`): ``modality`` is ``{"0": "X", "1":
"Y"}``, scan ``i`` is ``imagesTr/sub_NNNN_0000.nii.gz`` (X) and ``sub_NNNN_0001.nii.gz`` (Y)
(the JSON lists the nnU-Net case ``./imagesTr/sub_NNNN.nii.gz``), its labels
``labelsTr/sub_NNNN.nii.gz`` and fields ``fieldsTr/sub_NNNN_disp(_inv).nii.gz``. The
validation pairs are cross-modal by convention: moving image = channel 0 (X) of the moving
subject, fixed image = channel 1 (Y) of the fixed subject (``pair_batch(ds, pairs,
moving_channel=0, fixed_channel=1)``; evaluation mode ``"cross_modal"``). Their ground truth
is ``compose(fixed.field, moving.field_inv)`` as for the anatomy (the channels share one
grid and one deformation). ``Dataset.label_modality`` records which channel's labels may
supervise training (JSSR's supervised Dice uses the labels of modality Y: 1); the label map
is the same anatomy for both channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np

from .synthetic import (
    _as_key,
    _check_means,
    _check_template,
    _layout,
    _render_args,
    _render_jit,
    _val_pairs,
    _write_subjects,
    make_subjects,
    make_template,
)

__all__ = [
    "MULTIMODAL_CONTRASTS",
    "MULTIMODAL_MODALITIES",
    "make_multimodal_subjects",
    "modality_means",
    "write_multimodal_dataset",
]

#: The label -> intensity maps of modality Y relative to X.
MULTIMODAL_CONTRASTS = ("inverted", "scrambled")
#: Modality names of image channels 0 and 1.
MULTIMODAL_MODALITIES = ("X", "Y")

_PAIRS = "cross-modal: moving = channel 0 (X), fixed = channel 1 (Y); evaluation mode cross_modal"


def _check_contrast(contrast) -> str:
    if contrast not in MULTIMODAL_CONTRASTS:
        raise ValueError(f"contrast must be one of {MULTIMODAL_CONTRASTS}; got {contrast!r}")
    return contrast


def _check_label_modality(label_modality) -> int | None:
    ok = label_modality is None or (
        isinstance(label_modality, (int, np.integer))
        and not isinstance(label_modality, bool)
        and 0 <= int(label_modality) < len(MULTIMODAL_MODALITIES)
    )
    if not ok:
        raise ValueError(
            f"label_modality must be one of None (any), 0 (X) or 1 (Y); got {label_modality!r}"
        )
    return None if label_modality is None else int(label_modality)


def _monotonic_map_exists(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a non-decreasing or non-increasing function ``f`` has ``f(x[k]) = y[k]``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    same = xs[1:] == xs[:-1]
    if np.any(same & (ys[1:] != ys[:-1])):  # one x value, two y values: not a function
        return False
    dy = np.diff(ys)
    return bool(np.all(dy >= 0) or np.all(dy <= 0))


def modality_means(x_means: Sequence[float], contrast: str = "inverted") -> np.ndarray:
    """The label means of modality Y from those of modality X (float32 ``[K]`` each).

    - ``"inverted"``: ``y[k] = 1 - x[k]``.
    - ``"scrambled"``: a permutation of the X means defined on their ranks. With ``r(k)`` the
      rank of ``x[k]`` among the ``K`` means (ascending, ties by label) and ``x_(j)`` the
      ``j``-th smallest mean, ``y[k] = x_((r(k) + K // 2) mod K)``: the ranks are shifted
      cyclically by ``K // 2``, which for ``K >= 3`` is neither the identity nor the
      reversal, so no monotonic function maps X onto Y (checked; the Spearman correlation
      of the X and Y means is not +-1). Default means of 4 foreground labels: X ``(0.05,
      0.35, 0.8, 0.6, 0.95)`` (background, body, organ, structure_a, structure_b) -> Y
      ``(0.6, 0.8, 0.05, 0.95, 0.35)`` (label ranks 0 1 3 2 4 -> 2 3 0 4 1).

    Raises:
      ValueError: unknown ``contrast``; ``"scrambled"`` where a monotonic map would remain
        (fewer than 3 classes, or too many equal means).

    Example:
      >>> modality_means([0.05, 0.35, 0.8, 0.6, 0.95], "inverted").round(2).tolist()
      [0.95, 0.65, 0.2, 0.4, 0.05]
    """
    _check_contrast(contrast)
    x = np.asarray(x_means, np.float32).reshape(-1)
    if contrast == "inverted":
        return (np.float32(1.0) - x).astype(np.float32)
    k = len(x)
    order = np.argsort(x, kind="stable")  # order[j]: the label of rank j
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    y = x[order][(rank + k // 2) % k].astype(np.float32)
    if k < 3 or _monotonic_map_exists(x, y):
        raise ValueError(
            f"contrast='scrambled' needs at least 3 classes with distinct means so that no "
            f"monotonic map X -> Y exists; got means {np.round(x.astype(float), 4).tolist()}"
        )
    return y


def make_multimodal_subjects(
    key: jax.Array,
    template,
    *,
    num_subjects: int,
    contrast: str = "inverted",
    label_means: Sequence[float] | None = None,
    amplitude: float = 2.0,
    control_spacing: int = 8,
    intensity_jitter: float = 0.03,
    bias: float = 0.1,
    bias_spacing: int | None = None,
    noise: float = 0.02,
    blur_sigma: float = 0.7,
    steps: int = 7,
) -> dict[str, np.ndarray]:
    """Subjects of ``template`` rendered in two modalities X (channel 0) and Y (channel 1).

    Subject ``i`` is one deformation ``u_i`` of the template and one label map ``labels_i =
    warp_labels(template, u_i, mode="nearest")``, exactly as :func:`~jrs_jax.data.make_subjects`
    with the same ``key`` (whose ``images`` are this function's channel 0). Both channels use
    the rendering model of ``make_subjects`` (per-subject jittered label means, partial-volume
    blur, smooth multiplicative bias, additive Gaussian noise) on the same ``labels_i``: X
    with the means ``label_means`` (default: the built-in base means), Y with
    :func:`modality_means` of them for ``contrast``. Y's jitter, bias field and noise come
    from a key independent of X's (``jax.random.fold_in(key, 1)``).

    Direction: ``disp[i]`` pulls the template onto subject ``i`` (both channels);
    ``disp_inv[i]`` pulls subject ``i`` back to the template (see :mod:`jrs_jax.data.synthetic`).

    Args:
      key: PRNG key (results are a deterministic function of the key and the arguments).
      template: integer label map ``[*S]`` (e.g. from :func:`~jrs_jax.data.make_template`).
      num_subjects: ``N``.
      contrast: ``"inverted"`` or ``"scrambled"`` (:func:`modality_means`).
      label_means: modality X's mean per class ``0..K-1`` (default: the base means).
      amplitude, control_spacing, steps: the deformations (as ``make_subjects``).
      intensity_jitter, bias, bias_spacing, noise, blur_sigma: the rendering of each
        channel (as ``make_subjects``).

    Returns:
      numpy dict: ``images`` float32 ``[N, *S, 2]`` (X, Y), ``labels`` int32 ``[N, *S]``
      (both channels'), ``disp`` / ``disp_inv`` float32 ``[N, *S, D]``, ``means`` float32
      ``[2, K]`` (the base means of X and of Y, before the per-subject jitter).

    Raises:
      ValueError: bad ``contrast`` / ``label_means`` / template, or those of
        ``make_subjects``.

    Example:
      >>> t = make_template(jax.random.PRNGKey(0), (32, 32))
      >>> s = make_multimodal_subjects(jax.random.PRNGKey(1), t, num_subjects=2)
      >>> s["images"].shape, s["labels"].shape, s["means"].shape
      ((2, 32, 32, 2), (2, 32, 32), (2, 5))
    """
    _check_contrast(contrast)
    template = _check_template(template)
    num_classes = int(template.max()) + 1
    x_means = _check_means(label_means, num_classes)
    y_means = modality_means(x_means, contrast)
    render = dict(
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    x = make_subjects(
        key,
        template,
        num_subjects=num_subjects,
        amplitude=amplitude,
        control_spacing=control_spacing,
        steps=steps,
        label_means=x_means,
        **render,
    )
    traced, static = _render_args(template.shape, **render)
    y = _render_jit(
        tuple(jax.random.split(jax.random.fold_in(key, 1), 3)),
        jax.numpy.asarray(x["labels"]),
        jax.numpy.asarray(y_means),
        *traced,
        num_classes=num_classes,
        **static,
    )
    return {
        "images": np.concatenate([x["images"], np.asarray(y, np.float32)], -1),
        "labels": x["labels"],
        "disp": x["disp"],
        "disp_inv": x["disp_inv"],
        "means": np.stack([x_means, y_means]).astype(np.float32),
    }


def write_multimodal_dataset(
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
    contrast: str = "inverted",
    label_modality: int | None = None,
    name: str = "jrs_jax_multimodal",
    **render_kwargs,
) -> str:
    """Generate a two-modality population (:func:`make_multimodal_subjects`) and write it in
    the Learn2Reg layout.

    Layout under ``root`` (``NNNN`` = subject index, zero-padded, from 0)::

        dataset.json                       modality {"0": "X", "1": "Y"}
        imagesTr/sub_NNNN_0000.nii.gz      float32 image, modality X (channel 0)
        imagesTr/sub_NNNN_0001.nii.gz      float32 image, modality Y (channel 1)
        labelsTr/sub_NNNN.nii.gz           int32 labels (one map: both channels' anatomy)
        fieldsTr/sub_NNNN_disp.nii.gz      ground truth disp[i] (pulls the template onto i)
        fieldsTr/sub_NNNN_disp_inv.nii.gz  ground truth disp_inv[i]
        template/template_0000.nii.gz      the template label map

    The training / held-out split, labelled subjects, validation pairs (held-out pairs,
    :func:`~jrs_jax.data.write_learn2reg_dataset`'s), 2-D storage and affine are those of the
    ``anatomy`` writer; with the same key its template, deformations and X images are the
    anatomy's. The validation pairs are meant cross-modal (moving = channel 0 (X), fixed =
    channel 1 (Y)), recorded in the ``jrs_jax`` block's ``pairs``; their ground truth is
    ``compose(fixed.field, moving.field_inv)``. The ``jrs_jax`` block's ``multimodal`` entry
    records ``contrast``, ``label_modality``, the modalities and the X / Y base means;
    ``label_modality`` also goes to ``jrs_jax.label_modality`` (read back as
    :attr:`Dataset.label_modality <jrs_jax.data.Dataset>`).

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape: spatial shape ``S`` (2-D or 3-D).
      num_subjects, num_labelled, num_heldout, num_val_pairs, num_labels, spacing, name:
        as :func:`~jrs_jax.data.write_learn2reg_dataset`.
      contrast: ``"inverted"`` (``Y = 1 - X`` per label) or ``"scrambled"`` (a non-monotonic
        permutation of the X means; :func:`modality_means`).
      label_modality: the channel whose labels may supervise training: ``None`` (any), ``0``
        (X) or ``1`` (Y, as JSSR).
      **render_kwargs: forwarded to :func:`make_multimodal_subjects` (``label_means`` (X's),
        ``amplitude``, ``noise``, ``bias``, ...).

    Returns:
      The path of ``dataset.json``.

    Raises:
      ValueError: bad ``contrast`` or ``label_modality`` (naming the allowed values), and
        the errors of the anatomy writer's settings.

    Example:
      >>> p = write_multimodal_dataset("/tmp/mm", key=0, shape=(32, 32), num_subjects=6)
      >>> ds = load_learn2reg(p)
      >>> ds.modalities, ds.num_channels
      (('X', 'Y'), 2)
    """
    _check_contrast(contrast)
    label_modality = _check_label_modality(label_modality)
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)  # the anatomy's keys
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    s = make_multimodal_subjects(
        k_subjects, template, num_subjects=lay.n, contrast=contrast, **render_kwargs
    )
    return _write_subjects(
        root,
        lay,
        template=template,
        subjects=s,
        pairs=_val_pairs(k_pairs, lay),
        name=name,
        description="jrs_jax synthetic anatomy in two modalities (jrs_jax.data.multimodal)",
        generator="jrs_jax.data.multimodal",
        seed=seed,
        num_labels=num_labels,
        settings=render_kwargs,
        info={
            "multimodal": {
                "contrast": contrast,
                "label_modality": label_modality,
                "modalities": {"0": MULTIMODAL_MODALITIES[0], "1": MULTIMODAL_MODALITIES[1]},
                "means": {
                    MULTIMODAL_MODALITIES[0]: np.round(s["means"][0].astype(float), 6).tolist(),
                    MULTIMODAL_MODALITIES[1]: np.round(s["means"][1].astype(float), 6).tolist(),
                },
                "model": (
                    "one deformation and label map per subject, rendered twice (make_subjects' "
                    "model: jittered label means, blur, multiplicative bias, Gaussian noise) "
                    "with the X and the Y means; independent jitter, bias and noise per channel"
                ),
            },
            "pairs": _PAIRS,
        },
        convention=(
            "voxels along array axes; labels_i = warp_labels(template, disp_i, "
            "mode='nearest') for both channels; warp(image_i, disp_inv_i) is in template "
            "space"
        ),
        names=[f"sub_{i:04d}" for i in range(lay.n)],
        modalities=MULTIMODAL_MODALITIES,
        label_modality=label_modality,
    )
