"""Generate ``regseg_reference.npz``: reference values for the registration/segmentation losses.

Run once (needs the ``bench`` extra: torch + MONAI) and commit the output::

    .venv/bin/python tests/reference/make_regseg_reference.py

References, all evaluated in float64 on small seeded float32 inputs (stored channels-last, the
jrs_jax layout):

* MONAI (live): ``BendingEnergyLoss`` and ``DiffusionLoss`` (``normalize`` False/True),
  ``DiceLoss(softmax=False)`` with integer targets (``to_onehot_y=True``, background in/out)
  and with one-hot targets (``squared_pred=True``), ``DiceCELoss(softmax=True,
  to_onehot_y=True)``; PyTorch ``cross_entropy`` (hard targets with class weights and label
  smoothing; soft targets).
* Independent numpy transcriptions, written from the published definitions (VoxelMorph pulls
  TensorFlow, and MONAI < 1.6 is not installed):
  VoxelMorph ``Grad("l1" / "l2")`` and ``KL(prior_lambda)`` (degree matrix by a zero-padded
  correlation with the face-adjacency kernel), and MONAI < 1.6 / DeepReg's bending energy
  (central first difference applied twice).

``compute_references(seed)`` is also imported by the live tests (``@pytest.mark.torch``), which
re-run it with a fresh seed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("regseg_reference.npz")
SEED = 20240611
KL_LAMBDA = 10.0
CE_SMOOTHING = 0.1
NUM_CLASSES = 4
FIELD_SHAPES = {"2d": (2, 6, 7), "3d": (2, 5, 6, 5)}  # (B, *S)
SEG_SHAPES = {"2d": (2, 5, 6), "3d": (2, 3, 4, 5)}


# ----------------------------------------------------------------------------- inputs


def _quantised(rng: np.random.Generator, shape, loc: float, scale: float) -> np.ndarray:
    """Normal samples rounded to multiples of 1/8: exact in float16 (small, compressible file)."""
    return (np.round(rng.normal(loc, scale, size=shape) * 8.0) / 8.0).astype(np.float16)


def make_inputs(seed: int) -> dict[str, np.ndarray]:
    """Small seeded inputs in the jrs_jax layout (channels-last), exact in float16."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for dim, shape in FIELD_SHAPES.items():
        d = len(shape) - 1
        out[f"field_{dim}"] = _quantised(rng, (*shape, d), 0.0, 1.0)
        out[f"logvar_{dim}"] = _quantised(rng, (*shape, d), -2.0, 0.5)
    for dim, shape in SEG_SHAPES.items():
        out[f"logits_{dim}"] = _quantised(rng, (*shape, NUM_CLASSES), 0.0, 2.0)
        # labels use classes 0..K-2 only: class K-1 is absent from the target
        labels = rng.integers(0, NUM_CLASSES - 1, size=shape)
        out[f"labels_{dim}"] = labels.astype(np.int8)
        # soft target: one-hot blended with the uniform distribution, a in {0, 1/4, 1/2, 3/4}
        a = rng.integers(0, 4, size=(*shape, 1)) / 4.0
        soft = (1.0 - a) * np.eye(NUM_CLASSES)[labels] + a / NUM_CLASSES
        out[f"soft_target_{dim}"] = soft.astype(np.float16)  # multiples of 1/16: exact
    out["ce_weights"] = np.array([0.5, 1.0, 2.0, 1.5], dtype=np.float16)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _per_example_mean(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1).mean(-1)


# ----------------------------------------------------------------------------- numpy transcriptions


def vxm_grad(field: np.ndarray, penalty: str) -> np.ndarray:
    """VoxelMorph ``Grad(penalty).loss``: per example, axis-averaged mean of |Δ| or Δ².

    For each spatial axis the forward difference over the valid positions, penalised, averaged
    over everything but the batch; the per-axis means are then averaged over the axes.
    """
    ndim = field.ndim - 2
    terms = []
    for ax in range(1, ndim + 1):
        diff = np.diff(field, axis=ax)
        pen = np.abs(diff) if penalty == "l1" else diff * diff
        terms.append(_per_example_mean(pen))
    return sum(terms) / ndim


def vxm_degree(spatial: tuple[int, ...]) -> np.ndarray:
    """Degree matrix diagonal: zero-padded correlation of ones with the face-adjacency kernel."""
    from scipy import ndimage

    ndim = len(spatial)
    kernel = np.zeros((3,) * ndim)
    for ax in range(ndim):
        for side in (0, 2):
            idx = [1] * ndim
            idx[ax] = side
            kernel[tuple(idx)] = 1.0
    return ndimage.correlate(np.ones(spatial), kernel, mode="constant", cval=0.0)


def vxm_kl(mean: np.ndarray, log_var: np.ndarray, prior_lambda: float) -> np.ndarray:
    """VoxelMorph ``KL(prior_lambda).loss`` (MICCAI 2018 / MedIA 2019), per example.

    ``0.5 * D * (mean(λ·deg·exp(logσ²) − logσ²) + λ · 0.5/D · Σ_axes mean(Δμ²))``.
    """
    ndim = mean.ndim - 2
    deg = vxm_degree(mean.shape[1:-1])[None, ..., None]
    sigma_term = _per_example_mean(prior_lambda * deg * np.exp(log_var) - log_var)
    prec = sum(_per_example_mean(np.diff(mean, axis=ax) ** 2) for ax in range(1, ndim + 1))
    prec = 0.5 * prec / ndim
    return 0.5 * ndim * (sigma_term + prior_lambda * prec)


def _central_cropped(x: np.ndarray, axis: int) -> np.ndarray:
    """(x[i+1] - x[i-1]) / 2 along ``axis`` of a channels-first array; every spatial axis loses
    its first and last voxel (the DeepReg / MONAI < 1.6 ``spatial_gradient``)."""
    lo = [slice(None), slice(None)] + [slice(1, -1)] * (x.ndim - 2)
    hi = list(lo)
    lo[axis] = slice(None, -2)
    hi[axis] = slice(2, None)
    return (x[tuple(hi)] - x[tuple(lo)]) / 2.0


def nested_bending(field_cl: np.ndarray, normalize: bool) -> np.ndarray:
    """Bending energy of MONAI < 1.6 / DeepReg: the central first difference applied twice."""
    x = np.moveaxis(field_cl.astype(np.float64), -1, 1)  # [B, C, *S]
    sizes = np.array(x.shape[2:], dtype=np.float64)
    comp = sizes.reshape((1, -1) + (1,) * (x.ndim - 2))  # N_c per channel
    energy = 0.0
    for i in range(2, x.ndim):
        g = _central_cropped(x, i)
        if normalize:
            g = g * sizes[i - 2] / comp
        for j in range(i, x.ndim):
            s = _central_cropped(g, j)
            if normalize:
                s = s * sizes[j - 2]
            energy = energy + (1.0 if i == j else 2.0) * s * s
    return _per_example_mean(energy)


# ----------------------------------------------------------------------------- MONAI / torch


def _cf(x: np.ndarray):
    """channels-last numpy -> channels-first float64 torch."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x.astype(np.float64), -1, 1)))


def _per_example_torch(t) -> np.ndarray:
    a = t.detach().numpy()
    return a.reshape(a.shape[0], -1).mean(-1)


@functools.lru_cache(maxsize=4)
def compute_references(seed: int = SEED) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(inputs, outputs)``: the inputs of :func:`make_inputs` and float64 ``[B]`` references.

    Cached per seed (the live tests of several files share one evaluation); do not mutate.
    """
    import torch

    # MONAI's normalize builds its size ratios in the default dtype: make that float64 too
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _compute(seed)
    finally:
        torch.set_default_dtype(previous_dtype)


def _compute(seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    import torch
    import torch.nn.functional as F
    from monai.losses import BendingEnergyLoss, DiceCELoss, DiceLoss, DiffusionLoss

    ref = {
        k: v.astype(np.int64 if v.dtype == np.int8 else np.float64)
        for k, v in make_inputs(seed).items()
    }
    out: dict[str, np.ndarray] = {}

    for dim in FIELD_SHAPES:
        field = ref[f"field_{dim}"]
        for norm in (False, True):
            tag = f"{dim}_norm{int(norm)}"
            be = BendingEnergyLoss(normalize=norm, reduction="none")(_cf(field))
            out[f"bending_compact_{tag}"] = _per_example_torch(be)
            out[f"bending_nested_{tag}"] = nested_bending(field, norm)
            df = DiffusionLoss(normalize=norm, reduction="none")(_cf(field))
            out[f"diffusion_central_{tag}"] = _per_example_torch(df)
        f64 = field.astype(np.float64)
        for pen in ("l1", "l2"):
            out[f"grad_{pen}_{dim}"] = vxm_grad(f64, pen)
        out[f"kl_{dim}"] = vxm_kl(f64, ref[f"logvar_{dim}"].astype(np.float64), KL_LAMBDA)

    for dim in SEG_SHAPES:
        logits = ref[f"logits_{dim}"].astype(np.float64)
        probs = _softmax(logits)
        labels = ref[f"labels_{dim}"]
        t_labels = torch.from_numpy(labels.astype(np.int64))[:, None]  # [B, 1, *S]
        onehot = np.eye(NUM_CLASSES)[labels]
        for bg in (True, False):
            loss = DiceLoss(
                include_background=bg, to_onehot_y=True, softmax=False, reduction="none"
            )(_cf(probs), t_labels)
            out[f"dice_{dim}_bg{int(bg)}"] = _per_example_torch(loss)
        loss = DiceLoss(squared_pred=True, softmax=False, reduction="none")(_cf(probs), _cf(onehot))
        out[f"dice_sq_{dim}"] = _per_example_torch(loss)
        for bg in (True, False):
            fn = DiceCELoss(include_background=bg, to_onehot_y=True, softmax=True)
            # one example at a time: the "mean" reduction of a batch of one is per-example
            per_example = [float(fn(_cf(logits[b : b + 1]), t_labels[b : b + 1])) for b in range(2)]
            out[f"dicece_{dim}_bg{int(bg)}"] = np.asarray(per_example)
        weights = torch.from_numpy(ref["ce_weights"].astype(np.float64))
        ce = F.cross_entropy(
            _cf(logits),
            t_labels[:, 0],
            weight=weights,
            label_smoothing=CE_SMOOTHING,
            reduction="none",
        )
        out[f"ce_{dim}"] = _per_example_torch(ce)
        soft = ref[f"soft_target_{dim}"].astype(np.float64)
        ce = F.cross_entropy(_cf(logits), _cf(soft), reduction="none")
        out[f"ce_soft_{dim}"] = _per_example_torch(ce)
    return ref, out


def main() -> None:
    import monai
    import torch

    _, out = compute_references(SEED)
    names = sorted(out)
    np.savez_compressed(
        OUT,
        **make_inputs(SEED),
        ref_names=np.array(names),
        ref_values=np.stack([out[n] for n in names]),  # [n, B] float64
        versions=np.array([f"monai {monai.__version__}", f"torch {torch.__version__}"]),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(names)} references)")


if __name__ == "__main__":
    main()
