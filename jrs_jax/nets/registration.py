"""Registration networks: dense (VoxelMorph), probabilistic diffeomorphic, and affine.

All networks take ``moving, fixed`` images ``[B, *S, C]`` (channels last, 2-D or 3-D) and
return fields in the library's convention: ``[B, *S, D]`` in voxels along array axes, used
as ``warp(moving, out["disp"])`` (pull-back, see :mod:`jrs_jax.spatial`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..spatial import affine_to_displacement, integrate_velocity, resize_field
from ._config import concat_inputs
from .blocks import Conv, spatial_rank
from .unet import EncoderConfig, UNetConfig

__all__ = [
    "OUTPUT_KINDS",
    "AffineHead",
    "AffineRegistrationNet",
    "ProbabilisticRegistrationNet",
    "RegionRegistrationNets",
    "RegistrationNet",
]

OUTPUT_KINDS = ("displacement", "velocity")


def _flow_conv(
    ndim: int, std: float, zero: bool, name: str, bias: float = 0.0, conv_impl: str = "auto"
) -> Conv:
    """Conv ``3^D`` -> ``D`` channels in float32 with kernel ``N(0, std^2)`` (or zeros)."""
    kernel_init = nn.initializers.zeros if zero or std == 0 else nn.initializers.normal(std)
    return Conv(
        features=ndim,
        kernel_size=3,
        conv_impl=conv_impl,
        kernel_init=kernel_init,
        bias_init=nn.initializers.constant(bias),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        name=name,
    )


def _integrate(velocity: jnp.ndarray, steps: int, int_downsize: int) -> jnp.ndarray:
    """Scaling and squaring, optionally on a grid downsized by ``int_downsize``."""
    factor = int(int_downsize)
    if factor < 1:
        raise ValueError(f"int_downsize must be an integer >= 1, got {int_downsize}")
    if factor == 1:
        return integrate_velocity(velocity, steps=steps)
    full = velocity.shape[1:-1]
    small = tuple(max(n // factor, 2) for n in full)
    disp = integrate_velocity(resize_field(velocity, small), steps=steps)
    return resize_field(disp, full)


class RegistrationNet(UNetConfig, kw_only=True):
    """VoxelMorph: U-Net on ``concat(moving, fixed[, extra])`` -> conv head -> field.

    The flow head is a conv ``3^D`` with ``D`` outputs, computed in float32, kernel
    ``N(0, head_init_std^2)`` (VoxelMorph's 1e-5) and zero bias, so the initial field is tiny
    but the gradient reaches every layer; ``zero_head=True`` zero-initialises the kernel
    (exact identity at init; the head kernel still receives a gradient because the sampler's
    derivative at integer positions is a finite difference). With ``output="velocity"`` the
    head predicts a stationary velocity integrated by scaling and squaring
    (:func:`jrs_jax.spatial.integrate_velocity`, ``integration_steps`` squarings), at
    ``1 / int_downsize`` resolution when ``int_downsize > 1`` (then resized back with
    :func:`jrs_jax.spatial.resize_field`).

    Shapes: ``moving [B, *S, Cm], fixed [B, *S, Cf], extra [B, *S, Ce] | None`` -> dict
    ``{"disp": [B, *S, D]}`` plus ``"velocity": [B, *S, D]`` (full resolution) for
    ``output="velocity"``. ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = RegistrationNet(features=(8, 16), output="velocity")
      >>> m = f = jnp.zeros((1, 16, 16, 1))
      >>> params = net.init(jax.random.key(0), m, f)
      >>> out = net.apply(params, m, f)
      >>> out["disp"].shape, out["velocity"].shape
      ((1, 16, 16, 2), (1, 16, 16, 2))

    Reference: Balakrishnan et al., "VoxelMorph: A Learning Framework for Deformable Medical
    Image Registration", IEEE TMI 2019; Dalca et al., MICCAI 2018 / MedIA 2019 (diffeomorphic
    velocity integration).
    """

    output: str = "displacement"
    integration_steps: int = 7
    int_downsize: int = 1
    head_init_std: float = 1e-5
    zero_head: bool = False

    @nn.compact
    def __call__(
        self, moving: jnp.ndarray, fixed: jnp.ndarray, extra: jnp.ndarray | None = None
    ) -> dict[str, jnp.ndarray]:
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output={self.output!r} is not one of {OUTPUT_KINDS}")
        x, ndim = concat_inputs(moving, fixed, extra, names=("moving", "fixed", "extra"))
        feats = self.make_unet()(x)
        flow = _flow_conv(
            ndim, self.head_init_std, self.zero_head, "flow", conv_impl=self.conv_impl
        )(feats.astype(jnp.float32))
        if self.output == "displacement":
            return {"disp": flow}
        disp = _integrate(flow, self.integration_steps, self.int_downsize)
        return {"disp": disp, "velocity": flow}


class ProbabilisticRegistrationNet(UNetConfig, kw_only=True):
    """Probabilistic diffeomorphic VoxelMorph: Gaussian velocity, sampled and integrated.

    Two float32 conv ``3^D`` heads on the U-Net features: the mean (kernel
    ``N(0, head_init_std^2)``, zero bias) and the log-variance (kernel
    ``N(0, logvar_init_std^2)`` ~ 0, bias ``logvar_init_bias = -10``). With ``sample=True``
    and an rng named ``"sample"`` (``apply(..., rngs={"sample": key})``) the velocity is
    ``v = mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)``; otherwise ``v = mean``
    (deterministic, for evaluation). ``v`` is integrated as in :class:`RegistrationNet`.
    ``mean`` and ``log_var`` feed the KL term of Dalca et al.

    Shapes: ``moving, fixed[, extra]`` ``[B, *S, C*]`` -> dict with ``"disp"``,
    ``"velocity"``, ``"mean"``, ``"log_var"``, each ``[B, *S, D]``.

    Example:
      >>> net = ProbabilisticRegistrationNet(features=(8, 16))
      >>> m = f = jnp.zeros((1, 16, 16, 1))
      >>> params = net.init(jax.random.key(0), m, f)
      >>> out = net.apply(params, m, f, rngs={"sample": jax.random.key(1)})
      >>> sorted(out)
      ['disp', 'log_var', 'mean', 'velocity']

    Reference: Dalca, Balakrishnan, Guttag, Sabuncu, "Unsupervised Learning of Probabilistic
    Diffeomorphic Registration for Images and Surfaces", MedIA 2019.
    """

    integration_steps: int = 7
    int_downsize: int = 1
    head_init_std: float = 1e-5
    logvar_init_std: float = 1e-10
    logvar_init_bias: float = -10.0

    @nn.compact
    def __call__(
        self,
        moving: jnp.ndarray,
        fixed: jnp.ndarray,
        extra: jnp.ndarray | None = None,
        *,
        sample: bool = True,
    ) -> dict[str, jnp.ndarray]:
        x, ndim = concat_inputs(moving, fixed, extra, names=("moving", "fixed", "extra"))
        feats = self.make_unet()(x).astype(jnp.float32)
        mean = _flow_conv(ndim, self.head_init_std, False, "mean", conv_impl=self.conv_impl)(feats)
        log_var = _flow_conv(
            ndim,
            self.logvar_init_std,
            False,
            "log_var",
            bias=self.logvar_init_bias,
            conv_impl=self.conv_impl,
        )(feats)
        if sample and self.has_rng("sample"):
            eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
            velocity = mean + jnp.exp(0.5 * log_var) * eps
        else:
            velocity = mean
        disp = _integrate(velocity, self.integration_steps, self.int_downsize)
        return {"disp": disp, "velocity": velocity, "mean": mean, "log_var": log_var}


class RegionRegistrationNets(ProbabilisticRegistrationNet, kw_only=True):
    """``num_regions`` probabilistic registration networks, one per region, as one module.

    :class:`ProbabilisticRegistrationNet` lifted with ``flax.linen.vmap`` over a leading
    region axis: every parameter gets a leading axis of size ``K = num_regions`` (independent
    initialisation per region), the ``"sample"`` rng is split per region, and the whole stack
    compiles once whatever ``K``. Batched kernels turn native convolutions into grouped ones,
    whose backward pass XLA-CPU runs ~10x slower than ``K`` separate convolutions, so
    ``conv_impl="auto"`` means ``"im2col"`` (batched matmuls) on the CPU and ``"native"``
    elsewhere; the parameters do not depend on it. As for the single network, the velocity is
    sampled only when ``apply`` gets a ``"sample"`` rng (otherwise it is the mean). The
    fields of the :class:`ProbabilisticRegistrationNet` (U-Net widths, ``int_downsize``, head
    inits) apply to every region.

    Shapes: ``moving, fixed [K, B, *S, C]`` (region ``k``'s inputs, e.g. the images masked by
    region ``k``) -> dict of ``[K, B, *S, D]``: ``"disp"``, ``"velocity"``, ``"mean"``,
    ``"log_var"`` (region ``k``'s outputs at index ``k``).

    Example:
      >>> net = RegionRegistrationNets(num_regions=3, features=(4, 8))
      >>> m = f = jnp.zeros((3, 1, 16, 16, 1))
      >>> params = net.init(jax.random.key(0), m, f)
      >>> params["params"]["nets"]["mean"]["kernel"].shape
      (3, 3, 3, 4, 2)
      >>> net.apply(params, m, f)["disp"].shape
      (3, 1, 16, 16, 2)

    Reference: Chen, Xia, Ravikumar, Frangi, "A Deep Discontinuity-Preserving Image
    Registration Network", MICCAI 2021 (one probabilistic U-Net per region).
    """

    num_regions: int = 2

    @nn.compact
    def __call__(self, moving: jnp.ndarray, fixed: jnp.ndarray) -> dict[str, jnp.ndarray]:
        k = int(self.num_regions)
        if k < 1:
            raise ValueError(f"num_regions must be >= 1, got {self.num_regions}")
        for x, what in ((moving, "moving"), (fixed, "fixed")):
            if x.ndim not in (5, 6) or x.shape[0] != k:
                raise ValueError(
                    f"RegionRegistrationNets needs {what} of shape [K={k}, B, *S, C] with 2 or 3 "
                    f"spatial axes; got {tuple(x.shape)}"
                )
        settings = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(ProbabilisticRegistrationNet)
            if f.name not in ("parent", "name")
        }
        if self.conv_impl == "auto":  # vmapped kernels: grouped convs, slow backward on CPU
            settings["conv_impl"] = "im2col" if jax.default_backend() == "cpu" else "native"
        stacked = nn.vmap(
            ProbabilisticRegistrationNet,
            variable_axes={"params": 0},
            split_rngs={"params": True, "sample": True},
            in_axes=(0, 0),
            out_axes=0,
            axis_size=k,
        )
        return stacked(**settings, name="nets")(moving, fixed)


class AffineHead(nn.Module, kw_only=True):
    """Global average pool -> dense to ``D x (D+1)``, zero-initialised, plus ``[I | 0]``.

    The matrix maps fixed voxels to moving voxels about the volume centre (the convention of
    :func:`jrs_jax.spatial.affine_to_displacement`); translation in voxels. The dense layer
    is zero-initialised, so the initial transform is exactly the identity; its gradient is
    non-zero (pooled features times the loss gradient).

    Shapes: ``[B, *S, F] -> [B, D, D+1]`` (float32).

    Example:
      >>> head = AffineHead()
      >>> feats = jnp.ones((2, 4, 4, 8))
      >>> head.apply(head.init(jax.random.key(0), feats), feats)[0]
      Array([[1., 0., 0.],
             [0., 1., 0.]], dtype=float32)
    """

    @nn.compact
    def __call__(self, feats: jnp.ndarray) -> jnp.ndarray:
        ndim = spatial_rank(feats, name="features")
        pooled = jnp.mean(feats.astype(jnp.float32), axis=tuple(range(1, ndim + 1)))
        delta = nn.Dense(
            ndim * (ndim + 1),
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="dense",
        )(pooled)
        identity = jnp.eye(ndim, ndim + 1, dtype=jnp.float32)
        return identity + delta.reshape(-1, ndim, ndim + 1)


class AffineRegistrationNet(EncoderConfig, kw_only=True):
    """Affine registration: U-Net encoder on ``concat(moving, fixed[, extra])`` -> AffineHead.

    Shapes: ``moving, fixed[, extra]`` ``[B, *S, C*]`` -> dict ``{"matrix": [B, D, D+1],
    "disp": [B, *S, D]}`` with ``disp = affine_to_displacement(matrix, S)``; identity (zero
    displacement) at initialisation. ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = AffineRegistrationNet(features=(8, 16))
      >>> m = f = jnp.zeros((1, 16, 16, 1))
      >>> out = net.apply(net.init(jax.random.key(0), m, f), m, f)
      >>> out["matrix"].shape, out["disp"].shape
      ((1, 2, 3), (1, 16, 16, 2))

    Reference: encoder as VoxelMorph (Balakrishnan et al., IEEE TMI 2019); affine head as in
    de Vos et al., "A deep learning framework for unsupervised affine and deformable image
    registration", MedIA 2019.
    """

    @nn.compact
    def __call__(
        self, moving: jnp.ndarray, fixed: jnp.ndarray, extra: jnp.ndarray | None = None
    ) -> dict[str, jnp.ndarray]:
        x, _ = concat_inputs(moving, fixed, extra, names=("moving", "fixed", "extra"))
        feats = self.make_encoder()(x)[-1]
        matrix = AffineHead(name="head")(feats)
        return {"matrix": matrix, "disp": affine_to_displacement(matrix, x.shape[1:-1])}
