"""Data input/output and host-side preprocessing (numpy): NIfTI volumes and the built-in
synthetic anatomy (:mod:`jrs_jax.data.synthetic`).

See :mod:`jrs_jax.data.nifti` for the conventions (RAS+ canonical orientation on load, its
undoing on save, atomic writes) and :class:`DataError` for the error messages.
"""

from .datasets import (
    DEEPATLAS_CASES,
    Dataset,
    Subject,
    all_pairs,
    atlas_pairs,
    deepatlas_pairs,
    load_folder,
    load_learn2reg,
    load_subject,
    sample_pairs,
)
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
from .synthetic import make_subjects, make_template, write_learn2reg_dataset

__all__ = [
    "DEEPATLAS_CASES",
    "CropPadInfo",
    "DataError",
    "Dataset",
    "Subject",
    "Volume",
    "all_pairs",
    "atlas_pairs",
    "atomic_save",
    "check_pair",
    "crop_or_pad",
    "deepatlas_pairs",
    "load_folder",
    "load_image",
    "load_labels",
    "load_learn2reg",
    "load_subject",
    "make_subjects",
    "make_template",
    "normalize_intensity",
    "resample_to_spacing",
    "sample_pairs",
    "save_image",
    "uncrop",
    "write_learn2reg_dataset",
]
