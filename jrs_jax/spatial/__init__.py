"""Differentiable, batched, jit-able geometry for 2-D and 3-D images.

The coordinate contract (one convention everywhere):

- Images and label maps are ``[B, *S, C]``, channels last; ``S`` has 2 or 3 axes and
  ``D = len(S)``. Hard label maps are integer ``[B, *S]``; soft/one-hot ``[B, *S, K]``.
- Displacement fields are ``[B, *S, D]`` in **voxel units along array axes** ("ij"):
  component ``k`` moves along spatial axis ``k``. There is no "xy" mode.
- Warping pulls: ``warp(I, u)(x) = I(x + u(x))``; voxel centres sit at integers (the
  ``align_corners=True`` convention). Padding: ``"border"`` (default, clamp), ``"zeros"``
  (each interpolation tap outside reads 0), ``"constant"`` (reads ``cval``).
- Composition: ``compose(u, v)(x) = u(x) + v(x + u(x))``, hence
  ``warp(I, compose(u, v)) == warp(warp(I, v), u)``.
- A stationary velocity ``v`` is integrated by scaling and squaring, ``u = v / 2^N`` then
  ``N`` times ``u = compose(u, u)`` (default ``N = 7``); the inverse is ``exp(-v)``.
- Physical spacing (mm) enters only where it should: regularisers and Jacobians take an
  optional ``spacing``; NIfTI IO keeps the affine; everything else is in voxels.
- Regions of interest (:mod:`jrs_jax.spatial.roi`): ``soft_centroid`` of soft masks
  ``[B, *S, K]`` (voxels, or mm with ``spacing``), ``crop_around`` a (rounded) centre with a
  static size, the window clamped inside the image (differentiable in the image, not the
  centre), and ``paste`` / ``paste_back`` of a crop at its ``start`` (differentiable in the
  crop), for coarse-to-fine (crop, refine, paste back) pipelines.

Converters to and from MONAI / VoxelMorph-torch ``[B, D, *S]`` fields, normalised
``grid_sample`` coordinates and ITK/ANTs physical (LPS, mm) fields live in
:mod:`jrs_jax.spatial.convert` (the ANTs warp files: :mod:`jrs_jax.data.ants`).
"""

from .convert import (
    from_channels_first,
    from_grid_sample,
    from_normalized_displacement,
    from_physical_displacement,
    image_from_channels_first,
    image_to_channels_first,
    to_channels_first,
    to_grid_sample,
    to_normalized_displacement,
    to_physical_displacement,
)
from .fields import (
    affine_to_displacement,
    compose,
    displacement_gradient,
    integrate_velocity,
    invert_displacement,
    jacobian_determinant,
    resize_field,
)
from .filters import (
    box_filter,
    filter_1d,
    gaussian_filter,
    gaussian_kernel_1d,
    otsu_threshold,
)
from .grid import identity_grid
from .random import random_displacement, random_velocity
from .roi import crop_around, paste, paste_back, soft_centroid
from .warp import LABEL_MODES, PADDING_MODES, sample, warp, warp_labels

__all__ = [
    "LABEL_MODES",
    "PADDING_MODES",
    "affine_to_displacement",
    "box_filter",
    "compose",
    "crop_around",
    "displacement_gradient",
    "filter_1d",
    "from_channels_first",
    "from_grid_sample",
    "from_normalized_displacement",
    "from_physical_displacement",
    "gaussian_filter",
    "gaussian_kernel_1d",
    "identity_grid",
    "image_from_channels_first",
    "image_to_channels_first",
    "integrate_velocity",
    "invert_displacement",
    "jacobian_determinant",
    "otsu_threshold",
    "paste",
    "paste_back",
    "random_displacement",
    "random_velocity",
    "resize_field",
    "sample",
    "soft_centroid",
    "to_channels_first",
    "to_grid_sample",
    "to_normalized_displacement",
    "to_physical_displacement",
    "warp",
    "warp_labels",
]
