"""Smoothness and plausibility penalties on displacement / velocity fields ``[B, *S, D]``.

Conventions shared by every function here:

* Fields are channels-last ``[B, *S, D]`` with ``D = len(S)`` in {2, 3}, in **voxel units
  along the array axes**: component ``c`` is the displacement along array axis ``c``.
* Every loss returns one value per example, ``[B]`` (lower is better); the mean over the batch
  reproduces the batch-averaged scalar of the reference implementations named below.
* ``spacing`` (millimetres per voxel, a scalar or one value per spatial axis) switches to
  physical units: the field is first converted to millimetres (component ``c`` times
  ``spacing[c]``) and derivatives are taken per millimetre (a finite difference along axis
  ``i`` is divided by ``spacing[i]``). First derivatives are then dimensionless (the physical
  displacement gradient, so a rigid rotation costs the same at any voxel size), second
  derivatives are in mm⁻¹. With ``spacing=None`` everything is in voxels (``spacing = 1``).
* ``normalize=True`` (MONAI's option) measures both positions and displacements as fractions
  of the image extent along their axis, i.e. it is the special case ``spacing[i] = 1 / N_i``
  with ``N_i`` the number of voxels along axis ``i``: ``∂u_c/∂x_i`` is multiplied by
  ``N_i / N_c`` and ``∂²u_c/∂x_i∂x_j`` by ``N_i N_j / N_c``. The value is then (roughly)
  independent of the sampling resolution and of the aspect ratio of the grid. Passing both
  ``normalize=True`` and a ``spacing`` is contradictory and raises ``ValueError``.
* ``mask`` (every loss; e.g. one region of discontinuity-preserving registration, where each
  region's field is regularised only inside its region): ``[B, *S]`` or ``[B, *S, 1]``
  weights in ``[0, 1]`` (binary or soft) on the field's grid. Every finite-difference term is
  weighted by the product of the mask over the voxels its stencil reads (the voxel it is
  evaluated at included), and the loss is the weighted mean ``Σ w f / Σ w`` with the same
  averaging over components and axes as the unmasked loss. So a mask of ones gives the
  unmasked value, a term that reads a voxel where the mask is 0 has weight 0 (the gradient
  with respect to the field there is exactly 0), scaling the mask by ``c > 0`` does not change
  the value, and an empty mask gives 0 (with a finite gradient). For a binary box mask the
  value is the unmasked loss of the field cropped to the box (not for :func:`jacobian_folding`,
  whose border differences are one-sided, nor with ``normalize=True``, which scales by the
  extent of the whole grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jrs_jax._checks import check_choice
from jrs_jax.spatial.fields import jacobian_determinant

from ._reduce import masked_mean, stencil_weight, voxel_mask

__all__ = [
    "bending_energy",
    "diffusion",
    "gradient_l1",
    "gradient_l2",
    "huber_smoothness",
    "jacobian_folding",
    "velocity_kl",
]

BENDING_SCHEMES = ("compact", "nested")
DIFFUSION_SCHEMES = ("forward", "central")
PENALTIES = ("l2", "l1")

SpacingLike = float | Sequence[float] | jnp.ndarray | None


# ----------------------------------------------------------------------------- helpers


def _as_field(disp, *, name: str = "disp") -> jnp.ndarray:
    """Check ``[B, *S, D]`` with ``D = len(S)`` in {2, 3}; return it as a float array."""
    disp = jnp.asarray(disp)
    ndim = disp.ndim - 2
    if ndim not in (2, 3) or disp.shape[-1] != ndim:
        raise ValueError(
            f"{name} must have shape [B, *S, D] with D = len(S) in (2, 3); got shape "
            f"{tuple(disp.shape)}"
        )
    return disp.astype(jnp.promote_types(disp.dtype, jnp.float32))


def _check_min_size(disp: jnp.ndarray, min_size: int, what: str) -> None:
    spatial = disp.shape[1:-1]
    if min(spatial) < min_size:
        raise ValueError(
            f"{what} needs every spatial size >= {min_size}; got spatial shape {tuple(spatial)}"
        )


def _units(disp: jnp.ndarray, spacing: SpacingLike, normalize: bool) -> jnp.ndarray | None:
    """Per-axis length of one voxel in the output units, ``[D]`` (None: voxel units)."""
    ndim = disp.ndim - 2
    if normalize:
        if spacing is not None:
            raise ValueError(
                "normalize=True measures lengths as fractions of the image extent; it cannot be "
                "combined with a physical spacing (pass one or the other)"
            )
        return jnp.asarray([1.0 / n for n in disp.shape[1:-1]], dtype=disp.dtype)
    if spacing is None:
        return None
    h = jnp.asarray(spacing, dtype=disp.dtype)
    if h.ndim == 0:
        h = jnp.broadcast_to(h, (ndim,))
    if h.shape != (ndim,):
        raise ValueError(
            f"spacing must be a scalar or have one value per spatial axis ({ndim}); got shape "
            f"{tuple(h.shape)}"
        )
    return h


def _to_units(disp: jnp.ndarray, h: jnp.ndarray | None) -> jnp.ndarray:
    """Express the displacement components in the output length unit (``u_c * h_c``)."""
    return disp if h is None else disp * h


def _window(x: jnp.ndarray, offsets: dict[int, int], crop: int) -> jnp.ndarray:
    """``x`` shifted by ``offsets`` (spatial axis -> voxels), all spatial axes cropped by ``crop``.

    Spatial axis ``i`` (0-based) is array axis ``i + 1``; the result has spatial shape
    ``N_i - 2 * crop``.
    """
    idx = [slice(None)]
    for i, n in enumerate(x.shape[1:-1]):
        o = offsets.get(i, 0)
        idx.append(slice(crop + o, n - crop + o))
    idx.append(slice(None))
    return x[tuple(idx)]


def _field_mask(mask, field: jnp.ndarray) -> jnp.ndarray | None:
    """``mask`` ``[B, *S]`` / ``[B, *S, 1]`` checked against ``field`` ``[B, *S, D]``, as
    ``[B, *S, 1]`` in the field's dtype (``None`` stays ``None``)."""
    return None if mask is None else voxel_mask(mask, field, per_channel=False)


def _tap(ndim: int, offsets: dict[int, int]) -> tuple[int, ...]:
    """The stencil offset with ``offsets`` (spatial axis -> voxels), 0 elsewhere."""
    return tuple(offsets.get(i, 0) for i in range(ndim))


def _weight(
    mask: jnp.ndarray | None, taps: list[tuple[int, ...]], *, edge: bool = False
) -> jnp.ndarray | None:
    """:func:`stencil_weight` of the stencil ``taps`` (``None`` without a mask)."""
    return None if mask is None else stencil_weight(mask, taps, edge=edge)


def _forward_weight(mask: jnp.ndarray | None, i: int) -> jnp.ndarray | None:
    """Weight ``m[x] m[x + e_i]`` of the forward differences along spatial axis ``i``."""
    if mask is None:
        return None
    ndim = mask.ndim - 2
    return stencil_weight(mask, [_tap(ndim, {}), _tap(ndim, {i: 1})])


def _forward_diff(x: jnp.ndarray, i: int) -> jnp.ndarray:
    """Forward difference along spatial axis ``i``; that axis shrinks by one, others are kept."""
    n = x.shape[i + 1]
    hi = jax.lax.slice_in_dim(x, 1, n, axis=i + 1)
    lo = jax.lax.slice_in_dim(x, 0, n - 1, axis=i + 1)
    return hi - lo


# ----------------------------------------------------------------------------- losses


def bending_energy(
    disp: jnp.ndarray,
    *,
    spacing: SpacingLike = None,
    normalize: bool = False,
    scheme: str = "compact",
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Bending energy: mean squared second derivative of a displacement field.

    .. math::

        E = \\operatorname{mean}_{c,\\,x}\\Big[\\sum_i (\\partial_{ii} u_c)^2
            + 2 \\sum_{i<j} (\\partial_{ij} u_c)^2\\Big]

    (every ordered pair ``(i, j)``, so mixed terms count twice), averaged over the interior
    voxels ``x`` and over the ``D`` components ``c``; exactly MONAI's ``BendingEnergyLoss``
    (``reduction="mean"`` equals ``bending_energy(...).mean()``).

    Schemes (both are centred finite differences):

    * ``"compact"`` (MONAI >= 1.6): ``∂_ii u = u[+1] - 2u + u[-1]``,
      ``∂_ij u = (u[+1,+1] - u[+1,-1] - u[-1,+1] + u[-1,-1]) / 4``; the border voxel of every
      axis is dropped (spatial sizes must be >= 3).
    * ``"nested"`` (MONAI < 1.6 and DeepReg): the central first difference
      ``(u[+1] - u[-1]) / 2`` applied twice, each application dropping one border voxel on every
      axis, so ``∂_ii u = (u[+2] - 2u + u[-2]) / 4`` and two voxels are dropped per side
      (spatial sizes must be >= 5).

    Units: voxel⁻² (voxels of displacement per voxel²) by default; with ``spacing`` the field is
    converted to mm and derivatives are per mm, giving mm⁻²; with ``normalize=True``
    ``∂_ij u_c`` is scaled by ``N_i N_j / N_c`` (see the module docstring).

    Args:
      disp: ``[B, *S, D]`` displacement (or velocity) field in voxels.
      spacing: voxel size in mm, scalar or ``D`` values; ``None`` for voxel units.
      normalize: MONAI's resolution-independent scaling (exclusive with ``spacing``).
      scheme: ``"compact"`` or ``"nested"``.
      mask: optional ``[B, *S]`` / ``[B, *S, 1]`` weights in ``[0, 1]`` (module docstring):
        the energy at ``x`` (all its second derivatives) is weighted by the product of the mask
        over every tap, ``x``, ``x ± e_i`` and ``x ± e_i ± e_j`` (``"compact"``) or ``x``,
        ``x ± 2 e_i`` and ``x ± e_i ± e_j`` (``"nested"``), and averaged with these weights
        over ``x`` (and over the components). A box mask gives the unmasked energy of the
        field cropped to the box.

    Returns:
      ``[B]`` bending energy per example.

    Example:
      >>> x = jnp.arange(6.0)[:, None] ** 2 * jnp.ones((1, 5))  # u_0 = x_0^2
      >>> disp = jnp.stack([x, jnp.zeros_like(x)], -1)[None]
      >>> bending_energy(disp)  # (2^2 on component 0, 0 on component 1) / 2
      Array([2.], dtype=float32)

    Reference:
      Rueckert et al., "Nonrigid registration using free-form deformations", IEEE TMI 1999;
      MONAI ``monai.losses.BendingEnergyLoss``.
    """
    check_choice("scheme", scheme, BENDING_SCHEMES)
    disp = _as_field(disp)
    ndim = disp.ndim - 2
    crop, step, scale = (1, 1, 1.0) if scheme == "compact" else (2, 2, 0.25)
    _check_min_size(disp, 2 * crop + 1, f"bending_energy(scheme={scheme!r})")
    h = _units(disp, spacing, normalize)
    u = _to_units(disp, h)
    mask = _field_mask(mask, disp)

    energy = 0.0
    taps = [_tap(ndim, {})]
    for i in range(ndim):
        taps += [_tap(ndim, {i: step}), _tap(ndim, {i: -step})]
        taps += [
            _tap(ndim, {i: a, j: b}) for j in range(i + 1, ndim) for a in (1, -1) for b in (1, -1)
        ]
        d2 = _window(u, {i: step}, crop) - 2.0 * _window(u, {}, crop) + _window(u, {i: -step}, crop)
        if scale != 1.0:
            d2 = d2 * scale
        if h is not None:
            d2 = d2 / (h[i] * h[i])
        energy = energy + d2 * d2
        for j in range(i + 1, ndim):
            dm = (
                _window(u, {i: 1, j: 1}, crop)
                - _window(u, {i: 1, j: -1}, crop)
                - _window(u, {i: -1, j: 1}, crop)
                + _window(u, {i: -1, j: -1}, crop)
            ) * 0.25
            if h is not None:
                dm = dm / (h[i] * h[j])
            energy = energy + 2.0 * dm * dm
    return masked_mean(energy, _weight(mask, taps))


def diffusion(
    disp: jnp.ndarray,
    *,
    spacing: SpacingLike = None,
    normalize: bool = False,
    scheme: str = "forward",
    penalty: str = "l2",
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Diffusion regulariser: mean squared (or absolute) first derivative of a field.

    With ``f(g) = g²`` (``penalty="l2"``) or ``f(g) = |g|`` (``penalty="l1"``):

    * ``scheme="forward"`` — VoxelMorph's ``Grad(penalty)`` loss. Forward differences
      ``Δ_i u = u[x + e_i] - u[x]`` over the ``N_i - 1`` valid positions of axis ``i`` (the
      other axes are not cropped), averaged over positions and components, then **averaged**
      over the ``D`` axes:
      ``L = (1/D) Σ_i mean_{c,x} f(Δ_i u_c)``.
    * ``scheme="central"`` — MONAI's ``DiffusionLoss`` (which only has the squared form).
      Central differences ``g_i = (u[x + e_i] - u[x - e_i]) / 2`` on the interior (the border
      voxel of every axis is dropped), **summed** over the ``D`` axes, averaged over interior
      voxels and components: ``L = mean_{c,x} Σ_i f(g_i u_c)``.

    The two references reduce over the derivative direction differently, so for a smooth field
    ``central ≈ D × forward`` — e.g. for a linear field ``u = A x``:
    ``forward = Σ A² / D²`` and ``central = Σ A² / D`` with ``penalty="l2"``.

    Units: the displacement gradient is dimensionless (voxels per voxel); with ``spacing`` the
    field is converted to mm and differences are per mm (still dimensionless, now the physical
    displacement gradient); ``normalize=True`` scales ``∂u_c/∂x_i`` by ``N_i / N_c`` as MONAI
    does (see the module docstring).

    Args:
      disp: ``[B, *S, D]`` displacement (or velocity) field in voxels.
      spacing: voxel size in mm, scalar or ``D`` values; ``None`` for voxel units.
      normalize: MONAI's resolution-independent scaling (exclusive with ``spacing``).
      scheme: ``"forward"`` (VoxelMorph) or ``"central"`` (MONAI).
      penalty: ``"l2"`` or ``"l1"``.
      mask: optional ``[B, *S]`` / ``[B, *S, 1]`` weights in ``[0, 1]`` (module docstring).
        ``"forward"``: the differences along axis ``i`` are weighted by ``m[x] m[x + e_i]``,
        ``mean_{c,x}`` becomes the weighted mean for each axis, and the ``D`` axis means are
        averaged as before (an axis with no weight contributes 0). ``"central"``: the sum over
        axes at ``x`` is weighted by ``m[x] Π_i m[x - e_i] m[x + e_i]``. Either way a box mask
        gives the unmasked value of the field cropped to the box.

    Returns:
      ``[B]`` per-example penalty.

    Example:
      >>> x = jnp.arange(4.0)[:, None] * jnp.ones((1, 4))
      >>> disp = jnp.stack([2.0 * x, jnp.zeros_like(x)], -1)[None]  # u_0 = 2 x_0
      >>> diffusion(disp)  # 2^2 / D^2
      Array([1.], dtype=float32)

    Reference:
      Balakrishnan et al., "VoxelMorph: a learning framework for deformable medical image
      registration", IEEE TMI 2019; MONAI ``monai.losses.DiffusionLoss``.
    """
    check_choice("scheme", scheme, DIFFUSION_SCHEMES)
    check_choice("penalty", penalty, PENALTIES)
    disp = _as_field(disp)
    ndim = disp.ndim - 2
    _check_min_size(disp, 2 if scheme == "forward" else 3, f"diffusion(scheme={scheme!r})")
    h = _units(disp, spacing, normalize)
    u = _to_units(disp, h)
    mask = _field_mask(mask, disp)
    fn = jnp.square if penalty == "l2" else jnp.abs

    if scheme == "forward":
        total = 0.0
        for i in range(ndim):
            d = _forward_diff(u, i)
            if h is not None:
                d = d / h[i]
            total = total + masked_mean(fn(d), _forward_weight(mask, i))
        return total / ndim

    total = 0.0
    taps = [_tap(ndim, {})]
    for i in range(ndim):
        g = (_window(u, {i: 1}, 1) - _window(u, {i: -1}, 1)) * 0.5
        if h is not None:
            g = g / h[i]
        total = total + fn(g)
        taps += [_tap(ndim, {i: 1}), _tap(ndim, {i: -1})]
    return masked_mean(total, _weight(mask, taps))


def gradient_l2(
    disp: jnp.ndarray, *, spacing: SpacingLike = None, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """VoxelMorph ``Grad("l2")``: ``diffusion(disp, scheme="forward", penalty="l2")``.

    ``L = (1/D) Σ_i mean_{c,x} (u_c[x + e_i] - u_c[x])²`` per example, ``[B]``; with
    ``mask`` (``[B, *S]`` / ``[B, *S, 1]``) each axis mean is weighted by ``m[x] m[x + e_i]``
    (see :func:`diffusion`).

    Example:
      >>> gradient_l2(jnp.zeros((2, 4, 4, 2))).shape
      (2,)
    """
    return diffusion(disp, spacing=spacing, scheme="forward", penalty="l2", mask=mask)


def gradient_l1(
    disp: jnp.ndarray, *, spacing: SpacingLike = None, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """VoxelMorph ``Grad("l1")``: ``diffusion(disp, scheme="forward", penalty="l1")``.

    ``L = (1/D) Σ_i mean_{c,x} |u_c[x + e_i] - u_c[x]|`` per example, ``[B]``; with
    ``mask`` (``[B, *S]`` / ``[B, *S, 1]``) each axis mean is weighted by ``m[x] m[x + e_i]``
    (see :func:`diffusion`).

    Example:
      >>> gradient_l1(jnp.zeros((2, 4, 4, 2))).shape
      (2,)
    """
    return diffusion(disp, spacing=spacing, scheme="forward", penalty="l1", mask=mask)


def huber_smoothness(
    disp: jnp.ndarray,
    *,
    delta: float = 0.1,
    spacing: SpacingLike = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Huber (smooth-L1) penalty on forward differences: robust, edge-preserving smoothness.

    .. math::

        \\rho_\\delta(g) = \\begin{cases} g^2 / 2 & |g| \\le \\delta \\\\
            \\delta (|g| - \\delta / 2) & |g| > \\delta \\end{cases},\\qquad
        L = \\frac{1}{D} \\sum_i \\operatorname{mean}_{c,x} \\rho_\\delta(\\Delta_i u_c)

    with the same forward differences and averaging as :func:`diffusion` (``scheme="forward"``):
    quadratic for small gradients, linear above ``delta`` so that sliding / discontinuous
    motion is penalised less than by the L2 diffusion term. ``ρ`` is the Huber function of
    ``optax.huber_loss`` (= ``delta`` × PyTorch's ``smooth_l1_loss`` with ``beta = delta``).

    Args:
      disp: ``[B, *S, D]`` displacement field in voxels.
      delta: transition point on the (dimensionless) displacement gradient; the default 0.1
        treats strains above 10 % linearly.
      spacing: voxel size in mm (physical displacement gradient), or ``None``.
      mask: optional ``[B, *S]`` / ``[B, *S, 1]`` weights in ``[0, 1]``: the differences along
        axis ``i`` are weighted by ``m[x] m[x + e_i]``, as in :func:`diffusion`
        (``scheme="forward"``).

    Returns:
      ``[B]``.

    Example:
      >>> huber_smoothness(jnp.zeros((2, 4, 4, 2)))
      Array([0., 0.], dtype=float32)

    Reference:
      Huber, "Robust estimation of a location parameter", Ann. Math. Stat. 1964.
    """
    disp = _as_field(disp)
    ndim = disp.ndim - 2
    _check_min_size(disp, 2, "huber_smoothness")
    h = _units(disp, spacing, False)
    u = _to_units(disp, h)
    mask = _field_mask(mask, disp)
    total = 0.0
    for i in range(ndim):
        d = _forward_diff(u, i)
        if h is not None:
            d = d / h[i]
        a = jnp.abs(d)
        rho = jnp.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        total = total + masked_mean(rho, _forward_weight(mask, i))
    return total / ndim


def jacobian_folding(
    disp: jnp.ndarray,
    *,
    spacing: SpacingLike = None,
    eps: float = 0.0,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Folding penalty: mean of ``relu(eps - J)`` over voxels, ``J = det(I + ∇u)``.

    .. math:: L = \\operatorname{mean}_x \\max(0,\\ \\varepsilon - J(x))

    ``J`` comes from :func:`jrs_jax.spatial.fields.jacobian_determinant` (central differences
    in the interior, one-sided at the borders), so every voxel counts. With the default
    ``eps = 0`` only folded voxels (``J < 0``) are penalised, linearly in the depth of the fold;
    ``eps > 0`` also pushes strongly compressed voxels (``0 <= J < eps``) towards ``J >= eps``.
    A fold-free field gives exactly 0. ``J`` is a local volume ratio, so the value is
    dimensionless.

    ``spacing`` is accepted for symmetry with the other regularisers but cannot change the
    result: the displacement is in voxels, and converting both it and the coordinates to mm
    leaves the determinant unchanged (``det(I + H G H⁻¹) = det(I + G)``, ``H = diag(spacing)``).

    Args:
      disp: ``[B, *S, D]`` displacement field in voxels.
      spacing: voxel size in mm (validated; no effect, see above).
      eps: margin; penalise ``J < eps``.
      mask: optional ``[B, *S]`` / ``[B, *S, 1]`` weights in ``[0, 1]`` (module docstring):
        ``relu(eps - J(x))`` is weighted by ``m[x] Π_i m[x - e_i] m[x + e_i]``, the voxel and
        every neighbour its determinant reads, where a neighbour past the image border is
        replaced by ``x`` itself (the one-sided border difference reads ``x``), so every weight
        has ``2D + 1`` factors. For a box mask this is the mean over the box less its faces
        inside the image (faces on the image border are kept) of the full field's ``J`` —
        not the loss of the cropped field, whose border determinants are one-sided.

    Returns:
      ``[B]``.

    Example:
      >>> jacobian_folding(jnp.zeros((2, 4, 4, 2)))
      Array([0., 0.], dtype=float32)

    Reference:
      Mok & Chung, "Fast symmetric diffeomorphic image registration with convolutional neural
      networks", CVPR 2020 (negative-Jacobian penalty).
    """
    disp = _as_field(disp)
    _units(disp, spacing, False)  # validate only: the determinant is spacing-invariant
    mask = _field_mask(mask, disp)
    jac = jacobian_determinant(disp)
    ndim = disp.ndim - 2
    taps = [_tap(ndim, {})] + [_tap(ndim, {i: o}) for i in range(ndim) for o in (1, -1)]
    weight = _weight(mask, taps, edge=True)
    return masked_mean(jax.nn.relu(eps - jac), None if weight is None else weight[..., 0])


def _degree(shape: tuple[int, ...]) -> np.ndarray:
    """Number of face neighbours inside the grid for every voxel of ``shape`` (static)."""
    deg = np.zeros(shape, dtype=np.float64)
    for i, n in enumerate(shape):
        per_axis = np.full(n, 2.0)
        per_axis[0] -= 1.0
        per_axis[-1] -= 1.0
        expand = [1] * len(shape)
        expand[i] = n
        deg = deg + per_axis.reshape(expand)
    return deg


def _support_degree(mask: jnp.ndarray) -> jnp.ndarray:
    """Number of face neighbours inside the grid where ``mask > 0``, ``[B, *S, 1]``."""
    ndim = mask.ndim - 2
    support = jnp.pad((mask > 0).astype(mask.dtype), [(0, 0)] + [(1, 1)] * ndim + [(0, 0)])
    return sum(_window(support, {i: o}, 1) for i in range(ndim) for o in (1, -1))


def velocity_kl(
    mean: jnp.ndarray,
    log_var: jnp.ndarray,
    *,
    prior_lambda: float = 10.0,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """KL term of probabilistic diffeomorphic VoxelMorph (Dalca et al. 2018/2019).

    The encoder predicts a diagonal Gaussian ``q(v) = N(μ, diag σ²)`` over the stationary
    velocity field; the prior is ``N(0, Λ⁻¹)`` with precision ``Λ = λ L``, ``L = 𝐃 − A`` the
    Laplacian of the voxel grid graph (``𝐃`` the degree matrix: the number of in-grid face
    neighbours of each voxel, ``2D`` in the interior, fewer at the borders). Up to an additive
    constant,

    .. math::

        \\mathrm{KL} = \\frac{D}{2}\\Big[\\operatorname{mean}_{c,x}\\big(\\lambda\\,𝐃(x)\\,
            \\sigma_c^2(x) - \\log\\sigma_c^2(x)\\big)
            + \\lambda\\,\\frac{1}{2D}\\sum_i \\operatorname{mean}_{c,x}
            (\\mu_c[x + e_i] - \\mu_c[x])^2\\Big]

    (the last term is ``μᵀ L μ`` written with neighbour differences), exactly VoxelMorph's
    ``losses.KL(prior_lambda).loss`` with the network's "log sigma" output being
    ``log σ²`` (a log-variance), evaluated per example. The matching reconstruction term in
    VoxelMorph is ``MSE(image_sigma).loss = mean((f - m∘φ)²) / image_sigma²`` with
    ``image_sigma = 0.02`` recommended for this model, ``prior_lambda = 10`` and both terms
    weighted 1 (``--use-probs``); ``prior_lambda`` is then the inverse prior variance of the
    velocity differences in voxel units.

    Args:
      mean: ``[B, *S, D]`` velocity mean ``μ`` (voxels).
      log_var: ``[B, *S, D]`` log-variance ``log σ²``.
      prior_lambda: prior precision ``λ`` (VoxelMorph default 10).
      mask: optional ``[B, *S]`` / ``[B, *S, 1]`` weights in ``[0, 1]`` (module docstring): the
        prior becomes the Laplacian prior of the grid graph restricted to the mask's support
        ``m > 0`` (``𝐃(x)`` counts the neighbours inside the support), the σ term is averaged
        with weights ``m(x)`` and each axis of the precision term with ``m[x] m[x + e_i]``.
        A box mask gives the unmasked KL of the fields cropped to the box; a soft mask that is
        nowhere 0 keeps the full grid's degrees and only weights the averages.

    Returns:
      ``[B]``.

    Example:
      >>> mu = jnp.zeros((1, 4, 4, 2))
      >>> velocity_kl(mu, jnp.zeros_like(mu)).shape
      (1,)

    Reference:
      Dalca, Balakrishnan, Guttag, Sabuncu, "Unsupervised learning of probabilistic
      diffeomorphic registration for images and surfaces", MedIA 2019 (MICCAI 2018).
    """
    mean = _as_field(mean, name="mean")
    log_var = jnp.asarray(log_var).astype(mean.dtype)
    if log_var.shape != mean.shape:
        raise ValueError(
            f"log_var must have the shape of mean {tuple(mean.shape)}; got {tuple(log_var.shape)}"
        )
    ndim = mean.ndim - 2
    _check_min_size(mean, 2, "velocity_kl")
    mask = _field_mask(mask, mean)
    if mask is None:
        deg = jnp.asarray(_degree(tuple(mean.shape[1:-1]))[None, ..., None], dtype=mean.dtype)
    else:
        deg = _support_degree(mask)
    sigma_term = masked_mean(prior_lambda * deg * jnp.exp(log_var) - log_var, mask)
    prec = 0.0
    for i in range(ndim):
        d = _forward_diff(mean, i)
        prec = prec + masked_mean(d * d, _forward_weight(mask, i))
    prec = 0.5 * prec / ndim
    return 0.5 * ndim * (sigma_term + prior_lambda * prec)
