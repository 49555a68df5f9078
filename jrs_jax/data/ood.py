"""The ``ood`` scenario: the anatomy population with a second, distribution-shifted copy of
its held-out subjects, for out-of-distribution evaluation.

A model trained on one scanner or protocol is tested on another: the anatomy is the same,
the images are not. To measure what such a shift costs (and which methods resist it), the
same held-out anatomies are needed twice, rendered as in training and rendered shifted, so
that any drop in the scores is the shift's alone.

Model. The population is that of :func:`~jrs_jax.data.write_learn2reg_dataset` with the
same key and settings (template, deformations, labels, fields and in-distribution images
identical): the rendering model of :func:`~jrs_jax.data.make_subjects` (per-subject
jittered label means, partial-volume blur, smooth multiplicative bias ``exp(b)``, Gaussian
noise). The held-out subjects are rendered a second time, with the *same* random draws (the
same jittered means, bias field and noise sample, from the same keys) and one setting
changed by ``shift``:

- ``"noise"``: the noise standard deviation becomes ``strength`` (default 0.08, four times
  the default 0.02; must exceed the in-distribution ``noise``): the same noise sample,
  scaled;
- ``"contrast"``: the base mean of every foreground label ``k`` moves by ``(-1)^(k + 1)
  strength`` (up, down, up, ...; default 0.25; the background keeps its mean): with the
  default means ``(0.05, 0.35, 0.8, 0.6, 0.95)`` the shifted ones are ``(0.05, 0.6, 0.55,
  0.85, 0.7)``, which also reorders the labels' intensities;
- ``"bias"``: the standard deviation of the log bias field becomes ``strength`` (default
  0.4, four times the default 0.1; must exceed the in-distribution ``bias``): the same
  low-frequency field (control points every ``bias_spacing`` voxels), scaled.

Files (:func:`write_ood_dataset`), under one root::

    dataset.json             the anatomy dataset: training subjects, held-out subjects
                             in-distribution (imagesTr/)
    dataset_ood.json         the same training entries (the same files), and the same
                             registration_val pairs of the same held-out subjects, whose
                             images are the shifted ones: imagesTs_ood/sub_NNNN_0000.nii.gz
                             (labels: labelsTr/, fields: fieldsTr/, both shared)
    imagesTr/ labelsTr/ fieldsTr/ template/   as the anatomy writer's
    imagesTs_ood/            the shifted held-out images

Both load with :func:`~jrs_jax.data.load_learn2reg`; the held-out subjects have the same
names, labels and fields in both, only their images differ. Both ``jrs_jax`` blocks record,
under ``ood``, the shift, its strength, the in-distribution and shifted settings, which of the
two files this is (``"split"``: ``"in_distribution"`` / ``"shifted"``) and both file names.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .learn2reg import _to_file, _write_json
from .nifti import save_image
from .synthetic import (
    _as_key,
    _check_means,
    _layout,
    _render_args,
    _render_jit,
    _val_pairs,
    _write_subjects,
    make_subjects,
    make_template,
)

__all__ = ["OOD_SHIFTS", "ood_settings", "write_ood_dataset"]

#: The distribution shifts of the held-out copy.
OOD_SHIFTS = ("noise", "contrast", "bias")
#: Default strength of each shift.
DEFAULT_STRENGTH = {"noise": 0.08, "contrast": 0.25, "bias": 0.4}
OOD_JSON = "dataset_ood.json"
OOD_IMAGES = "imagesTs_ood"

# make_subjects' rendering defaults (the values the shifts are checked against)
_RENDER_DEFAULTS = {"noise": 0.02, "bias": 0.1}


def _check_shift(shift) -> str:
    if shift not in OOD_SHIFTS:
        raise ValueError(f"shift must be one of {OOD_SHIFTS}; got {shift!r}")
    return shift


def ood_settings(shift: str, strength, means: Sequence[float], *, noise: float, bias: float):
    """The shifted rendering's ``(means, noise, bias, strength)`` (float32 ``[K]``, floats)
    from the in-distribution ``means`` ``[K]``, ``noise`` and ``bias`` (the model of the
    module docstring; ``strength=None``: the shift's default); ``ValueError`` naming
    ``shift`` / ``strength``."""
    shift = _check_shift(shift)
    s = DEFAULT_STRENGTH[shift] if strength is None else strength
    try:
        s = float(s)
    except (TypeError, ValueError):
        s = float("nan")
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"strength must be a finite number > 0; got {strength!r}")
    means = np.asarray(means, np.float32)
    if shift == "noise" and s <= noise:
        raise ValueError(
            f"strength (the shifted noise standard deviation) must exceed the in-distribution "
            f"noise={noise:g}; got {strength!r}"
        )
    if shift == "bias" and s <= bias:
        raise ValueError(
            f"strength (the shifted log bias standard deviation) must exceed the "
            f"in-distribution bias={bias:g}; got {strength!r}"
        )
    if shift == "contrast":
        k = np.arange(len(means))
        step = np.where(k == 0, 0.0, np.where(k % 2 == 1, 1.0, -1.0)) * s
        return (means + step).astype(np.float32), noise, bias, s
    if shift == "noise":
        return means, s, bias, s
    return means, noise, s, s


def write_ood_dataset(
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
    shift: str = "noise",
    strength: float | None = None,
    name: str = "jrs_jax_ood",
    **subject_kwargs,
) -> str:
    """Generate the anatomy population with a shifted copy of its held-out subjects and
    write both datasets (the ``ood`` scenario, ``jrs-jax make-synthetic --scenario ood``;
    layout: module docstring).

    Args:
      root: output folder (created).
      key: PRNG key or integer seed (the anatomy writer's key: the same template,
        subjects and pairs).
      shape, num_subjects, num_labelled, num_heldout, num_val_pairs, num_labels, spacing,
        name: as :func:`~jrs_jax.data.write_learn2reg_dataset`. Only the held-out subjects
        in a ``registration_val`` pair are loaded (the reader's rule), in both files alike.
      shift: ``"noise"``, ``"contrast"`` or ``"bias"``.
      strength: its size (default 0.08 noise standard deviation, 0.25 label-mean change,
        0.4 log bias standard deviation).
      **subject_kwargs: forwarded to :func:`~jrs_jax.data.make_subjects` (``noise``,
        ``bias``, ``label_means``, ``amplitude``...), for both renderings.

    Returns:
      The path of ``dataset.json`` (``dataset_ood.json`` lies next to it).

    Raises:
      ValueError: a bad setting (naming it).

    Example:
      >>> p = write_ood_dataset("/tmp/ood", key=0, num_subjects=6, shift="bias")
      >>> a = load_learn2reg(p)
      >>> b = load_learn2reg(os.path.join(os.path.dirname(p), "dataset_ood.json"))
      >>> [a.subjects[i].name for i in a.held_out()] == [b.subjects[i].name for i in b.held_out()]
      True
    """
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, num_val_pairs, spacing)
    noise = float(subject_kwargs.get("noise", _RENDER_DEFAULTS["noise"]))
    bias = float(subject_kwargs.get("bias", _RENDER_DEFAULTS["bias"]))
    key, seed = _as_key(key)
    k_template, k_subjects, k_pairs = jax.random.split(key, 3)  # the anatomy's keys
    template = make_template(k_template, lay.shape, num_labels=num_labels)
    num_classes = int(template.max()) + 1
    means = _check_means(subject_kwargs.get("label_means"), num_classes)
    ood_means, ood_noise, ood_bias, s = ood_settings(shift, strength, means, noise=noise, bias=bias)
    subjects = make_subjects(k_subjects, template, num_subjects=lay.n, **subject_kwargs)
    shifted = _rerender(
        k_subjects,
        subjects["labels"],
        ood_means,
        noise=ood_noise,
        bias=ood_bias,
        **{k: subject_kwargs[k] for k in _RENDER_KEYS if k in subject_kwargs},
    )
    pairs = _val_pairs(k_pairs, lay)
    info = {
        "shift": shift,
        "strength": s,
        "in_distribution": {
            "noise": noise,
            "bias": bias,
            "means": np.round(means.astype(float), 6).tolist(),
        },
        "shifted": {
            "noise": float(ood_noise),
            "bias": float(ood_bias),
            "means": np.round(ood_means.astype(float), 6).tolist(),
        },
        "files": {"in_distribution": "./dataset.json", "shifted": f"./{OOD_JSON}"},
        "model": (
            "held-out subjects rendered twice with the same draws (jittered means, bias "
            "field, noise sample): as in training (dataset.json) and with the shift "
            f"({OOD_JSON}, images in {OOD_IMAGES}/); same labels, fields, training subjects"
        ),
    }
    path = _write_subjects(
        root,
        lay,
        template=template,
        subjects=subjects,
        pairs=pairs,
        name=name,
        description="jrs_jax synthetic anatomy, unshifted held-out subjects (jrs_jax.data.ood)",
        generator="jrs_jax.data.ood",
        seed=seed,
        num_labels=num_labels,
        settings=subject_kwargs,
        info={"ood": {**info, "split": "in_distribution"}},
        convention=(
            "voxels along array axes; labels_i = warp_labels(template, disp_i, "
            "mode='nearest'); warp(image_i, disp_inv_i) is in template space"
        ),
    )
    _write_shifted(os.fspath(root), path, lay, shifted, {**info, "split": "shifted"}, name)
    return path


_RENDER_KEYS = ("intensity_jitter", "bias_spacing", "blur_sigma")


def _rerender(
    key, labels, means, *, noise, bias, intensity_jitter=0.03, bias_spacing=None, blur_sigma=0.7
):
    """The images of ``labels`` ``[N, *S]`` rendered as :func:`~jrs_jax.data.make_subjects`
    renders them with ``key`` (its mean, bias and noise keys: the same draws) but with the
    given ``means`` ``[K]``, ``noise`` and ``bias``: float32 ``[N, *S, 1]``."""
    _, k_mean, k_bias, k_noise = jax.random.split(key, 4)  # make_subjects' split
    traced, static = _render_args(
        labels.shape[1:],
        intensity_jitter=intensity_jitter,
        bias=bias,
        bias_spacing=bias_spacing,
        noise=noise,
        blur_sigma=blur_sigma,
    )
    img = _render_jit(
        (k_mean, k_bias, k_noise),
        jnp.asarray(labels),
        jnp.asarray(means),
        *traced,
        num_classes=len(means),
        **static,
    )
    return np.asarray(img, np.float32)


def _write_shifted(root: str, path: str, lay, images: np.ndarray, info: dict, name: str) -> str:
    """``dataset_ood.json`` from ``dataset.json`` (``path``): the held-out images replaced by
    the shifted ``images[i]`` (rows ``n_train..``), written to ``imagesTs_ood/``, with their
    labels and fields given explicitly (the reader guesses them only next to ``imagesTr``)."""
    with open(path) as f:
        meta = json.load(f)
    ndim = len(lay.shape)
    swap, fields = {}, {}
    for entry in meta["jrs_jax"].get("fields", []):
        fields[entry["image"]] = entry
    for i in range(lay.n_train, lay.n):
        case = f"sub_{i:04d}_0000"
        rel = f"./{OOD_IMAGES}/{case}.nii.gz"
        save_image(
            os.path.join(root, rel[2:]), _to_file(images[i, ..., 0], ndim), affine=lay.affine
        )
        swap[f"./imagesTr/{case}.nii.gz"] = rel
    ood = copy.deepcopy(meta)
    ood["name"] = f"{name}_{info['shift']}"
    ood["description"] = (
        f"jrs_jax synthetic anatomy, held-out subjects shifted ({info['shift']}, strength "
        f"{info['strength']:g}; jrs_jax.data.ood)"
    )
    ood["registration_val"] = [
        {
            **p,
            "fixed": swap.get(p["fixed"], p["fixed"]),
            "moving": swap.get(p["moving"], p["moving"]),
        }
        for p in meta["registration_val"]
    ]
    block = ood["jrs_jax"]
    block["heldout"] = [
        {
            "image": swap[_image(h)],
            "label": _image(h).replace("./imagesTr/", "./labelsTr/"),
            **({k: v for k, v in h.items() if k != "image"} if isinstance(h, dict) else {}),
        }
        for h in meta["jrs_jax"]["heldout"]
    ]
    block["fields"] = [*block.get("fields", [])] + [
        {**fields[old], "image": new} for old, new in swap.items() if old in fields
    ]
    block["ood"] = info
    return _write_json(os.path.join(root, OOD_JSON), ood)


def _image(entry) -> str:
    return entry if isinstance(entry, str) else entry["image"]
