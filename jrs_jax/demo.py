"""``jrs-jax demo``: DeepAtlas end to end on the built-in synthetic anatomy, no download.

1. writes the synthetic dataset (Learn2Reg layout) to ``OUT/data`` (or reads ``--data``);
2. trains DeepAtlas (``configs/deepatlas.py``; N = 5 labelled subjects) and, for
   comparison, the U-Net segmentation baseline on the same labelled subjects with as many
   updates as DeepAtlas' segmentation network gets;
3. evaluates both on the held-out subjects and pairs and prints a small table:
   registration Dice before / after, folding, segmentation Dice alone vs joint;
4. writes ``OUT/results.md`` / ``results.json``, figures (``OUT/figures``: overlays with
   label contours, deformation grid, Jacobian map, training curves) and keeps the
   checkpoints (``OUT/deepatlas``, ``OUT/unet_seg``);
5. prints the command that registers your own NIfTI pair with the trained model.

Running it again resumes (or reuses) the finished runs; a killed demo continues where its
last checkpoint left off.
"""

from __future__ import annotations

import json
import os
import shutil
import time

__all__ = ["demo_configs", "run_demo", "run_example"]

#: Training lengths (steps) of the demo: (DeepAtlas steps, reg pretrain, seg pretrain). The
#: segmentation baseline gets as many updates as DeepAtlas' F_S. Chosen so the default 2-D
#: demo fits in 10 minutes on a 2-core CPU (measured: see the README).
LENGTHS = {
    "default": (1200, 300, 150),
    "3d": (300, 100, 50),
    "quick": (120, 40, 30),
}


def demo_configs(dataset: str, *, three_d: bool = False, quick: bool = False, seed: int = 0):
    """The DeepAtlas and U-Net configs the demo trains (plain dicts, see ``configs/``)."""
    from .config import load_config
    from .methods.deepatlas import update_counts

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    variants = "3d" if three_d else None
    da = _load(load_config, os.path.join(root, "deepatlas.py"), variants)
    seg = _load(load_config, os.path.join(root, "unet_seg.py"), variants)
    steps, reg_pre, seg_pre = LENGTHS["quick" if quick else "3d" if three_d else "default"]
    for cfg in (da, seg):
        cfg["seed"] = seed
        cfg["data"]["dataset"] = dataset
        cfg["data"]["num_labelled"] = da["data"]["num_labelled"]
    da["train"].update(steps=steps, eval_every=steps, ckpt_every=max(50, steps // 6))
    da["schedule"].update(reg_pretrain=reg_pre, seg_pretrain=seg_pre)
    seg_steps = update_counts(da)["seg"]  # the baseline gets as many updates as F_S
    seg["train"].update(steps=seg_steps, eval_every=seg_steps, ckpt_every=seg_steps)
    if quick:
        small = {"features": [8, 16, 16], "decoder_features": [16, 8, 8]}
        da["reg_model"].update(small)
        da["seg_model"].update(small)
        seg["model"].update(small)
    return da, seg


def _load(load_config, path: str, variants: str | None) -> dict:
    return load_config(path + (f":{variants}" if variants else ""))


def _dataset(out: str, data: str | None, three_d: bool, quick: bool, seed: int) -> str:
    if data:
        return data
    from .data import write_learn2reg_dataset

    path = os.path.join(out, "data", "dataset.json")
    if os.path.exists(path):
        return path
    shape = (48, 48, 48) if three_d else ((64, 64) if quick else (128, 128))
    tmp = os.path.join(out, "data.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    write_learn2reg_dataset(
        tmp, key=seed, shape=shape, num_subjects=20, num_heldout=4, num_val_pairs=12
    )
    os.replace(tmp, os.path.join(out, "data"))  # the dataset appears complete or not at all
    print(
        f"synthetic data: 20 subjects {'x'.join(map(str, shape))} -> {path} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return path


def _run(config: dict, workdir: str, progress: bool) -> dict:
    from .experiment import train_or_reuse

    out = train_or_reuse(config, workdir=workdir, progress=progress)
    if out["reused"]:
        print(f"{config['method']}: reusing the finished run in {workdir}")
    return out


def _table(da: dict, seg: dict) -> list[tuple[str, str]]:
    return [
        ("registration Dice, before (identity)", f"{da['val/reg_dice_identity']:.3f}"),
        ("registration Dice, DeepAtlas", f"{da['val/reg_dice']:.3f}"),
        ("folding % (det J <= 0), DeepAtlas", f"{da['val/folding_percent']:.3f}"),
        ("segmentation Dice, U-Net alone", f"{seg['val/seg_dice']:.3f}"),
        ("segmentation Dice, DeepAtlas (joint)", f"{da['val/seg_dice']:.3f}"),
    ]


def run_demo(
    *,
    out: str = "jrs_demo",
    data: str | None = None,
    three_d: bool = False,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the demo (see the module docstring); returns the numbers of the table."""
    t0 = time.perf_counter()
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    dataset = _dataset(out, data, three_d, quick, seed)
    da_cfg, seg_cfg = demo_configs(dataset, three_d=three_d, quick=quick, seed=seed)
    da = _run(da_cfg, os.path.join(out, "deepatlas"), progress)
    seg = _run(seg_cfg, os.path.join(out, "unet_seg"), progress)
    rows = _table(da["evaluation"], seg["evaluation"])
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    for name in ("registration.png", "segmentation.png", "curves.png"):
        src = os.path.join(out, "deepatlas", "figures", name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(fig_dir, f"deepatlas_{name}"))
    src = os.path.join(out, "unet_seg", "figures", "segmentation.png")
    if os.path.exists(src):
        shutil.copyfile(src, os.path.join(fig_dir, "unet_seg_segmentation.png"))
    wall = time.perf_counter() - t0
    width = max(len(r[0]) for r in rows)
    lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    md = "\n".join(
        [
            f"# jrs-jax demo: DeepAtlas on {dataset}",
            "",
            *lines,
            "",
            f"wall time {wall:.0f} s (this run, including any reused results)",
            "",
        ]
    )
    with open(os.path.join(out, "results.md.tmp"), "w") as f:
        f.write(md)
    os.replace(os.path.join(out, "results.md.tmp"), os.path.join(out, "results.md"))
    summary = {
        "deepatlas": da["evaluation"],
        "unet_seg": seg["evaluation"],
        "wall_seconds": round(wall, 1),
    }
    with open(os.path.join(out, "results.json.tmp"), "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(os.path.join(out, "results.json.tmp"), os.path.join(out, "results.json"))
    print()
    print(f"jrs-jax demo ({'3-D' if three_d else '2-D'}, {wall:.0f} s):")
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")
    print(f"\nresults: {out}/results.md   figures: {fig_dir}/   model: {out}/deepatlas/")
    print("register your own NIfTI pair (same size and spacing as the training data) with:")
    print(
        f"  jrs-jax register --checkpoint {out}/deepatlas --fixed FIXED.nii.gz "
        f"--moving MOVING.nii.gz --moving-labels MOVING_LABELS.nii.gz --out {out}/my_pair"
    )
    return summary


def _synthetic_pair(key, shape):
    """A smooth random image with a 3-class label map, and a random diffeomorphism."""
    import jax
    import jax.numpy as jnp

    from . import spatial

    k_img, k_vel = jax.random.split(key)
    noise = jax.random.normal(k_img, (1, *shape, 1))
    image = spatial.gaussian_filter(noise, 3.0, padding="symmetric")
    image = (image - image.min()) / (image.max() - image.min())
    labels = jnp.digitize(image[..., 0], jnp.asarray([0.4, 0.6])).astype(jnp.int32)
    velocity = spatial.random_velocity(k_vel, shape, amplitude=2.0, control_spacing=12)
    return image, labels, velocity


def run_example(*, size: int = 96, three_d: bool = False, seed: int = 0) -> dict:
    """``jrs-jax example``: warp, integrate and score a synthetic image; prints a table."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import losses, metrics, spatial

    shape = (size,) * (3 if three_d else 2)
    t0 = time.perf_counter()
    fixed, fixed_labels, velocity = _synthetic_pair(jax.random.key(seed), shape)

    @jax.jit
    def tour(fixed, fixed_labels, velocity):
        disp = spatial.integrate_velocity(velocity, steps=7)
        inverse = spatial.integrate_velocity(-velocity, steps=7)
        moving = spatial.warp(fixed, inverse)
        moving_labels = spatial.warp_labels(fixed_labels, inverse, num_classes=3, mode="nearest")
        recovered = spatial.warp(moving, disp)
        recovered_labels = spatial.warp_labels(moving_labels, disp, num_classes=3, mode="argmax")
        return {
            "disp": disp,
            "moving_labels": moving_labels,
            "recovered_labels": recovered_labels,
            "lncc_before": losses.local_ncc(moving, fixed, window=9),
            "lncc_after": losses.local_ncc(recovered, fixed, window=9),
            "jacobian": spatial.jacobian_determinant(disp),
            "roundtrip": jnp.abs(spatial.compose(disp, inverse)).mean(),
        }

    out = jax.device_get(tour(fixed, fixed_labels, velocity))
    fl = np.asarray(fixed_labels[0])
    dice_before = metrics.mean_dice(np.asarray(out["moving_labels"][0]), fl)
    dice_after = metrics.mean_dice(np.asarray(out["recovered_labels"][0]), fl)
    jac = out["jacobian"]
    rows = [
        ("grid", "x".join(map(str, shape))),
        ("LNCC loss, moving vs fixed", f"{float(out['lncc_before'][0]):+.4f}"),
        ("LNCC loss, warped back vs fixed", f"{float(out['lncc_after'][0]):+.4f}"),
        ("Dice, moving vs fixed labels", f"{dice_before:.4f}"),
        ("Dice, warped back vs fixed labels", f"{dice_after:.4f}"),
        ("Jacobian min / max", f"{jac.min():.3f} / {jac.max():.3f}"),
        ("% voxels with J <= 0", f"{100.0 * float((jac <= 0).mean()):.3f}"),
        ("mean |exp(v) o exp(-v)| (voxels)", f"{float(out['roundtrip']):.4f}"),
        ("wall time (s, incl. compile)", f"{time.perf_counter() - t0:.1f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"jrs_jax example on {jax.default_backend()}:")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return dict(rows)
