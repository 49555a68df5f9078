"""Registry of the synthetic data scenarios (``jrs-jax make-synthetic --scenario NAME``).

A scenario is a function ``write(root, *, key, **settings) -> path of dataset.json`` that
generates a dataset in the Learn2Reg layout, read back by :func:`jrs_jax.data.load_learn2reg`
like real data. Each scenario is tested for the property it claims to have. ``anatomy`` is
the built-in population of deformed subjects of one template
(:func:`jrs_jax.data.write_learn2reg_dataset`); ``sliding`` has organs that slide against
their surroundings, with region masks and exact pair ground truth
(:func:`jrs_jax.data.write_sliding_dataset`); ``longitudinal`` has several scans per
subject, a large variation across subjects and a small local change within one (a structure
that grows or shrinks; :func:`jrs_jax.data.write_longitudinal_dataset`); ``tracts`` has
crossing tube-like structures with overlapping multi-label maps, cross-sectional or
longitudinal (:func:`jrs_jax.data.write_tracts_dataset`); ``speech`` has vocal-tract frames
whose tongue touches the soft palate in some and not in others, the contacts recorded per
frame (:func:`jrs_jax.data.write_speech_dataset`); ``cardiac`` has beating-heart sequences
over one cycle, 2-D+t or 3-D+t, labelled at end-diastole and end-systole only, every
frame's labels kept for evaluation (:func:`jrs_jax.data.write_cardiac_dataset`);
``multimodal`` renders each subject of the anatomy twice, modalities X and Y with inverted or
scrambled label contrasts, for cross-modal pairs (moving X, fixed Y;
:func:`jrs_jax.data.write_multimodal_dataset`); ``known_transform`` pairs each image with
itself moved by a recorded random rigid + elastic transform, the exact ground truth in the
scans' fields (:func:`jrs_jax.data.write_known_transform_dataset`); ``lesion`` has a lesion-free
atlas and patients with a lesion absent from the template, its own label, and a mass effect
pushing the tissue outwards, kept as the ground-truth field
(:func:`jrs_jax.data.write_lesion_dataset`); ``small_organs`` has a few large structures and
many small organs of a few voxels' radius, each next to a large one, as head-and-neck organs
at risk (:func:`jrs_jax.data.write_small_organs_dataset`); ``ood`` is the anatomy with a
second file, ``dataset_ood.json``, whose held-out subjects are the same anatomies rendered
with a distribution shift (more noise, changed contrasts or a strong bias field;
:func:`jrs_jax.data.write_ood_dataset`). ``jrs-jax make-synthetic --setting KEY=VALUE``
passes a scenario's own settings (``num_timepoints``, ``num_frames``, ``contrast``,
``shift``, ...).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from .cardiac import write_cardiac_dataset
from .known_transform import write_known_transform_dataset
from .lesion import write_lesion_dataset
from .longitudinal import write_longitudinal_dataset
from .multimodal import write_multimodal_dataset
from .ood import write_ood_dataset
from .sliding import write_sliding_dataset
from .small_organs import write_small_organs_dataset
from .speech import write_speech_dataset
from .synthetic import write_learn2reg_dataset
from .tracts import write_tracts_dataset

__all__ = ["SCENARIOS", "get_scenario", "make_scenario"]

#: Scenario writers by name.
SCENARIOS: dict[str, Callable[..., str]] = {
    "anatomy": write_learn2reg_dataset,
    "cardiac": write_cardiac_dataset,
    "known_transform": write_known_transform_dataset,
    "lesion": write_lesion_dataset,
    "longitudinal": write_longitudinal_dataset,
    "multimodal": write_multimodal_dataset,
    "ood": write_ood_dataset,
    "sliding": write_sliding_dataset,
    "small_organs": write_small_organs_dataset,
    "speech": write_speech_dataset,
    "tracts": write_tracts_dataset,
}


def get_scenario(name: str) -> Callable[..., str]:
    """The writer of scenario ``name`` (``ValueError`` naming the known ones otherwise)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known scenarios: {sorted(SCENARIOS)}")
    return SCENARIOS[name]


def make_scenario(name: str, root: str | os.PathLike, *, key, **settings) -> str:
    """Write scenario ``name`` to ``root`` atomically (generated in ``root.partial``, then
    renamed, so a killed run leaves no half-written dataset); returns ``dataset.json``'s path.

    Raises:
      ValueError: unknown scenario (naming the known ones) or bad settings; ``FileExistsError``
        if ``root`` exists.
    """
    write = get_scenario(name)
    root = os.fspath(root)
    if os.path.exists(root):
        raise FileExistsError(f"{root} already exists; choose another folder or remove it")
    tmp = root.rstrip(os.sep) + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        path = write(tmp, key=key, **settings)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, root)
    return os.path.join(root, os.path.relpath(path, tmp))
