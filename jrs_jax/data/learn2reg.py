"""Learn2Reg / nnU-Net ``dataset.json``: the reader (:func:`load_learn2reg`) and a generic
writer (:func:`write_learn2reg`) for every optional piece of a :class:`~jrs_jax.data.Dataset`.

The JSON (paths relative to the JSON file's folder; absolute paths are kept)::

    {
      "name": ..., "tensorImageSize": "3D",
      "modality": {"0": "T1", "1": "T2"},          # C > 1 entries: C image channels
      "labels": {"0": "background", "1": "liver"},  # -> Dataset.label_names
      "training": [
        {"image": "./imagesTr/case.nii.gz",         # or [c0, c1, ...], or case_0000.nii.gz
         "label": "./labelsTr/case.nii.gz",         # optional
         "mask": "./masksTr/case.nii.gz",           # optional region map
         "field": ..., "field_inv": ...,            # optional ground-truth displacements
         "subject": "patient_07", "time": 2},       # optional (longitudinal data)
        ...
      ],
      "registration_val": [
        {"fixed": ..., "moving": ...,
         "disp": "./fieldsVal/<fixed>_<moving>_disp.nii.gz"},   # optional pair ground truth
        ...
      ],
      "jrs_jax": {                                  # optional, this library's extensions
        "ndim": 2,                                  # 2-D data stored as [H, W, 1] files
        "label_format": "multi",                    # K-channel binary label maps
        "label_modality": 1,                        # channel whose labels may supervise
        "heldout": [path, or {"image", "subject", "time", "label", "mask"}, ...],
        "fields": [{"image": ..., "disp": ..., "disp_inv": ...}, ...],
        "hidden_labels": [{"image": ..., "label": "./labelsHidden/N.nii.gz"}, ...]
      }
    }

Channels (nnU-Net naming). With ``C`` modalities an entry's ``image`` is a list of ``C``
paths, or ``case_0000.nii.gz`` whose siblings ``case_0001.nii.gz``... exist, or
``case.nii.gz`` (not a file) standing for ``case_0000.nii.gz``, ``case_0001.nii.gz``...
(with one modality the last form is accepted too). Every channel must lie on the first one's
grid and is intensity-normalised on its own.

Held-out subjects (images only referenced by ``registration_val``) take their label map and
mask from the file of the same name in ``labelsTr`` / ``masksTr`` next to their ``imagesTr``
folder when it exists, their subject / time from a ``jrs_jax.heldout`` entry, and their
fields from ``jrs_jax.fields``.

Ground-truth fields (``jrs_jax.fields`` ``disp`` / ``disp_inv``, or entry keys ``field`` /
``field_inv``) are ``[*S3, D]`` files in voxels along array axes; ``Subject.field`` pulls a
common reference onto the scan and ``Subject.field_inv`` the reverse (the direction of
:mod:`jrs_jax.data.synthetic`).

Evaluation-only labels (``jrs_jax.hidden_labels``): label maps of the scans' grids, in the
dataset's label format, read into :attr:`Subject.hidden_labels <jrs_jax.data.Subject>`
(training and held-out scans alike; checked like labels). They are never the training
labels (``Subject.labels``) and no sampler returns them: e.g. every frame of a cardiac
sequence labelled for training at two frames only (:mod:`jrs_jax.data.cardiac`).

Pair ground truth (``registration_val`` entries' ``disp``): a ``[*S3, D]`` file on the
*fixed* image's grid, voxels along array axes, pull-back (``warp(moving, disp) ~ fixed``),
read like the subject fields (same header checks, lazily by default) into
``Dataset.pair_fields[(fixed, moving)]``. It is the ground truth of that pair where the
composition of subject fields through a reference is not exact (sliding organs:
:mod:`jrs_jax.data.sliding`); :func:`~jrs_jax.data.pair_batch` prefers it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile

import numpy as np

from .datasets import (
    LABEL_FORMATS,
    Dataset,
    Subject,
    _check_ndim,
    _check_shapes,
    _load_pair_field,
    _load_scan,
)
from .errors import DataError
from .nifti import save_image

__all__ = ["load_learn2reg", "write_learn2reg"]

_CHANNEL = re.compile(r"^(.*)_(\d{4})$")
_FIELD_KEYS = {"field": ("field", "disp"), "field_inv": ("field_inv", "disp_inv")}


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _split_ext(fname: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii"):
        if fname.endswith(ext):
            return fname[: -len(ext)], ext
    return fname, ""


def _modalities(meta: dict, jp: str) -> tuple[str, ...] | None:
    mods = meta.get("modality", meta.get("channel_names"))
    if mods is None:
        return None
    if not isinstance(mods, dict) or not mods:
        raise DataError(jp, f"'modality' must be a non-empty object; got {mods!r}")
    try:
        order = sorted(mods, key=int)
    except (TypeError, ValueError) as exc:
        raise DataError(jp, f"'modality' keys must be channel numbers; got {list(mods)}") from exc
    if [int(k) for k in order] != list(range(len(order))):
        raise DataError(jp, f"'modality' keys must be 0..{len(order) - 1}; got {list(mods)}")
    return tuple(str(mods[k]) for k in order)


def _label_names(labels) -> dict[int, str] | None:
    """nnU-Net v1 ``{"0": "background"}`` or v2 ``{"background": 0}``; else ``None``."""
    if not isinstance(labels, dict) or not labels:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if all(isinstance(v, str) for v in labels.values()):
            return {int(k): v for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        return {v: k for k, v in sorted(labels.items(), key=lambda kv: kv[1])}
    return None


def _guess(folder_name: str, given: str, first: str) -> str | None:
    """``<folder_name>/<file name>`` next to the ``imagesTr`` folder of a held-out image
    (``given``: the JSON's path; ``first``: its first channel's file), if it exists; the file
    name is the JSON path's, the first channel's, or the latter without ``_0000``."""
    names = [os.path.basename(given), os.path.basename(first)]
    stem, ext = _split_ext(names[1])
    m = _CHANNEL.match(stem)
    if m:
        names.append(m.group(1) + ext)
    for p in (given, first):
        folder = os.path.dirname(p)
        if os.path.basename(folder) != "imagesTr":
            continue
        for n in names:
            g = os.path.join(os.path.dirname(folder), folder_name, n)
            if os.path.isfile(g):
                return g
    return None


def load_learn2reg(
    json_path: str | os.PathLike,
    *,
    normalize: bool = True,
    ndim: int | None = None,
    fields: bool | str = "lazy",
) -> Dataset:
    """Read a Learn2Reg / nnU-Net style ``dataset.json`` (layout: module docstring).

    ``training`` entries become the training subjects, in order. Images referenced by
    ``registration_val`` pairs ``{"fixed": ..., "moving": ...}`` that are not training images
    are loaded as extra subjects with ``held_out=True`` (after the training subjects, in order
    of first appearance); their labels (masks) are taken from the file of the same name in
    ``labelsTr`` (``masksTr``) next to the image's ``imagesTr`` folder when it exists (for
    validation Dice), else ``None``. ``Dataset.val_pairs`` holds the pairs as ``(fixed,
    moving)`` subject indices, ``Dataset.pair_fields`` their ``disp`` files (pair ground
    truth, on the fixed image's grid). Every optional piece (channels, multi-label maps,
    masks, fields, subject / time, evaluation-only ``Subject.hidden_labels`` from
    ``jrs_jax.hidden_labels``) is absent unless the JSON gives it.

    Args:
      json_path: the ``dataset.json``.
      normalize: apply :func:`~jrs_jax.data.normalize_intensity` (percentiles 0.5 / 99.5 ->
        ``[0, 1]``) to each image channel.
      ndim: 2 or 3; default: ``jrs_jax.ndim`` of the JSON if present, else 3. With 2, files
        must be ``[H, W, 1]`` and are squeezed to ``[H, W]``.
      fields: ground-truth displacement files: ``"lazy"`` (default) checks their header
        (shape, affine) now and reads the voxels on first access of ``Subject.field`` /
        ``field_inv`` / :meth:`~jrs_jax.data.Dataset.pair_field` (they serve evaluation
        only, and reading them would double the load time); ``True`` reads them now;
        ``False`` ignores them (subject and pair fields alike).

    Raises:
      DataError: (message starting with the JSON file) missing / invalid JSON, no
        ``training`` list, entries without ``image``, referenced files missing (naming the
        entry and the resolved path), bad ``subject`` / ``time`` values, a
        ``jrs_jax.label_modality`` that is not a channel index, a duplicate
        ``(subject, time)``, multi-label maps with different ``K``, subjects of different
        shapes; (starting with the file, and naming the JSON entry at the end) the errors of
        :func:`~jrs_jax.data.load_image` / ``load_labels`` / ``load_multilabel`` /
        ``check_pair`` for bad files: channels, labels, hidden labels, masks or fields off the
        image's grid, non-binary multi-label maps, fields that are not ``[*S, D]``.
    """
    if fields not in (True, False, "lazy"):
        raise ValueError(f"fields must be True, False or 'lazy'; got {fields!r}")
    jp = os.fspath(json_path)
    if not os.path.isfile(jp):
        raise DataError(jp, "dataset JSON file not found")
    try:
        with open(jp) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(jp, f"invalid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(jp, f"expected a JSON object at the top level; got {type(meta).__name__}")
    if "training" not in meta:
        raise DataError(jp, "missing 'training' key")
    training = meta["training"]
    if not isinstance(training, list):
        raise DataError(jp, f"'training' must be a list; got {type(training).__name__}")
    extra = meta.get("jrs_jax")
    extra = extra if isinstance(extra, dict) else {}
    if ndim is None:
        ndim = extra.get("ndim", 3)
    ndim = _check_ndim(ndim, jp)
    modalities = _modalities(meta, jp)
    num_channels = 1 if modalities is None else len(modalities)
    label_format = extra.get("label_format", "integer")
    if label_format not in LABEL_FORMATS:
        raise DataError(
            jp, f"jrs_jax.label_format must be one of {LABEL_FORMATS}; got {label_format!r}"
        )
    label_modality = extra.get("label_modality")
    if label_modality is not None and (
        isinstance(label_modality, bool)
        or not isinstance(label_modality, int)
        or not 0 <= label_modality < num_channels
    ):
        raise DataError(
            jp,
            f"jrs_jax.label_modality must be an integer channel in 0..{num_channels - 1} "
            f"(or null); got {label_modality!r}",
        )
    base = os.path.dirname(os.path.abspath(jp))
    json_name = os.path.basename(jp)

    def resolve(rel, where: str) -> str:
        if not isinstance(rel, str) or not rel:
            raise DataError(jp, f"{where}: expected a file path, got {rel!r}")
        p = os.path.normpath(os.path.join(base, rel))
        if not os.path.isfile(p):
            raise DataError(jp, f"{where}: file {rel!r} not found (resolved to {p})")
        return p

    def resolve_image(rel, where: str) -> tuple[str, list[str]]:
        """(the entry's path, one file per channel)."""
        if isinstance(rel, list):
            if len(rel) != num_channels:
                raise DataError(
                    jp, f"{where}: {len(rel)} channel files for {num_channels} modalities"
                )
            paths = [resolve(r, f"{where}[{c}]") for c, r in enumerate(rel)]
            return paths[0], paths
        if not isinstance(rel, str) or not rel:
            raise DataError(jp, f"{where}: expected a file path, got {rel!r}")
        p = os.path.normpath(os.path.join(base, rel))
        stem, ext = _split_ext(p)
        m = _CHANNEL.match(stem)
        if os.path.isfile(p):
            if num_channels == 1:
                return p, [p]
            if not (m and m.group(2) == "0000"):
                raise DataError(
                    jp,
                    f"{where}: {rel!r} is one file but the dataset has {num_channels} "
                    f"modalities {modalities}; list one file per channel or use nnU-Net "
                    "names (case_0000.nii.gz, case_0001.nii.gz, ...)",
                )
            stem = m.group(1)
        elif not os.path.isfile(f"{stem}_0000{ext}"):
            raise DataError(jp, f"{where}: file {rel!r} not found (resolved to {p})")
        paths = [f"{stem}_{c:04d}{ext}" for c in range(num_channels)]
        for c, pc in enumerate(paths):
            if not os.path.isfile(pc):
                raise DataError(
                    jp,
                    f"{where}: channel {c} ({modalities[c]}) file "
                    f"{os.path.relpath(pc, base)!r} not found (resolved to {pc})",
                )
        return p, paths

    # supplementary per-image information, keyed by the first channel's file
    def info_list(key: str) -> dict[str, tuple[str, dict]]:
        items = extra.get(key, []) or []
        if not isinstance(items, list):
            raise DataError(jp, f"jrs_jax.{key} must be a list; got {type(items).__name__}")
        out = {}
        for k, item in enumerate(items):
            if isinstance(item, str) and key == "heldout":
                continue
            where = f"jrs_jax.{key}[{k}]"
            if not isinstance(item, dict) or "image" not in item:
                raise DataError(jp, f"{where} has no 'image' entry: {item!r}")
            try:
                first = resolve_image(item["image"], f"{where} image")[1][0]
            except DataError:  # supplementary: an image no entry uses may be missing
                continue
            out[first] = (where, item)
        return out

    field_info = info_list("fields") if fields is not False else {}
    heldout_info = info_list("heldout")
    hidden_info = info_list("hidden_labels")

    def hidden_path(key: str) -> str | None:
        where, item = hidden_info.get(key, ("", {}))
        return resolve(item["label"], f"{where} label") if item.get("label") else None

    def field_paths(entry: dict, where: str, key: str) -> dict[str, str | None]:
        out = {}
        for name, keys in _FIELD_KEYS.items():
            out[name] = None
            if fields is False:
                continue
            for src, w in ((entry, where), field_info.get(key, (None, {}))[::-1]):
                k = next((k for k in keys if src.get(k)), None)
                if k is not None:
                    out[name] = resolve(src[k], f"{w} {k}")
                    break
        return out

    def subject_time(entry: dict, where: str) -> tuple[str | None, int, bool]:
        sid, t = entry.get("subject"), entry.get("time", 0)
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise DataError(jp, f"{where} subject: expected a non-empty string, got {sid!r}")
        if isinstance(t, bool) or not isinstance(t, int):
            raise DataError(jp, f"{where} time: expected an integer, got {t!r}")
        return sid, t, ("subject" in entry or "time" in entry)

    scans: list[dict] = []
    index: dict[str, int] = {}

    def scan(where, channels, given, *, label, mask, held_out, subject_time, fields) -> dict:
        sid, t, explicit = subject_time
        name = _split_ext(os.path.basename(given))[0]
        return dict(
            where=where,
            channels=channels,
            name=name,
            label=label,
            mask=mask,
            hidden=hidden_path(channels[0]),
            held_out=held_out,
            subject=sid,
            time=t,
            explicit=explicit,
            **fields,
        )

    for k, entry in enumerate(training):
        where = f"training[{k}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(jp, f"{where} has no 'image' entry: {entry!r}")
        given, channels = resolve_image(entry["image"], f"{where} image")
        key = channels[0]
        if key in index:
            raise DataError(jp, f"{where}: image {entry['image']!r} is listed twice")
        sid, t, explicit = subject_time(entry, where)
        index[key] = len(scans)
        scans.append(
            scan(
                where,
                channels,
                given,
                label=resolve(entry["label"], f"{where} label") if entry.get("label") else None,
                mask=resolve(entry["mask"], f"{where} mask") if entry.get("mask") else None,
                held_out=False,
                subject_time=(sid, t, explicit),
                fields=field_paths(entry, where, key),
            )
        )

    pairs: list[tuple[int, int]] = []
    pair_disp: list[tuple[int, str]] = []  # (index into pairs, resolved disp file)
    val = meta.get("registration_val", []) or []
    if not isinstance(val, list):
        raise DataError(jp, f"'registration_val' must be a list; got {type(val).__name__}")
    for k, pair in enumerate(val):
        where = f"registration_val[{k}]"
        if not isinstance(pair, dict) or "fixed" not in pair or "moving" not in pair:
            raise DataError(jp, f"{where} needs 'fixed' and 'moving' entries: {pair!r}")
        ij = []
        for role in ("fixed", "moving"):
            given, channels = resolve_image(pair[role], f"{where} {role}")
            key = channels[0]
            if key not in index:
                hwhere, hentry = heldout_info.get(key, (f"{where} {role}", {}))
                sid, t, explicit = subject_time(hentry, hwhere)

                def guess(folder: str, key_name: str) -> str | None:
                    if hentry.get(key_name):  # noqa: B023  (called right away)
                        return resolve(hentry[key_name], f"{hwhere} {key_name}")  # noqa: B023
                    return _guess(folder, given, key)  # noqa: B023

                index[key] = len(scans)
                scans.append(
                    scan(
                        hwhere,
                        channels,
                        given,
                        label=guess("labelsTr", "label"),
                        mask=guess("masksTr", "mask"),
                        held_out=True,
                        subject_time=(sid, t, explicit),
                        fields=field_paths(hentry, hwhere, key),
                    )
                )
            ij.append(index[key])
        if fields is not False and pair.get("disp"):
            pair_disp.append((len(pairs), resolve(pair["disp"], f"{where} disp")))
        pairs.append((ij[0], ij[1]))

    if any(s["explicit"] for s in scans):
        seen: dict[tuple[str, int], dict] = {}
        for s in scans:
            k = (s["name"] if s["subject"] is None else s["subject"], s["time"])
            if k in seen:
                raise DataError(
                    jp,
                    f"{s['where']}: subject {k[0]!r} has two scans at time {k[1]} "
                    f"(also {seen[k]['where']}); (subject, time) must be unique",
                )
            seen[k] = s

    subjects = []
    for s in scans:
        try:
            subjects.append(
                _load_scan(
                    s["channels"],
                    s["label"],
                    ndim=ndim,
                    normalize=normalize,
                    held_out=s["held_out"],
                    name=s["name"],
                    label_format=label_format,
                    mask_path=s["mask"],
                    hidden_label_path=s["hidden"],
                    field_path=s["field"],
                    field_inv_path=s["field_inv"],
                    fields=fields,
                    subject=s["subject"],
                    time=s["time"],
                    channel_names=modalities,
                )
            )
        except DataError as exc:
            raise DataError(exc.path, f"{exc.problem} ({json_name} {s['where']})") from exc
    subjects = tuple(subjects)
    _check_shapes(subjects, jp)
    pair_fields = {}
    for k, p in pair_disp:
        f, m = pairs[k]
        try:
            pair_fields[(f, m)] = _load_pair_field(p, subjects[f], ndim, fields)
        except DataError as exc:
            raise DataError(
                exc.path, f"{exc.problem} ({json_name} registration_val[{k}] disp)"
            ) from exc
    if label_format == "multi":
        ref = None
        for s, sub in zip(scans, subjects, strict=True):
            if sub.labels is None:
                continue
            if ref is None:
                ref = (s, sub)
            elif sub.labels.shape[-1] != ref[1].labels.shape[-1]:
                raise DataError(
                    jp,
                    f"{s['where']} label: {os.path.relpath(s['label'], base)!r} has "
                    f"K={sub.labels.shape[-1]} label channels but {ref[0]['where']} has "
                    f"K={ref[1].labels.shape[-1]}; every multi-label map needs the same K",
                )
    return Dataset(
        subjects=subjects,
        val_pairs=tuple(pairs),
        source=jp,
        modalities=modalities or (),
        label_format=label_format,
        label_names=_label_names(meta.get("labels")),
        pair_fields=pair_fields,
        label_modality=label_modality,
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _to_file(arr: np.ndarray, ndim: int) -> np.ndarray:
    """``[*S(, C)]`` -> 3-D file layout: 2-D ``[H, W(, C)]`` becomes ``[H, W, 1(, C)]``."""
    arr = np.asarray(arr)
    if ndim == 2:
        return arr.reshape(*arr.shape[:2], 1, *arr.shape[2:])
    return arr


def _case(name: str) -> str:
    """The case id: ``name`` without an nnU-Net channel suffix ``_NNNN``."""
    m = _CHANNEL.match(name)
    return m.group(1) if m else name


def _write_json(path: str | os.PathLike, meta: dict) -> str:
    """Write ``meta`` as indented JSON atomically (temporary file + ``os.replace``)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_learn2reg(
    root: str | os.PathLike,
    dataset: Dataset,
    *,
    name: str = "jrs_jax_dataset",
    description: str = "written by jrs_jax.data.learn2reg.write_learn2reg",
    extra: dict | None = None,
) -> str:
    """Write a :class:`~jrs_jax.data.Dataset` in the Learn2Reg layout, every optional piece
    included, so that :func:`load_learn2reg` reads it back.

    Layout under ``root`` (``N`` = ``Subject.name``; all files through
    :func:`~jrs_jax.data.save_image`, atomic; 2-D data as ``[H, W, 1(, C)]`` files)::

        dataset.json                        atomic (temporary file + os.replace)
        imagesTr/N.nii.gz                   one channel: float32 image
        imagesTr/N_0000.nii.gz, N_0001...   C > 1 channels (the JSON lists "N.nii.gz")
        labelsTr/N.nii.gz                   int32 [*S3] or uint8 [*S3, K] (multi-label)
        masksTr/N.nii.gz                    int32 region map
        labelsHidden/N.nii.gz               Subject.hidden_labels (evaluation only; format
                                            of labelsTr), listed in jrs_jax.hidden_labels
        fieldsTr/<case>_disp.nii.gz         Subject.field     (<case>: N without a trailing
        fieldsTr/<case>_disp_inv.nii.gz     Subject.field_inv  _NNNN channel suffix; N
                                            itself when C > 1: its files add the suffix)
        fieldsVal/<fixed>_<moving>_disp.nii.gz   Dataset.pair_fields (<fixed>, <moving>: the
                                                 pair's cases), on the fixed image's grid

    Training subjects (``held_out=False``, in order) are the ``training`` entries, with
    ``label`` / ``mask`` keys when they have them and ``subject`` / ``time`` keys when these
    differ from the defaults (``name``, 0). Held-out subjects go to ``jrs_jax.heldout`` (the
    image path, or ``{"image", "subject", "time"}``) with their labels and masks in the
    folders the reader guesses; ``dataset.val_pairs`` become ``registration_val``. The
    reader loads held-out subjects in order of first appearance in ``registration_val``
    only, so a round trip keeps the subject order when the pairs reference every held-out
    subject, first appearances in order. Fields are listed in ``jrs_jax.fields``, pair
    fields as the ``disp`` of their ``registration_val`` entries (every key of
    ``dataset.pair_fields`` must be one of ``dataset.val_pairs``), evaluation-only labels
    (``Subject.hidden_labels``) in ``jrs_jax.hidden_labels``.

    Args:
      root: output folder (created).
      dataset: the subjects; names must be unique. Images are written as they are (load
        with ``normalize=False`` to get the same values back).
      name, description: the JSON's ``name`` / ``description``.
      extra: more keys for the ``jrs_jax`` block (override the written ones).

    Returns:
      The path of ``dataset.json``.
    """
    root = os.fspath(root)
    subs = dataset.subjects
    if not subs:
        raise ValueError("cannot write a dataset without subjects")
    names = [s.name for s in subs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"subject names must be unique; repeated: {dup}")
    ndim, c = dataset.ndim, dataset.num_channels

    def case(name: str) -> str:  # C > 1: the name is the case (channel files add _NNNN)
        return name if c > 1 else _case(name)

    val_pairs = [(int(f), int(m)) for f, m in dataset.val_pairs]
    stray = [p for p in dataset.pair_fields if p not in val_pairs]
    if stray:
        raise ValueError(
            f"pair_fields {stray[:3]} are not validation pairs; only registration_val pairs "
            "can carry a pair field in the Learn2Reg layout"
        )
    rel = {}
    for i, s in enumerate(subs):
        affine = np.asarray(s.affine, np.float64)
        rel[i] = f"./imagesTr/{s.name}.nii.gz"
        if c == 1:
            save_image(
                os.path.join(root, rel[i][2:]), _to_file(s.image[..., 0], ndim), affine=affine
            )
        else:
            for k in range(c):
                p = os.path.join(root, "imagesTr", f"{s.name}_{k:04d}.nii.gz")
                save_image(p, _to_file(s.image[..., k], ndim), affine=affine)
        if s.labels is not None:
            dtype = np.uint8 if dataset.multi_label else np.int32
            p = os.path.join(root, "labelsTr", f"{s.name}.nii.gz")
            save_image(p, _to_file(s.labels, ndim), affine=affine, dtype=dtype)
        if s.mask is not None:
            p = os.path.join(root, "masksTr", f"{s.name}.nii.gz")
            save_image(p, _to_file(s.mask, ndim), affine=affine, dtype=np.int32)
        if s.hidden_labels is not None:
            dtype = np.uint8 if dataset.multi_label else np.int32
            p = os.path.join(root, "labelsHidden", f"{s.name}.nii.gz")
            save_image(p, _to_file(s.hidden_labels, ndim), affine=affine, dtype=dtype)
        for attr, suffix in (("field", "disp"), ("field_inv", "disp_inv")):
            value = getattr(s, attr)
            if value is not None:
                p = os.path.join(root, "fieldsTr", f"{case(s.name)}_{suffix}.nii.gz")
                save_image(p, _to_file(value, ndim), affine=affine, dtype=np.float32)

    def who(s: Subject) -> dict:
        out = {}
        if s.subject != s.name:
            out["subject"] = s.subject
        if s.time != 0:
            out["time"] = int(s.time)
        return out

    pair_rel = {}
    for f, m in val_pairs:
        if (f, m) in pair_rel or not dataset.has_pair_field(f, m):
            continue
        fname = f"{case(subs[f].name)}_{case(subs[m].name)}_disp.nii.gz"
        pair_rel[(f, m)] = f"./fieldsVal/{fname}"
        save_image(
            os.path.join(root, "fieldsVal", fname),
            _to_file(dataset.pair_field(f, m), ndim),
            affine=np.asarray(subs[f].affine, np.float64),
            dtype=np.float32,
        )

    training, heldout = [], []
    for i, s in enumerate(subs):
        if s.held_out:
            info = who(s)
            heldout.append({"image": rel[i], **info} if info else rel[i])
            continue
        entry = {"image": rel[i]}
        if s.labels is not None:
            entry["label"] = f"./labelsTr/{s.name}.nii.gz"
        if s.mask is not None:
            entry["mask"] = f"./masksTr/{s.name}.nii.gz"
        training.append({**entry, **who(s)})
    field_entries = []
    for i, s in enumerate(subs):
        entry = {"image": rel[i]}
        for attr, suffix in (("field", "disp"), ("field_inv", "disp_inv")):
            if s.__dict__.get(attr) is not None:
                entry[suffix] = f"./fieldsTr/{case(s.name)}_{suffix}.nii.gz"
        if len(entry) > 1:
            field_entries.append(entry)

    block: dict = {"ndim": ndim}
    if dataset.multi_label:
        block["label_format"] = "multi"
    if dataset.label_modality is not None:
        block["label_modality"] = int(dataset.label_modality)
    block["heldout"] = heldout
    if field_entries:
        block["fields"] = field_entries
    hidden_entries = [
        {"image": rel[i], "label": f"./labelsHidden/{s.name}.nii.gz"}
        for i, s in enumerate(subs)
        if s.hidden_labels is not None
    ]
    if hidden_entries:
        block["hidden_labels"] = hidden_entries
    block.update(extra or {})
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {str(k): m for k, m in enumerate(dataset.modalities)},
    }
    if dataset.label_names is not None:
        meta["labels"] = {str(k): v for k, v in dataset.label_names.items()}
    meta.update(
        {
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
            "registration_val": [
                {"fixed": rel[f], "moving": rel[m]}
                | ({"disp": pair_rel[(f, m)]} if (f, m) in pair_rel else {})
                for f, m in val_pairs
            ],
            "jrs_jax": block,
        }
    )
    return _write_json(os.path.join(root, "dataset.json"), meta)
