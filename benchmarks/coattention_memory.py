"""Memory of SDDIR's affinity co-attention (``nets.AffinityCoAttention``) at 3-D sizes.

    python benchmarks/coattention_memory.py

The affinity ``A = f(F_mov) g(F_fix)^T`` has ``N^2`` entries (``N`` bottleneck positions),
so the block is applied at the bottleneck only. For the 3-D sizes the project uses, this
prints ``N``, the size of one ``[B, N, N]`` float32 matrix, and XLA's compiled temporary
memory of the block's forward + backward (``jax.jit(...).lower().compile().memory_analysis()``,
nothing is executed), batch 1, 32 bottleneck channels (the U-Net's last width).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrs_jax.nets import AffinityCoAttention

SIZES = {
    "64^3 (jrs_synthetic_3d)": (64, 64, 64),
    "128x128x32 (DDIR/SDDIR UK Biobank SAX)": (128, 128, 32),
    "96x112x96 (brain, issue 15)": (96, 112, 96),
    "160x192x224 (OASIS / Learn2Reg)": (160, 192, 224),
}


def main(levels: int = 4, channels: int = 32) -> None:
    block = AffinityCoAttention()
    print(f"bottleneck = image / 2^{levels - 1}, {channels} channels, batch 1, float32")
    print(f"{'image':40s} {'N':>7s} {'A [N,N]':>10s} {'fwd+bwd temp':>13s}")
    for name, shape in SIZES.items():
        s = tuple(n // 2 ** (levels - 1) for n in shape)
        x = jax.ShapeDtypeStruct((1, *s, channels), jnp.float32)
        params = jax.eval_shape(block.init, jax.random.key(0), x, x)

        def loss(p, a, b):
            o_a, o_b = block.apply(p, a, b)
            return jnp.sum(o_a) + jnp.sum(o_b)

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(params, x, x).compile()
        mem = compiled.memory_analysis()
        n = 1
        for k in s:
            n *= k
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20
        print(f"{name:40s} {n:7d} {4 * n * n / 2**20:8.1f} MiB {temp:10.1f} MiB")


if __name__ == "__main__":
    main()
