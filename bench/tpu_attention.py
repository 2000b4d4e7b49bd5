"""XLA's attention vs JAX's Pallas TPU flash attention, fwd+bwd, compiled for one TPU chip on this host (libtpu, no
TPU): temporary memory and HBM traffic per shape, from XLA's memory and cost analyses. docs/scale.md has the table.

  python bench/tpu_attention.py [--topology v5e-1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (batch, query tokens, key tokens, heads, head width) per device, bf16: SD-1.5 at 256 px, batch 2 per device
SHAPES = {
    'frame stage level 1 self-attention, 2 x 1024, 8 x 40': (2, 1024, 1024, 8, 40),
    'motion stage level 1 self-attention, 2 clips x 14 frames x 1024, 8 x 40': (28, 1024, 1024, 8, 40),
    'frame stage level 2 self-attention, 2 x 256, 8 x 80': (2, 256, 256, 8, 80),
    'motion stage level 2 self-attention, 2 clips x 14 frames x 256, 8 x 80': (28, 256, 256, 8, 80),
    'level 4 self-attention, 2 x 64, 8 x 160': (2, 64, 64, 8, 160),
    'motion module over frames, 2 clips x 1024 pixels x 14, 8 x 40': (2048, 14, 14, 8, 40),
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--topology', default='v5e-1')
  args = p.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental.pallas.ops.tpu import flash_attention  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel

  from tgvac_jax.compile import chips  # pylint: disable=import-outside-toplevel

  devices = chips.devices(chips.parse(args.topology))[:1]
  replicated = NamedSharding(Mesh(np.asarray(devices), ('d',)), P())

  def flash(q, k, v):  # (B, T, H, D) <-> the kernel's (B, H, T, D)
    t = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
    return t(flash_attention.flash_attention(t(q), t(k), t(v), sm_scale=q.shape[-1] ** -0.5))

  print(f'attention fwd+bwd on one {devices[0].device_kind}, bf16 (compiled on this host)')
  print('| shape | implementation | temp MiB | HBM MiB accessed | compile s |')
  print('|---|---|---|---|---|')
  for name, (b, tq, tk, h, d) in SHAPES.items():
    for impl, fn in (('xla', jax.nn.dot_product_attention), ('pallas flash', flash)):
      grad = jax.jit(jax.grad(lambda q, k, v, fn=fn: fn(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
      shapes = [jax.ShapeDtypeStruct((b, t, h, d), jnp.bfloat16, sharding=replicated) for t in (tq, tk, tk)]
      t0 = time.perf_counter()
      try:
        compiled = grad.lower(*shapes).compile()
      except Exception as e:  # pylint: disable=broad-except  (a shape the kernel does not take: its own line)
        print(f'| {name} | {impl} | fails: {str(e).splitlines()[0][:100]} | | |')
        continue
      cost = compiled.cost_analysis()
      cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
      print(f'| {name} | {impl} | {compiled.memory_analysis().temp_size_in_bytes / 2**20:.0f} | '
            f'{cost.get("bytes accessed", 0) / 2**20:.0f} | {time.perf_counter() - t0:.0f} |', flush=True)


if __name__ == '__main__':
  main()
