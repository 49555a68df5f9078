"""Joint motion estimation and segmentation over an image sequence (one shared encoder)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .blocks import block_settings, spatial_rank
from .multitask import _decoder
from .recurrent import ConvGRU
from .registration import _flow_conv
from .unet import UNetConfig, check_divisible

__all__ = ["MotionSegNet"]


class MotionSegNet(UNetConfig, kw_only=True):
    """A shared multi-scale encoder driving a segmentation branch and a motion branch over
    a sequence, with a convolutional GRU carrying motion along time (Qin et al. 2018).

    Every frame goes through one :class:`~jrs_jax.nets.Encoder` (shared weights, a Siamese
    encoder). *Segmentation branch*: a U-Net :class:`~jrs_jax.nets.Decoder` on each frame's
    skips and a conv ``1^D`` head -> ``num_classes`` logits per frame. *Motion branch*: for
    every source frame ``k`` the target's and the source's features are concatenated level by
    level and decoded (a second decoder, same widths) into motion features ``m_k``; with
    ``recurrent=True`` a :class:`~jrs_jax.nets.ConvGRU` (``gru_features`` channels) runs over
    ``m_1 .. m_T`` in time order, so the motion of frame ``k`` sees the frames before it;
    with ``recurrent=False`` a conv block of the same width replaces it, frame by frame (the
    ablation). A conv ``3^D`` flow head (kernel ``N(0, head_init_std^2)``, as
    :class:`~jrs_jax.nets.RegistrationNet`) gives each source's displacement, pull-back onto
    the target: ``warp(source_k, disp[:, k]) ~ target``.

    Parameters: ``encoder``, ``seg_decoder``, ``seg_head``, ``motion_decoder``, ``gru``
    (or ``motion_block``), ``flow``.

    Shapes: ``target [B, *S, C]``, ``sources [B, T, *S, C]`` -> ``{"seg": [B, T + 1, *S, K]``
    (logits of the target, then of each source), ``"disp": [B, T, *S, D]}`` (float32);
    ``S`` divisible by ``2^(len(features) - 1)``.

    Example:
      >>> net = MotionSegNet(num_classes=3, features=(4, 8), decoder_features=(8, 4))
      >>> target, sources = jnp.zeros((1, 16, 16, 1)), jnp.zeros((1, 3, 16, 16, 1))
      >>> out = net.apply(net.init(jax.random.key(0), target, sources), target, sources)
      >>> out["seg"].shape, out["disp"].shape
      ((1, 4, 16, 16, 3), (1, 3, 16, 16, 2))

    Reference: Qin, Bai, Schlemper, Petersen, Piechnik, Neubauer, Rueckert, "Joint Learning
    of Motion Estimation and Segmentation for Cardiac MR Image Sequences", MICCAI 2018.
    """

    num_classes: int
    recurrent: bool = True
    gru_features: int = 16
    head_init_std: float = 1e-5

    @nn.compact
    def __call__(self, target: jnp.ndarray, sources: jnp.ndarray) -> dict[str, jnp.ndarray]:
        ndim = spatial_rank(target, name="target")
        if sources.ndim != target.ndim + 1 or sources.shape[2:] != target.shape[1:]:
            raise ValueError(
                "sources must be [B, T, *S, C] with the target's [B, *S, C] frame shape; got "
                f"target {tuple(target.shape)}, sources {tuple(sources.shape)}"
            )
        b, t = sources.shape[:2]
        frames = jnp.concatenate([target[:, None], sources], 1).astype(jnp.float32)
        flat = frames.reshape(b * (t + 1), *frames.shape[2:])
        check_divisible(flat, len(self.features), what="MotionSegNet")
        skips = self.make_encoder()(flat)
        levels, finals = self.decoder_widths()
        seg = _decoder(self, levels, finals, name="seg_decoder")(skips)
        logits = nn.Conv(
            self.num_classes,
            kernel_size=(1,) * ndim,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            name="seg_head",
        )(seg.astype(jnp.float32))
        pairs = []
        for s in skips:  # per level: [target features, source k features], k = 1 .. T
            s = s.reshape(b, t + 1, *s.shape[1:])
            tgt = jnp.broadcast_to(s[:, :1], (b, t, *s.shape[2:]))
            pair = jnp.concatenate([tgt, s[:, 1:]], -1)
            pairs.append(pair.reshape(b * t, *pair.shape[2:]))
        motion = _decoder(self, levels, finals, name="motion_decoder")(pairs)
        motion = motion.astype(jnp.float32).reshape(b, t, *motion.shape[1:])
        if self.recurrent:
            feats, _ = ConvGRU(
                features=self.gru_features,
                conv_impl=self.conv_impl,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="gru",
            )(motion)
        else:
            block_cls, common = block_settings(self)
            flat_m = motion.reshape(b * t, *motion.shape[2:])
            feats = block_cls(
                features=self.gru_features, num_convs=1, name="motion_block", **common
            )(flat_m).reshape(b, t, *motion.shape[2:-1], self.gru_features)
        flow = _flow_conv(ndim, self.head_init_std, False, "flow", conv_impl=self.conv_impl)(
            feats.astype(jnp.float32).reshape(b * t, *feats.shape[2:])
        )
        return {
            "seg": logits.reshape(b, t + 1, *logits.shape[1:]),
            "disp": flow.reshape(b, t, *flow.shape[1:]),
        }
