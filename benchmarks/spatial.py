"""Speed and memory of jrs_jax's spatial ops and losses against the PyTorch peers, side by side.

Run (needs the ``bench`` extra: ``pip install -e ".[bench]"``)::

    python benchmarks/spatial.py                 # full sizes: 2-D 8x256x256, 3-D 1x160x192x224
    python benchmarks/spatial.py --quick         # small sizes, a smoke run (~1 min)
    python benchmarks/spatial.py --only warp     # a subset (warp, integrate, lncc, bending)

Prints one markdown table (median times over repeats, JAX/torch ratio: < 1 means JAX is
faster) and writes it with the raw numbers to ``bench_out/spatial.{md,json}``.

Peers: ``torch.nn.functional.grid_sample`` with a precomputed normalised grid (the fastest
torch form), MONAI ``Warp``, ``DVF2DDF``, ``LocalNormalizedCrossCorrelationLoss``,
``BendingEnergyLoss``. Memory: XLA's temporary buffers from the compiled executable's memory
analysis (JAX) and the peak-RSS growth of a fresh subprocess (torch, CPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import fmt_bytes, fmt_time, markdown_table, median_time, write_results, xla_temp_bytes

from jrs_jax import losses, spatial

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the table then has JAX columns only
    torch = None
try:
    import monai
    from monai.losses import BendingEnergyLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import DVF2DDF, Warp
except ImportError:  # pragma: no cover
    monai = None


def _inputs(batch, shape, channels, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    disp = spatial.random_displacement(
        k1, shape, batch_size=batch, amplitude=3.0, diffeomorphic=False
    )
    image = jax.random.uniform(k2, (batch, *shape, channels))
    return jax.block_until_ready(image), jax.block_until_ready(disp)


def _torch_inputs(image, disp):
    img = torch.from_numpy(np.moveaxis(np.asarray(image), -1, 1).copy())
    ddf = torch.from_numpy(np.moveaxis(np.asarray(disp), -1, 1).copy())
    return img, ddf


def _torch_grid(ddf):
    """Normalised absolute grid for grid_sample (align_corners=True, xy order)."""
    shape = ddf.shape[2:]
    axes = [torch.arange(n, dtype=ddf.dtype) for n in shape]
    ident = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)[None]
    scale = torch.tensor([2.0 / (n - 1) for n in shape]).view(1, -1, *[1] * len(shape))
    grid = (ident + ddf) * scale - 1.0
    return grid.movedim(1, -1).flip(-1)


def _torch_grid_from(ddf_leaf):
    return _torch_grid(ddf_leaf)


def _ratio(tj, tt):
    return f"{tj / tt:.2f}x" if tj and tt else "—"


def _row(op, size, t_jax, t_peer, *, peer="MONAI", mem_jax=None, mem_peer=None, monai=None):
    """One table row; raw seconds kept under ``_t_*`` for the JSON output."""
    row = {
        "op": op,
        "size": size,
        "jax": fmt_time(t_jax),
        peer: fmt_time(t_peer),
        "jax/torch": _ratio(t_jax, t_peer),
        "jax XLA temp": fmt_bytes(mem_jax),
        "_t_jax": t_jax,
        "_t_torch": t_peer,
    }
    if monai is not None:
        row["MONAI"] = fmt_time(monai)
    if mem_peer is not None:
        row["torch peak RSS"] = fmt_bytes(mem_peer)
    return row


def bench_warp(rows, batch, shape, channels, repeats):
    image, disp = _inputs(batch, shape, channels)
    label = f"{batch}x{'x'.join(map(str, shape))}, C={channels}"
    fwd = jax.jit(lambda i, d: spatial.warp(i, d))
    g_disp = jax.jit(jax.grad(lambda d, i: jnp.sum(spatial.warp(i, d) ** 2)))
    g_both = jax.jit(jax.grad(lambda d, i: jnp.sum(spatial.warp(i, d) ** 2), argnums=(0, 1)))
    cases = {
        "warp forward": lambda: fwd(image, disp).block_until_ready(),
        "warp fwd+bwd (disp)": lambda: g_disp(disp, image).block_until_ready(),
        "warp fwd+bwd (image+disp)": lambda: jax.block_until_ready(g_both(disp, image)),
    }
    t_jax = {k: median_time(f, repeats=repeats) for k, f in cases.items()}
    mem = {
        "warp forward": xla_temp_bytes(fwd, image, disp),
        "warp fwd+bwd (disp)": xla_temp_bytes(g_disp, disp, image),
        "warp fwd+bwd (image+disp)": xla_temp_bytes(g_both, disp, image),
    }
    t_torch, t_monai = {}, {}
    if torch is not None:
        img, ddf = _torch_inputs(image, disp)
        grid = _torch_grid(ddf)

        def t_fwd():
            with torch.no_grad():
                F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

        def t_bwd(image_grad):
            d = ddf.clone().requires_grad_(True)
            i = img.clone().requires_grad_(image_grad)
            out = F.grid_sample(
                i, _torch_grid_from(d), mode="bilinear", padding_mode="border", align_corners=True
            )
            out.pow(2).sum().backward()

        t_torch = {
            "warp forward": median_time(t_fwd, repeats=repeats),
            "warp fwd+bwd (disp)": median_time(lambda: t_bwd(False), repeats=repeats),
            "warp fwd+bwd (image+disp)": median_time(lambda: t_bwd(True), repeats=repeats),
        }
        if monai is not None:
            warp_m = Warp(mode="bilinear", padding_mode="border")

            def m_fwd():
                with torch.no_grad():
                    warp_m(img, ddf)

            t_monai = {"warp forward": median_time(m_fwd, repeats=repeats)}
    for k in cases:
        rows.append(
            _row(
                k,
                label,
                t_jax[k],
                t_torch.get(k),
                peer="torch grid_sample",
                mem_jax=mem[k],
                monai=t_monai.get(k),
            )
        )


def _torch_integration_peak(batch, shape, steps, grad):
    """Peak RSS growth (bytes) while MONAI DVF2DDF runs, in a fresh process (RSS polled)."""
    code = f"""
import threading, time, torch
from monai.networks.blocks import DVF2DDF
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
torch.manual_seed(0)
v = torch.randn({batch}, {len(shape)}, *{tuple(shape)}) * 0.5
v.requires_grad_({grad})
integ = DVF2DDF(num_steps={steps})
base = rss(); peak = [base]; done = []
def poll():
    while not done:
        peak[0] = max(peak[0], rss()); time.sleep(0.002)
t = threading.Thread(target=poll); t.start()
out = integ(v)
if {grad}:
    out.pow(2).sum().backward()
done.append(1); t.join()
print(peak[0] - base)
"""
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
        )
        return int(res.stdout.strip().splitlines()[-1])
    except Exception:
        return None


def bench_integrate(rows, batch, shape, repeats, steps=7):
    _, v = _inputs(batch, shape, 1)
    v = v * 0.5
    label = f"{batch}x{'x'.join(map(str, shape))}"
    fwd = jax.jit(lambda v: spatial.integrate_velocity(v, steps=steps))
    grad = jax.jit(jax.grad(lambda v: jnp.sum(spatial.integrate_velocity(v, steps=steps) ** 2)))
    variants = (("integrate 7 steps", fwd, False), ("integrate 7 steps fwd+bwd", grad, True))
    vt = torch.from_numpy(np.moveaxis(np.asarray(v), -1, 1).copy()) if torch else None
    integ = DVF2DDF(num_steps=steps) if monai is not None else None
    for name, fn, grad_mode in variants:
        tj = median_time(lambda fn=fn: fn(v).block_until_ready(), repeats=repeats)
        mj = xla_temp_bytes(fn, v)
        tt = mt = None
        if monai is not None:

            def t_run(grad_mode=grad_mode):
                if grad_mode:
                    x = vt.clone().requires_grad_(True)
                    integ(x).pow(2).sum().backward()
                else:
                    with torch.no_grad():
                        integ(vt)

            tt = median_time(t_run, repeats=repeats)
            mt = _torch_integration_peak(batch, shape, steps, grad_mode)
        rows.append(_row(name, label, tj, tt, mem_jax=mj, mem_peer=mt))


def bench_losses(rows, batch, shape, repeats, which):
    image, disp = _inputs(batch, shape, 1)
    other = jnp.roll(image, 1, axis=1) * 0.7 + 0.1
    label = f"{batch}x{'x'.join(map(str, shape))}"
    if which == "lncc":
        fn = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(losses.local_ncc(a, b, window=9))))
        args = (image, other)
        name = "LNCC 9^d fwd+bwd"
    else:
        fn = jax.jit(jax.value_and_grad(lambda d: jnp.mean(losses.bending_energy(d))))
        args = (disp,)
        name = "bending energy fwd+bwd"
    tj = median_time(lambda: jax.block_until_ready(fn(*args)), repeats=repeats)
    mj = xla_temp_bytes(fn, *args)
    tt = None
    if monai is not None:
        if which == "lncc":
            a, _ = _torch_inputs(image, disp)
            b, _ = _torch_inputs(other, disp)
            loss_m = LocalNormalizedCrossCorrelationLoss(spatial_dims=len(shape), kernel_size=9)

            def t_run():
                x = a.clone().requires_grad_(True)
                loss_m(x, b).backward()
        else:
            _, ddf = _torch_inputs(image, disp)
            loss_m = BendingEnergyLoss()

            def t_run():
                x = ddf.clone().requires_grad_(True)
                loss_m(x).backward()

        tt = median_time(t_run, repeats=repeats)
    rows.append(_row(name, label, tj, tt, mem_jax=mj))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--only", nargs="*", default=["warp", "integrate", "lncc", "bending"], help="subset"
    )
    parser.add_argument("--dims", nargs="*", type=int, default=[2, 3], help="2 and/or 3")
    parser.add_argument("--out", default="bench_out/spatial")
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    sizes = {
        2: (8, (256, 256)) if not args.quick else (2, (64, 64)),
        3: (1, (160, 192, 224)) if not args.quick else (1, (32, 40, 48)),
    }
    repeats = {2: 10, 3: 5} if not args.quick else {2: 3, 3: 3}
    rows: list[dict] = []
    for dim in args.dims:
        batch, shape = sizes[dim]
        if "warp" in args.only:
            for channels in (1, 4):
                bench_warp(rows, batch, shape, channels, repeats[dim])
        if "integrate" in args.only:
            bench_integrate(rows, batch, shape, repeats[dim])
        for which in ("lncc", "bending"):
            if which in args.only:
                bench_losses(rows, batch, shape, repeats[dim], which)
        print(f"done {dim}-D", file=sys.stderr)
    columns = [
        "op",
        "size",
        "jax",
        "torch grid_sample",
        "MONAI",
        "jax/torch",
        "jax XLA temp",
        "torch peak RSS",
    ]
    header = (
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
        + (f"; torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else "")
        + f"; {os.cpu_count()} CPU cores"
    )
    table = header + "\n\n" + markdown_table(rows, columns)
    print(table)
    write_results(args.out, rows, table)


if __name__ == "__main__":
    main()
