"""Data input/output and host-side preprocessing (numpy): NIfTI volumes and the built-in
synthetic anatomy (:mod:`jrs_jax.data.synthetic`).

See :mod:`jrs_jax.data.nifti` for the conventions (RAS+ canonical orientation on load, its
undoing on save, atomic writes) and :class:`DataError` for the error messages.
"""

from .ants import load_ants_warp, save_ants_warp
from .datasets import Dataset, Subject, load_folder, load_learn2reg, load_subject
from .errors import DataError
from .nifti import (
    CropPadInfo,
    Volume,
    atomic_save,
    check_pair,
    crop_or_pad,
    load_image,
    load_labels,
    normalize_intensity,
    resample_to_spacing,
    save_image,
    uncrop,
)
from .sampling import (
    all_pairs,
    as_rng,
    atlas_pairs,
    batch_rng,
    draw_distinct,
    pair_batch,
    sample_pairs,
    subject_batch,
)
from .synthetic import make_subjects, make_template, write_learn2reg_dataset

__all__ = [
    "CropPadInfo",
    "DataError",
    "Dataset",
    "Subject",
    "Volume",
    "all_pairs",
    "as_rng",
    "atlas_pairs",
    "atomic_save",
    "batch_rng",
    "check_pair",
    "crop_or_pad",
    "draw_distinct",
    "load_ants_warp",
    "load_folder",
    "load_image",
    "load_labels",
    "load_learn2reg",
    "load_subject",
    "make_subjects",
    "make_template",
    "normalize_intensity",
    "pair_batch",
    "resample_to_spacing",
    "sample_pairs",
    "save_ants_warp",
    "save_image",
    "subject_batch",
    "uncrop",
    "write_learn2reg_dataset",
]
