"""Dataset readers (Learn2Reg ``dataset.json``, plain folders) and the in-memory dataset.

Conventions
-----------
- A :class:`Subject` holds one image ``float32 [*S, 1]`` and optionally its label map
  ``int32 [*S]``; ``S`` is ``(X, Y, Z)`` for 3-D data and ``(H, W)`` for 2-D data stored as
  ``[H, W, 1]`` NIfTI volumes (the singleton third axis is dropped on loading). Arrays follow
  :mod:`jrs_jax.data.nifti` (canonical RAS+ orientation, array axis ``k`` = voxel axis ``k``).
- All subjects of a :class:`Dataset` share one spatial shape; the readers do **not** resample
  or crop (use :func:`~jrs_jax.data.resample_to_spacing` / :func:`~jrs_jax.data.crop_or_pad`
  beforehand and write the results, or build the :class:`Dataset` yourself).
- Pairs are ``(fixed, moving)`` index pairs into ``Dataset.subjects`` (samplers and batch
  builders: :mod:`jrs_jax.data.sampling`).
- Problems with the user's files raise :class:`~jrs_jax.data.DataError` whose message starts
  with the offending file (the ``dataset.json`` for problems in the JSON itself).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from .errors import DataError
from .nifti import check_pair, load_image, load_labels, normalize_intensity
from .sampling import as_rng

__all__ = [
    "Dataset",
    "Subject",
    "load_folder",
    "load_learn2reg",
    "load_subject",
]


# --------------------------------------------------------------------------------------------
# Subject / Dataset
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Subject:
    """One subject: an image and (optionally) its label map, on the same grid.

    Attributes:
      name: file name of the image without ``.nii`` / ``.nii.gz``.
      image: float32 ``[*S, 1]`` (intensity-normalised to ``[0, 1]`` if loaded with
        ``normalize=True``).
      labels: int32 ``[*S]``, or ``None`` for an unlabelled subject.
      affine: ``[4, 4]`` voxel-to-world (RAS+, mm) affine of the (canonical, 3-D) grid; for
        2-D data it is the affine of the ``[H, W, 1]`` file grid.
      spacing: voxel size in mm along the ``len(S)`` array axes.
      image_path, label_path: files loaded (``label_path`` is ``None`` when unlabelled).
      held_out: True for subjects that are not training subjects (Learn2Reg subjects only
        referenced by ``registration_val``).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, ...]
    image_path: str
    label_path: str | None = None
    held_out: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``."""
        return tuple(self.image.shape[:-1])

    @property
    def has_labels(self) -> bool:
        return self.labels is not None


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Subjects sharing one spatial shape, and validation registration pairs.

    Attributes:
      subjects: training subjects first (in file order), then held-out subjects.
      val_pairs: ``(fixed, moving)`` index pairs into ``subjects`` (Learn2Reg
        ``registration_val``); empty for folders.
      source: the ``dataset.json`` or folder the dataset was read from (or ``None``).
    """

    subjects: tuple[Subject, ...]
    val_pairs: tuple[tuple[int, int], ...] = ()
    source: str | None = None

    def __len__(self) -> int:
        return len(self.subjects)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S`` shared by all subjects."""
        return self.subjects[0].shape if self.subjects else ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

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
            else dataclasses.replace(s, labels=None, label_path=None)
            for i, s in enumerate(self.subjects)
        )
        return dataclasses.replace(self, subjects=subjects)

    def stack(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Batch subjects: ``images`` float32 ``[B, *S, 1]``, ``labels`` int32 ``[B, *S]``
        (zeros for unlabelled subjects) and ``has_label`` bool ``[B]``."""
        idx = [int(i) for i in np.asarray(indices, np.int64).reshape(-1)]
        subs = [self.subjects[i] for i in idx]
        shape = self.shape
        images = np.stack([s.image for s in subs]) if subs else np.zeros((0, *shape, 1), np.float32)
        labels = np.zeros((len(subs), *shape), np.int32)
        has = np.zeros((len(subs),), bool)
        for b, s in enumerate(subs):
            if s.labels is not None:
                labels[b] = s.labels
                has[b] = True
        return {"images": images.astype(np.float32, copy=False), "labels": labels, "has_label": has}


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _strip_ext(fname: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if fname.endswith(ext):
            return fname[: -len(ext)]
    return fname


def _load_subject(
    image_path: str,
    label_path: str | None,
    *,
    ndim: int,
    normalize: bool,
    held_out: bool = False,
) -> Subject:
    img = load_image(image_path)
    lab = None
    if label_path is not None:
        lab = load_labels(label_path)
        check_pair(img, lab)
    data = img.data
    labels = None if lab is None else lab.data
    spacing = tuple(img.spacing)
    if ndim == 2:
        if data.shape[2] != 1:
            raise DataError(
                image_path,
                f"2-D data expected as [H, W, 1] volumes; got shape {tuple(data.shape)}",
            )
        data = data[:, :, 0]
        labels = None if labels is None else labels[:, :, 0]
        spacing = spacing[:2]
    if normalize:
        data = normalize_intensity(data)
    return Subject(
        name=_strip_ext(os.path.basename(image_path)),
        image=np.ascontiguousarray(data, np.float32)[..., None],
        labels=None if labels is None else np.ascontiguousarray(labels, np.int32),
        affine=img.affine,
        spacing=spacing,
        image_path=image_path,
        label_path=label_path,
        held_out=held_out,
    )


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


def load_learn2reg(
    json_path: str | os.PathLike, *, normalize: bool = True, ndim: int | None = None
) -> Dataset:
    """Read a Learn2Reg / nnU-Net style ``dataset.json``.

    ``training`` entries ``{"image": ..., "label": ...}`` (``label`` optional) become the
    training subjects, in order. Images referenced by ``registration_val`` pairs
    ``{"fixed": ..., "moving": ...}`` that are not training images are loaded as extra
    subjects with ``held_out=True`` (after the training subjects, in order of first
    appearance); their labels are taken from the file of the same name in ``labelsTr`` next to
    the image's ``imagesTr`` folder when it exists (for validation Dice), else ``None``.
    ``Dataset.val_pairs`` holds the pairs as ``(fixed, moving)`` subject indices. Paths are
    relative to the JSON file's folder (absolute paths are kept).

    Args:
      json_path: the ``dataset.json``.
      normalize: apply :func:`~jrs_jax.data.normalize_intensity` (percentiles 0.5 / 99.5 ->
        ``[0, 1]``) to each image.
      ndim: 2 or 3; default: ``jrs_jax.ndim`` of the JSON if present, else 3. With 2, files
        must be ``[H, W, 1]`` and are squeezed to ``[H, W]``.

    Raises:
      DataError: (message starting with the JSON file) missing / invalid JSON, no
        ``training`` list, entries without ``image``, referenced files missing (naming the
        entry and the resolved path), subjects of different shapes; plus the errors of
        :func:`~jrs_jax.data.load_image` / ``load_labels`` / ``check_pair`` for bad files.
    """
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
    if ndim is None:
        extra = meta.get("jrs_jax")
        ndim = extra.get("ndim", 3) if isinstance(extra, dict) else 3
    ndim = _check_ndim(ndim, jp)
    base = os.path.dirname(os.path.abspath(jp))

    def resolve(rel, where: str) -> str:
        if not isinstance(rel, str) or not rel:
            raise DataError(jp, f"{where}: expected a file path, got {rel!r}")
        p = os.path.normpath(os.path.join(base, rel))
        if not os.path.isfile(p):
            raise DataError(jp, f"{where}: file {rel!r} not found (resolved to {p})")
        return p

    entries: list[tuple[str, str | None, bool]] = []
    index: dict[str, int] = {}
    for k, entry in enumerate(training):
        where = f"training[{k}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(jp, f"{where} has no 'image' entry: {entry!r}")
        img = resolve(entry["image"], f"{where} image")
        lab = resolve(entry["label"], f"{where} label") if entry.get("label") else None
        if img in index:
            raise DataError(jp, f"{where}: image {entry['image']!r} is listed twice")
        index[img] = len(entries)
        entries.append((img, lab, False))

    pairs: list[tuple[int, int]] = []
    val = meta.get("registration_val", []) or []
    if not isinstance(val, list):
        raise DataError(jp, f"'registration_val' must be a list; got {type(val).__name__}")
    for k, pair in enumerate(val):
        where = f"registration_val[{k}]"
        if not isinstance(pair, dict) or "fixed" not in pair or "moving" not in pair:
            raise DataError(jp, f"{where} needs 'fixed' and 'moving' entries: {pair!r}")
        ij = []
        for role in ("fixed", "moving"):
            p = resolve(pair[role], f"{where} {role}")
            if p not in index:
                folder, fname = os.path.split(p)
                guess = os.path.join(os.path.dirname(folder), "labelsTr", fname)
                lab = (
                    guess
                    if os.path.basename(folder) == "imagesTr" and os.path.isfile(guess)
                    else None
                )
                index[p] = len(entries)
                entries.append((p, lab, True))
            ij.append(index[p])
        pairs.append((ij[0], ij[1]))

    subjects = tuple(
        _load_subject(img, lab, ndim=ndim, normalize=normalize, held_out=held)
        for img, lab, held in entries
    )
    _check_shapes(subjects, jp)
    return Dataset(subjects=subjects, val_pairs=tuple(pairs), source=jp)


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
