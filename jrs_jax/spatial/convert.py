"""Converters between our displacement fields and the layouts other toolkits use.

Our convention (see :mod:`jrs_jax.spatial`): a displacement ``u`` is ``[B, *S, D]``, channels
last, in **voxel units along array axes** ("ij": component ``k`` moves along array axis ``k``),
applied as a pull-back ``warp(I, u)(x) = I(x + u(x))`` with voxel centres at integers
(``align_corners=True``). Images are ``[B, *S, C]``.

Three families of peers, and what changes for each:

1. **MONAI / VoxelMorph-torch** (:func:`to_channels_first`, :func:`from_channels_first`,
   :func:`image_to_channels_first`, :func:`image_from_channels_first`). Their dense
   displacement fields (MONAI ``Warp``'s ``ddf``, ``DVF2DDF``'s output, VoxelMorph-torch's
   ``flow`` given to ``SpatialTransformer``/``VecInt``) are ``[B, D, *S]``: channels first,
   *otherwise identical to ours*: voxel units, ij component order (channel ``k`` moves along
   spatial axis ``k``), pull-back, voxel centres at integers. Both libraries add the ddf to an
   ``arange`` meshgrid built with ``indexing="ij"``, normalise with ``2 x / (n - 1) - 1`` and
   only *then* reverse the component order for ``grid_sample`` (``[..., ::-1]``), which is
   why their fields are ij even though ``grid_sample`` wants xy. So the conversion is a pure
   ``moveaxis``: no flip, no scaling. Caveat: older VoxelMorph-torch releases called
   ``grid_sample`` without ``align_corners`` (``False`` since torch 1.3) while normalising
   with ``2 x / (n - 1) - 1``, i.e. they sampled at ``x n / (n - 1) - 1/2`` (stretched
   outwards, by half a voxel at the borders); models trained with that code learnt fields
   that are not exactly in this convention.

2. **Normalised ``grid_sample`` coordinates** (:func:`to_grid_sample`,
   :func:`from_grid_sample`, :func:`to_normalized_displacement`,
   :func:`from_normalized_displacement`). ``torch.nn.functional.grid_sample(input, grid)``
   takes ``input [B, C, *S]`` and an *absolute* ``grid [B, *S_out, D]`` in ``[-1, 1]`` whose
   components are in **reversed (xy) order**: ``grid[..., 0]`` indexes the *last* spatial axis
   (W), ``grid[..., 1]`` the one before (H) and, in 3-D, ``grid[..., 2]`` the first (D). The
   spatial axes of ``grid`` itself stay in array order. With voxel coordinate ``x`` along an
   axis of size ``n``:

   - ``align_corners=True``:  ``g = 2 x / (n - 1) - 1`` (``-1``/``+1`` are the centres of the
     first/last voxels; our convention, and MONAI's and VoxelMorph's);
   - ``align_corners=False``: ``g = (2 x + 1) / n - 1`` (``-1``/``+1`` are the outer *edges* of
     the first/last voxels; torch's default since 1.3).

   Relative ("airlab-style") normalised displacements use the same scale without the offset:
   ``2 u / (n - 1)`` or ``2 u / n``, xy order, channels last; the unit is half the extent of
   the volume.

3. **ITK / ANTs physical fields** (:func:`to_physical_displacement`,
   :func:`from_physical_displacement`; the file IO, :func:`~jrs_jax.data.save_ants_warp` and
   :func:`~jrs_jax.data.load_ants_warp`, lives in :mod:`jrs_jax.data.ants`).
   These are world-space vectors in millimetres in **LPS** coordinates, on the voxel grid of
   the *fixed* image.

World axes, NIfTI vs ITK. The NIfTI affine ``A`` (as nibabel returns it, ``img.affine``) maps a
voxel index ``(i, j, k)`` (array axes 0, 1, 2 of ``img.get_fdata()``) to world coordinates in
**RAS+**: ``+x`` points to the patient's Right, ``+y`` Anterior, ``+z`` Superior. ITK (and so
ANTs, SimpleITK, Slicer's files) uses **LPS+** (the DICOM convention): ``+x`` Left, ``+y``
Posterior, ``+z`` Superior. The two frames differ by a rotation of 180 degrees about the
superior axis: ``p_LPS = diag(-1, -1, 1) p_RAS``. ITK's NIfTI reader applies this flip to
the origin and direction of every image it reads, but it stores the *values* of a vector image
untouched; so a displacement-field file holds LPS vectors, and anyone reading it with nibabel
has to negate components 0 and 1 to get RAS vectors (nitransforms does exactly this).

Displacements are vectors, not points: only the linear part of the affine acts on them,
never the translation: ``d_RAS = A[:3, :3] @ u_voxel`` and ``d_LPS = diag(-1, -1, 1) @ d_RAS``.
Both indices here are numpy/nibabel array order (i, j, k). SimpleITK's ``GetArrayFromImage``
returns the *reversed* order ``[z, y, x]`` (and ``[z, y, x, 3]`` for a vector image, with the
vector components still in x, y, z order); nothing here uses SimpleITK, and a field obtained
that way must be transposed to ``[x, y, z, 3]`` first.

Worked example (one voxel). Fixed grid with spacing 2 x 3 x 4 mm and identity orientation,
``A = [[2, 0, 0, t0], [0, 3, 0, t1], [0, 0, 4, t2], [0, 0, 0, 1]]`` (axis 0 runs Left to
Right). Our ``u = (1, 0, 0)`` at voxel ``x`` means "the fixed voxel ``x`` takes its value
from one voxel further along array axis 0", i.e. 2 mm to the patient's right:

- ``d_RAS = A[:3, :3] @ (1, 0, 0) = (2, 0, 0)`` (2 mm towards +R);
- ``d_LPS = (-2, 0, 0)`` (minus 2 mm towards +L: the same physical vector);
- the translation ``t`` does not enter. ``u = (0, 1, 0)`` gives ``d_LPS = (0, -3, 0)`` and
  ``u = (0, 0, 1)`` gives ``(0, 0, 4)`` (superior is shared, so no flip).

Direction of the transform. ANTs (``antsApplyTransforms -r fixed -i moving -t warp``) uses a
warp as a pull-back: for every fixed-space point ``p`` it samples the moving image at
``p + d(p)``; the warp maps fixed-space points to moving-space points ("the forward warps
transform a point from fixed to moving space", ANTs wiki, *Forward and inverse warps*). That is
our ``warp(moving, u)`` with ``u`` on the fixed grid. The voxel <-> mm conversion above is exact
when the moving image lies on the same voxel grid (same affine) as the fixed one, which is the
case for images resampled to a common grid (every training pipeline here). When the moving
image has its own affine ``A_m``, ANTs reads the moving voxel ``A_m^-1 (A (x) + d_RAS)``,
which is not ``x + u`` for any position-independent conversion; resample the moving image onto
the fixed grid first.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._checks import check_field
from .grid import identity_grid

__all__ = [
    "from_channels_first",
    "from_grid_sample",
    "from_normalized_displacement",
    "from_physical_displacement",
    "image_from_channels_first",
    "image_to_channels_first",
    "lps_matrix",
    "to_channels_first",
    "to_grid_sample",
    "to_normalized_displacement",
    "to_physical_displacement",
]

# --------------------------------------------------------------------------------------------
# (a) channels-first layouts (MONAI, VoxelMorph-torch)
# --------------------------------------------------------------------------------------------


def to_channels_first(disp: jnp.ndarray) -> jnp.ndarray:
    """Our field ``[B, *S, D]`` to the MONAI / VoxelMorph-torch layout ``[B, D, *S]``.

    Only the component axis moves; values and component order are unchanged: MONAI ``Warp``
    (``ddf``), MONAI ``DVF2DDF`` and VoxelMorph-torch ``SpatialTransformer`` (``flow``) all take
    voxel units with channel ``k`` moving along spatial axis ``k`` (ij), pull-back, voxel
    centres at integers. They reverse the component order themselves, internally, right before
    ``grid_sample``; do **not** flip it here.

    Args:
      disp: ``[B, *S, D]``, ``D = len(S)`` in {2, 3}.

    Returns:
      ``[B, D, *S]``.
    """
    check_field(disp)
    return jnp.moveaxis(disp, -1, 1)


def from_channels_first(ddf: jnp.ndarray) -> jnp.ndarray:
    """MONAI / VoxelMorph-torch ``[B, D, *S]`` field (voxels, ij) to ours ``[B, *S, D]``.

    Inverse of :func:`to_channels_first`; accepts anything ``numpy``-convertible (e.g.
    ``torch_tensor.detach().cpu().numpy()``).

    Args:
      ddf: ``[B, D, *S]``, ``D = len(S)`` in {2, 3}.

    Returns:
      ``[B, *S, D]``.
    """
    ddf = jnp.asarray(ddf)
    ndim = ddf.ndim - 2
    if ndim not in (2, 3) or ddf.shape[1] != ndim:
        raise ValueError(
            "ddf must have shape [B, D, *S] with D = len(S) in (2, 3); got shape "
            f"{tuple(ddf.shape)}"
        )
    return jnp.moveaxis(ddf, 1, -1)


def _check_image_rank(image, name: str) -> None:
    if image.ndim not in (4, 5):
        raise ValueError(
            f"{name} must have 2 or 3 spatial axes plus batch and channel axes; got shape "
            f"{tuple(image.shape)}"
        )


def image_to_channels_first(image: jnp.ndarray) -> jnp.ndarray:
    """Image ``[B, *S, C]`` (ours) to ``[B, C, *S]`` (torch / MONAI), spatial axes unchanged."""
    image = jnp.asarray(image)
    _check_image_rank(image, "image")
    return jnp.moveaxis(image, -1, 1)


def image_from_channels_first(image: jnp.ndarray) -> jnp.ndarray:
    """Image ``[B, C, *S]`` (torch / MONAI) to ``[B, *S, C]`` (ours), spatial axes unchanged."""
    image = jnp.asarray(image)
    _check_image_rank(image, "image")
    return jnp.moveaxis(image, 1, -1)


# --------------------------------------------------------------------------------------------
# (b) normalised grid_sample coordinates
# --------------------------------------------------------------------------------------------


def _scale(shape, align_corners: bool, dtype) -> jnp.ndarray:
    """Per-axis factor from voxels to normalised units, in array (ij) order."""
    if align_corners:
        vals = [2.0 / (n - 1) if n > 1 else 0.0 for n in shape]
    else:
        vals = [2.0 / n for n in shape]
    return jnp.asarray(vals, dtype)


def _inv_scale(shape, align_corners: bool, dtype) -> jnp.ndarray:
    """Per-axis factor from normalised units to voxels, in array (ij) order."""
    vals = [(n - 1) / 2.0 if align_corners else n / 2.0 for n in shape]
    return jnp.asarray(vals, dtype)


def _float(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def to_grid_sample(disp: jnp.ndarray, *, align_corners: bool = True) -> jnp.ndarray:
    """Our displacement to an absolute ``torch.nn.functional.grid_sample`` grid.

    ``out[b, *x, j]`` is the normalised coordinate of ``x + u(x)`` along array axis
    ``D - 1 - j``: component order reversed (``[..., 0]`` indexes the last spatial axis W,
    ``[..., 1]`` H, ``[..., 2]`` the first axis D in 3-D), spatial axes of the grid in array
    order. Per axis of size ``n`` with ``c = x_k + u_k``:

    - ``align_corners=True``: ``g = 2 c / (n - 1) - 1`` (``n == 1`` gives 0, which torch maps
      back to voxel 0 whatever ``u`` is);
    - ``align_corners=False``: ``g = (2 c + 1) / n - 1``.

    Then, with ``image_cf = image_to_channels_first(image)``,
    ``grid_sample(image_cf, to_grid_sample(u, align_corners=a), mode="bilinear",
    padding_mode="border", align_corners=a)`` equals ``warp(image, u, padding="border")``
    channels-first (``padding_mode="zeros"`` matches ``padding="zeros"``), for either ``a``:
    the ``align_corners`` given here must be the one given to ``grid_sample``.

    Args:
      disp: ``[B, *S, D]`` in voxels, ij.
      align_corners: normalisation convention of the consumer (static).

    Returns:
      ``[B, *S, D]`` absolute normalised coordinates, xy order.
    """
    check_field(disp)
    disp = _float(disp)
    shape = tuple(int(n) for n in disp.shape[1:-1])
    coords = identity_grid(shape, dtype=disp.dtype) + disp
    scale = _scale(shape, align_corners, disp.dtype)
    if align_corners:
        norm = coords * scale - jnp.asarray([1.0 if n > 1 else 0.0 for n in shape], disp.dtype)
    else:
        norm = (2.0 * coords + 1.0) * (scale / 2.0) - 1.0
    return norm[..., ::-1]


def from_grid_sample(grid: jnp.ndarray, *, align_corners: bool = True) -> jnp.ndarray:
    """Absolute ``grid_sample`` grid (normalised, xy order) back to our voxel displacement.

    Inverse of :func:`to_grid_sample`: reverses the components back to ij order, then per
    axis of size ``n`` maps ``g`` to the voxel coordinate ``c = (g + 1) (n - 1) / 2``
    (``align_corners=True``) or ``c = ((g + 1) n - 1) / 2`` (``False``) and subtracts the
    identity grid. The grid must sample the volume it is defined on (``S_out == S_in``), as
    for a registration field.

    Args:
      grid: ``[B, *S, D]``, ``grid[..., 0]`` along the last spatial axis.
      align_corners: convention the grid was built for (static).

    Returns:
      ``[B, *S, D]`` voxel displacement, ij.
    """
    grid = _float(grid)
    check_field(grid, name="grid")
    shape = tuple(int(n) for n in grid.shape[1:-1])
    g = grid[..., ::-1]
    half = _inv_scale(shape, align_corners, grid.dtype)
    coords = (g + 1.0) * half if align_corners else (g + 1.0) * half - 0.5
    return coords - identity_grid(shape, dtype=grid.dtype)


def to_normalized_displacement(disp: jnp.ndarray, *, align_corners: bool = True) -> jnp.ndarray:
    """Voxel displacement to a *relative* normalised displacement (airlab-style), xy order.

    ``out[..., j] = s_k * u_k`` with ``k = D - 1 - j`` and ``s_k = 2 / (n_k - 1)``
    (``align_corners=True``; 0 for ``n_k == 1``) or ``2 / n_k`` (``False``): the unit is half
    the extent of the volume. Adding it to the identity grid in normalised coordinates
    (``torch.linspace(-1, 1, n)`` per axis for ``align_corners=True``, xy order) gives
    :func:`to_grid_sample`'s grid.

    Args:
      disp: ``[B, *S, D]`` in voxels, ij.
      align_corners: normalisation convention (static).

    Returns:
      ``[B, *S, D]`` normalised, xy order.
    """
    check_field(disp)
    disp = _float(disp)
    shape = tuple(int(n) for n in disp.shape[1:-1])
    return (disp * _scale(shape, align_corners, disp.dtype))[..., ::-1]


def from_normalized_displacement(
    disp_norm: jnp.ndarray, *, align_corners: bool = True
) -> jnp.ndarray:
    """Relative normalised displacement (xy order) back to voxels (ij order).

    Inverse of :func:`to_normalized_displacement`: ``u_k = out[..., D - 1 - k] * h_k`` with
    ``h_k = (n_k - 1) / 2`` (``align_corners=True``) or ``n_k / 2`` (``False``).

    Args:
      disp_norm: ``[B, *S, D]`` normalised, xy order.
      align_corners: normalisation convention (static).

    Returns:
      ``[B, *S, D]`` in voxels, ij.
    """
    disp_norm = _float(disp_norm)
    check_field(disp_norm, name="disp_norm")
    shape = tuple(int(n) for n in disp_norm.shape[1:-1])
    return disp_norm[..., ::-1] * _inv_scale(shape, align_corners, disp_norm.dtype)


# --------------------------------------------------------------------------------------------
# (c) ITK / ANTs physical displacement fields (LPS, mm)
# --------------------------------------------------------------------------------------------


def _spatial_ndim(disp) -> int:
    """D for an unbatched ``[*S, D]`` or batched ``[B, *S, D]`` field (unambiguous)."""
    ndim = int(disp.shape[-1]) if disp.ndim else 0
    if ndim not in (2, 3) or disp.ndim not in (ndim + 1, ndim + 2):
        raise ValueError(
            "field must have shape [*S, D] or [B, *S, D] with D = len(S) in (2, 3); got "
            f"shape {tuple(disp.shape)}"
        )
    return ndim


def _check_affine(affine, ndim: int) -> None:
    if affine.shape not in ((4, 4), (ndim + 1, ndim + 1)):
        raise ValueError(
            f"affine must be a 4x4 NIfTI voxel-to-world matrix (or {ndim + 1}x{ndim + 1} for a "
            f"{ndim}-D grid); got shape {tuple(affine.shape)}"
        )


def lps_matrix(affine, ndim: int, xp=jnp):
    """``M = F A[:D, :D]`` with ``F = diag(-1, -1, 1)[:D, :D]``: voxel vector -> LPS mm.

    ``to_physical_displacement(u, A) == einsum("kl,...l->...k", M, u)``; ``xp`` is the array
    module (``jax.numpy`` or ``numpy``, which :mod:`jrs_jax.data.ants` uses for file IO).
    """
    flip = xp.asarray([-1.0, -1.0, 1.0][:ndim], dtype=affine.dtype)
    return flip[:, None] * affine[:ndim, :ndim]


def to_physical_displacement(disp: jnp.ndarray, affine) -> jnp.ndarray:
    """Voxel displacement (ij) to an ITK/ANTs physical displacement (LPS, mm).

    ``d_RAS = A[:D, :D] @ u`` (linear part of the NIfTI voxel-to-RAS affine ``A`` of the
    **fixed** grid the field lives on; no translation: displacements are vectors) and
    ``d_LPS = diag(-1, -1, 1) @ d_RAS`` (negate the R and A components). Example: identity
    orientation with spacing (2, 3, 4) mm, ``u = (1, 0, 0)`` gives ``(-2, 0, 0)``; see the
    module docstring.

    2-D fields use the top-left 2x2 block of the affine (as ITK does when it reads a 2-D
    NIfTI) and ``d_LPS = -d_RAS``.

    Args:
      disp: ``[*S, D]`` or ``[B, *S, D]`` in voxels, ij (component ``k`` along array axis
        ``k`` of the NIfTI data array, i.e. nibabel order, not SimpleITK's reversed order).
      affine: ``[4, 4]`` NIfTI voxel-to-world (RAS+) matrix (``[3, 3]`` also accepted in 2-D),
        one for the whole batch.

    Returns:
      Same shape as ``disp``: LPS world components (x = towards Left, y = Posterior,
      z = Superior) in mm.
    """
    disp = _float(disp)
    ndim = _spatial_ndim(disp)
    affine = jnp.asarray(affine, disp.dtype)
    _check_affine(affine, ndim)
    m = lps_matrix(affine, ndim, jnp)
    return jnp.einsum("kl,...l->...k", m, disp)


def from_physical_displacement(field_lps: jnp.ndarray, affine) -> jnp.ndarray:
    """ITK/ANTs physical displacement (LPS, mm) on the fixed grid to our voxel displacement.

    Inverse of :func:`to_physical_displacement`:
    ``u = A[:D, :D]^-1 @ diag(-1, -1, 1) @ d_LPS``.

    Args:
      field_lps: ``[*S, D]`` or ``[B, *S, D]`` LPS vectors in mm, array axes in NIfTI/nibabel
        order.
      affine: ``[4, 4]`` NIfTI voxel-to-world (RAS+) matrix of the grid the field lives on.

    Returns:
      Same shape: voxel displacement, ij.
    """
    field_lps = _float(field_lps)
    ndim = _spatial_ndim(field_lps)
    affine = jnp.asarray(affine, field_lps.dtype)
    _check_affine(affine, ndim)
    m_inv = jnp.linalg.inv(lps_matrix(affine, ndim, jnp))
    return jnp.einsum("kl,...l->...k", m_inv, field_lps)
