"""The CPU conv paths side by side: our direct kernel (`cpu_conv.py`), the lowering `resnet.conv2d` takes without
it (row-shifted or im2col dots where those win, else XLA's conv) and PyTorch's `conv2d` (oneDNN, channels-last),
on the stride-1 3x3 convs of our benchmark UNets.

  python bench/conv.py
  python bench/conv.py --repeats 11

Three kinds of work: `fwd`; `fwd+dx`, forward and the input's gradient (the motion stage, whose spatial convs are
frozen); `fwd+dx+dw`, with the weights' gradient too (the frame stage). Shapes are (batch, height, width, channels
in, out): bench/train_step.py's medium UNet at its 32x32 latent with 14 frames (the up blocks' concatenated
inputs included) and SD-1.5 at a 32x32 latent, batch 2. All float32, one device; runs are interleaved and the
medians reported.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from interleave import interleaved, machine_line  # noqa: E402  (bench/, the script's own folder)

SHAPES = {
    'medium 32x32': (14, 32, 32, 64, 64),
    'medium 32x32 up': (14, 32, 32, 128, 64),
    'medium 16x16': (14, 16, 16, 128, 128),
    'medium 16x16 up': (14, 16, 16, 256, 128),
    'medium 8x8': (14, 8, 8, 256, 256),
    'medium 8x8 up': (14, 8, 8, 512, 256),
    'medium 4x4': (14, 4, 4, 256, 256),
    'SD 32x32': (2, 32, 32, 320, 320),
    'SD 16x16': (2, 16, 16, 640, 640),
    'SD 8x8': (2, 8, 8, 1280, 1280),
}
KINDS = ('fwd', 'fwd+dx', 'fwd+dx+dw')
SIDES = ('kernel', 'xla', 'torch')


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--repeats', type=int, default=7)
  args = p.parse_args()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  from tgvac_jax.models import cpu_conv, resnet  # pylint: disable=import-outside-toplevel

  if not cpu_conv.available():
    raise SystemExit('the CPU conv kernel could not be built on this machine (see the warning above)')
  print(machine_line(jax, torch), flush=True)
  pad = ((1, 1), (1, 1))
  rows = []
  for name, (n, h, w, cin, cout) in SHAPES.items():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, cin), np.float32)
    k = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
    jx, jk = jnp.asarray(x), jnp.asarray(k)
    sides = {}
    for side in ('kernel', 'xla'):
      def conv(x, k):
        return resnet.conv2d(x, k, padding=pad)
      fns = {'fwd': jax.jit(conv),
             'fwd+dx': jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2))),
             'fwd+dx+dw': jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))}
      available = cpu_conv.available
      if side == 'xla':
        cpu_conv.available = lambda: False  # traced (at the first call, below) without the kernel
      try:
        for kind, fn in fns.items():
          jax.block_until_ready(fn(jx, jk))
      finally:
        cpu_conv.available = available
      for kind, fn in fns.items():
        sides[f'{side} {kind}'] = lambda f=fn: jax.block_until_ready(f(jx, jk))
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    tk = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()

    def torch_fwd():
      with torch.inference_mode():
        torch.nn.functional.conv2d(tx, tk, padding=1)

    def torch_grad(weights):
      a = tx.clone().requires_grad_()
      b = tk.clone().requires_grad_(weights)
      torch.nn.functional.conv2d(a, b, padding=1).pow(2).sum().backward()
    sides['torch fwd'] = torch_fwd
    sides['torch fwd+dx'] = lambda: torch_grad(False)
    sides['torch fwd+dx+dw'] = lambda: torch_grad(True)
    for fn in sides.values():  # warm up
      fn()
    med, _ = interleaved(sides, args.repeats)
    cells = []
    for kind in KINDS:
      cells += [f'{med[f"{side} {kind}"] * 1e3:.1f}' for side in SIDES]
      cells.append(f'{med[f"kernel {kind}"] / med[f"torch {kind}"]:.2f}')
    gflop = 2 * n * h * w * 9 * cin * cout / 1e9
    rows.append((name, f'{n}x{h}x{w}, {cin}->{cout}', f'{gflop / med["kernel fwd"]:.0f}', *cells))
    print(' ', rows[-1], flush=True)
  print('\n| shape | N x H x W, C in->out | kernel fwd GFLOP/s | ' + ' | '.join(
      f'{kind} {side}' for kind in KINDS for side in ('kernel ms', 'xla ms', 'torch ms', 'kernel/torch')) + ' |')
  print('|---' * 15 + '|')
  for r in rows:
    print('| ' + ' | '.join(r) + ' |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
