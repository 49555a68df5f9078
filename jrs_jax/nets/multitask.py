"""Multi-task building blocks: cross-stitch units, co-attention, shared encoder + decoders.

These blocks exchange information between task streams (e.g. the registration and the
segmentation branch of a joint registration-segmentation network). All are stateless,
dimension-agnostic (``[B, *S, C]`` with 2 or 3 spatial axes) and take ``dtype`` (compute)
and ``param_dtype`` (float32 by default) like the rest of :mod:`jrs_jax.nets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ._config import concat_inputs
from .blocks import UPSAMPLE_MODES, Conv, Up, block_settings, spatial_rank
from .registration import _flow_conv
from .unet import UNetConfig, check_divisible

__all__ = [
    "STITCH_MODES",
    "AffinityCoAttention",
    "CoSegmentationNet",
    "CrossStitch",
    "CrossStitchNet",
    "Decoder",
    "GatedCoAttention",
    "MultiHeadUNet",
    "SharedEncoderMultiDecoder",
]

Dtype = Any


def _check_same_shape(maps: Sequence[jnp.ndarray], names: Sequence[str], what: str) -> int:
    ndim = spatial_rank(maps[0], name=names[0])
    for m, n in zip(maps[1:], names[1:]):
        spatial_rank(m, name=n)
    shapes = [tuple(m.shape) for m in maps]
    if any(s != shapes[0] for s in shapes[1:]):
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise ValueError(f"{what} needs feature maps of equal shape [B, *S, C]; got {listed}")
    return ndim


def _cross_stitch_init(n: int, self_weight: float):
    def init(key, shape, dtype=jnp.float32):
        del key
        off = (1.0 - self_weight) / (n - 1)
        eye = jnp.eye(n, dtype=dtype)[:, :, None]
        return jnp.broadcast_to(eye * self_weight + (1.0 - eye) * off, shape).astype(dtype)

    return init


class CrossStitch(nn.Module, kw_only=True):
    """Cross-stitch unit: learned per-channel linear mixing of ``n`` task feature maps.

    ``out_i = sum_j alpha[i, j, c] * x_j`` (per channel ``c``), with ``alpha`` of shape
    ``[n, n, C]`` (parameter ``"alpha"``) initialised to ``self_weight`` on the diagonal and
    ``(1 - self_weight) / (n - 1)`` off it, so each row sums to 1 at initialisation
    (``self_weight=1`` is the identity: no sharing). The paper's 0.9 / 0.1 is the default.
    ``per_channel=False`` learns one ``alpha`` per pair of maps, shape ``[n, n, 1]``
    (broadcast over the channels).

    Shapes: ``n >= 2`` maps, each ``[B, *S, C]`` (all the same shape) -> a tuple of ``n``
    maps ``[B, *S, C]`` in ``dtype``.

    Example:
      >>> unit = CrossStitch()
      >>> seg = jnp.ones((1, 8, 8, 4))
      >>> reg = jnp.zeros((1, 8, 8, 4))
      >>> params = unit.init(jax.random.key(0), seg, reg)
      >>> params["params"]["alpha"].shape
      (2, 2, 4)
      >>> out_seg, out_reg = unit.apply(params, seg, reg)
      >>> float(out_seg[0, 0, 0, 0]), float(out_reg[0, 0, 0, 0])
      (0.8999999761581421, 0.10000000149011612)

    Reference: Misra, Shrivastava, Gupta, Hebert, "Cross-stitch Networks for Multi-task
    Learning", CVPR 2016.
    """

    self_weight: float = 0.9
    per_channel: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, *maps: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
        n = len(maps)
        if n < 2:
            raise ValueError(f"CrossStitch needs at least 2 feature maps, got {n}")
        _check_same_shape(maps, [f"maps[{i}]" for i in range(n)], "CrossStitch")
        channels = maps[0].shape[-1]
        width = channels if self.per_channel else 1
        alpha = self.param(
            "alpha", _cross_stitch_init(n, self.self_weight), (n, n, width), self.param_dtype
        )
        alpha = jnp.broadcast_to(alpha, (n, n, channels))
        x = jnp.stack([m.astype(self.dtype) for m in maps], axis=0)
        out = jnp.einsum("ijc,j...c->i...c", alpha.astype(self.dtype), x)
        return tuple(out[i] for i in range(n))


class GatedCoAttention(nn.Module, kw_only=True):
    """Gated co-attention between two streams: each is gated by a map computed from both.

    A voxel-wise (local) exchange; for the global affinity co-attention of SDDIR, where every
    position attends to every position of the other image, see :class:`AffinityCoAttention`.

    With ``[.,.]`` the channel concatenation and ``conv`` a conv ``kernel^D`` (1 by default)::

        g_a = sigmoid(conv_a([b, a]))        # "gate_a", C_a channels (or 1)
        g_b = sigmoid(conv_b([a, b]))        # "gate_b", C_b channels (or 1)
        a'  = a * (1 + g_a)
        b'  = b * (1 + g_b)

    The residual form ``x * (1 + g)`` keeps the original features (a gate of 0 is the
    identity, so the block cannot shut a stream off) and lets each stream emphasise voxels /
    channels that the other stream flags, e.g. segmentation features highlighting the
    structures that the registration stream should align. ``per_channel=False`` uses a single
    spatial gate per stream (one output channel broadcast over the channels); ``conv_impl``
    as in :class:`blocks.Conv`. ``a`` and ``b``
    must agree on ``B`` and ``S``; their channel counts may differ.

    Shapes: ``a [B, *S, C_a], b [B, *S, C_b] -> (a' [B, *S, C_a], b' [B, *S, C_b])`` in
    ``dtype``.

    Example:
      >>> block = GatedCoAttention()
      >>> a = jnp.ones((1, 8, 8, 4))
      >>> b = jnp.ones((1, 8, 8, 6))
      >>> a2, b2 = block.apply(block.init(jax.random.key(0), a, b), a, b)
      >>> a2.shape, b2.shape
      ((1, 8, 8, 4), (1, 8, 8, 6))

    Reference: residual attention ``(1 + M(x)) * F(x)`` from Wang et al., "Residual
    Attention Network for Image Classification", CVPR 2017; co-attention (each modality
    attended using the other) from Lu et al., "Hierarchical Question-Image Co-Attention for
    Visual Question Answering", NeurIPS 2016.
    """

    per_channel: bool = True
    kernel: int = 1
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, a: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        spatial_rank(a, name="a")
        spatial_rank(b, name="b")
        if a.shape[:-1] != b.shape[:-1]:
            raise ValueError(
                "GatedCoAttention needs a and b with the same batch and spatial shape: got "
                f"a {tuple(a.shape)} vs b {tuple(b.shape)}"
            )
        a = a.astype(self.dtype)
        b = b.astype(self.dtype)

        def gate(other, own, name):
            out = own.shape[-1] if self.per_channel else 1
            z = Conv(
                features=out,
                kernel_size=self.kernel,
                conv_impl=self.conv_impl,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(jnp.concatenate([other, own], axis=-1))
            return jax.nn.sigmoid(z)

        g_a = gate(b, a, "gate_a")
        g_b = gate(a, b, "gate_b")
        return a * (1 + g_a), b * (1 + g_b)


class AffinityCoAttention(nn.Module, kw_only=True):
    """Affinity co-attention (SDDIR): every position of one image attends to every position of
    the other.

    With ``f, g, h1, h2`` 1x1(x1) convolutions (dense layers on the channel axis) to
    ``features`` channels (default: the input's ``C``) and the spatial positions flattened
    (``N = prod(S)``)::

        A       = f(F_mov) g(F_fix)^T                  # [B, N, N] affinity
        ATT_mov = softmax(A,   axis=-1) h2(F_fix)      # each moving position reads the fixed
        ATT_fix = softmax(A^T, axis=-1) h1(F_mov)      # ... and vice versa
        O_mov   = concat(F_mov, sigmoid(ATT_mov) * ATT_mov)
        O_fix   = concat(F_fix, sigmoid(ATT_fix) * ATT_fix)

    (the softmax runs over the attended positions, the usual reading of the source; no
    ``1/sqrt(features)`` temperature, as written there). ``A`` costs ``N^2`` floats per example,
    so the block belongs at the bottleneck. With a 4-level U-Net (bottleneck ``/8``) and 32
    channels, batch 1 (``benchmarks/coattention_memory.py``: one ``A`` / XLA's temporary
    memory of forward + backward): 64^3 -> ``N = 512``, 1 MiB / 5 MiB; 128x128x32 (the
    DDIR/SDDIR cardiac size) -> 1024, 4 / 21 MiB; 96x112x96 -> 2016, 16 / 79 MiB;
    160x192x224 -> 13440, 689 MiB / 4.1 GiB (there, one more level divides ``N`` by 8).

    Shapes: ``F_mov, F_fix [B, *S, C]`` (equal shapes) -> ``(O_mov, O_fix)``, each
    ``[B, *S, C + features]`` in ``dtype``.

    Example:
      >>> block = AffinityCoAttention(features=4)
      >>> a = b = jnp.ones((1, 4, 4, 8))
      >>> o_a, o_b = block.apply(block.init(jax.random.key(0), a, b), a, b)
      >>> o_a.shape, o_b.shape
      ((1, 4, 4, 12), (1, 4, 4, 12))

    Reference: Chen, Xia, Ravikumar, Frangi, "Joint segmentation and discontinuity-preserving
    deformable registration: application to cardiac cine-MR images", arXiv 2022 (co-attention
    after Lu et al., "See More, Know More: Unsupervised Video Object Segmentation with
    Co-Attention Siamese Networks", CVPR 2019).
    """

    features: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, moving: jnp.ndarray, fixed: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        _check_same_shape([moving, fixed], ["F_mov", "F_fix"], "AffinityCoAttention")
        b, c = moving.shape[0], moving.shape[-1]
        width = int(self.features or c)
        moving = moving.astype(self.dtype)
        fixed = fixed.astype(self.dtype)

        def proj(x, name):  # a 1x1(x1) convolution, flattened to [B, N, width]
            y = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
            return y.reshape(b, -1, width)

        affinity = jnp.einsum("bnc,bmc->bnm", proj(moving, "f"), proj(fixed, "g"))
        att_mov = jnp.einsum("bnm,bmc->bnc", jax.nn.softmax(affinity, -1), proj(fixed, "h2"))
        att_fix = jnp.einsum(
            "bmn,bnc->bmc", jax.nn.softmax(affinity.swapaxes(1, 2), -1), proj(moving, "h1")
        )

        def out(features, att):
            att = att.reshape(*features.shape[:-1], width)
            return jnp.concatenate([features, jax.nn.sigmoid(att) * att], axis=-1)

        return out(moving, att_mov), out(fixed, att_fix)


class CoSegmentationNet(UNetConfig, kw_only=True):
    """Joint segmentation of two images (SDDIR's segmentation branch).

    One U-Net :class:`~jrs_jax.nets.Encoder` applied to both images (shared weights), an
    :class:`AffinityCoAttention` between the two bottleneck feature maps (``co_attention=True``;
    ``False`` leaves them as they are: the ablation without co-attention), one shared
    :class:`Decoder` (widths from ``decoder_features`` as in :class:`~jrs_jax.nets.UNet`) and a
    float32 conv ``1^D`` head to ``num_classes`` logits. Parameters: ``encoder``,
    ``co_attention`` (when on), ``decoder``, ``head``.

    Shapes: ``moving, fixed [B, *S, C]`` -> ``(logits_moving, logits_fixed)``, each
    ``[B, *S, num_classes]`` (float32); ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = CoSegmentationNet(num_classes=3, features=(4, 8, 8))
      >>> m = f = jnp.zeros((1, 16, 16, 1))
      >>> lm, lf = net.apply(net.init(jax.random.key(0), m, f), m, f)
      >>> lm.shape, lf.shape
      ((1, 16, 16, 3), (1, 16, 16, 3))

    Reference: Chen et al., "Joint segmentation and discontinuity-preserving deformable
    registration: application to cardiac cine-MR images", arXiv 2022.
    """

    num_classes: int
    co_attention: bool = True
    attention_features: int | None = None

    @nn.compact
    def __call__(self, moving: jnp.ndarray, fixed: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        ndim = _check_same_shape([moving, fixed], ["moving", "fixed"], "CoSegmentationNet")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        encoder = self.make_encoder()
        skips_m, skips_f = encoder(moving), encoder(fixed)
        if self.co_attention:
            o_m, o_f = AffinityCoAttention(
                features=self.attention_features,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="co_attention",
            )(skips_m[-1], skips_f[-1])
            skips_m, skips_f = [*skips_m[:-1], o_m], [*skips_f[:-1], o_f]
        decoder = _decoder(self, *self.decoder_widths(), name="decoder")
        head = nn.Conv(
            self.num_classes,
            kernel_size=(1,) * ndim,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="head",
        )
        return tuple(head(decoder(s).astype(jnp.float32)) for s in (skips_m, skips_f))


class Decoder(nn.Module, kw_only=True):
    """U-Net decoder on an encoder's skip list (the decoder loop of :class:`UNet`).

    Stage ``j < len(features)``: upsample x2 to the next-finer skip (:class:`Up`, linear or
    transposed conv), concatenate it, :class:`ConvBlock` with ``features[j]`` and
    ``convs_per_level`` convs. Then one full-resolution :class:`ConvBlock` (one conv) per
    entry of ``final_features``. ``conv_impl`` picks the 3-D convolution algorithm (see
    :class:`blocks.Conv`; parameters do not depend on it). Submodules are named like
    :class:`UNet`'s (``up{j}``, ``dec{j}``, ``final{k}``), so a UNet's decoder parameters
    drive a Decoder unchanged. :meth:`stage` runs one stage, so several decoders can be
    stepped in lockstep (see :class:`SharedEncoderMultiDecoder`).

    Shapes: ``skips``: ``len(features) + 1`` maps, level ``i`` ``[B, *S / 2^i, F_i]`` (the
    output of :class:`Encoder`) -> ``[B, *S, widths[-1]]`` in ``dtype``.

    Example:
      >>> from jrs_jax.nets import Encoder
      >>> enc, dec = Encoder(features=(4, 8, 8)), Decoder(features=(8, 4), final_features=(3,))
      >>> x = jnp.zeros((1, 16, 16, 1))
      >>> skips = enc.apply(enc.init(jax.random.key(0), x), x)
      >>> dec.apply(dec.init(jax.random.key(1), skips), skips).shape
      (1, 16, 16, 3)

    Reference: Ronneberger et al., "U-Net", MICCAI 2015; Balakrishnan et al., "VoxelMorph",
    IEEE TMI 2019 (upsample + skip decoder, full-resolution final convs).
    """

    features: Sequence[int]
    final_features: Sequence[int] = ()
    convs_per_level: int = 1
    norm: str = "none"
    upsample: str = "linear"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @property
    def widths(self) -> tuple[int, ...]:
        """Output channels of every stage (levels, then final convs)."""
        return (*tuple(self.features), *tuple(self.final_features))

    def setup(self):
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r} is not one of {UPSAMPLE_MODES}")
        block_cls, common = block_settings(self)
        # setattr in setup registers the submodules under UNet's names (up{j}, dec{j}, ...)
        for j, f in enumerate(self.features):
            up = Up(features=f, mode=self.upsample, dtype=self.dtype, param_dtype=self.param_dtype)
            block = block_cls(features=f, num_convs=self.convs_per_level, **common)
            setattr(self, f"up{j}", up)
            setattr(self, f"dec{j}", block)
        for k, f in enumerate(self.final_features):
            setattr(self, f"final{k}", block_cls(features=f, num_convs=1, **common))

    def _check_skips(self, skips: Sequence[jnp.ndarray]) -> None:
        levels = len(self.features) + 1
        if len(skips) != levels:
            raise ValueError(
                f"Decoder with features={tuple(self.features)} needs {levels} skip maps "
                f"(one per encoder level); got {len(skips)} with shapes "
                f"{[tuple(s.shape) for s in skips]}"
            )
        for i, s in enumerate(skips):
            spatial_rank(s, name=f"skips[{i}]")

    def stage(self, j: int, y: jnp.ndarray, skips: Sequence[jnp.ndarray]) -> jnp.ndarray:
        """Run stage ``j`` on ``y`` (start with ``y = skips[-1]``)."""
        self._check_skips(skips)
        n = len(self.features)
        if not 0 <= j < len(self.widths):
            raise ValueError(f"stage index {j} out of range for {len(self.widths)} stages")
        if j < n:
            y = getattr(self, f"up{j}")(y, skips[n - 1 - j])
            return getattr(self, f"dec{j}")(y)
        return getattr(self, f"final{j - n}")(y)

    def __call__(self, skips: Sequence[jnp.ndarray]) -> jnp.ndarray:
        self._check_skips(skips)
        y = skips[-1]
        for j in range(len(self.widths)):
            y = self.stage(j, y, skips)
        return y


def _decoder(net: nn.Module, levels, finals, *, name: str) -> Decoder:
    """A :class:`Decoder` with the U-Net settings of ``net`` (a :class:`UNetConfig`)."""
    return Decoder(
        features=tuple(levels),
        final_features=tuple(finals),
        convs_per_level=net.convs_per_level,
        norm=net.norm,
        upsample=net.upsample,
        conv_impl=net.conv_impl,
        dtype=net.dtype,
        param_dtype=net.param_dtype,
        remat=net.remat,
        name=name,
    )


def _parse_heads(heads) -> list[tuple[str, int, tuple[int, ...] | None]]:
    parsed = []
    for h in heads:
        if not isinstance(h, (tuple, list)) or len(h) not in (2, 3):
            raise ValueError(
                f"each head must be (name, channels) or (name, channels, decoder_features); "
                f"got {h!r}"
            )
        name, channels = h[0], int(h[1])
        if not isinstance(name, str) or not name:
            raise ValueError(f"head names must be non-empty strings; got {name!r}")
        if channels < 1:
            raise ValueError(f"head {name!r} needs channels >= 1, got {channels}")
        dec = tuple(h[2]) if len(h) == 3 and h[2] is not None else None
        parsed.append((name, channels, dec))
    names = [p[0] for p in parsed]
    if not parsed:
        raise ValueError("heads must contain at least one (name, channels) entry")
    if len(set(names)) != len(names):
        raise ValueError(f"head names must be unique; got {names}")
    return parsed


class SharedEncoderMultiDecoder(UNetConfig, kw_only=True):
    """One shared :class:`Encoder`, one U-Net :class:`Decoder` + float32 head per task.

    ``heads`` lists ``(name, channels)`` or ``(name, channels, decoder_features)``; each head
    gets a decoder (``decoder_features`` per head, else the network's ``decoder_features``,
    else ``features[-2::-1]``; entries beyond ``len(features) - 1`` are full-resolution
    final convs, as in :class:`UNet`) and a conv ``1^D`` head computed in float32
    (lecun-normal kernel, or ``N(0, head_init_std^2)`` for the heads named in
    ``small_init_heads``; zero bias). Parameters: ``encoder``, ``decoder_{name}``,
    ``head_{name}`` and, with ``cross_stitch=True``, ``stitch{j}``.

    ``cross_stitch=True`` (needs >= 2 heads with equal decoder widths) steps the decoders
    in lockstep and mixes their outputs after every decoder stage with a
    :class:`CrossStitch` unit (``stitch_self_weight`` on the diagonal at initialisation).

    Shapes: ``images[i] [B, *S, C_i]`` (concatenated on channels) -> dict
    ``{name: [B, *S, channels]}`` (float32 logits / fields, no activation); ``S`` divisible
    by ``2^(len(features) - 1)``.

    Example:
      >>> net = SharedEncoderMultiDecoder(heads=(("seg", 3), ("flow", 2)), features=(8, 16))
      >>> moving = fixed = jnp.zeros((1, 16, 16, 1))
      >>> params = net.init(jax.random.key(0), moving, fixed)
      >>> out = net.apply(params, moving, fixed)
      >>> out["seg"].shape, out["flow"].shape
      ((1, 16, 16, 3), (1, 16, 16, 2))

    Reference: shared encoder with task decoders as in Estienne et al., "U-ReSNet: Ultimate
    Coupling of Registration and Segmentation with Deep Nets", MICCAI 2019; cross-stitch
    units from Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
    """

    heads: Sequence[tuple]
    cross_stitch: bool = False
    stitch_self_weight: float = 0.9
    #: heads whose kernel starts ``N(0, head_init_std^2)`` (a displacement head: training
    #: starts near the identity) instead of lecun-normal
    small_init_heads: Sequence[str] = ()
    head_init_std: float = 1e-5

    def _split(self, dec: tuple[int, ...], name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        levels = len(self.features)
        if len(dec) < levels - 1:
            raise ValueError(
                f"decoder_features of head {name!r} needs at least {levels - 1} entries for "
                f"{levels} encoder levels; got {dec}"
            )
        return dec[: levels - 1], dec[levels - 1 :]

    @nn.compact
    def __call__(self, *images: jnp.ndarray) -> dict[str, jnp.ndarray]:
        if not images:
            raise ValueError("SharedEncoderMultiDecoder needs at least one input image")
        heads = _parse_heads(self.heads)
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r} is not one of {UPSAMPLE_MODES}")
        default = (
            tuple(self.features[-2::-1])
            if self.decoder_features is None
            else tuple(self.decoder_features)
        )
        widths = {name: dec if dec is not None else default for name, _, dec in heads}
        if self.cross_stitch:
            if len(heads) < 2:
                raise ValueError("cross_stitch=True needs at least 2 heads")
            if len(set(widths.values())) != 1:
                raise ValueError(
                    f"cross_stitch=True needs equal decoder widths for all heads; got {widths}"
                )
        x, ndim = concat_inputs(*images, names=[f"images[{i}]" for i in range(len(images))])
        skips = self.make_encoder()(x)
        decoders = {}
        for name, _, _ in heads:
            levels, finals = self._split(widths[name], name)
            decoders[name] = _decoder(self, levels, finals, name=f"decoder_{name}")
        if self.cross_stitch:
            names = [name for name, _, _ in heads]
            ys = [skips[-1]] * len(names)
            for j in range(len(widths[names[0]])):
                ys = [decoders[n].stage(j, y, skips) for n, y in zip(names, ys)]
                ys = CrossStitch(
                    self_weight=self.stitch_self_weight,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"stitch{j}",
                )(*ys)
            feats = dict(zip(names, ys))
        else:
            feats = {name: decoders[name](skips) for name, _, _ in heads}
        out = {}
        unknown = set(self.small_init_heads) - {name for name, _, _ in heads}
        if unknown:
            raise ValueError(f"small_init_heads names unknown heads {sorted(unknown)}")
        small = nn.initializers.normal(self.head_init_std)
        for name, channels, _ in heads:
            init = small if name in self.small_init_heads else nn.linear.default_kernel_init
            out[name] = nn.Conv(
                channels,
                kernel_size=(1,) * ndim,
                kernel_init=init,
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                name=f"head_{name}",
            )(feats[name].astype(jnp.float32))
        return out


class MultiHeadUNet(UNetConfig, kw_only=True):
    """One U-Net (one encoder, one decoder) shared by every task, with a head per output.

    The inputs are concatenated on channels and go through a single :class:`~jrs_jax.nets.UNet`;
    its full-resolution features feed every head: ``heads`` lists ``(name, channels)`` conv
    ``1^D`` heads (float32 logits, lecun-normal kernel, zero bias, as
    :class:`~jrs_jax.nets.SegmentationNet`'s), and ``flow_head`` (if not ``None``) names a
    conv ``3^D`` -> ``D`` displacement head with kernel ``N(0, head_init_std^2)`` and zero bias
    (as :class:`~jrs_jax.nets.RegistrationNet`'s, so training starts near the identity).
    Everything is shared up to the last layer: the "hybrid" network of Li et al., where
    :class:`SharedEncoderMultiDecoder` shares only the encoder.

    Parameters: ``unet``, ``head_{name}`` per head, ``{flow_head}``.

    Shapes: ``images[i] [B, *S, C_i]`` -> ``{name: [B, *S, channels], flow_head: [B, *S,
    D]}`` (float32, no activation); ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = MultiHeadUNet(heads=(("seg_moving", 3), ("seg_fixed", 3)), features=(8, 16))
      >>> moving = fixed = jnp.zeros((1, 16, 16, 1))
      >>> out = net.apply(net.init(jax.random.key(0), moving, fixed), moving, fixed)
      >>> out["seg_fixed"].shape, out["disp"].shape
      ((1, 16, 16, 3), (1, 16, 16, 2))

    Reference: Li, Niessen, Klein, de Groot, Ikram, Vernooij, Bron, "A Hybrid Deep Learning
    Framework for Integrated Segmentation and Registration: Evaluation on Longitudinal White
    Matter Tract Changes", MICCAI 2019.
    """

    heads: Sequence[tuple] = ()
    flow_head: str | None = "disp"
    head_init_std: float = 1e-5

    @nn.compact
    def __call__(self, *images: jnp.ndarray) -> dict[str, jnp.ndarray]:
        if not images:
            raise ValueError("MultiHeadUNet needs at least one input image")
        heads = _parse_heads(self.heads) if self.heads else []
        if not heads and self.flow_head is None:
            raise ValueError("MultiHeadUNet needs at least one head (heads or flow_head)")
        if self.flow_head is not None and self.flow_head in [h[0] for h in heads]:
            raise ValueError(f"flow_head {self.flow_head!r} repeats a name of heads")
        x, ndim = concat_inputs(*images, names=[f"images[{i}]" for i in range(len(images))])
        feats = self.make_unet()(x).astype(jnp.float32)
        out = {}
        for name, channels, _ in heads:
            out[name] = nn.Conv(
                channels,
                kernel_size=(1,) * ndim,
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                name=f"head_{name}",
            )(feats)
        if self.flow_head is not None:
            out[self.flow_head] = _flow_conv(
                ndim, self.head_init_std, False, self.flow_head, conv_impl=self.conv_impl
            )(feats)
        return out


#: Cross-stitch sharing of :class:`CrossStitchNet`: one ``alpha`` per level and channel, one
#: per level, or none (two independent paths).
STITCH_MODES = ("channel", "level", "none")


class CrossStitchNet(UNetConfig, kw_only=True):
    """Two full U-Net paths, segmentation and registration, stitched after every level.

    Each path is an :class:`~jrs_jax.nets.Encoder` + :class:`Decoder` (the same widths for
    both, from ``features`` / ``decoder_features`` as in :class:`UNet`). After every encoder
    level ``i`` and every decoder stage ``j`` (levels, then full-resolution final convs) the
    two feature maps are mixed by a :class:`CrossStitch` unit, ``[x_S; x_R] <- alpha [x_S;
    x_R]``, and the mixed maps go on (the stitched encoder outputs are also the skips):
    ``stitch="channel"`` learns ``alpha`` per level and channel (``[2, 2, C]``, the paper's
    notation), ``"level"`` one ``[2, 2]`` per level, ``"none"`` has no units (two independent
    networks: a :class:`~jrs_jax.nets.SegmentationNet` and a
    :class:`~jrs_jax.nets.RegistrationNet` side by side). ``alpha`` starts at
    ``stitch_self_weight`` on the diagonal, ``1 - stitch_self_weight`` off it (0.9 / 0.1).
    Heads, in float32: segmentation conv ``1^D`` -> ``num_classes`` logits
    (as :class:`~jrs_jax.nets.SegmentationNet`); registration conv ``3^D`` -> ``D``
    displacement, kernel ``N(0, head_init_std^2)``, zero bias (as
    :class:`~jrs_jax.nets.RegistrationNet`).

    Parameters: ``seg_encoder``, ``reg_encoder``, ``seg_decoder``, ``reg_decoder``,
    ``stitch_enc{i}``, ``stitch_dec{j}`` (``alpha``: ``[2, 2, C]``, or ``[2, 2, 1]`` for
    ``"level"``), ``seg_head``, ``flow``.

    Shapes: ``seg_input [B, *S, C_s]``, ``reg_input [B, *S, C_r]`` (the input of each path;
    the same array for both in the paper) -> ``{"seg": [B, *S, num_classes], "disp":
    [B, *S, D]}`` (float32 logits and field); ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = CrossStitchNet(num_classes=3, features=(4, 8), decoder_features=(8, 4))
      >>> x = jnp.zeros((1, 16, 16, 5))  # e.g. [I_m, I_f, one-hot S_m (3)]
      >>> params = net.init(jax.random.key(0), x, x)
      >>> out = net.apply(params, x, x)
      >>> out["seg"].shape, out["disp"].shape
      ((1, 16, 16, 3), (1, 16, 16, 2))
      >>> params["params"]["stitch_enc1"]["alpha"][:, :, 0].tolist()
      [[0.8999999761581421, 0.10000000149011612], [0.10000000149011612, 0.8999999761581421]]

    Reference: Beljaards, Elmahdy, Verbeek, Staring, "A Cross-Stitch Architecture for Joint
    Registration and Segmentation in Adaptive Radiotherapy", MIDL 2020; cross-stitch units
    from Misra et al., CVPR 2016.
    """

    num_classes: int
    stitch: str = "channel"
    stitch_self_weight: float = 0.9
    head_init_std: float = 1e-5

    @nn.compact
    def __call__(self, seg_input: jnp.ndarray, reg_input: jnp.ndarray) -> dict[str, jnp.ndarray]:
        if self.stitch not in STITCH_MODES:
            raise ValueError(f"stitch={self.stitch!r} is not one of {STITCH_MODES}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r} is not one of {UPSAMPLE_MODES}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (softmax labels), got {self.num_classes}")
        x_s, ndim = concat_inputs(seg_input, names=("seg_input",))
        x_r, _ = concat_inputs(reg_input, names=("reg_input",))
        if x_s.shape[:-1] != x_r.shape[:-1]:
            raise ValueError(
                "seg_input and reg_input need the same batch and spatial shape: got "
                f"{tuple(x_s.shape)} vs {tuple(x_r.shape)}"
            )
        levels = len(self.features)
        check_divisible(x_s, levels, what="CrossStitchNet")
        dec_levels, dec_finals = self.decoder_widths()
        dec = (*dec_levels, *dec_finals)

        def decoder(name):
            return _decoder(self, dec_levels, dec_finals, name=name)

        def mix(name, a, b):
            if self.stitch == "none":
                return a, b
            return CrossStitch(
                self_weight=self.stitch_self_weight,
                per_channel=self.stitch == "channel",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(a, b)

        enc_s, enc_r = self.make_encoder("seg_encoder"), self.make_encoder("reg_encoder")
        skips_s, skips_r = [], []
        for i in range(levels):
            x_s, x_r = mix(f"stitch_enc{i}", enc_s.stage(i, x_s), enc_r.stage(i, x_r))
            skips_s.append(x_s)
            skips_r.append(x_r)
        dec_s, dec_r = decoder("seg_decoder"), decoder("reg_decoder")
        y_s, y_r = skips_s[-1], skips_r[-1]
        for j in range(len(dec)):
            y_s, y_r = mix(
                f"stitch_dec{j}", dec_s.stage(j, y_s, skips_s), dec_r.stage(j, y_r, skips_r)
            )
        seg = nn.Conv(
            self.num_classes,
            kernel_size=(1,) * ndim,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="seg_head",
        )(y_s.astype(jnp.float32))
        disp = _flow_conv(ndim, self.head_init_std, False, "flow", conv_impl=self.conv_impl)(
            y_r.astype(jnp.float32)
        )
        return {"seg": seg, "disp": disp}
