"""Generate ``warp_reference.npz``: PyTorch/MONAI resampling outputs on small seeded inputs.

Run once with the ``bench`` extra installed (``pip install -e ".[bench]"``)::

    python tests/reference/make_warp_reference.py

``tests/spatial/test_warp_reference.py`` compares ``jrs_jax.spatial.warp`` (through
``to_grid_sample`` / ``to_channels_first``) against the stored values, so CI checks parity
with the peers without installing torch. Inputs are stored as float32 generated from a
numpy seed; the peers' outputs are computed in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF, Warp

OUT = Path(__file__).with_name("warp_reference.npz")
SHAPES = {2: (2, 9, 11), 3: (1, 6, 7, 8)}  # [B, *S]
CHANNELS = 2


def _smooth_field(rng, batch, shape, amplitude):
    """Smooth random displacement (separable box-smoothed noise), voxels, [B, *S, D]."""
    field = rng.normal(size=(batch, *shape, len(shape)))
    for ax in range(1, len(shape) + 1):
        field = (np.roll(field, 1, ax) + field + np.roll(field, -1, ax)) / 3.0
    return amplitude * field / np.abs(field).max()


def _grid(disp, align_corners):
    """Absolute normalised grid_sample grid (xy order) from a voxel displacement [B, *S, D]."""
    shape = disp.shape[1:-1]
    ident = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    pos = ident + disp
    n = np.asarray(shape, np.float64)
    norm = 2.0 * pos / (n - 1) - 1.0 if align_corners else (2.0 * pos + 1.0) / n - 1.0
    return norm[..., ::-1].copy()


def main() -> None:
    rng = np.random.default_rng(20261125)
    out = {}
    for ndim, (batch, *shape) in SHAPES.items():
        img = rng.uniform(size=(batch, *shape, CHANNELS)).astype(np.float32)
        disp = _smooth_field(rng, batch, shape, 2.5).astype(np.float32)
        vel = _smooth_field(rng, batch, shape, 1.0).astype(np.float32)
        out[f"image_{ndim}d"] = img
        out[f"disp_{ndim}d"] = disp
        out[f"velocity_{ndim}d"] = vel
        img_cf = torch.from_numpy(np.moveaxis(img, -1, 1).astype(np.float64))
        ddf_cf = torch.from_numpy(np.moveaxis(disp, -1, 1).astype(np.float64))
        for align in (True, False):
            grid = torch.from_numpy(_grid(disp.astype(np.float64), align))
            for pad in ("border", "zeros"):
                res = F.grid_sample(
                    img_cf, grid, mode="bilinear", padding_mode=pad, align_corners=align
                )
                key = f"grid_sample_{ndim}d_{pad}_ac{int(align)}"
                out[key] = np.moveaxis(res.numpy(), 1, -1).astype(np.float32)
        for pad in ("border", "zeros"):
            res = Warp(mode="bilinear", padding_mode=pad)(img_cf, ddf_cf)
            out[f"monai_warp_{ndim}d_{pad}"] = np.moveaxis(res.numpy(), 1, -1).astype(np.float32)
        vel_cf = torch.from_numpy(np.moveaxis(vel, -1, 1).astype(np.float64))
        res = DVF2DDF(num_steps=7, padding_mode="border")(vel_cf)
        out[f"monai_dvf2ddf_{ndim}d_border"] = np.moveaxis(res.numpy(), 1, -1).astype(np.float32)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
