"""Generate ``similarity_reference.npz``: seeded inputs and peer outputs for the similarity losses.

Needs the ``bench`` extra (torch, monai) and scipy. Run from the repository root::

    .venv/bin/python tests/reference/make_similarity_reference.py

Inputs are stored as uint8 (the tests use ``u8.astype(float32) / 255``, exactly as here), so
the file stays a few KB: ``a3, b3`` ``[1, 12, 14, 16, 1]``, ``a2, b2`` ``[2, 24, 20, 2]``;
``names`` lists the references, ``ref3d`` ``[len(names), 1]`` and ``ref2d`` ``[len(names), 2]``
hold the peer values, per-example ``[B]`` losses:

* MONAI ``LocalNormalizedCrossCorrelationLoss`` (rectangular k=3, k=9; gaussian k=3, k=9),
  ``reduction="none"`` averaged over channels and space, computed in float64.
* VoxelMorph's (TF) ``NCC`` loss, ``-mean(cc)`` per example, from an independent numpy
  transcription of its definition (below; voxelmorph needs TensorFlow), float64.
* MONAI ``GlobalMutualInformationLoss`` (defaults; also on inputs outside [0, 1] to exercise
  its clipping), float64.
* MONAI ``SSIMLoss`` (gaussian, sigma 1.5, windows 7 and 11), which computes in float32.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from monai.losses import (
    GlobalMutualInformationLoss,
    LocalNormalizedCrossCorrelationLoss,
    SSIMLoss,
)
from scipy import ndimage

OUT = pathlib.Path(__file__).with_name("similarity_reference.npz")
SEED = 20240613


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def make_pair(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Smooth-ish image ``a`` and a noisy, partly inverted copy ``b`` as uint8 ``[B, *S, C]``."""
    nd = len(shape) - 2
    a = rng.random(shape)
    a = ndimage.gaussian_filter(a, sigma=(0,) + (1.0,) * nd + (0,), mode="reflect")
    a = (a - a.min()) / (a.max() - a.min())
    b = 0.7 * a + 0.3 * rng.random(shape)
    half = shape[1] // 2
    b[:, half:] = 1.0 - b[:, half:]  # anti-correlated half: VoxelMorph and MONAI differ there
    # 64 grey levels (multiples of 4 in 0..252): compresses well, still far from piecewise flat
    return (np.round(a * 63) * 4).astype(np.uint8), (np.round(b * 63) * 4).astype(np.uint8)


def to_float(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 255


def outside(x: np.ndarray) -> np.ndarray:
    """Float32 map of [0, 1] to [-0.1, 1.1] (for MI clipping)."""
    return x * np.float32(1.2) - np.float32(0.1)


def channels_first(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(dtype)


# --------------------------------------------------------------------------------------------
# VoxelMorph NCC, transcribed from its definition (voxelmorph.tf.losses.NCC)
# --------------------------------------------------------------------------------------------


def voxelmorph_ncc(y_true: np.ndarray, y_pred: np.ndarray, *, win: int = 9, eps: float = 1e-5,
                   signed: bool = False) -> np.ndarray:  # fmt: skip
    """VoxelMorph's local NCC loss per example, channels-last ``[B, *S, C]``, float64.

    Definition (VoxelMorph TF ``NCC``): window sums via an N-D convolution with a ones filter
    of shape ``[*win, C, 1]`` and "SAME" zero padding (so one window spans all channels), with
    ``n = win^ndim * C``, ``u = sum / n``::

        cross = S_IJ - u_J S_I - u_I S_J + u_I u_J n,   cross = max(cross, eps)
        var_I = S_II - 2 u_I S_I + u_I^2 n,             var_I = max(var_I, eps)   (same for J)
        cc = (cross / var_I) (cross / var_J)     or  cross / sqrt(var_I var_J + eps) if signed
        loss = -mean(cc) per example
    """
    i = y_true.astype(np.float64)
    j = y_pred.astype(np.float64)
    nd = i.ndim - 2
    c = i.shape[-1]
    ones = np.ones((1,) + (win,) * nd)

    def window_sum(x):
        # the ones filter over [*win, C] = sum over channels, then a spatial box sum
        return ndimage.correlate(x.sum(axis=-1), ones, mode="constant", cval=0.0)

    s_i, s_j = window_sum(i), window_sum(j)
    s_ii, s_jj, s_ij = window_sum(i * i), window_sum(j * j), window_sum(i * j)
    n = float(win**nd * c)
    u_i, u_j = s_i / n, s_j / n
    cross = s_ij - u_j * s_i - u_i * s_j + u_i * u_j * n
    var_i = s_ii - 2 * u_i * s_i + u_i * u_i * n
    var_j = s_jj - 2 * u_j * s_j + u_j * u_j * n
    cross = np.maximum(cross, eps)
    var_i = np.maximum(var_i, eps)
    var_j = np.maximum(var_j, eps)
    cc = cross / np.sqrt(var_i * var_j + eps) if signed else (cross / var_i) * (cross / var_j)
    return -cc.reshape(cc.shape[0], -1).mean(axis=1)


# --------------------------------------------------------------------------------------------
# MONAI
# --------------------------------------------------------------------------------------------


def monai_lncc(a, b, *, k: int, kernel_type: str) -> np.ndarray:
    nd = a.ndim - 2
    loss = LocalNormalizedCrossCorrelationLoss(
        spatial_dims=nd, kernel_size=k, kernel_type=kernel_type, reduction="none"
    )
    out = loss(channels_first(a), channels_first(b))  # [B, C, *S]; pred=a, target=b
    return out.reshape(out.shape[0], -1).mean(dim=1).numpy()


def monai_mi(a, b) -> np.ndarray:
    out = GlobalMutualInformationLoss(reduction="none")(channels_first(a), channels_first(b))
    return out.reshape(-1).numpy()


def monai_ssim(a, b, *, win: int) -> np.ndarray:
    nd = a.ndim - 2
    loss = SSIMLoss(spatial_dims=nd, win_size=win, kernel_sigma=1.5, reduction="none")
    out = loss(channels_first(a, torch.float32), channels_first(b, torch.float32))
    return out.reshape(-1).double().numpy()


NAMES = (
    "monai_lncc_box_k3",
    "monai_lncc_gaussian_k3",
    "monai_lncc_box_k9",
    "monai_lncc_gaussian_k9",
    "vxm_ncc_w5",
    "vxm_ncc_signed_w5",
    "vxm_ncc_w9",
    "vxm_ncc_signed_w9",
    "monai_mi",
    "monai_mi_clip",
    "monai_ssim_w7",
    "monai_ssim_w11",
)


def references(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(NAMES), B]`` float64 peer losses, rows in the order of ``NAMES``."""
    ref = {}
    for k in (3, 9):
        ref[f"monai_lncc_box_k{k}"] = monai_lncc(a, b, k=k, kernel_type="rectangular")
        ref[f"monai_lncc_gaussian_k{k}"] = monai_lncc(a, b, k=k, kernel_type="gaussian")
    for w in (5, 9):
        ref[f"vxm_ncc_w{w}"] = voxelmorph_ncc(b, a, win=w)
        ref[f"vxm_ncc_signed_w{w}"] = voxelmorph_ncc(b, a, win=w, signed=True)
    ref["monai_mi"] = monai_mi(a, b)
    ref["monai_mi_clip"] = monai_mi(outside(a), outside(b))
    for w in (7, 11):
        ref[f"monai_ssim_w{w}"] = monai_ssim(a, b, win=w)
    return np.stack([ref[n] for n in NAMES]).astype(np.float64)


def main() -> None:
    rng = np.random.default_rng(SEED)
    a3, b3 = make_pair(rng, (1, 12, 14, 16, 1))
    a2, b2 = make_pair(rng, (2, 24, 20, 2))
    ref3 = references(to_float(a3), to_float(b3))
    ref2 = references(to_float(a2), to_float(b2))
    np.savez_compressed(
        OUT, a3=a3, b3=b3, a2=a2, b2=b2, names=np.array(NAMES), ref3d=ref3, ref2d=ref2
    )
    for name, r3, r2 in zip(NAMES, ref3, ref2):
        print(f"{name:24s} 3d {np.array2string(r3, precision=6):14s} 2d {r2}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
