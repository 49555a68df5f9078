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

import jax
import numpy as np

from . import metrics
from .evaluation import label_dice, write_json
from .methods.base import Method, MissingInput

__all__ = [
    "FILE_OPTIONS",
    "InputFile",
    "load_inputs",
    "load_series",
    "register_files",
    "register_series",
    "segment_files",
]

#: Command-line option of each batch key a method may need.
FILE_OPTIONS = {
    "moving": "--moving",
    "fixed": "--fixed",
    "moving_labels": "--moving-labels",
    "fixed_labels": "--fixed-labels",
    "moving_mask": "--moving-mask",
    "fixed_mask": "--fixed-mask",
    "image": "--image",
    "sequence": "--series",
}
_IMAGES = ("moving", "fixed", "image")


class InputFile:
    """One input file cropped / padded to the model shape.

    Attributes: ``array`` (model grid; images ``[*S, C]``, label maps ``[*S]`` or ``[*S, K]``),
    ``volume`` (the file as loaded: grid, affine, header), ``info`` (crop / pad, undone by
    :meth:`to_file`), ``name`` (file name without extension).
    """

    def __init__(self, path: str, key: str, config: Mapping):
        import dataclasses

        from .data import DataError, crop_or_pad, load_image, load_labels, load_multilabel
        from .data.datasets import _squeeze_2d, _strip_ext

        shape = tuple(config["data"]["shape"])
        multi = bool(config["data"].get("multi_label")) and key.endswith("_labels")
        self.ndim = len(shape)
        self.path = path
        if key in _IMAGES:  # one 3-D volume per file (modalities are separate files)
            vol = load_image(path, channels=True)
            c = vol.data.shape[-1]
            if c != 1:
                raise DataError(
                    path,
                    f"is 4-D data with {c} volumes along its 4th axis; the model reads one "
                    "3-D image (a series of frames? register it with --series)",
                )
            vol = dataclasses.replace(vol, data=np.ascontiguousarray(vol.data[..., 0]))
            self._set_image(vol, _strip_ext(os.path.basename(path)), shape)
            return
        # label maps: integer [*S], or binary channels [*S, K] for multi-label methods
        self.volume = load_multilabel(path) if multi else load_labels(path)
        data = np.asarray(self.volume.data)
        if self.ndim == 2:
            data = _squeeze_2d(path, data)
        self.name = os.path.basename(path)
        if multi and data.shape[-1] != int(config["data"]["num_classes"]):
            raise DataError(
                path,
                f"multi-label map has {data.shape[-1]} channels; the model segments "
                f"{config['data']['num_classes']} labels",
            )
        self.array, self.info = crop_or_pad(data, shape)
        self.array = self.array.astype(np.uint8 if multi else np.int32)

    def _set_image(self, volume, name: str, shape: tuple[int, ...]) -> None:
        """An image from a loaded 3-D volume, as datasets load images: ``[H, W, 1]`` squeezed
        for 2-D models (anything else is a :class:`~jrs_jax.data.DataError`), intensities
        normalised to ``[0, 1]``, one channel, cropped / padded to ``shape``."""
        from .data import crop_or_pad, normalize_intensity
        from .data.datasets import _squeeze_2d

        self.volume, self.name = volume, name
        data = np.asarray(volume.data, np.float32)
        if self.ndim == 2:
            data = _squeeze_2d(volume.path or self.path, data)
        self.array, self.info = crop_or_pad(normalize_intensity(data)[..., None], shape)

    @classmethod
    def from_volume(cls, volume, name: str, config: Mapping) -> InputFile:
        """An image input from an already loaded 3-D :class:`~jrs_jax.data.Volume` (e.g.
        one frame of a 4-D series), prepared as image files are."""
        self = cls.__new__(cls)
        shape = tuple(config["data"]["shape"])
        self.ndim, self.path = len(shape), volume.path
        self._set_image(volume, name, shape)
        return self

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


def load_series(path: str, config: Mapping) -> list[InputFile]:
    """The frames of a series, each an :class:`InputFile` on the model grid: a 4-D NIfTI
    ``[X, Y, Z, T]`` (2-D+t: ``[H, W, 1, T]``) or a folder of 3-D frame files (in name order).

    Raises:
      DataError: one 3-D volume instead of a series, fewer than 2 frames, or frames on
        different grids (naming the file).
    """
    import dataclasses

    from .data import DataError, load_image

    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if f.endswith((".nii", ".nii.gz")))
        if len(names) < 2:
            raise DataError(
                path, f"a series folder needs 2 or more NIfTI frames; found {len(names)}"
            )
        frames = [InputFile(os.path.join(path, f), "fixed", config) for f in names]
        ref = frames[0]
        for f in frames[1:]:
            if f.volume.data.shape != ref.volume.data.shape or not np.allclose(
                f.volume.affine, ref.volume.affine, atol=1e-3
            ):
                raise DataError(
                    f.path,
                    f"frame grid {f.volume.data.shape} differs from the first frame's "
                    f"{ref.volume.data.shape} ({ref.path}): the frames of a series share one grid",
                )
        return frames
    vol = load_image(path, channels=True)
    if vol.data.ndim < 4 or vol.data.shape[-1] < 2:
        raise DataError(
            path,
            f"is one volume {vol.data.shape[:3]}, not a series: give a 4-D NIfTI [X, Y, Z, T] "
            "(2-D+t: [H, W, 1, T]) or a folder of frames",
        )
    base = os.path.basename(path).split(".nii")[0]
    return [
        InputFile.from_volume(
            dataclasses.replace(vol, data=np.ascontiguousarray(vol.data[..., t])),
            f"{base}_f{t:02d}",
            config,
        )
        for t in range(vol.data.shape[-1])
    ]


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
    inputs = {k: InputFile(p, k, config) for k, p in files.items() if p and k != "sequence"}
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


def _save(path: str, inp: InputFile, arr, *, reference: bool = True, names=None) -> None:
    from .data import save_image

    kw = {"reference": inp.volume} if reference else {"affine": inp.volume.affine}
    save_image(path, inp.to_file(arr), label_names=names, **kw)


def _label_names(config: Mapping) -> dict | None:
    """The dataset's label (or, multi-label, channel) names the run was trained with."""
    names = (config.get("data") or {}).get("label_names")
    return {int(k): v for k, v in names.items()} if names else None


def register_series(
    method: Method, state, config: Mapping, files: Mapping[str, str | None], out: str
) -> dict:
    """Register every frame of a series to its frame 0 and write, per frame ``k >= 1``,
    ``disp_fKK.nii.gz`` (frame ``k`` pulled onto frame 0, jrs_jax voxel displacements on the
    canonical grid), ``warped_fKK.nii.gz``; per frame ``k >= 0`` ``labels_fKK.nii.gz``, the
    labels of frame 0 (``--fixed-labels``, else the method's segmentation of frame 0)
    propagated onto frame ``k`` through the inverted field, and ``seg_fKK.nii.gz`` (the
    method's own segmentation of the frame, when it segments); ``frames.png`` (the propagated
    labels over the sequence) and ``summary.json``. Returns the summary."""
    import jax.numpy as jnp

    from . import viz
    from .evaluation import propagate_labels
    from .spatial import warp
    from .train import variables

    if "sequence" not in method.tasks:
        raise ValueError(
            f"{method.name} registers pairs, not series: give --fixed and --moving instead of "
            "--series"
        )
    frames = load_series(files["sequence"], config)
    seq = np.stack([f.array for f in frames])[None]
    pred = method.run(variables(state), {"sequence": seq}, "sequence")
    disp = np.asarray(pred["disp_sequence"])[0]
    f0 = frames[0]
    os.makedirs(out, exist_ok=True)
    names = _label_names(config)
    labels0 = None
    if files.get("fixed_labels"):
        labels0 = InputFile(files["fixed_labels"], "fixed_labels", config).array
    segs = None
    if "seg_sequence_probs" in pred:
        segs = method.labels({"seg_probs": pred["seg_sequence_probs"]})[0]
        labels0 = segs[0] if labels0 is None else labels0
    propagated = [] if labels0 is None else list(propagate_labels(labels0, disp))
    warped = np.asarray(warp(jnp.asarray(seq[0, 1:]), jnp.asarray(disp)))
    summary: dict = {"frames": len(frames), "files": [], "folding_percent": []}
    for k, frame in enumerate(frames):
        tag = f"f{k:02d}"
        if k:
            u = disp[k - 1]
            _save(os.path.join(out, f"disp_{tag}.nii.gz"), f0, u, reference=False)
            _save(os.path.join(out, f"warped_{tag}.nii.gz"), f0, warped[k - 1][..., 0])
            summary["files"] += [f"disp_{tag}.nii.gz", f"warped_{tag}.nii.gz"]
            summary["folding_percent"].append(metrics.folding_fraction(u))
        if propagated:
            _save(os.path.join(out, f"labels_{tag}.nii.gz"), frame, propagated[k], names=names)
            summary["files"].append(f"labels_{tag}.nii.gz")
        if segs is not None:
            _save(os.path.join(out, f"seg_{tag}.nii.gz"), frame, segs[k], names=names)
            summary["files"].append(f"seg_{tag}.nii.gz")
    if segs is not None and propagated:
        multi = method.multi_label
        summary["dice_propagated_vs_segmented"] = [
            label_dice(p, s, multi_label=multi) for p, s in zip(propagated, segs)
        ]
    shown = (
        None
        if not propagated
        else np.stack([viz.display_labels(p, ndim=method.ndim) for p in propagated])
    )
    fig = viz.frame_strip(seq[0], shown, titles=[f.name for f in frames])
    viz.save_figure(fig, os.path.join(out, "frames.png"))
    summary["files"].append("frames.png")
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def _refined(method: Method, variables: dict, batch: dict, *, steps: int, lr, score) -> tuple:
    """``(prediction, summary)`` of the pair refined with ``steps`` steps
    (:func:`jrs_jax.refinement.refine_variables`); ``score(prediction) -> {metric: value}``
    is reported before and after, with the objective and the seconds taken."""
    import time

    from .refinement import refine_options, refine_variables

    steps, lr = refine_options(method.config, steps=steps, lr=lr)
    before = score(method.run(variables, batch, "register"))
    t0 = time.perf_counter()
    refined, losses = refine_variables(method, variables, batch, steps=steps, lr=lr)
    pred = method.run(refined, batch, "register")
    jax.block_until_ready(pred["disp"])
    seconds = time.perf_counter() - t0
    after = score(pred)
    summary = {
        "steps": steps,
        "lr": lr,
        "seconds": round(seconds, 3),
        "loss_before": float(losses[0]),
        "loss_after": float(losses[-1]),
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
    }
    return pred, summary


def register_files(
    method: Method,
    state,
    config: Mapping,
    files: Mapping[str, str | None],
    out: str,
    *,
    refine_steps: int = 0,
    refine_lr: float | None = None,
) -> dict:
    """Register the files' pair and write the prediction to ``out``.

    Writes ``warped.nii.gz`` (and ``warped_labels.nii.gz`` with moving labels; the moving
    labels are warped by nearest-neighbour lookup) on the fixed file's grid, orientation and
    header; ``disp.nii.gz`` (the jrs_jax voxel displacement ``[X, Y, Z, D]`` along the
    canonical RAS+ array axes, saved with the canonical affine); ``warp_ants.nii.gz`` (ANTs /
    ITK physical LPS warp); ``fixed_seg.nii.gz`` when the prediction segments the fixed image;
    ``registration.png``; and ``summary.json`` (Jacobian statistics; Dice before / after with
    both label maps). With ``refine_steps > 0`` the network is first refined on this pair
    (:mod:`jrs_jax.refinement`, Adam at ``refine_lr``, default the config's ``refine.lr``)
    and ``summary["refine"]`` reports the objective, the folding, ``sdlogj`` and (with both
    label maps) the Dice before and after refinement, and the seconds it took. Returns the
    summary.
    """
    from . import viz
    from .data.ants import save_ants_warp
    from .evaluation import warp_labels_nearest
    from .train import variables

    if files.get("sequence"):
        return register_series(method, state, config, files, out)
    batch, inputs = load_inputs(method, config, "register", files)
    m_lab, f_lab = inputs.get("moving_labels"), inputs.get("fixed_labels")
    refinement = None
    if refine_steps:
        from .evaluation import warp_labels_nearest

        def score(p) -> dict:
            u = np.asarray(p["disp"])[0]
            out = {"folding_percent": metrics.folding_fraction(u), "sdlogj": metrics.sdlogj(u)}
            if m_lab is not None and f_lab is not None:
                moved = np.asarray(warp_labels_nearest(m_lab.array[None], p["disp"]))[0]
                out["dice"] = label_dice(moved, f_lab.array, multi_label=method.multi_label)
            return {k: float(v) for k, v in out.items()}

        pred, refinement = _refined(
            method, variables(state), batch, steps=refine_steps, lr=refine_lr, score=score
        )
    else:
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
    if refinement is not None:
        summary["refine"] = refinement
    warped_labels = None
    if m_lab is not None:
        warped_labels = np.asarray(warp_labels_nearest(m_lab.array[None], pred["disp"]))[0]
        _save(
            os.path.join(out, "warped_labels.nii.gz"),
            fixed,
            warped_labels.astype(m_lab.array.dtype),
            names=_label_names(config),
        )
        summary["files"].append("warped_labels.nii.gz")
        if f_lab is not None:
            multi = method.multi_label
            summary["dice_before"] = label_dice(m_lab.array, f_lab.array, multi_label=multi)
            summary["dice_after"] = label_dice(warped_labels, f_lab.array, multi_label=multi)
    if method.has_segmentation(pred):
        seg = method.labels(pred)[0]
        _save(os.path.join(out, "fixed_seg.nii.gz"), fixed, seg, names=_label_names(config))
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
    multi-channel ``uint8`` map ``[X, Y, Z, K]`` for overlapping labels, thresholded per
    label, on the image file's grid; the label names stored in the file,
    :func:`~jrs_jax.data.read_label_names`), ``segmentation.png`` and ``summary.json``
    (voxels per label, label names). Returns the summary."""
    from . import viz
    from .train import variables

    batch, inputs = load_inputs(method, config, "segment", files)
    image = inputs["image"]
    pred = method.labels(method.run(variables(state), batch, "segment"))[0]
    os.makedirs(out, exist_ok=True)
    _save(os.path.join(out, "labels.nii.gz"), image, pred, names=_label_names(config))
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
