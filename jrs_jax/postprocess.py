"""Host-side post-processing of predicted label maps (numpy + scipy.ndimage, outside jit).

:func:`largest_component` keeps, for every foreground class, only its largest connected
component: the post-processing of segmentation-informed registration of dynamic vocal-tract
MR (Ruthven et al. 2022), which deletes "anatomically impossible regions" (stray islands of a
class) from the segmentations before they are given to the registration network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._checks import check_label_map

__all__ = ["largest_component"]


def _largest_one(lab: np.ndarray, classes, structure: np.ndarray) -> np.ndarray:
    """:func:`largest_component` of one map ``[*S]``."""
    out = lab.copy()
    for k in classes:
        comp, n = ndimage.label(lab == k, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        keep = int(np.argmax(sizes)) + 1  # ties: the first component in C (raster) order
        out[(comp > 0) & (comp != keep)] = 0
    return out


def largest_component(
    labels,
    *,
    num_classes: int | None = None,
    connectivity: int = 1,
    classes: Sequence[int] | None = None,
    batched: bool = False,
) -> np.ndarray:
    """Keep only the largest connected component of every foreground class.

    For each class ``k >= 1`` the voxels of ``k`` are split into connected components
    (:func:`scipy.ndimage.label`); the largest one keeps label ``k`` and the voxels of the
    others become background ``0`` (the paper deletes such regions; relabelling them by their
    neighbours would invent anatomy, and ``0`` is what a "deleted" voxel is in a label map).
    Ties between components of equal size keep the first one in C (raster) order, the one
    holding the voxel of smallest flat index. Background ``0`` is never changed, and a class
    with a single component is left as it is.

    Args:
      labels: integer label map ``[*S]`` (2-D or 3-D); with ``batched`` a batch ``[B, *S]``,
        each map processed on its own. Numpy or JAX arrays (converted with ``np.asarray``).
      num_classes: ``K``: the classes are ``1 .. K - 1`` and every value must lie in
        ``[0, K)``; default: every nonzero value present.
      connectivity: neighbourhood of a component, as
        :func:`scipy.ndimage.generate_binary_structure`: ``1`` face neighbours (4 in 2-D, 6 in
        3-D), up to ``len(S)`` (8 / 26 neighbours).
      classes: only these foreground classes are processed (the others are left as they
        are), e.g. leaving out a class that may rightly come in several pieces, as the
        vocal-tract air cut in two by a velar closure (:mod:`jrs_jax.data.speech`).
      batched: ``labels`` has a leading batch axis.

    Returns:
      A new array of ``labels``' shape and dtype.

    Example:
      >>> lab = np.zeros((5, 8), int); lab[1:4, 0:3] = 1; lab[2, 6] = 1  # a blob and an island
      >>> int(largest_component(lab).sum())
      9
    """
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer label map; got dtype {lab.dtype}")
    spatial = check_label_map(lab, batched=batched)
    if isinstance(connectivity, bool) or connectivity not in range(1, spatial + 1):
        raise ValueError(f"connectivity must be an integer in 1..{spatial}; got {connectivity!r}")
    if num_classes is None:
        todo = [int(v) for v in np.unique(lab) if v != 0]
    else:
        k = int(num_classes)
        if k < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if lab.size and (lab.min() < 0 or lab.max() >= k):
            raise ValueError(
                f"labels must lie in [0, num_classes={k}); got values {int(lab.min())}.."
                f"{int(lab.max())}"
            )
        todo = list(range(1, k))
    if classes is not None:
        wanted = [int(c) for c in np.atleast_1d(np.asarray(classes))]
        if 0 in wanted:
            raise ValueError("classes must not hold 0: the background is never processed")
        todo = [c for c in todo if c in wanted]
    structure = ndimage.generate_binary_structure(spatial, int(connectivity))
    if not batched:
        return _largest_one(lab, todo, structure)
    if len(lab) == 0:
        return lab.copy()
    return np.stack([_largest_one(x, todo, structure) for x in lab])
