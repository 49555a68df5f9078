"""Inference on files with a trained run: the batch a method's ``predict`` needs, from NIfTI.

Behind ``jrs-jax register`` and ``jrs-jax segment`` (and usable from notebooks). A method
declares the batch keys of each task (:attr:`jrs_jax.methods.Method.tasks`); this module
loads the file given for each key (:data:`FILE_OPTIONS` names the command-line option of each),
crops or pads it to the model's shape, runs the jitted ``predict`` and writes whatever keys the
prediction holds back on the input file's grid. A key the method needs but no file was given
for is one line naming the option, e.g. ``cross_stitch needs --moving-labels``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from . import metrics
from .evaluation import label_dice, write_json
from .methods.base import Method, MissingInput

__all__ = ["FILE_OPTIONS", "InputFile", "load_inputs", "register_files", "segment_files"]

#: Command-line option of each batch key a method may need.
FILE_OPTIONS = {
    "moving": "--moving",
    "fixed": "--fixed",
    "moving_labels": "--moving-labels",
    "fixed_labels": "--fixed-labels",
    "moving_mask": "--moving-mask",
    "fixed_mask": "--fixed-mask",
    "image": "--image",
}
_IMAGES = ("moving", "fixed", "image")


class InputFile:
    """One input file cropped / padded to the model shape.

    Attributes: ``array`` (model grid; images ``[*S, C]``, label maps ``[*S]`` or ``[*S, K]``),
    ``volume`` (the file as loaded: grid, affine, header), ``info`` (crop / pad, undone by
    :meth:`to_file`), ``name`` (file name without extension).
    """

    def __init__(self, path: str, key: str, config: Mapping):
        from .data import crop_or_pad, load_image, load_labels, load_subject

        shape = tuple(config["data"]["shape"])
        self.ndim = len(shape)
        self.path = path
        if key in _IMAGES:
            subject = load_subject(path, None, ndim=self.ndim)
            self.volume = load_image(path)
            data = subject.image
            self.name = subject.name
        else:
            self.volume = load_labels(path)
            data = np.asarray(self.volume.data)
            if self.ndim == 2:
                data = data[:, :, 0]
            self.name = os.path.basename(path)
        self.array, self.info = crop_or_pad(data, shape)
        if key not in _IMAGES:
            self.array = self.array.astype(np.int32)

    def uncrop(self, arr) -> np.ndarray:
        """A model-grid array ``[*S, ...]`` back on the file's spatial grid."""
        from .data import uncrop

        return np.asarray(uncrop(np.asarray(arr), self.info))

    def to_file(self, arr) -> np.ndarray:
        """A model-grid array in the file's layout (``[H, W, 1(, C)]`` for 2-D data)."""
        arr = self.uncrop(arr)
        if self.ndim == 2:
            return arr[:, :, None] if arr.ndim == 2 else arr[:, :, None, :]
        return arr


def load_inputs(method: Method, config: Mapping, task: str, files: Mapping[str, str | None]):
    """``(batch, inputs)``: the batch ``predict`` needs for ``task`` (a batch of one) and the
    :class:`InputFile` of every file given.

    Raises:
      MissingInput: a key the method needs has no file (the message names the option).
      DataError: a file cannot be used, or the images are on different grids.
    """
    from .data import DataError

    needed = method.inputs(task)
    for key in needed:
        if not files.get(key):
            raise MissingInput(method.name, task, FILE_OPTIONS.get(key, key))
    inputs = {k: InputFile(p, k, config) for k, p in files.items() if p}
    ref = next(iter(inputs.values()))
    for f in inputs.values():
        if f.volume.data.shape[: ref.ndim] != ref.volume.data.shape[: ref.ndim]:
            raise DataError(
                f.path,
                f"shape {f.volume.data.shape[: ref.ndim]} differs from "
                f"{ref.path}'s {ref.volume.data.shape[: ref.ndim]}: give files on the same "
                "grid (resample them first)",
            )
    batch = {k: f.array[None] for k, f in inputs.items()}
    return batch, inputs


def _save(path: str, inp: InputFile, arr, *, reference: bool = True) -> None:
    from .data import save_image

    kw = {"reference": inp.volume} if reference else {"affine": inp.volume.affine}
    save_image(path, inp.to_file(arr), **kw)


def register_files(
    method: Method, state, config: Mapping, files: Mapping[str, str | None], out: str
) -> dict:
    """Register the files' pair and write the prediction to ``out``.

    Writes ``warped.nii.gz`` (and ``warped_labels.nii.gz`` with moving labels; the moving
    labels are warped by nearest-neighbour lookup) on the fixed file's grid, orientation and
    header; ``disp.nii.gz`` (the jrs_jax voxel displacement ``[X, Y, Z, D]`` along the
    canonical RAS+ array axes, saved with the canonical affine); ``warp_ants.nii.gz`` (ANTs /
    ITK physical LPS warp); ``fixed_seg.nii.gz`` when the prediction segments the fixed image;
    ``registration.png``; and ``summary.json`` (Jacobian statistics; Dice before / after with
    both label maps). Returns the summary.
    """
    from . import viz
    from .data.ants import save_ants_warp
    from .evaluation import warp_labels_nearest
    from .train import variables

    batch, inputs = load_inputs(method, config, "register", files)
    pred = method.run(variables(state), batch, "register")
    fixed = inputs["fixed"]
    disp = np.asarray(pred["disp"])[0]
    warped = np.asarray(pred["warped"])[0]
    os.makedirs(out, exist_ok=True)
    summary: dict = {"files": ["warped.nii.gz", "disp.nii.gz", "warp_ants.nii.gz"]}
    _save(os.path.join(out, "warped.nii.gz"), fixed, warped[..., 0])
    # vectors along the canonical (RAS+) array axes: saved on that grid, not the file's
    _save(os.path.join(out, "disp.nii.gz"), fixed, disp, reference=False)
    save_ants_warp(os.path.join(out, "warp_ants.nii.gz"), fixed.uncrop(disp), fixed.volume.affine)
    summary["jacobian"] = metrics.summarize_jacobian(disp)
    m_lab, f_lab = inputs.get("moving_labels"), inputs.get("fixed_labels")
    warped_labels = None
    if m_lab is not None:
        warped_labels = np.asarray(warp_labels_nearest(m_lab.array[None], pred["disp"]))[0]
        _save(os.path.join(out, "warped_labels.nii.gz"), fixed, warped_labels.astype(np.int32))
        summary["files"].append("warped_labels.nii.gz")
        if f_lab is not None:
            multi = method.multi_label
            summary["dice_before"] = label_dice(m_lab.array, f_lab.array, multi_label=multi)
            summary["dice_after"] = label_dice(warped_labels, f_lab.array, multi_label=multi)
    if method.has_segmentation(pred):
        seg = method.labels(pred)[0]
        _save(os.path.join(out, "fixed_seg.nii.gz"), fixed, seg)
        summary["files"].append("fixed_seg.nii.gz")
    show = lambda x: None if x is None else viz.display_labels(x, ndim=method.ndim)
    fig = viz.registration_panel(
        fixed.array,
        inputs["moving"].array,
        warped,
        fixed_labels=show(None if f_lab is None else f_lab.array),
        moving_labels=show(None if m_lab is None else m_lab.array),
        warped_labels=show(warped_labels),
        disp=disp,
    )
    viz.save_figure(fig, os.path.join(out, "registration.png"))
    summary["files"].append("registration.png")
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def segment_files(
    method: Method, state, config: Mapping, files: Mapping[str, str | None], out: str
) -> dict:
    """Segment the file's image and write ``labels.nii.gz`` (integer labels, or a
    multi-channel ``uint8`` map for overlapping labels, on the image file's grid),
    ``segmentation.png`` and ``summary.json`` (voxels per label). Returns the summary."""
    from . import viz
    from .train import variables

    batch, inputs = load_inputs(method, config, "segment", files)
    image = inputs["image"]
    pred = method.labels(method.run(variables(state), batch, "segment"))[0]
    os.makedirs(out, exist_ok=True)
    _save(os.path.join(out, "labels.nii.gz"), image, pred)
    if pred.ndim == method.ndim + 1:  # multi-label: one channel per label
        counts = {int(k): int(pred[..., k].sum()) for k in range(pred.shape[-1])}
    else:
        counts = {int(k): int(c) for k, c in zip(*np.unique(pred, return_counts=True))}
    shown = viz.display_labels(pred, ndim=method.ndim)
    viz.save_figure(
        viz.overlay(image.array, shown, title=image.name), os.path.join(out, "segmentation.png")
    )
    names = (config.get("data") or {}).get("label_names")
    summary = {"voxels_per_label": counts, **({"label_names": names} if names else {})}
    write_json(os.path.join(out, "summary.json"), summary)
    return summary
