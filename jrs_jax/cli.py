"""Command-line interface: ``jrs-jax COMMAND ...``.

Commands:
  demo            the main job: DeepAtlas end to end on synthetic data (no download)
  make-synthetic  write the built-in synthetic anatomy in the Learn2Reg layout
  train           train a method from a config file (``configs/*.py[:variants]``)
  register        register a NIfTI pair with a trained run
  segment         segment a NIfTI image with a trained run
  evaluate        Dice / HD95 / folding table of a trained run on held-out data
  example         a short tour of the spatial ops and losses on a synthetic image

User errors (bad arguments, missing or invalid files, bad configs) print one line
``jrs-jax: error: ...`` and exit with status 2; a diverged training run exits with 3.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

__all__ = ["main"]


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


def _run_example(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import losses, metrics, spatial

    shape = (args.size,) * (3 if args.three_d else 2)
    t0 = time.perf_counter()
    fixed, fixed_labels, velocity = _synthetic_pair(jax.random.key(args.seed), shape)

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
    return 0


# --------------------------------------------------------------------------------------------
# make-synthetic / train
# --------------------------------------------------------------------------------------------


def _run_make_synthetic(args: argparse.Namespace) -> int:
    from .data import write_learn2reg_dataset

    shape = tuple(args.shape) if args.shape else ((64, 64, 64) if args.three_d else (128, 128))
    out = args.out or ("jrs_synthetic_3d" if len(shape) == 3 else "jrs_synthetic")
    heldout = args.heldout if args.heldout is not None else max(2, args.subjects // 5)
    t0 = time.perf_counter()
    path = write_learn2reg_dataset(
        out,
        key=args.seed,
        shape=shape,
        num_subjects=args.subjects,
        num_labelled=args.labelled,
        num_heldout=heldout,
        num_val_pairs=heldout * (heldout - 1),
        num_labels=args.labels,
        **({"label_means": args.label_means} if args.label_means else {}),
    )
    print(
        f"wrote {args.subjects} subjects ({'x'.join(map(str, shape))}, {heldout} held out) to "
        f"{path} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        out=args.out,
        data=args.data,
        three_d=args.three_d,
        quick=args.quick,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return 0


def _default_workdir(spec: str) -> str:
    path, _, variants = spec.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", stem + ("-" + variants.replace(",", "-") if variants else ""))


def _run_train(args: argparse.Namespace) -> int:
    from . import experiment
    from .config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config), args.overrides)
    workdir = args.workdir or _default_workdir(args.config)
    result = experiment.train(
        cfg, workdir=workdir, resume=args.resume, progress=not args.no_progress
    )
    print(f"run: {result['workdir']}  ({result['step']} steps, {result['train_seconds']:.0f} s)")
    for k, v in result["evaluation"].items():
        print(f"  {k:<26} {v:.4f}")
    for p in result.get("figures", []):
        print(f"  figure: {p}")
    return 0


# --------------------------------------------------------------------------------------------
# register / segment / evaluate
# --------------------------------------------------------------------------------------------


def _load_for_model(path: str, label_path: str | None, cfg: dict):
    """(subject, file volume, crop info) of an input file, cropped/padded to the model shape."""
    from .data import crop_or_pad, load_image, load_subject

    ndim = len(cfg["data"]["shape"])
    subject = load_subject(path, label_path, ndim=ndim)
    volume = load_image(path)
    image, info = crop_or_pad(subject.image, cfg["data"]["shape"])
    labels = None
    if subject.labels is not None:
        labels, _ = crop_or_pad(subject.labels, cfg["data"]["shape"])
    return subject, volume, info, image, labels


def _to_file_grid(arr, ndim: int):
    """2-D results go back into the ``[H, W, 1(, C)]`` file layout."""
    import numpy as np

    arr = np.asarray(arr)
    if ndim == 2:
        return arr[:, :, None] if arr.ndim == 2 else arr[:, :, None, :]
    return arr


def _run_register(args: argparse.Namespace) -> int:
    """Outputs in ``--out``: ``warped.nii.gz`` and ``warped_labels.nii.gz`` (on the fixed
    file's grid, orientation and header), ``disp.nii.gz`` (jrs_jax voxel displacement
    ``[X, Y, Z, D]`` along the canonical RAS+ array axes, saved with the canonical affine),
    ``warp_ants.nii.gz`` (ANTs/ITK physical LPS warp), ``registration.png`` and
    ``summary.json`` (Jacobian statistics; Dice before/after with both label maps)."""
    import numpy as np

    from . import metrics, viz
    from .data import DataError, save_image, uncrop
    from .experiment import load_run
    from .spatial import warp, warp_labels
    from .data.ants import save_ants_warp
    from .train import variables

    method, state, cfg = load_run(args.checkpoint, step=args.step)
    if not method.can_register:
        raise ValueError(f"{args.checkpoint}: method {cfg['method']!r} does not register images")
    ndim = len(cfg["data"]["shape"])
    fixed, fixed_vol, info, f_img, f_lab = _load_for_model(args.fixed, args.fixed_labels, cfg)
    moving, _, _, m_img, m_lab = _load_for_model(args.moving, args.moving_labels, cfg)
    if fixed.shape != moving.shape:
        raise DataError(
            args.moving,
            f"shape {moving.shape} differs from the fixed image's {fixed.shape}: register "
            "images on the same grid (resample them first)",
        )
    v = variables(state)
    disp = method.predict_disp(v, m_img[None], f_img[None])
    warped = np.asarray(warp(m_img[None], disp))[0]
    disp_np = np.asarray(disp)[0]
    os.makedirs(args.out, exist_ok=True)
    out = {}
    full_disp = uncrop(disp_np, info)
    affine = fixed_vol.affine
    save_image(
        os.path.join(args.out, "warped.nii.gz"),
        _to_file_grid(uncrop(warped[..., 0], info), ndim),
        reference=fixed_vol,  # the fixed file's orientation, affine and header
    )
    # vectors along the canonical (RAS+) array axes: saved on that grid, not the file's
    save_image(os.path.join(args.out, "disp.nii.gz"), _to_file_grid(full_disp, ndim), affine=affine)
    save_ants_warp(os.path.join(args.out, "warp_ants.nii.gz"), full_disp, affine)
    out["files"] = ["warped.nii.gz", "disp.nii.gz", "warp_ants.nii.gz"]
    stats = metrics.summarize_jacobian(disp_np)
    out["jacobian"] = stats
    wl = None
    if m_lab is not None:
        wl = np.asarray(warp_labels(m_lab[None], disp, num_classes=1, mode="nearest"))[0]
        save_image(
            os.path.join(args.out, "warped_labels.nii.gz"),
            _to_file_grid(uncrop(wl, info), ndim).astype(np.int32),
            reference=fixed_vol,
        )
        out["files"].append("warped_labels.nii.gz")
        if f_lab is not None:
            out["dice_before"] = metrics.mean_dice(m_lab, f_lab)
            out["dice_after"] = metrics.mean_dice(wl, f_lab)
    fig = viz.registration_panel(
        f_img,
        m_img,
        warped,
        fixed_labels=f_lab,
        moving_labels=m_lab,
        warped_labels=wl,
        disp=disp_np,
    )
    viz.save_figure(fig, os.path.join(args.out, "registration.png"))
    out["files"].append("registration.png")
    _write_json(os.path.join(args.out, "summary.json"), out)
    print(f"wrote {', '.join(out['files'])} and summary.json to {args.out}")
    print(
        f"  folding (det J <= 0): {stats['folding_percent']:.3f} %   sdlogj: {stats['sdlogj']:.4f}"
        f"   det J in [{stats['jac_min']:.3f}, {stats['jac_max']:.3f}]"
    )
    if "dice_after" in out:
        print(f"  Dice: {out['dice_before']:.4f} -> {out['dice_after']:.4f}")
    return 0


def _write_json(path: str, obj) -> None:
    import numpy as np

    def default(x):
        if isinstance(x, (np.floating, np.integer)):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
        raise TypeError(type(x).__name__)

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=default)
    os.replace(tmp, path)


def _run_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from . import viz
    from .data import save_image, uncrop
    from .experiment import load_run
    from .train import variables

    method, state, cfg = load_run(args.checkpoint, step=args.step)
    if not method.can_segment:
        raise ValueError(f"{args.checkpoint}: method {cfg['method']!r} does not segment images")
    ndim = len(cfg["data"]["shape"])
    subject, volume, info, image, _ = _load_for_model(args.image, None, cfg)
    logits = method.predict_logits(variables(state), image[None])
    pred = np.asarray(logits.argmax(-1))[0].astype(np.int32)
    os.makedirs(args.out, exist_ok=True)
    save_image(
        os.path.join(args.out, "labels.nii.gz"),
        _to_file_grid(uncrop(pred, info), ndim),
        reference=volume,
    )
    viz.save_figure(
        viz.overlay(image, pred, title=subject.name), os.path.join(args.out, "segmentation.png")
    )
    counts = {int(k): int(c) for k, c in zip(*np.unique(pred, return_counts=True))}
    _write_json(os.path.join(args.out, "summary.json"), {"voxels_per_label": counts})
    print(f"wrote labels.nii.gz, segmentation.png and summary.json to {args.out}")
    return 0


def _stats_table(rows: list[dict], keys: list[str]) -> list[tuple[str, str]]:
    import numpy as np

    out = []
    for k in keys:
        vals = np.asarray([r[k] for r in rows if k in r], np.float64)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            out.append((k, f"{vals.mean():.4f} ± {vals.std():.4f} (n={len(vals)})"))
    return out


def _run_evaluate(args: argparse.Namespace) -> int:
    from . import experiment
    from .methods import evaluate
    from .train import variables

    method, state, cfg = experiment.load_run(args.checkpoint, step=args.step)
    if args.dataset:
        cfg = {**cfg, "data": {**cfg["data"], "dataset": args.dataset}}
    dataset = experiment.load_dataset(cfg)
    if tuple(dataset.shape) != tuple(cfg["data"]["shape"]):
        raise ValueError(
            f"dataset shape {dataset.shape} differs from the model's {tuple(cfg['data']['shape'])}"
        )
    ev = evaluate(
        method,
        variables(state),
        dataset,
        max_pairs=args.max_pairs,
        batch_size=args.batch_size,
        surface=not args.no_hd95,
    )
    out = args.out or os.path.join(os.fspath(args.checkpoint), "evaluation")
    os.makedirs(out, exist_ok=True)
    lines = [f"# Evaluation of {args.checkpoint} ({cfg['method']})", ""]
    lines += ["| metric | mean ± std |", "|---|---|"]
    table = []
    if ev.pairs:
        keys = ["dice_identity", "dice", "hd95", "folding_percent", "sdlogj"]
        table += [(f"registration {k}", v) for k, v in _stats_table(ev.pairs, keys)]
    if ev.subjects:
        table += [(f"segmentation {k}", v) for k, v in _stats_table(ev.subjects, ["dice", "hd95"])]
    if not table:
        raise ValueError(f"{dataset.source}: no labelled held-out pairs or subjects to evaluate")
    lines += [f"| {k} | {v} |" for k, v in table]
    text = "\n".join(lines) + "\n"
    for name, rows in (("pairs", ev.pairs), ("subjects", ev.subjects)):
        if rows:
            tmp = os.path.join(out, f"{name}.csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, os.path.join(out, f"{name}.csv"))
    with open(os.path.join(out, "evaluation.md.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, "evaluation.md.tmp"), os.path.join(out, "evaluation.md"))
    _write_json(os.path.join(out, "summary.json"), ev.summary)
    print(text + f"\nwrote evaluation.md, summary.json and per-case CSV to {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="jrs-jax", description="Joint image registration and segmentation in JAX."
    )
    parser.add_argument("--version", action="version", version=f"jrs-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser(
        "example", help="warp, integrate and score a synthetic image (a 20-second tour)"
    )
    ex.add_argument("--size", type=int, default=96, help="grid size per axis (default 96)")
    ex.add_argument("--3d", dest="three_d", action="store_true", help="use a 3-D volume")
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=_run_example)

    dm = sub.add_parser(
        "demo", help="train and evaluate DeepAtlas on synthetic data (the 10-minute tour)"
    )
    dm.add_argument("--out", default="jrs_demo", help="output folder (default ./jrs_demo)")
    dm.add_argument("--data", help="a Learn2Reg-layout dataset.json instead of synthetic data")
    dm.add_argument("--3d", dest="three_d", action="store_true", help="3-D volumes")
    dm.add_argument("--quick", action="store_true", help="a one-minute run (small data and nets)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--no-progress", action="store_true", help="no progress bars")
    dm.set_defaults(func=_run_demo)

    ms = sub.add_parser(
        "make-synthetic", help="write the built-in synthetic dataset (Learn2Reg layout)"
    )
    ms.add_argument("--out", help="output folder (default jrs_synthetic, or jrs_synthetic_3d)")
    ms.add_argument(
        "--shape", type=int, nargs="+", help="spatial shape (default 128 128; --3d: 64 64 64)"
    )
    ms.add_argument("--3d", dest="three_d", action="store_true", help="3-D volumes")
    ms.add_argument("--subjects", type=int, default=20, help="number of subjects (default 20)")
    ms.add_argument(
        "--labelled",
        type=int,
        default=None,
        help="training subjects listed with labels (default all)",
    )
    ms.add_argument(
        "--heldout", type=int, default=None, help="held-out subjects (default max(2, N/5))"
    )
    ms.add_argument("--labels", type=int, default=4, help="foreground structures (default 4)")
    ms.add_argument(
        "--label-means",
        type=float,
        nargs="+",
        help="mean intensity per class 0..labels (equal means hide a boundary; e.g. "
        "0.05 0.35 0.8 0.6 0.6 hides 3 | 4)",
    )
    ms.add_argument("--seed", type=int, default=0)
    ms.set_defaults(func=_run_make_synthetic)

    tr = sub.add_parser("train", help="train a method from a config file")
    tr.add_argument("config", help="configs/NAME.py[:variant,...] or a saved config.json")
    tr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (dotted key), repeatable",
    )
    tr.add_argument("--workdir", help="run directory (default runs/<config>[-<variants>])")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_run_train)

    for name, helptext in (
        ("register", "register a NIfTI pair with a trained run"),
        ("segment", "segment a NIfTI image with a trained run"),
        ("evaluate", "evaluate a trained run on held-out data"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", required=True, help="run directory (from jrs-jax train)")
        p.add_argument(
            "--step",
            default="best",
            type=_step_arg,
            help="checkpoint: best (default), latest or a step number",
        )
        if name == "register":
            p.add_argument("--fixed", required=True, help="fixed image (.nii/.nii.gz)")
            p.add_argument("--moving", required=True, help="moving image (.nii/.nii.gz)")
            p.add_argument("--moving-labels", help="moving label map, warped to the fixed grid")
            p.add_argument("--fixed-labels", help="fixed label map (reports Dice)")
            p.add_argument("--out", required=True, help="output folder")
            p.set_defaults(func=_run_register)
        elif name == "segment":
            p.add_argument("--image", required=True, help="image (.nii/.nii.gz)")
            p.add_argument("--out", required=True, help="output folder")
            p.set_defaults(func=_run_segment)
        else:
            p.add_argument("--dataset", help="dataset.json or folder (default: the run's)")
            p.add_argument("--out", help="output folder (default RUN/evaluation)")
            p.add_argument("--max-pairs", type=int, default=None)
            p.add_argument("--batch-size", type=int, default=4)
            p.add_argument("--no-hd95", action="store_true", help="skip HD95 (faster)")
            p.set_defaults(func=_run_evaluate)
    return parser


def _step_arg(text: str):
    if text in ("best", "latest"):
        return text
    try:
        return int(text)
    except ValueError:
        msg = f"expected best, latest or a step number; got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jrs-jax`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "size", 8) < 8:
        parser.error(f"--size must be at least 8, got {args.size}")
    from .config import ConfigError
    from .data.errors import DataError
    from .train.loop import TrainingDiverged

    try:
        return int(args.func(args))
    except TrainingDiverged as exc:
        print(f"jrs-jax: training stopped: {exc}", file=sys.stderr)
        return 3
    except (
        ConfigError,
        DataError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
        KeyError,
    ) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"jrs-jax: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
