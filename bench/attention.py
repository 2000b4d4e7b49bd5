"""The CPU attention paths side by side: our one-shot form (XLA), our blocked form (XLA, FlashAttention-style
backward), our fused kernel (`cpu_attention.py`) and PyTorch's `scaled_dot_product_attention`, forward and
forward+backward, on the shapes our models use.

  python bench/attention.py                  # every shape below
  python bench/attention.py --repeats 9 --shapes "medium self 32x32,medium cross 32x32"

Shapes are (batch, queries, heads, head width, keys): the embedded demo's UNet (16 frames, 16x16 latent, 8 heads
of 4 at the first level, 77 caption tokens), SD-1.5 at a 32x32 and 64x64 latent, a motion module's 14-frame
temporal attention over every pixel, and the spatial attentions of bench/train_step.py's medium UNet (14 frames,
8 heads of 8, 16 and 32 at its 32x32, 16x16 and 8x8 levels). All float32, one device; runs are interleaved and the
medians reported. `path()` in `tgvac_jax/models/attention.py` picks the path; its choice is marked with * and is the
one compared with torch.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from interleave import interleaved, machine_line  # noqa: E402  (bench/, the script's own folder)

SHAPES = {
    'demo self 16x16': (16, 256, 8, 4, 256),
    'demo cross 16x16': (16, 256, 8, 4, 77),
    'demo self 8x8': (16, 64, 8, 8, 64),
    'demo cross 8x8': (16, 64, 8, 8, 77),
    'SD self 32x32': (2, 1024, 8, 40, 1024),
    'SD cross 32x32': (2, 1024, 8, 40, 77),
    'SD cross 64x64': (2, 4096, 8, 40, 77),
    'SD cross 16x16': (2, 256, 8, 80, 77),
    'motion 14 frames': (1024, 14, 8, 40, 14),
    'small motion 14 frames': (1024, 14, 8, 8, 14),
    'medium self 32x32': (14, 1024, 8, 8, 1024),
    'medium cross 32x32': (14, 1024, 8, 8, 77),
    'medium self 16x16': (14, 256, 8, 16, 256),
    'medium self 8x8': (14, 64, 8, 32, 64),
}

IMPLS = ('xla', 'blocked', 'kernel')


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--repeats', type=int, default=7)
  p.add_argument('--shapes', default=','.join(SHAPES), help='comma-separated names from the table above')
  args = p.parse_args()
  unknown = sorted(set(args.shapes.split(',')) - set(SHAPES))
  if unknown:
    p.error(f'unknown shapes {unknown}; choose from {sorted(SHAPES)}')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  from tgvac_jax.models import attention  # pylint: disable=import-outside-toplevel

  print(machine_line(jax, torch), flush=True)
  rows = []
  for name in args.shapes.split(','):
    b, t, h, d, s = SHAPES[name]
    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, t, h * d), np.float32)
    k, v = (rng.standard_normal((b, s, h * d), np.float32) for _ in range(2))
    jq, jk, jv = (jnp.asarray(x) for x in (q, k, v))
    sides = {}
    for impl in IMPLS:
      fwd = jax.jit(lambda q, k, v, impl=impl: attention.attend(q, k, v, h, implementation=impl))
      fb = jax.jit(jax.grad(lambda q, k, v, impl=impl: jnp.sum(attention.attend(q, k, v, h, implementation=impl)
                                                               ** 2), argnums=(0, 1, 2)))
      sides[f'{impl} fwd'] = lambda f=fwd: jax.block_until_ready(f(jq, jk, jv))
      sides[f'{impl} fwd+bwd'] = lambda f=fb: jax.block_until_ready(f(jq, jk, jv))
    tq, tk, tv = (torch.from_numpy(x).reshape(b, -1, h, d).transpose(1, 2).contiguous() for x in (q, k, v))

    def torch_fwd():
      with torch.inference_mode():
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)

    def torch_fb():
      a, bk, c = (x.clone().requires_grad_() for x in (tq, tk, tv))
      torch.nn.functional.scaled_dot_product_attention(a, bk, c).pow(2).sum().backward()
    sides['torch fwd'], sides['torch fwd+bwd'] = torch_fwd, torch_fb
    for fn in sides.values():  # compile / warm up
      fn()
    med, _ = interleaved(sides, args.repeats)
    chosen = attention.path(None, jq, jk, jv, h) or 'xla'
    cells = []
    for kind in ('fwd', 'fwd+bwd'):
      for impl in IMPLS:
        mark = '*' if impl == chosen else ''
        cells.append(f'{med[f"{impl} {kind}"] * 1e3:.1f}{mark}')
      cells.append(f'{med[f"torch {kind}"] * 1e3:.1f}')
      cells.append(f'{med[f"{chosen} {kind}"] / med[f"torch {kind}"]:.2f}')
    rows.append((name, f'{b}x{t}x{h}x{d}, {s} keys', *cells))
    print(' ', rows[-1], flush=True)
  print('\n| shape | B x Tq x heads x D | ' + ' | '.join(
      f'{kind} {side}' for kind in ('fwd', 'fwd+bwd')
      for side in ('one-shot ms', 'blocked ms', 'kernel ms', 'torch ms', 'ours/torch')) + ' |')
  print('|---' * 12 + '|')
  for r in rows:
    print('| ' + ' | '.join(r) + ' |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
