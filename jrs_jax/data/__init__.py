"""Data input/output and host-side preprocessing (numpy): NIfTI volumes and the built-in
synthetic anatomy (:mod:`jrs_jax.data.synthetic`) and scenarios (:mod:`jrs_jax.data.scenarios`,
e.g. sliding organs: :mod:`jrs_jax.data.sliding`), Learn2Reg ``dataset.json`` reading and
writing (:mod:`jrs_jax.data.learn2reg`), ANTs warp files (:mod:`jrs_jax.data.ants`).

See :mod:`jrs_jax.data.nifti` for the conventions (RAS+ canonical orientation on load, its
undoing on save, atomic writes) and :class:`DataError` for the error messages.
"""

from .ants import load_ants_warp, save_ants_warp
from .cardiac import (
    CARDIAC_LABELS,
    cardiac_cycle,
    cardiac_template,
    make_cardiac_sequences,
    write_cardiac_dataset,
)
from .datasets import Dataset, Subject, load_folder, load_learn2reg, load_subject
from .errors import DataError
from .known_transform import make_known_transform_pairs, write_known_transform_dataset
from .learn2reg import write_learn2reg
from .lesion import make_lesion_subjects, mass_effect_field, write_lesion_dataset
from .longitudinal import (
    growth_velocity,
    make_longitudinal_subjects,
    write_longitudinal_dataset,
)
from .multimodal import (
    MULTIMODAL_CONTRASTS,
    MULTIMODAL_MODALITIES,
    make_multimodal_subjects,
    modality_means,
    write_multimodal_dataset,
)
from .nifti import (
    CropPadInfo,
    Volume,
    atomic_save,
    check_pair,
    crop_or_pad,
    load_image,
    load_labels,
    load_multilabel,
    normalize_intensity,
    read_label_names,
    resample_to_spacing,
    save_image,
    uncrop,
)
from .ood import OOD_SHIFTS, write_ood_dataset
from .sampling import (
    PAIR_CASES,
    all_pairs,
    all_within_subject_pairs,
    as_rng,
    atlas_pairs,
    batch_rng,
    draw_distinct,
    labelled_case_pairs,
    labelled_pair_batch,
    leading_windows,
    pair_batch,
    sample_pairs,
    sequence_batch,
    sequence_windows,
    subject_batch,
    within_subject_pairs,
)
from .sliding import (
    fill_organs,
    make_sliding_subjects,
    sliding_pair_field,
    write_sliding_dataset,
)
from .small_organs import make_small_organs_template, write_small_organs_dataset
from .speech import SPEECH_LABELS, make_speech_subjects, write_speech_dataset
from .synthetic import make_subjects, make_template, write_learn2reg_dataset
from .tracts import make_tract_subjects, make_tract_template, write_tracts_dataset

__all__ = [
    "CARDIAC_LABELS",
    "MULTIMODAL_CONTRASTS",
    "MULTIMODAL_MODALITIES",
    "OOD_SHIFTS",
    "PAIR_CASES",
    "SPEECH_LABELS",
    "CropPadInfo",
    "DataError",
    "Dataset",
    "Subject",
    "Volume",
    "all_pairs",
    "all_within_subject_pairs",
    "as_rng",
    "atlas_pairs",
    "atomic_save",
    "batch_rng",
    "cardiac_cycle",
    "cardiac_template",
    "check_pair",
    "crop_or_pad",
    "draw_distinct",
    "fill_organs",
    "growth_velocity",
    "labelled_case_pairs",
    "labelled_pair_batch",
    "leading_windows",
    "load_ants_warp",
    "load_folder",
    "load_image",
    "load_labels",
    "load_learn2reg",
    "load_multilabel",
    "load_subject",
    "make_cardiac_sequences",
    "make_known_transform_pairs",
    "make_lesion_subjects",
    "make_longitudinal_subjects",
    "make_multimodal_subjects",
    "make_sliding_subjects",
    "make_small_organs_template",
    "make_speech_subjects",
    "make_subjects",
    "make_template",
    "make_tract_subjects",
    "make_tract_template",
    "mass_effect_field",
    "modality_means",
    "normalize_intensity",
    "pair_batch",
    "read_label_names",
    "resample_to_spacing",
    "sample_pairs",
    "save_ants_warp",
    "save_image",
    "sequence_batch",
    "sequence_windows",
    "sliding_pair_field",
    "subject_batch",
    "uncrop",
    "within_subject_pairs",
    "write_cardiac_dataset",
    "write_known_transform_dataset",
    "write_learn2reg",
    "write_learn2reg_dataset",
    "write_lesion_dataset",
    "write_longitudinal_dataset",
    "write_multimodal_dataset",
    "write_ood_dataset",
    "write_sliding_dataset",
    "write_small_organs_dataset",
    "write_speech_dataset",
    "write_tracts_dataset",
]
