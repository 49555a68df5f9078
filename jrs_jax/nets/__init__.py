"""Flax Linen networks for joint registration and segmentation (2-D and 3-D).

Contract: every network is a stateless ``flax.linen`` module (no BatchNorm, no mutable
collections); the rest of the library only uses ::

    params = net.init(key, *inputs)
    outputs = net.apply(params, *inputs)                 # + rngs={"sample": k} where noted
    outputs = net.apply(params, *inputs, rngs={"dropout": k})   # dropout_rate > 0: active

Images are ``[B, *S, C]`` channels last with 2 or 3 spatial axes (the rank is read from the
input); fields are ``[B, *S, D]`` in voxels along array axes (see :mod:`jrs_jax.spatial`).
Hyper-parameters are keyword-only dataclass fields. ``dtype`` sets the compute dtype (e.g.
``jnp.bfloat16``); parameters and the output heads stay float32. ``remat=True`` wraps each
U-Net level in ``nn.remat`` (same outputs, less activation memory).

Example::

    >>> import jax, jax.numpy as jnp
    >>> from jrs_jax.nets import RegistrationNet
    >>> from jrs_jax.spatial import warp
    >>> net = RegistrationNet(features=(8, 16, 16), output="velocity")
    >>> moving = fixed = jnp.zeros((1, 16, 16, 1))
    >>> params = net.init(jax.random.key(0), moving, fixed)
    >>> out = jax.jit(net.apply)(params, moving, fixed)
    >>> warp(moving, out["disp"]).shape
    (1, 16, 16, 1)

Networks: :class:`UNet`, :class:`RegistrationNet` (VoxelMorph, Balakrishnan et al. 2019),
:class:`ProbabilisticRegistrationNet` (Dalca et al. 2019), :class:`RegionRegistrationNets`
(one per region, stacked parameters, DDIR Chen et al. 2021), :class:`AffineRegistrationNet`,
:class:`SegmentationNet`, :class:`PatchDiscriminator` (PatchGAN, Isola et al. 2017),
:class:`PixelDiscriminator` (full-resolution per-voxel logits, DeepRS He et al. 2020),
:class:`ImageGenerator` (U-Net image-to-image generator for modality synthesis, pix2pix /
CycleGAN style), :class:`SharedEncoderMultiDecoder` (one encoder, one U-Net decoder per task),
:class:`MultiHeadUNet` (one U-Net shared by every task, a head per output, Li et al. 2019),
:class:`MotionSegNet` (shared encoder, segmentation and motion branches over a sequence, a
ConvGRU along time, Qin et al. 2018),
:class:`CrossStitchNet` (two U-Net paths stitched after every level, Beljaards et al. 2020).

Multi-task and recurrent blocks: :class:`CrossStitch` (Misra et al. 2016),
:class:`GatedCoAttention` (voxel-wise gated exchange between two streams),
:class:`AffinityCoAttention` (global affinity co-attention of SDDIR, Chen et al. 2022) and
:class:`CoSegmentationNet` (both images segmented through it), :class:`Decoder` (U-Net
decoder on a skip list),
:class:`ConvGRUCell` / :class:`ConvGRU` (convolutional GRU, Ballas et al. 2016).
"""

from .blocks import (
    DOWNSAMPLE_MODES,
    NORM_KINDS,
    UPSAMPLE_MODES,
    ConvBlock,
    Down,
    Up,
    leaky_relu,
    norm_layer,
)
from .discriminator import PatchDiscriminator, PixelDiscriminator
from .generator import OUTPUT_ACTIVATIONS, ImageGenerator
from .motion import MotionSegNet
from .multitask import (
    STITCH_MODES,
    AffinityCoAttention,
    CoSegmentationNet,
    CrossStitch,
    CrossStitchNet,
    Decoder,
    GatedCoAttention,
    MultiHeadUNet,
    SharedEncoderMultiDecoder,
)
from .recurrent import ConvGRU, ConvGRUCell
from .registration import (
    OUTPUT_KINDS,
    AffineHead,
    AffineRegistrationNet,
    ProbabilisticRegistrationNet,
    RegionRegistrationNets,
    RegistrationNet,
)
from .segmentation import SegmentationNet
from .unet import Encoder, UNet

__all__ = [
    "DOWNSAMPLE_MODES",
    "NORM_KINDS",
    "OUTPUT_ACTIVATIONS",
    "OUTPUT_KINDS",
    "STITCH_MODES",
    "UPSAMPLE_MODES",
    "AffineHead",
    "AffineRegistrationNet",
    "AffinityCoAttention",
    "CoSegmentationNet",
    "ConvBlock",
    "ConvGRU",
    "ConvGRUCell",
    "CrossStitch",
    "CrossStitchNet",
    "Decoder",
    "Down",
    "Encoder",
    "GatedCoAttention",
    "ImageGenerator",
    "MotionSegNet",
    "MultiHeadUNet",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "ProbabilisticRegistrationNet",
    "RegionRegistrationNets",
    "RegistrationNet",
    "SegmentationNet",
    "SharedEncoderMultiDecoder",
    "UNet",
    "Up",
    "leaky_relu",
    "norm_layer",
]
