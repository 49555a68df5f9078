"""VoxelMorph-style registration train step: jrs_jax (Flax + optax) against PyTorch, side by side.

Run (needs torch; the ``bench`` extra)::

    python benchmarks/train_step.py                # 2-D 8x128x128 and 3-D 1x96x112x96
    python benchmarks/train_step.py --quick        # small sizes, a smoke run
    python benchmarks/train_step.py --only 3d --repeats 5

One step = U-Net on ``concat(moving, fixed)`` -> flow conv -> warp(moving) -> VoxelMorph NCC
(window 9) + 0.01 x Grad('l2') -> backward -> Adam(1e-4). Both frameworks run the same
architecture (conv count, widths, kernels, strides, LeakyReLU(0.2), linear upsampling, skips)
on the same inputs (numpy seed 0) **and the same initial weights** (the JAX worker writes its
initial parameters, the torch worker loads them; the first-step losses are printed side by side
as a check).

Architecture: VoxelMorph's default (``enc_nf=(16, 32, 32, 32)``,
``dec_nf=(32, 32, 32, 32, 32, 16, 16)``, ``VxmDense``/``Unet`` of the ``voxelmorph`` package:
conv at each encoder level then max-pool, a conv at the bottom, upsample + skip + conv per
level, three full-resolution final convs, flow conv) mapped onto ``jrs_jax.nets.UNet`` as
``features=(16, 32, 32, 32, 32)``, ``decoder_features=(32, 32, 32, 32, 16, 16)``,
``downsample="maxpool"``: the same 12 convs at the same resolutions and widths. Differences to
the package: the last skip is the level-0 features (16 channels) instead of the raw input
(2 channels), so the first full-resolution decoder conv has 48 instead of 34 input channels,
and upsampling is (bi/tri)linear instead of nearest. ``--arch strided`` uses the library's
default stride-2 conv downsampling instead (torch: ``padding=1``, same FLOPs, different
alignment, so no weight transfer).

Every (framework, variant) runs in its own subprocess: the honest peak memory is that
process's peak RSS growth (``ru_maxrss`` minus the RSS after imports and inputs); for JAX also
XLA's compiled memory analysis (temp + argument bytes). JAX compile time = first call minus the
steady-state median. The conv micro-benchmark compares ``jrs_jax.nets.blocks.conv_nd``'s
implementations (and two rejected alternatives) on 64^3, 32 -> 32 channels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import fmt_bytes, fmt_time, markdown_table, write_results  # noqa: E402

ARCHS = {
    "vxm": dict(
        features=(16, 32, 32, 32, 32),
        decoder_features=(32, 32, 32, 32, 16, 16),
        downsample="maxpool",
    ),
    "strided": dict(
        features=(16, 32, 32, 32),
        decoder_features=(32, 32, 32, 32, 32, 16, 16),
        downsample="conv",
    ),
}
REG_WEIGHT = 0.01
LR = 1e-4
WINDOW = 9
NOTES = os.path.join(HERE, "results", "train_step_notes.md")


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def _inputs(batch, shape, seed=0):
    rng = np.random.default_rng(seed)
    moving = rng.random((batch, *shape, 1), dtype=np.float32)
    fixed = rng.random((batch, *shape, 1), dtype=np.float32)
    return moving, fixed


# --------------------------------------------------------------------------------------------
# JAX worker
# --------------------------------------------------------------------------------------------


def jax_worker(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from jrs_jax import losses
    from jrs_jax.nets import RegistrationNet
    from jrs_jax.spatial import warp

    moving_np, fixed_np = _inputs(args.batch, args.shape)
    moving, fixed = jnp.asarray(moving_np), jnp.asarray(fixed_np)
    base = _rss()
    net = RegistrationNet(**ARCHS[args.arch], conv_impl=args.impl, remat=args.remat)
    params = jax.jit(net.init)(jax.random.key(0), moving, fixed)
    if args.params_out:
        flat = {
            jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(params)
        }
        np.savez(args.params_out, **flat)
    tx = optax.adam(LR)
    opt_state = tx.init(params)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32

    def loss_fn(p, moving, fixed):
        disp = net.clone(dtype=dtype).apply(p, moving, fixed)["disp"]
        warped = warp(moving, disp, padding="zeros")
        sim = losses.local_ncc(warped, fixed, window=WINDOW, convention="voxelmorph")
        return jnp.mean(sim) + REG_WEIGHT * jnp.mean(losses.gradient_l2(disp))

    def step(params, opt_state, moving, fixed):
        loss, grads = jax.value_and_grad(loss_fn)(params, moving, fixed)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    params, opt_state, loss = jitted(params, opt_state, moving, fixed)
    first_loss = float(loss)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats + 1):  # +1 warm-up
        t0 = time.perf_counter()
        params, opt_state, loss = jitted(params, opt_state, moving, fixed)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    mem = None
    try:
        ma = jitted.lower(params, opt_state, moving, fixed).compile().memory_analysis()
        mem = int(ma.temp_size_in_bytes + ma.argument_size_in_bytes)
    except Exception:  # backends without memory analysis
        pass
    return dict(
        step=steady,
        times=times[1:],
        compile=max(t_first - steady, 0.0),
        xla_mem=mem,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base,
        first_loss=first_loss,
    )


# --------------------------------------------------------------------------------------------
# torch worker: an equivalent of voxelmorph's VxmDense (+ NCC, Grad('l2'), Adam)
# --------------------------------------------------------------------------------------------


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class UNetVxm(nn.Module):
        """The JAX ``UNet`` + flow head, layer for layer (module names as the JAX params)."""

        def __init__(self, ndim, in_ch, features, decoder_features, downsample):
            super().__init__()
            conv = nn.Conv2d if ndim == 2 else nn.Conv3d
            self.ndim, self.downsample = ndim, downsample
            self.levels = len(features)
            self.convs = nn.ModuleDict()
            prev, enc_ch = in_ch, []
            for i, f in enumerate(features):
                if i > 0 and downsample == "conv":
                    self.convs[f"down{i}"] = conv(prev, f, 3, stride=2, padding=1)
                    prev = f
                self.convs[f"enc{i}"] = conv(prev, f, 3, padding=1)
                prev = f
                enc_ch.append(f)
            dec = tuple(decoder_features)
            for j in range(self.levels - 1):
                self.convs[f"dec{j}"] = conv(
                    prev + enc_ch[self.levels - 2 - j], dec[j], 3, padding=1
                )
                prev = dec[j]
            self.num_final = len(dec) - (self.levels - 1)
            for k, f in enumerate(dec[self.levels - 1 :]):
                self.convs[f"final{k}"] = conv(prev, f, 3, padding=1)
                prev = f
            self.flow = conv(prev, ndim, 3, padding=1)
            self.pool = nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)
            self.mode = "bilinear" if ndim == 2 else "trilinear"

        def forward(self, x):
            act = lambda t: F.leaky_relu(t, 0.2)
            skips = []
            for i in range(self.levels):
                if i > 0:
                    if self.downsample == "conv":
                        x = act(self.convs[f"down{i}"](x))
                    else:
                        x = self.pool(x)
                x = act(self.convs[f"enc{i}"](x))
                skips.append(x)
            y = skips[-1]
            for j in range(self.levels - 1):
                skip = skips[self.levels - 2 - j]
                y = F.interpolate(y, size=skip.shape[2:], mode=self.mode, align_corners=False)
                y = act(self.convs[f"dec{j}"](torch.cat([y, skip], 1)))
            for k in range(self.num_final):
                y = act(self.convs[f"final{k}"](y))
            return self.flow(y)

    class VxmDense(nn.Module):
        def __init__(self, ndim, shape, **arch):
            super().__init__()
            self.unet = UNetVxm(ndim, 2, **arch)
            axes = [torch.arange(n, dtype=torch.float32) for n in shape]
            self.register_buffer("grid", torch.stack(torch.meshgrid(*axes, indexing="ij"))[None])
            scale = torch.tensor([2.0 / (n - 1) for n in shape]).view(1, -1, *[1] * ndim)
            self.register_buffer("scale", scale)

        def forward(self, moving, fixed):
            flow = self.unet(torch.cat([moving, fixed], 1))
            loc = (self.grid + flow) * self.scale - 1.0  # SpatialTransformer, align_corners
            loc = loc.movedim(1, -1).flip(-1)
            warped = F.grid_sample(moving, loc, mode="bilinear", align_corners=True)
            return warped, flow

    def ncc(y_true, y_pred, win=WINDOW):
        """voxelmorph.torch.losses.NCC (box sums by convolution with a ones kernel)."""
        ndim = y_true.ndim - 2
        conv_fn = getattr(F, f"conv{ndim}d")
        filt = torch.ones([1, 1, *[win] * ndim], device=y_true.device)
        pad = win // 2
        i, j = y_true, y_pred
        i_sum, j_sum, i2_sum, j2_sum, ij_sum = (
            conv_fn(t, filt, padding=pad) for t in (i, j, i * i, j * j, i * j)
        )
        win_size = float(win**ndim)
        u_i, u_j = i_sum / win_size, j_sum / win_size
        cross = ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * win_size
        i_var = i2_sum - 2 * u_i * i_sum + u_i * u_i * win_size
        j_var = j2_sum - 2 * u_j * j_sum + u_j * u_j * win_size
        cc = cross * cross / (i_var * j_var + 1e-5)
        return -torch.mean(cc)

    def grad_l2(flow):
        """voxelmorph.torch.losses.Grad('l2')."""
        ndim = flow.ndim - 2
        total = 0.0
        for ax in range(2, ndim + 2):
            d = flow.narrow(ax, 1, flow.shape[ax] - 1) - flow.narrow(ax, 0, flow.shape[ax] - 1)
            total = total + torch.mean(d * d)
        return total / ndim

    def ncc_tf(y_true, y_pred, win=WINDOW, eps=1e-5):
        """VoxelMorph-TF's NCC clamps (``jrs_jax`` ``convention="voxelmorph"``): check only."""
        ndim = y_true.ndim - 2
        conv_fn = getattr(F, f"conv{ndim}d")
        filt = torch.ones([1, 1, *[win] * ndim])
        sums = [conv_fn(t, filt, padding=win // 2) for t in (y_true, y_pred)]
        s_aa, s_bb, s_ab = (
            conv_fn(t, filt, padding=win // 2)
            for t in (y_true * y_true, y_pred * y_pred, y_true * y_pred)
        )
        vol = float(win**ndim)
        cross = torch.clamp(s_ab - sums[1] * sums[0] / vol, min=eps)
        var_a = torch.clamp(s_aa - sums[0] * sums[0] / vol, min=eps)
        var_b = torch.clamp(s_bb - sums[1] * sums[1] / vol, min=eps)
        return -torch.mean((cross / var_a) * (cross / var_b))

    return VxmDense, ncc, ncc_tf, grad_l2


def _load_jax_params(model, path):
    """JAX ``[*K, Cin, Cout]`` kernels -> torch ``[Cout, Cin, *K]``; names as the JAX tree."""
    import torch

    flat = dict(np.load(path))
    with torch.no_grad():
        for key, value in flat.items():
            parts = [p.strip("[]'") for p in key.split("][")]
            parts = [p for p in parts if p not in ("params", "unet", "encoder", "conv", "conv0")]
            # e.g. ['enc0', 'kernel'], ['flow', 'bias']
            name, leaf = parts[0], parts[-1]
            mod = model.unet.flow if name == "flow" else model.unet.convs[name]
            if leaf == "kernel":
                value = np.moveaxis(value, (-1, -2), (0, 1))
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            else:
                mod.bias.copy_(torch.from_numpy(value))


def torch_worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    VxmDense, ncc, ncc_tf, grad_l2 = _torch_modules()
    moving_np, fixed_np = _inputs(args.batch, args.shape)
    moving = torch.from_numpy(np.ascontiguousarray(np.moveaxis(moving_np, -1, 1)))
    fixed = torch.from_numpy(np.ascontiguousarray(np.moveaxis(fixed_np, -1, 1)))
    base = _rss()
    torch.manual_seed(0)
    model = VxmDense(len(args.shape), args.shape, **ARCHS[args.arch])
    if args.params_in:
        _load_jax_params(model, args.params_in)
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        warped, flow = model(moving, fixed)
        loss = ncc(fixed, warped) + REG_WEIGHT * grad_l2(flow)
        loss.backward()
        opt.step()
        return float(loss)

    with torch.no_grad():  # the JAX loss convention on the initial weights: equal to JAX's
        warped, flow = model(moving, fixed)
        check_loss = float(ncc_tf(fixed, warped) + REG_WEIGHT * grad_l2(flow))
    first_loss = step()
    times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return dict(
        step=statistics.median(times[1:]),
        times=times[1:],
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base,
        first_loss=first_loss,
        check_loss=check_loss,
    )


# --------------------------------------------------------------------------------------------
# conv micro-benchmark
# --------------------------------------------------------------------------------------------


def conv_micro(n=64, c=32, repeats=5) -> list[dict]:
    """``conv_nd`` native vs depth slices, plus two rejected variants (fwd, fwd+bwd)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jrs_jax.nets.blocks import _same_padding, conv_nd

    def conv2d(x, w, s):
        return lax.conv_general_dilated(
            x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def fold_in(x, w, s):  # taps folded into the input channels: one conv2d on k*Cin
        b, d, h, ww, ci = x.shape
        k = w.shape[0]
        do, lo, hi = _same_padding(d, k, s)
        xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
        sl = jnp.concatenate([xp[:, t : t + (do - 1) * s + 1 : s] for t in range(k)], -1)
        wk = jnp.transpose(w, (1, 2, 0, 3, 4)).reshape(k, k, k * ci, w.shape[-1])
        y = conv2d(sl.reshape(b * do, h, ww, k * ci), wk, s)
        return y.reshape(b, do, *y.shape[1:])

    def fold_out(x, w, s):  # taps folded into the output channels, then shift-and-add
        b, d, h, ww, ci = x.shape
        k, co = w.shape[0], w.shape[-1]
        do, lo, hi = _same_padding(d, k, s)
        wk = jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(k, k, ci, k * co)
        y = conv2d(x.reshape(b * d, h, ww, ci), wk, s)
        y = y.reshape(b, d, y.shape[1], y.shape[2], k, co)
        yp = jnp.pad(y, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0), (0, 0)))
        return sum(yp[:, t : t + (do - 1) * s + 1 : s, :, :, t] for t in range(k))

    impls = {
        "native (lax 3-D conv)": lambda x, w, s: conv_nd(x, w, strides=s, conv_impl="native"),
        "depth_slices (3 x conv2d, kept)": lambda x, w, s: conv_nd(
            x, w, strides=s, conv_impl="depth_slices"
        ),
        "taps -> input channels (rejected)": fold_in,
        "taps -> output channels (rejected)": fold_out,
    }
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, n, n, n, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, c, c)) * 0.1, jnp.float32)
    rows = []
    for stride in (1, 2):
        fns, errs = {}, {}
        ref = conv_nd(x, w, strides=stride, conv_impl="native")
        for name, f in impls.items():
            fwd = jax.jit(lambda x, w, f=f, s=stride: f(x, w, s))
            bwd = jax.jit(
                jax.grad(lambda x, w, f=f, s=stride: jnp.sum(jnp.sin(f(x, w, s))), argnums=(0, 1))
            )
            errs[name] = float(jnp.max(jnp.abs(fwd(x, w) - ref)) / jnp.max(jnp.abs(ref)))
            jax.block_until_ready(bwd(x, w))
            fns[name] = (fwd, bwd)
        times = {name: ([], []) for name in impls}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            for name, (fwd, bwd) in fns.items():
                t0 = time.perf_counter()
                fwd(x, w).block_until_ready()
                t1 = time.perf_counter()
                jax.block_until_ready(bwd(x, w))
                times[name][0].append(t1 - t0)
                times[name][1].append(time.perf_counter() - t1)
        t_nat = [statistics.median(t) for t in times["native (lax 3-D conv)"]]
        for name in impls:
            tf, tb = (statistics.median(t) for t in times[name])
            rows.append(
                {
                    "conv 3^3": name,
                    "size": f"1x{n}^3, {c}->{c}, stride {stride}",
                    "fwd": fmt_time(tf),
                    "fwd+bwd": fmt_time(tb),
                    "speed-up fwd / fwd+bwd": f"{t_nat[0] / tf:.2f}x / {t_nat[1] / tb:.2f}x",
                    "max rel err": f"{errs[name]:.1e}",
                    "_t_fwd": tf,
                    "_t_fwd_bwd": tb,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def _run_worker(worker_args, env_extra=None, timeout=1800) -> dict | None:
    env = dict(os.environ)
    env.update(env_extra or {})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *worker_args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if res.returncode != 0:
        print(f"worker failed: {' '.join(worker_args)}\n{res.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _variants(dim, args):
    """(label, worker kind, extra worker args, extra env) per row."""
    out = [
        ("JAX conv_impl=native", "jax", ["--impl", "native"], None),
    ]
    if dim == 3:
        out.append(("JAX conv_impl=depth_slices (auto)", "jax", ["--impl", "depth_slices"], None))
        if args.levers:
            out += [
                (
                    "JAX depth_slices + remat (jax.checkpoint)",
                    "jax",
                    ["--impl", "depth_slices", "--remat"],
                    None,
                ),
                (
                    "JAX depth_slices + XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true",
                    "jax",
                    ["--impl", "depth_slices"],
                    {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=true"},
                ),
                (
                    "JAX native + XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true",
                    "jax",
                    ["--impl", "native"],
                    {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=true"},
                ),
                (
                    "JAX depth_slices, bfloat16 compute (NOT exact)",
                    "jax",
                    ["--impl", "depth_slices", "--bf16"],
                    None,
                ),
            ]
    out.append(("torch (VxmDense equivalent)", "torch", [], None))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--only", choices=["2d", "3d", "conv"], nargs="*", default=["2d", "3d", "conv"]
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="vxm")
    parser.add_argument("--levers", action="store_true", help="also try XLA-CPU levers in 3-D")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train_step_cpu_2core"))
    # worker mode (internal)
    parser.add_argument("--worker", choices=["jax", "torch"])
    parser.add_argument("--shape", type=int, nargs="*")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--impl", default="auto")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--params-out")
    parser.add_argument("--params-in")
    args = parser.parse_args(argv)

    if args.worker:
        args.shape = tuple(args.shape)
        result = jax_worker(args) if args.worker == "jax" else torch_worker(args)
        print(json.dumps(result))
        return

    sizes = {"2d": (8, (128, 128)), "3d": (1, (96, 112, 96))}
    if args.quick:
        sizes = {"2d": (2, (64, 64)), "3d": (1, (32, 32, 48))}
    repeats = args.repeats or (2 if args.quick else 5)
    rows: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="train_step_")
    for key in ("2d", "3d"):
        if key not in args.only:
            continue
        batch, shape = sizes[key]
        dim = len(shape)
        label = f"{batch}x{'x'.join(map(str, shape))}"
        params_path = os.path.join(tmp, f"params_{key}.npz")
        common_args = [
            "--shape",
            *map(str, shape),
            "--batch",
            str(batch),
            "--repeats",
            str(repeats),
        ]
        common_args += ["--arch", args.arch, "--threads", str(args.threads)]
        t_torch = None
        results = []
        for name, kind, extra, env in _variants(dim, args):
            wargs = [kind, *common_args, *extra]
            if kind == "jax" and not os.path.exists(params_path):
                wargs += ["--params-out", params_path]
            if kind == "torch" and args.arch == "vxm" and os.path.exists(params_path):
                wargs += ["--params-in", params_path]
            res = _run_worker(wargs, env)
            print(f"{label} {name}: {res}", file=sys.stderr)
            results.append((name, kind, res))
            if kind == "torch" and res:
                t_torch = res["step"]
        for name, kind, res in results:
            if res is None:
                rows.append({"size": label, "variant": name, "step": "failed"})
                continue
            rows.append(
                {
                    "size": label,
                    "variant": name,
                    "step": fmt_time(res["step"]),
                    "jax/torch": f"{res['step'] / t_torch:.2f}x"
                    if t_torch and kind == "jax"
                    else "",
                    "compile": fmt_time(res.get("compile")) if kind == "jax" else "",
                    "XLA temp+args": fmt_bytes(res.get("xla_mem")) if kind == "jax" else "",
                    "peak RSS growth": fmt_bytes(res["peak_rss"]),
                    "first loss": f"{res['first_loss']:.6f}"
                    + (f" (JAX conv.: {res['check_loss']:.6f})" if "check_loss" in res else ""),
                    "_t_step": res["step"],
                    "_times": res["times"],
                    "_t_compile": res.get("compile"),
                    "_xla_mem": res.get("xla_mem"),
                    "_peak_rss": res["peak_rss"],
                }
            )
    columns = [
        "size",
        "variant",
        "step",
        "jax/torch",
        "compile",
        "XLA temp+args",
        "peak RSS growth",
        "first loss",
    ]
    import jax
    import torch

    header = (
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
        f"({args.threads} threads); {os.cpu_count()} CPU cores; arch={args.arch}; "
        f"median of {repeats} steps (after 1 warm-up)"
    )
    table = header + "\n\n" + (markdown_table(rows, columns) if rows else "")
    if "conv" in args.only:
        conv_rows = conv_micro(n=32 if args.quick else 64, repeats=2 if args.quick else 5)
        rows += conv_rows
        conv_cols = ["conv 3^3", "size", "fwd", "fwd+bwd", "speed-up fwd / fwd+bwd", "max rel err"]
        table += "\n\n" + markdown_table(conv_rows, conv_cols)
    if not args.quick and os.path.exists(NOTES):
        with open(NOTES) as f:  # hand-written findings kept next to the table
            table += "\n" + f.read()
    print(table)
    write_results(args.out, rows, table)


if __name__ == "__main__":
    main()
