"""The in-memory dataset (:class:`Subject`, :class:`Dataset`) and the plain-folder reader.

Conventions
-----------
- A :class:`Subject` is one scan: an image ``float32 [*S, C]`` (``C`` modalities as channels,
  1 for most data), optionally its label map (``int32 [*S]``; multi-label datasets: ``uint8
  [*S, K]`` binary, possibly overlapping channels), a region mask ``int32 [*S]`` and
  ground-truth displacements ``float32 [*S, D]``; ``S`` is ``(X, Y, Z)`` for 3-D data and
  ``(H, W)`` for 2-D data stored as ``[H, W, 1]`` NIfTI volumes (the singleton third axis is
  dropped on loading). Arrays follow :mod:`jrs_jax.data.nifti` (canonical RAS+ orientation,
  array axis ``k`` = voxel axis ``k``).
- Several scans of one person share ``Subject.subject`` (an id) and differ by
  ``Subject.time``; by default every scan is its own subject (``subject = name``, ``time =
  0``). :meth:`Dataset.subject_ids` / :meth:`Dataset.scans` group them.
- All subjects of a :class:`Dataset` share one spatial shape; the readers do **not** resample
  or crop (use :func:`~jrs_jax.data.resample_to_spacing` / :func:`~jrs_jax.data.crop_or_pad`
  beforehand and write the results, or build the :class:`Dataset` yourself).
- Pairs are ``(fixed, moving)`` index pairs into ``Dataset.subjects`` (samplers and batch
  builders: :mod:`jrs_jax.data.sampling`).
- Learn2Reg / nnU-Net ``dataset.json`` reading and writing: :mod:`jrs_jax.data.learn2reg`
  (:func:`load_learn2reg` is re-exported here).
- Problems with the user's files raise :class:`~jrs_jax.data.DataError` whose message starts
  with the offending file (the ``dataset.json`` for problems in the JSON itself).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from .errors import DataError
from .nifti import (
    Volume,
    _grid_mismatch,
    _open,
    check_pair,
    load_image,
    load_labels,
    load_multilabel,
    normalize_intensity,
)
from .sampling import as_rng

__all__ = [
    "LABEL_FORMATS",
    "Dataset",
    "Subject",
    "load_folder",
    "load_learn2reg",
    "load_subject",
]

#: ``Dataset.label_format`` values: integer maps ``[*S]`` or binary multi-label maps ``[*S, K]``.
LABEL_FORMATS = ("integer", "multi")


# --------------------------------------------------------------------------------------------
# lazily loaded arrays (ground-truth fields)
# --------------------------------------------------------------------------------------------


class _MaybeDeferred:
    """Data descriptor for an array attribute that may be given as a :class:`_DeferredField`:
    it is then loaded on first access and cached (``None`` is the dataclass default)."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return None
        value = obj.__dict__.get(self._name)
        if isinstance(value, _DeferredField):
            value = value()
            obj.__dict__[self._name] = value
        return value

    def __set__(self, obj, value):
        obj.__dict__[self._name] = value


def _reference(vol: Volume) -> Volume:
    """A data-free stand-in for ``vol`` (its grid and path) for later grid checks."""
    return Volume(data=np.broadcast_to(np.uint8(0), vol.shape), affine=vol.affine, path=vol.path)


def _load_field(path: str, ref: Volume, ndim: int) -> np.ndarray:
    """Displacement file -> ``float32 [*S, D]`` on ``ref``'s (canonical) grid.

    The canonical reorientation permutes / flips the array axes; the vector components (voxel
    units along the file's axes) are permuted / negated the same way. A 2-D field ``[H, W, 1,
    2]`` read as 3-D data (``ndim=3``) gets a zero third component.
    """
    vol = load_image(path, channels=True)
    check_pair(ref, vol, what="field")
    data = vol.data
    if ndim == 3 and data.shape[-1] == 2 and data.shape[2] == 1:  # 2-D field read as 3-D
        data = np.concatenate([data, np.zeros_like(data[..., :1])], -1)
    if data.shape[-1] != ndim or (ndim == 2 and data.shape[2] != 1):
        raise DataError(
            path,
            f"displacement field must be [*S, {ndim}] for {ndim}-D data (stored as "
            f"{'[H, W, 1, 2]' if ndim == 2 else '[X, Y, Z, 3]'}); got shape "
            f"{tuple(data.shape)}",
        )
    out = np.empty(data.shape, np.float32)
    for k in range(ndim):
        dest, flip = int(vol.ornt[k, 0]), float(vol.ornt[k, 1])
        if dest >= ndim:
            raise DataError(path, f"file axis {k} becomes array axis {dest} on reorientation")
        out[..., dest] = flip * data[..., k]
    return np.ascontiguousarray(out[:, :, 0] if ndim == 2 else out)


def _header(path: str) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of a NIfTI file from its header alone (no voxel data read)."""
    try:
        with ImageOpener(path) as f:
            hdr = nib.Nifti1Header.from_fileobj(f, check=False)
        return tuple(int(n) for n in hdr.get_data_shape()), hdr.get_best_affine()
    except Exception:  # NIfTI-2, .hdr/.img pairs, damaged files: the full loader decides
        _, img = _open(path)
        return tuple(int(n) for n in img.shape), np.asarray(img.affine, np.float64)


def _check_field_header(path: str, ref: Volume, file_shape, file_affine, ndim: int) -> None:
    """The checks of :func:`_load_field` that only need the header (cheap: no voxel data)."""
    shape, affine = _header(path)
    extra = [n for n in shape[3:] if n != 1]
    flat = ndim == 3 and extra == [2] and shape[2] == 1  # 2-D field read as 3-D
    spatial = tuple(file_shape[:3])
    if len(shape) < 4 or tuple(shape[:3]) != spatial or (extra != [ndim] and not flat):
        raise DataError(
            f"{ref.path} / {path}",
            f"displacement field shape {shape} does not match the image grid {spatial} with "
            f"{ndim} components (expected {(*spatial, ndim)})",
        )
    bad = _grid_mismatch(spatial, file_affine, spatial, affine, atol_mm=1e-3)
    if bad is not None:  # the full check gives the message
        grid = np.broadcast_to(np.uint8(0), spatial)
        check_pair(
            Volume(data=grid, affine=file_affine, path=ref.path),
            Volume(data=grid, affine=affine, path=path),
            what="field",
        )


def _load_pair_field(path: str, fixed: Subject, ndim: int, fields: bool | str):
    """A pair's ground-truth file on the fixed subject's grid: checked from the header and
    deferred (``fields="lazy"``) or loaded (``True``), with the checks of subject fields."""
    shape3 = fixed.shape if ndim == 3 else (*fixed.shape, 1)
    ref = Volume(
        data=np.broadcast_to(np.uint8(0), shape3), affine=fixed.affine, path=fixed.image_path
    )
    if fields == "lazy":
        file_shape, file_affine = _header(fixed.image_path)
        _check_field_header(path, ref, file_shape, file_affine, ndim)
        return _DeferredField(path, ref, ndim)
    return _load_field(path, ref, ndim)


@dataclasses.dataclass(frozen=True)
class _DeferredField:
    """Loads one displacement file when called (picklable: no closures)."""

    path: str
    ref: Volume
    ndim: int

    def __call__(self) -> np.ndarray:
        return _load_field(self.path, self.ref, self.ndim)


# --------------------------------------------------------------------------------------------
# Subject / Dataset
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Subject:
    """One scan: an image, and optionally its label map, region mask and ground-truth fields,
    all on the same grid.

    Attributes:
      name: file name of the image without ``.nii`` / ``.nii.gz`` (Learn2Reg: of the path
        the ``dataset.json`` gives, e.g. ``case`` for nnU-Net's ``case.nii.gz`` naming of
        ``case_0000.nii.gz``, ``case_0001.nii.gz``...).
      image: float32 ``[*S, C]``, one channel per modality (each intensity-normalised to
        ``[0, 1]`` on its own if loaded with ``normalize=True``).
      labels: int32 ``[*S]`` (integer label map), uint8 ``[*S, K]`` (multi-label map:
        ``K`` binary, possibly overlapping channels), or ``None`` for an unlabelled subject.
      affine: ``[4, 4]`` voxel-to-world (RAS+, mm) affine of the (canonical, 3-D) grid; for
        2-D data it is the affine of the ``[H, W, 1]`` file grid.
      spacing: voxel size in mm along the ``len(S)`` array axes.
      image_path, label_path: files loaded (``image_path`` is the first channel's file;
        ``label_path`` is ``None`` when unlabelled).
      held_out: True for subjects that are not training subjects (Learn2Reg subjects only
        referenced by ``registration_val``).
      subject: id of the person / animal / object scanned; scans of one subject share it.
        Default: ``name`` (every scan its own subject).
      time: time point of the scan within its subject (any integer order: visit number,
        frame index...); default 0.
      mask: int32 ``[*S]`` region map, or ``None``: one integer per region, its meaning set by
        the data (a body mask: 0 = outside; lobe labels; the ``sliding`` scenario: 0 = the
        body layer, ``g`` = organ ``g``, the boundaries between values being the sliding
        interfaces).
      field, field_inv: float32 ``[*S, D]`` ground-truth displacements (voxels along array
        axes, pull-back) or ``None``: ``field`` pulls a common reference (the synthetic
        template) onto this scan, ``field_inv`` this scan onto the reference; for a pair
        (fixed ``f``, moving ``m``) the ground truth with ``warp(moving, u) ~ fixed`` is
        ``u = compose(f.field, m.field_inv)`` (``pair_batch(..., fields=True)``). Loaded
        from disk on first access when the reader was asked for ``fields="lazy"``.
      mask_path, field_path, field_inv_path: files loaded (or ``None``).
      channel_paths: the image file of each channel (``(image_path,)`` for one channel).
      hidden_labels: labels kept for evaluation only (same format as ``labels``: int32
        ``[*S]``, multi-label uint8 ``[*S, K]``), or ``None``: e.g. every frame of a cardiac
        sequence whose training labels exist at two frames only
        (:mod:`jrs_jax.data.cardiac`). Never returned by the samplers or by
        :meth:`Dataset.stack` (whose ``labels`` are the training labels); read them
        explicitly for evaluation (:func:`~jrs_jax.data.sequence_batch` with
        ``hidden_labels=True``). Learn2Reg: ``labelsHidden/``, listed in
        ``jrs_jax.hidden_labels``.
      hidden_label_path: the file of ``hidden_labels`` (or ``None``).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, ...]
    image_path: str
    label_path: str | None = None
    held_out: bool = False
    subject: str | None = None
    time: int = 0
    mask: np.ndarray | None = None
    field: np.ndarray | None = _MaybeDeferred()
    field_inv: np.ndarray | None = _MaybeDeferred()
    mask_path: str | None = None
    field_path: str | None = None
    field_inv_path: str | None = None
    channel_paths: tuple[str, ...] = ()
    hidden_labels: np.ndarray | None = None
    hidden_label_path: str | None = None

    def __post_init__(self):
        if self.subject is None:
            object.__setattr__(self, "subject", self.name)
        if not self.channel_paths:
            object.__setattr__(self, "channel_paths", (self.image_path,))
        object.__setattr__(self, "time", int(self.time))

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``."""
        return tuple(self.image.shape[:-1])

    @property
    def num_channels(self) -> int:
        return int(self.image.shape[-1])

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def has_mask(self) -> bool:
        return self.mask is not None

    @property
    def has_field(self) -> bool:
        """Whether both ground-truth fields are available (without loading them)."""
        return all(self.__dict__.get(k) is not None for k in ("field", "field_inv"))

    def replace(self, **changes) -> Subject:
        """``dataclasses.replace`` that leaves not-yet-loaded fields unloaded."""
        kwargs = {f.name: self.__dict__[f.name] for f in dataclasses.fields(self)}
        kwargs.update(changes)
        return type(self)(**kwargs)


def _default_modalities(subjects: Sequence[Subject]) -> tuple[str, ...]:
    c = subjects[0].num_channels if subjects else 1
    return ("image",) if c == 1 else tuple(f"channel_{k}" for k in range(c))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Subjects sharing one spatial shape, and validation registration pairs.

    Attributes:
      subjects: training subjects first (in file order), then held-out subjects.
      val_pairs: ``(fixed, moving)`` index pairs into ``subjects`` (Learn2Reg
        ``registration_val``); empty for folders.
      source: the ``dataset.json`` or folder the dataset was read from (or ``None``).
      modalities: one name per image channel (the JSON's ``modality`` names); default
        ``("image",)`` for one channel, ``("channel_0", ...)`` otherwise.
      label_format: ``"integer"`` (label maps int32 ``[*S]``) or ``"multi"`` (uint8
        ``[*S, K]`` binary channels).
      label_names: ``{label or channel index: name}`` from the JSON's ``labels``, or ``None``.
      pair_fields: pair-level ground truth ``{(fixed, moving): float32 [*S, D]}`` (voxels
        along array axes, pull-back on the fixed grid: ``warp(moving, u) ~ fixed``), for data
        where composing subject fields through a common reference is not exact (e.g. sliding
        organs, :mod:`jrs_jax.data.sliding`). Learn2Reg: ``registration_val`` entries'
        ``disp``. Values may be deferred (loaded on first :meth:`pair_field`); read them
        with :meth:`pair_field`, not directly.
      label_modality: the image channel whose labels may supervise training (JSSR: modality
        Y); ``None``: any. Learn2Reg: ``jrs_jax.label_modality``.
    """

    subjects: tuple[Subject, ...]
    val_pairs: tuple[tuple[int, int], ...] = ()
    source: str | None = None
    modalities: tuple[str, ...] = ()
    label_format: str = "integer"
    label_names: dict[int, str] | None = None
    pair_fields: dict[tuple[int, int], np.ndarray] = dataclasses.field(default_factory=dict)
    label_modality: int | None = None

    def __post_init__(self):
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(
                f"label_format must be one of {LABEL_FORMATS}; got {self.label_format!r}"
            )
        n = len(self.subjects)
        pair_fields = {}
        for pair, value in dict(self.pair_fields or {}).items():
            f, m = (int(i) for i in pair)
            if not (0 <= f < n and 0 <= m < n):
                raise ValueError(f"pair_fields key {pair} out of range for {n} subjects")
            pair_fields[(f, m)] = value
        object.__setattr__(self, "pair_fields", pair_fields)
        mods = tuple(self.modalities) or _default_modalities(self.subjects)
        object.__setattr__(self, "modalities", mods)
        if self.subjects and len(mods) != self.subjects[0].num_channels:
            raise ValueError(
                f"{len(mods)} modalities {mods} for images with "
                f"{self.subjects[0].num_channels} channels"
            )
        lm = self.label_modality
        if lm is not None:
            if isinstance(lm, bool) or not isinstance(lm, (int, np.integer)):
                raise ValueError(f"label_modality must be None or a channel index; got {lm!r}")
            if not 0 <= int(lm) < len(mods):
                raise ValueError(
                    f"label_modality {int(lm)} out of range for {len(mods)} channels {mods}"
                )
            object.__setattr__(self, "label_modality", int(lm))

    def __len__(self) -> int:
        return len(self.subjects)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S`` shared by all subjects."""
        return self.subjects[0].shape if self.subjects else ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_channels(self) -> int:
        """Image channels ``C`` (modalities)."""
        return len(self.modalities)

    @property
    def multi_label(self) -> bool:
        """Whether label maps are multi-label ``[*S, K]`` (``label_format == "multi"``)."""
        return self.label_format == "multi"

    @property
    def num_label_channels(self) -> int | None:
        """``K`` of a multi-label dataset (0 if no subject is labelled); ``None`` for integer
        label maps."""
        if not self.multi_label:
            return None
        return next((int(s.labels.shape[-1]) for s in self.subjects if s.has_labels), 0)

    @property
    def has_hidden_labels(self) -> bool:
        """Whether any subject has evaluation-only labels (:attr:`Subject.hidden_labels`)."""
        return any(s.hidden_labels is not None for s in self.subjects)

    @property
    def has_masks(self) -> bool:
        """Whether any subject has a region mask."""
        return any(s.mask is not None for s in self.subjects)

    @property
    def has_fields(self) -> bool:
        """Whether every subject has both ground-truth fields (not loading them)."""
        return bool(self.subjects) and all(s.has_field for s in self.subjects)

    def has_pair_field(self, fixed: int, moving: int) -> bool:
        """Whether the pair ``(fixed, moving)`` has a stored pair-level ground truth (not
        loading it)."""
        return self.pair_fields.get((int(fixed), int(moving))) is not None

    def pair_field(self, fixed: int, moving: int) -> np.ndarray | None:
        """The stored ground truth float32 ``[*S, D]`` of the pair ``(fixed, moving)``
        (``warp(moving, u) ~ fixed``; read from disk on first access and cached), or
        ``None``. Subject-field composition is :func:`~jrs_jax.data.pair_batch`'s fallback,
        not this method's."""
        key = (int(fixed), int(moving))
        value = self.pair_fields.get(key)
        if isinstance(value, _DeferredField):
            value = value()
            self.pair_fields[key] = value
        return value

    def has_ground_truth(self, pairs) -> bool:
        """Whether ``pair_batch(self, pairs, fields=True)`` can give the ground truth of every
        ``(fixed, moving)`` row of ``pairs`` (a stored pair field, or both subjects' fields),
        not loading any field; ``False`` for no pairs."""
        rows = np.asarray(pairs, np.int64).reshape(-1, 2)
        return len(rows) > 0 and all(
            self.has_pair_field(f, m) or (self.subjects[f].has_field and self.subjects[m].has_field)
            for f, m in rows.tolist()
        )

    def training(self) -> list[int]:
        """Indices of the training (not held-out) subjects."""
        return [i for i, s in enumerate(self.subjects) if not s.held_out]

    def held_out(self) -> list[int]:
        """Indices of the held-out subjects."""
        return [i for i, s in enumerate(self.subjects) if s.held_out]

    def labelled(self) -> list[int]:
        """Indices of the *training* subjects that have labels (held-out ones excluded)."""
        return [i for i, s in enumerate(self.subjects) if not s.held_out and s.has_labels]

    def unlabelled(self) -> list[int]:
        """Indices of the *training* subjects without labels (held-out ones excluded)."""
        return [i for i, s in enumerate(self.subjects) if not s.held_out and not s.has_labels]

    def subject_ids(self) -> list[str]:
        """Distinct ``Subject.subject`` ids, in order of first appearance."""
        return list(dict.fromkeys(s.subject for s in self.subjects))

    def scans(self, subject_id: str, indices: Sequence[int] | None = None) -> list[int]:
        """Indices of the scans of ``subject_id``, sorted by ``time`` (then index), among
        ``indices`` if given (all subjects otherwise).

        Raises:
          ValueError: ``subject_id`` is not in the dataset.
        """
        pool = range(len(self.subjects)) if indices is None else indices
        out = [int(i) for i in np.asarray(pool, np.int64).reshape(-1)]
        out = [i for i in out if self.subjects[i].subject == subject_id]
        if not out and all(s.subject != subject_id for s in self.subjects):
            raise ValueError(f"no subject {subject_id!r} in the dataset")
        return sorted(dict.fromkeys(out), key=lambda i: (self.subjects[i].time, i))

    def split_labelled(self, num_labelled: int, *, key_or_seed) -> Dataset:
        """A copy where only ``num_labelled`` training subjects keep their labels.

        The kept subjects are drawn uniformly without replacement among the labelled training
        subjects, deterministically from ``key_or_seed`` (an integer seed, a numpy
        ``Generator`` or a JAX PRNG key); the others lose ``labels`` and ``label_path``.
        Held-out subjects are unchanged (their labels serve for validation).

        Raises:
          ValueError: ``num_labelled`` negative or more than the labelled training subjects.
        """
        n = int(num_labelled)
        lab = self.labelled()
        if n < 0:
            raise ValueError(f"num_labelled must be >= 0; got {n}")
        if n > len(lab):
            raise ValueError(
                f"requested {n} labelled subjects but only {len(lab)} of "
                f"{len(self.training())} training subjects have labels"
            )
        rng = as_rng(key_or_seed)
        keep = set(int(i) for i in rng.permutation(np.asarray(lab, np.int64))[:n])
        subjects = tuple(
            s
            if (i in keep or s.held_out or not s.has_labels)
            else s.replace(labels=None, label_path=None)
            for i, s in enumerate(self.subjects)
        )
        return dataclasses.replace(self, subjects=subjects)

    def _channels(self, channels) -> list[int] | None:
        if channels is None:
            return None
        ch = [int(c) for c in np.atleast_1d(np.asarray(channels, np.int64))]
        bad = [c for c in ch if not 0 <= c < self.num_channels]
        if bad or not ch:
            raise ValueError(
                f"channels {ch} out of range for {self.num_channels} channels {self.modalities}"
            )
        return ch

    def stack(self, indices: Sequence[int], *, channels=None) -> dict[str, np.ndarray]:
        """Batch subjects.

        Returns:
          ``images`` float32 ``[B, *S, C]`` (``[B, *S, len(channels)]`` with ``channels``, an
          int or a list of channel indices), ``labels`` int32 ``[B, *S]`` (multi-label
          datasets: uint8 ``[B, *S, K]``; zeros for unlabelled subjects), ``has_label`` bool
          ``[B]``; if the dataset has masks, also ``masks`` int32 ``[B, *S]`` (zeros where
          absent) and ``has_mask`` bool ``[B]``. Never the evaluation-only
          :attr:`Subject.hidden_labels`.
        """
        ch = self._channels(channels)
        idx = [int(i) for i in np.asarray(indices, np.int64).reshape(-1)]
        subs = [self.subjects[i] for i in idx]
        shape = self.shape
        c = self.num_channels if ch is None else len(ch)
        if subs:
            images = np.stack([s.image if ch is None else s.image[..., ch] for s in subs])
        else:
            images = np.zeros((0, *shape, c), np.float32)
        if self.multi_label:
            labels = np.zeros((len(subs), *shape, self.num_label_channels), np.uint8)
        else:
            labels = np.zeros((len(subs), *shape), np.int32)
        has = np.zeros((len(subs),), bool)
        for b, s in enumerate(subs):
            if s.labels is not None:
                labels[b] = s.labels
                has[b] = True
        out = {"images": images.astype(np.float32, copy=False), "labels": labels, "has_label": has}
        if self.has_masks:
            masks = np.zeros((len(subs), *shape), np.int32)
            has_mask = np.zeros((len(subs),), bool)
            for b, s in enumerate(subs):
                if s.mask is not None:
                    masks[b] = s.mask
                    has_mask[b] = True
            out["masks"], out["has_mask"] = masks, has_mask
        return out


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _strip_ext(fname: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if fname.endswith(ext):
            return fname[: -len(ext)]
    return fname


def _squeeze_2d(path: str, data: np.ndarray) -> np.ndarray:
    if data.shape[2] != 1:
        raise DataError(
            path, f"2-D data expected as [H, W, 1] volumes; got shape {tuple(data.shape)}"
        )
    return data[:, :, 0]


def _load_scan(
    channel_paths: Sequence[str],
    label_path: str | None = None,
    *,
    ndim: int,
    normalize: bool,
    held_out: bool = False,
    name: str | None = None,
    label_format: str = "integer",
    mask_path: str | None = None,
    hidden_label_path: str | None = None,
    field_path: str | None = None,
    field_inv_path: str | None = None,
    fields: bool | str = "lazy",
    subject: str | None = None,
    time: int = 0,
    channel_names: Sequence[str] | None = None,
) -> Subject:
    """Load one scan's files (see :class:`Subject`); every file is checked against the first
    channel's grid (:func:`~jrs_jax.data.check_pair`; ``channel_names``: the modalities, to
    name a channel off that grid)."""
    image_path = channel_paths[0]
    vols = [load_image(p) for p in channel_paths]
    img = vols[0]
    for c, v in enumerate(vols[1:], 1):
        name_c = f" ({channel_names[c]})" if channel_names and c < len(channel_names) else ""
        check_pair(img, v, what=f"channel {c}{name_c}")
    lab = mask = None
    if label_path is not None:
        lab = load_multilabel(label_path) if label_format == "multi" else load_labels(label_path)
        check_pair(img, lab)
    if mask_path is not None:
        mask = load_labels(mask_path)
        check_pair(img, mask, what="mask")
    hidden = None
    if hidden_label_path is not None:
        load = load_multilabel if label_format == "multi" else load_labels
        hidden = load(hidden_label_path)
        check_pair(img, hidden, what="hidden label")
    data = img.data if len(vols) == 1 else np.stack([v.data for v in vols], -1)
    labels = None if lab is None else lab.data
    mask_data = None if mask is None else mask.data
    hidden_data = None if hidden is None else hidden.data
    spacing = tuple(img.spacing)
    if ndim == 2:
        data = _squeeze_2d(image_path, data)
        labels = None if labels is None else labels[:, :, 0]
        mask_data = None if mask_data is None else mask_data[:, :, 0]
        hidden_data = None if hidden_data is None else hidden_data[:, :, 0]
        spacing = spacing[:2]
    if normalize:
        data = (
            normalize_intensity(data)
            if len(vols) == 1
            else normalize_intensity(data, channel_axis=-1)
        )
    image = np.ascontiguousarray(data, np.float32)
    if len(vols) == 1:
        image = image[..., None]
    label_dtype = np.uint8 if label_format == "multi" else np.int32
    if labels is not None:
        labels = np.ascontiguousarray(labels, label_dtype)
    if hidden_data is not None:
        hidden_data = np.ascontiguousarray(hidden_data, label_dtype)
    loaded = {}
    for key, p in (("field", field_path), ("field_inv", field_inv_path)):
        if p is None or fields is False:
            loaded[key] = None
        elif fields == "lazy":
            _check_field_header(p, img, img.header.get_data_shape(), img.file_affine, ndim)
            loaded[key] = _DeferredField(p, _reference(img), ndim)
        else:
            loaded[key] = _load_field(p, img, ndim)
    keep = fields is not False
    return Subject(
        name=_strip_ext(os.path.basename(image_path)) if name is None else name,
        image=image,
        labels=labels,
        affine=img.affine,
        spacing=spacing,
        image_path=image_path,
        label_path=label_path,
        held_out=held_out,
        subject=subject,
        time=time,
        mask=None if mask_data is None else np.ascontiguousarray(mask_data, np.int32),
        field=loaded["field"],
        field_inv=loaded["field_inv"],
        mask_path=mask_path,
        field_path=field_path if keep else None,
        field_inv_path=field_inv_path if keep else None,
        channel_paths=tuple(channel_paths),
        hidden_labels=hidden_data,
        hidden_label_path=hidden_label_path,
    )


def _load_subject(
    image_path: str,
    label_path: str | None,
    *,
    ndim: int,
    normalize: bool,
    held_out: bool = False,
) -> Subject:
    return _load_scan([image_path], label_path, ndim=ndim, normalize=normalize, held_out=held_out)


def load_subject(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
    *,
    ndim: int = 3,
    normalize: bool = True,
) -> Subject:
    """One subject from an image file (and optionally its label file), as datasets load them:
    canonical orientation, ``[H, W, 1]`` files squeezed for ``ndim=2``, intensities
    normalised to ``[0, 1]`` (``normalize``). Errors name the file (:class:`DataError`)."""
    image_path = os.fspath(image_path)
    label_path = None if label_path is None else os.fspath(label_path)
    return _load_subject(
        image_path, label_path, ndim=_check_ndim(ndim, image_path), normalize=normalize
    )


def _check_shapes(subjects: Sequence[Subject], source: str) -> None:
    if not subjects:
        raise DataError(source, "no subjects found")
    ref = subjects[0]
    for s in subjects[1:]:
        if s.shape != ref.shape:
            raise DataError(
                source,
                f"subject {s.name!r} ({s.image_path}) has spatial shape {s.shape} but "
                f"{ref.name!r} has {ref.shape}; all subjects must share one shape "
                "(resample / crop them first, e.g. with resample_to_spacing and crop_or_pad: "
                "the dataset readers do not resample)",
            )


def _check_ndim(ndim, source: str) -> int:
    if ndim not in (2, 3):
        raise DataError(source, f"ndim must be 2 or 3; got {ndim!r}")
    return int(ndim)


def _nifti_files(folder: str) -> dict[str, str]:
    return {
        _strip_ext(f): os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.endswith((".nii.gz", ".nii")) and not f.startswith(".")
    }


def load_folder(
    root: str | os.PathLike, *, normalize: bool = True, ndim: int | None = None
) -> Dataset:
    """Read ``root/images/*.nii.gz`` (or ``.nii``) and ``root/labels/*`` matched by file name.

    Every image is a training subject (sorted by file name); its label map is
    ``root/labels/<same name>`` when present (labels are optional per subject, the ``labels``
    folder too). No validation pairs. ``ndim``: 3 (default) or 2 (``[H, W, 1]`` files squeezed
    to ``[H, W]``). ``normalize`` as in :func:`load_learn2reg`.

    Raises:
      DataError: missing ``images`` folder, no images, a label file without an image of the
        same name, subjects of different shapes, and the errors of the NIfTI loaders.
    """
    root = os.fspath(root)
    ndim = _check_ndim(3 if ndim is None else ndim, root)
    img_dir, lab_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    if not os.path.isdir(img_dir):
        raise DataError(img_dir, "images folder not found (expected root/images/*.nii.gz)")
    images = _nifti_files(img_dir)
    labels = _nifti_files(lab_dir) if os.path.isdir(lab_dir) else {}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DataError(
            labels[orphans[0]],
            f"label file has no image of the same name in {img_dir} "
            f"({len(orphans)} such label file(s))",
        )
    if not images:
        raise DataError(img_dir, "no .nii / .nii.gz images found")
    subjects = tuple(
        _load_subject(p, labels.get(name), ndim=ndim, normalize=normalize)
        for name, p in images.items()
    )
    _check_shapes(subjects, root)
    return Dataset(subjects=subjects, val_pairs=(), source=root)


from .learn2reg import load_learn2reg  # noqa: E402  (re-export; learn2reg imports this module)
