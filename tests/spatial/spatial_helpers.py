"""Shared helpers for the spatial tests: jitted wrappers (one compile per configuration),
independent numpy/scipy references and small deterministic inputs.

Imported by basename (``from spatial_helpers import ...``): pytest's default "prepend" import
mode puts ``tests/spatial`` on ``sys.path`` because the folder has no ``__init__.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage as ndi

from jrs_jax import spatial as sp

SHAPES = {2: (12, 15), 3: (8, 9, 10)}

# padding -> (scipy map_coordinates mode, cval)
SCIPY_PADDING = {
    "border": ("nearest", 0.0),
    "zeros": ("grid-constant", 0.0),
    "constant": ("grid-constant", 2.5),
}
CVAL = {"border": 0.0, "zeros": 0.0, "constant": 2.5}

# ---------------------------------------------------------------- jitted wrappers
warp_j = jax.jit(sp.warp, static_argnames=("order", "padding", "cval", "autodiff"))
sample_j = jax.jit(sp.sample, static_argnames=("order", "padding", "cval", "autodiff"))
warp_labels_j = jax.jit(sp.warp_labels, static_argnames=("num_classes", "mode", "padding"))
compose_j = jax.jit(sp.compose)
integrate_j = jax.jit(sp.integrate_velocity, static_argnames=("steps",))
invert_j = jax.jit(sp.invert_displacement, static_argnames=("iterations",))
jacdet_j = jax.jit(sp.jacobian_determinant, static_argnames=("spacing",))
dispgrad_j = jax.jit(sp.displacement_gradient, static_argnames=("spacing",))
resize_j = jax.jit(sp.resize_field, static_argnames=("shape",))
affine_j = jax.jit(sp.affine_to_displacement, static_argnames=("shape",))
box_j = jax.jit(sp.box_filter, static_argnames=("size", "normalize", "padding"))
gauss_j = jax.jit(sp.gaussian_filter, static_argnames=("sigma", "truncate", "padding"))
filter1d_j = jax.jit(sp.filter_1d, static_argnames=("taps", "axis", "padding"))
rand_vel_j = jax.jit(
    sp.random_velocity,
    static_argnames=("shape", "batch_size", "amplitude", "control_spacing", "dtype"),
)
rand_disp_j = jax.jit(
    sp.random_displacement,
    static_argnames=(
        "shape",
        "batch_size",
        "amplitude",
        "control_spacing",
        "diffeomorphic",
        "steps",
        "dtype",
    ),
)


# ---------------------------------------------------------------- inputs
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def np_grid(shape) -> np.ndarray:
    """``[*S, D]`` voxel coordinates, built with numpy (independent of ``identity_grid``)."""
    return np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1
    )


def random_image(seed: int, shape, *, batch: int = 2, channels: int = 1) -> np.ndarray:
    return rng(seed).normal(size=(batch, *shape, channels)).astype(np.float32)


def smooth_image(shape, *, batch: int = 2, channels: int = 1, phase: float = 0.3) -> np.ndarray:
    """A smooth, non-separable, non-linear test image ``[B, *S, C]`` (float32)."""
    g = np_grid(shape)
    base = np.sin(0.35 * g[..., 0] + phase) * np.cos(0.3 * g[..., 1])
    if len(shape) == 3:
        base = base + 0.5 * np.sin(0.3 * g[..., 2] + 0.2 * g[..., 0])
    chans = [base * (1.0 + 0.5 * c) + 0.1 * c for c in range(channels)]
    img = np.stack(chans, axis=-1)
    return np.broadcast_to(img, (batch, *img.shape)).astype(np.float32).copy()


def warp_(img, disp, *, order=1, padding="border", cval=0.0, autodiff=False):
    """``warp_j`` with every static argument always passed (one jit cache entry per config)."""
    return warp_j(img, disp, order=order, padding=padding, cval=float(cval), autodiff=autodiff)


def smooth_velocity(
    seed: int, shape, *, batch: int = 2, amplitude: float = 1.0, control_spacing: int = 8
):
    """``amplitude * random_velocity(amplitude=1)``: the jitted generator is compiled once per
    (shape, control_spacing), whatever the amplitude."""
    v = rand_vel_j(
        jax.random.PRNGKey(seed),
        tuple(shape),
        batch_size=batch,
        amplitude=1.0,
        control_spacing=control_spacing,
    )
    return v * jnp.float32(amplitude)


def smooth_field(
    seed: int,
    shape,
    *,
    batch: int = 2,
    amplitude: float = 1.0,
    control_spacing: int = 8,
    diffeomorphic: bool = False,
) -> jnp.ndarray:
    """A smooth displacement ``[B, *S, D]`` (float32); exp of a velocity if ``diffeomorphic``."""
    v = smooth_velocity(
        seed, shape, batch=batch, amplitude=amplitude, control_spacing=control_spacing
    )
    return integrate_j(v, steps=7) if diffeomorphic else v


def inside_mask(coords: np.ndarray, shape, margin: float = 0.0) -> np.ndarray:
    """``[..., D]`` coordinates -> bool ``[...]``: all components within ``[m, n - 1 - m]``."""
    hi = np.asarray(shape, dtype=np.float64) - 1.0 - margin
    return np.all((coords >= margin) & (coords <= hi), axis=-1)


# ---------------------------------------------------------------- references
def map_coordinates_ref(
    image: np.ndarray, coords: np.ndarray, *, order: int, mode: str, cval: float = 0.0
) -> np.ndarray:
    """scipy reference: ``image [B, *S, C]``, ``coords [B, *So, D]`` -> ``[B, *So, C]``."""
    image = np.asarray(image, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    coords = np.broadcast_to(coords, (image.shape[0], *coords.shape[1:]))
    out = np.empty((*coords.shape[:-1], image.shape[-1]))
    for b in range(image.shape[0]):
        c = np.moveaxis(coords[b], -1, 0)
        for ch in range(image.shape[-1]):
            out[b, ..., ch] = ndi.map_coordinates(
                image[b, ..., ch], c, order=order, mode=mode, cval=cval
            )
    return out


def np_jacobian_det(disp: np.ndarray, spacing=None) -> np.ndarray:
    """``det(I + grad u)`` from ``np.gradient`` (central inside, one-sided at the borders)."""
    disp = np.asarray(disp, dtype=np.float64)
    ndim = disp.shape[-1]
    spacing = (1.0,) * ndim if spacing is None else spacing
    out = np.empty(disp.shape[:-1])
    for b in range(disp.shape[0]):
        jac = np.empty((*disp.shape[1:-1], ndim, ndim))
        for k in range(ndim):
            grads = np.gradient(disp[b, ..., k], *spacing)
            for ell in range(ndim):
                jac[..., k, ell] = grads[ell]
        out[b] = np.linalg.det(jac + np.eye(ndim))
    return out


def random_affine(seed: int, ndim: int, *, scale: float = 0.1, shift: float = 1.0) -> np.ndarray:
    """Homogeneous ``[D+1, D+1]`` matrix with ``A`` near the identity."""
    r = rng(seed)
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] += scale * r.normal(size=(ndim, ndim))
    m[:ndim, ndim] = shift * r.normal(size=ndim)
    return m


def pad_value(padding: str):
    """np.pad kwargs that extend an image like ``padding`` does."""
    if padding == "border":
        return {"mode": "edge"}
    return {"mode": "constant", "constant_values": CVAL[padding]}


@functools.cache
def ij_forward_difference_axes(ndim: int) -> tuple[tuple[slice, ...], ...]:
    """Slices selecting ``x + e_k`` from an array padded by one after each spatial axis."""
    out = []
    for k in range(ndim):
        sl = [slice(None)]
        for d in range(ndim):
            sl.append(slice(1, None) if d == k else slice(0, -1))
        sl.append(slice(None))
        out.append(tuple(sl))
    return tuple(out)


def forward_difference(image: np.ndarray, padding: str) -> np.ndarray:
    """``I[x + e_k] - I[x]`` for each axis k, with the out-of-range tap given by ``padding``.

    ``image [B, *S, C]`` -> ``[B, *S, C, D]``.
    """
    image = np.asarray(image, dtype=np.float64)
    ndim = image.ndim - 2
    padded = np.pad(image, [(0, 0)] + [(0, 1)] * ndim + [(0, 0)], **pad_value(padding))
    return np.stack([padded[sl] - image for sl in ij_forward_difference_axes(ndim)], axis=-1)
