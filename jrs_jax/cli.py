"""Command-line interface: ``jrs-jax COMMAND ...``.

Commands:
  demo            the main job: DeepAtlas end to end on synthetic data (no download)
  make-synthetic  write the built-in synthetic anatomy in the Learn2Reg layout
  train           train a method from a config file (``configs/*.py[:variants]``)
  register        register a NIfTI pair with a trained run
  segment         segment a NIfTI image with a trained run
  evaluate        Dice / HD95 / folding table of a trained run on held-out data
  reproduce       re-run a paper's comparison (``--list`` names the studies)
  example         a short tour of the spatial ops and losses on a synthetic image

User errors (bad arguments, missing or invalid files, bad configs) print one line
``jrs-jax: error: ...`` and exit with status 2; a diverged training run exits with 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main"]


def _run_example(args: argparse.Namespace) -> int:
    from .demo import run_example

    run_example(size=args.size, three_d=args.three_d, seed=args.seed)
    return 0


# --------------------------------------------------------------------------------------------
# make-synthetic / train
# --------------------------------------------------------------------------------------------


def _scenario_settings(write, scenario: str, items) -> dict:
    """``--setting KEY=VALUE`` pairs as keyword arguments of the scenario writer (values
    parsed as Python literals, else kept as strings); a key the writer does not take is a
    ``ValueError`` naming the ones it does."""
    import ast
    import inspect

    params = inspect.signature(write).parameters
    named = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    open_ = any(p.kind is p.VAR_KEYWORD for p in params.values())
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--setting expects KEY=VALUE; got {item!r}")
        if key not in named and not open_:
            raise ValueError(f"scenario {scenario} has no setting {key!r}; it has {named}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def _run_make_synthetic(args: argparse.Namespace) -> int:
    from .data.scenarios import get_scenario, make_scenario

    write = get_scenario(args.scenario)
    shape = tuple(args.shape) if args.shape else ((64, 64, 64) if args.three_d else (128, 128))
    out = args.out or ("jrs_synthetic_3d" if len(shape) == 3 else "jrs_synthetic")
    heldout = args.heldout if args.heldout is not None else max(2, args.subjects // 5)
    settings = _scenario_settings(write, args.scenario, args.setting)
    t0 = time.perf_counter()
    kwargs = dict(
        key=args.seed,
        shape=shape,
        num_subjects=args.subjects,
        num_labelled=args.labelled,
        num_heldout=heldout,
        num_val_pairs=heldout * (heldout - 1),
        num_labels=args.labels,
        **({"label_means": args.label_means} if args.label_means else {}),
    )
    try:  # generated in OUT.partial and renamed: nothing half-written is left behind
        path = make_scenario(args.scenario, out, **{**kwargs, **settings})
    except TypeError as exc:  # a setting the writer forwards and its callee does not take
        raise ValueError(f"scenario {args.scenario}: {exc}") from None
    print(
        f"wrote {args.subjects} subjects ({'x'.join(map(str, shape))}, {heldout} held out) "
        f"of scenario {args.scenario} to "
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


def _files(args: argparse.Namespace, keys) -> dict:
    return {k: getattr(args, k, None) for k in keys}


def _run_register(args: argparse.Namespace) -> int:
    """See :func:`jrs_jax.inference.register_files` for the outputs."""
    from .experiment import load_run
    from .inference import FILE_OPTIONS, register_files

    if args.series is None and (args.fixed is None or args.moving is None):
        raise ValueError("register needs --fixed and --moving (or --series for a series)")
    if args.series is not None and (args.fixed or args.moving or args.moving_labels):
        raise ValueError("--series registers every frame to frame 0: drop --fixed / --moving")
    if args.refine < 0:
        raise ValueError(f"--refine must be a number of steps >= 0; got {args.refine}")
    if args.refine_lr is not None and not args.refine_lr > 0:
        raise ValueError(f"--refine-lr must be positive; got {args.refine_lr}")
    if args.refine and args.series is not None:
        raise ValueError("--refine refines one pair; it does not apply to --series")
    method, state, cfg = load_run(args.checkpoint, step=args.step)
    if args.refine:
        from .refinement import check_refinable

        check_refinable(method, state)
    keys = [k for k in FILE_OPTIONS if k != "image"]
    files = {**_files(args, keys), "sequence": args.series}
    out = register_files(
        method, state, cfg, files, args.out, refine_steps=args.refine, refine_lr=args.refine_lr
    )
    if args.series is not None:
        worst = max(out["folding_percent"], default=0.0)
        print(f"wrote {out['frames']} frames' outputs ({len(out['files'])} files) to {args.out}")
        print(f"  folding (det J <= 0): at most {worst:.3f} % of a frame's voxels")
        return 0
    stats = out["jacobian"]
    print(f"wrote {', '.join(out['files'])} and summary.json to {args.out}")
    print(
        f"  folding (det J <= 0): {stats['folding_percent']:.3f} %   sdlogj: {stats['sdlogj']:.4f}"
        f"   det J in [{stats['jac_min']:.3f}, {stats['jac_max']:.3f}]"
    )
    if "dice_after" in out:
        print(f"  Dice: {out['dice_before']:.4f} -> {out['dice_after']:.4f}")
    if "refine" in out:
        r = out["refine"]
        dice = (
            f"   Dice {r['dice_before']:.4f} -> {r['dice_after']:.4f}" if "dice_after" in r else ""
        )
        print(
            f"  refined {r['steps']} steps in {r['seconds']:.1f} s: objective "
            f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}{dice}   folding "
            f"{r['folding_percent_before']:.3f} % -> {r['folding_percent_after']:.3f} %"
        )
    return 0


def _run_segment(args: argparse.Namespace) -> int:
    """See :func:`jrs_jax.inference.segment_files` for the outputs."""
    from .experiment import load_run
    from .inference import segment_files

    method, state, cfg = load_run(args.checkpoint, step=args.step)
    segment_files(method, state, cfg, _files(args, ["image"]), args.out)
    print(f"wrote labels.nii.gz, segmentation.png and summary.json to {args.out}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from .experiment import evaluate_run

    out = args.out or os.path.join(os.fspath(args.checkpoint), "evaluation")
    text = evaluate_run(
        args.checkpoint,
        step=args.step,
        dataset=args.dataset,
        out=out,
        max_pairs=args.max_pairs,
        batch_size=args.batch_size,
        surface=not args.no_hd95,
    )
    print(text + f"\nwrote evaluation.md, summary.json and per-case CSV to {out}")
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    from .studies import default_out, list_studies, load_study, run_study

    if args.list:
        for name, study in list_studies().items():
            print(f"{name:<16} {study['claim']} ({study.get('paper', '')})")
        return 0
    if not args.study:
        raise ValueError("reproduce needs a STUDY name (or --list)")
    study = load_study(args.study, quick=args.quick)
    out = args.out or default_out(study)
    result = run_study(study, out=out, seeds=args.seeds, progress=not args.no_progress)
    print()
    print(result["table"])
    print(f"wrote table.md, table.json and table.png to {out} ({result['seconds']:.0f} s)")
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
        "--scenario",
        default="anatomy",
        help="data scenario (default anatomy; see jrs_jax.data.scenarios.SCENARIOS)",
    )
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
    ms.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario setting, repeatable (e.g. --setting num_timepoints=3 for "
        "longitudinal, --setting num_frames=12 for speech / cardiac)",
    )
    ms.set_defaults(func=_run_make_synthetic)

    rp = sub.add_parser(
        "reproduce", help="re-run a paper's comparison (a study: rows x seeds, paired gaps)"
    )
    rp.add_argument("study", nargs="?", help="study name[:variants] (see --list)")
    rp.add_argument("--list", action="store_true", help="name every study and its claim")
    rp.add_argument("--quick", action="store_true", help="pipeline check (tiny nets, few steps)")
    rp.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the study's)")
    rp.add_argument("--out", help="output folder (default jrs_reproduce/<study>[-<variants>])")
    rp.add_argument("--no-progress", action="store_true", help="no progress bars")
    rp.set_defaults(func=_run_reproduce)

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
            p.add_argument("--fixed", help="fixed image (.nii/.nii.gz)")
            p.add_argument("--moving", help="moving image (.nii/.nii.gz)")
            p.add_argument(
                "--series",
                help="instead of --fixed / --moving: a series of frames (4-D NIfTI [X, Y, Z, T], "
                "2-D+t [H, W, 1, T], or a folder of frames), every frame registered to frame 0 "
                "(methods with a sequence task)",
            )
            p.add_argument("--moving-labels", help="moving label map, warped to the fixed grid")
            p.add_argument(
                "--fixed-labels",
                help="fixed label map (reports Dice); with --series: frame 0's labels, "
                "propagated to every frame",
            )
            p.add_argument(
                "--refine",
                type=int,
                default=0,
                metavar="N",
                help="first refine the network on this pair: N optimiser steps on the "
                "method's unsupervised objective (test-time refinement; default 0)",
            )
            p.add_argument(
                "--refine-lr",
                type=float,
                default=None,
                metavar="LR",
                help="Adam learning rate of --refine (default: the config's refine.lr, else 1e-4)",
            )
            p.add_argument("--moving-mask", help="moving region mask (methods that need one)")
            p.add_argument("--fixed-mask", help="fixed region mask (methods that need one)")
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
