"""Stage-2 training step of the video UNet: 14-frame forward+backward, with and without remat, and the share of
the step spent in motion modules.

  python bench/video_unet.py                       # medium config, 14 frames, 32x32 latent, batch 1
  python bench/video_unet.py --frames 14 --size 32 --repeats 3 --rows base,motion,motion_remat

Rows (all float32, one `jax.jit` program each: nnx.split once, pure function, nnx.merge inside):
  base          the frame UNet on the 14 frames (no motion modules); backward to the input latent only, i.e. the
                activation backward a frozen spatial network costs in stage 2, no weight gradients
  motion        video UNet with motion modules; gradients for MotionParam only (the stage-2 step)
  motion_remat  same, with remat of every UNet block and of every motion module
  mm_remat      same, remat of the motion modules only
`step` = median wall time of the compiled step (rows interleaved); `GFLOP` = XLA's cost analysis of the step;
`XLA temp` = the compiled program's temporary buffers (memory_analysis: peak working memory beyond weights and
inputs); `residuals` = activations JAX saves for the backward pass (what remat trades for recomputation);
`motion share` = (row - base) / row, by wall time and by FLOPs (for motion_remat it includes the spatial
recomputation as well).
Note: XLA:CPU schedules rematerialised computations early, so remat barely changes `XLA temp` on CPU (jax issue
#19822); the `residuals` column is the backend-independent measure of what remat saves, and on GPU the
memory-aware scheduler turns it into a lower peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

if __name__ == '__main__':
  host.tune_allocator()  # as run.py does; before the imports below start JAX, so the restart costs no import

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from tgvac_jax.models.motion import MotionConfig, MotionParam  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

MEDIUM = dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=768,
              attention_head_dim=8, in_channels=12, out_channels=4, sample_size=32)


def build(row: str) -> UNet2DConditionModel:
  config = UNetConfig(**MEDIUM)
  if row != 'base':
    motion = MotionConfig(remat=row in ('motion_remat', 'mm_remat'), zero_init=False)
    config = dataclasses.replace(config, motion=motion, remat=row == 'motion_remat')
  return UNet2DConditionModel(config, rngs=nnx.Rngs(0))


def _nbytes(tree) -> int:
  return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree))


def saved_residual_bytes(loss, arg) -> float:
  """Bytes JAX keeps from the forward pass for d loss / d arg (weights and inputs excluded): the activation
  memory that remat trades for recomputation, whatever the backend's scheduler does with it."""
  try:
    from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
  except ImportError:  # private helper moved: report nothing rather than fail
    return float('nan')
  skip = ('from the argument', 'from a constant', 'from a literal')
  return float(sum(a.size * a.dtype.itemsize for a, why in saved_residuals(loss, arg) if not why.startswith(skip)))


def prepare(row: str, frames: int, size: int) -> dict:
  """Builds the model of `row` and compiles its training step; returns the callable and static measurements."""
  model = build(row)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, frames, size, size, MEDIUM['in_channels']), np.float32))
  t = jnp.asarray([500.0], jnp.float32)
  ctx = jnp.asarray(rng.standard_normal((1, 77, MEDIUM['cross_attention_dim']), np.float32))
  target = jnp.asarray(rng.standard_normal((1, frames, size, size, 4), np.float32))
  if row == 'base':  # frozen frame UNet: backward to the input only
    graphdef, params = nnx.split(model)
    state = (params,)
    loss = lambda x, params: jnp.mean((nnx.merge(graphdef, params)(x, t, ctx) - target) ** 2)  # noqa: E731
    fn = jax.jit(lambda state, x: jax.value_and_grad(loss)(x, *state))
    residuals = saved_residual_bytes(lambda x: loss(x, params), x)
  else:  # stage 2: gradients for MotionParam only
    graphdef, motion, rest = nnx.split(model, MotionParam, ...)
    state = (motion, rest)
    loss = lambda motion, rest, x: jnp.mean(  # noqa: E731
        (nnx.merge(graphdef, motion, rest)(x, t, ctx) - target) ** 2)
    fn = jax.jit(lambda state, x: jax.value_and_grad(loss)(state[0], state[1], x))
    residuals = saved_residual_bytes(lambda motion: loss(motion, rest, x), motion)
  t0 = time.perf_counter()
  compiled = fn.lower(state, x).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  temp = float(mem.temp_size_in_bytes) if mem is not None else float('nan')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  jax.block_until_ready(compiled(state, x))  # warm-up
  params = nnx.state(model, nnx.Param)
  return dict(row=row, call=lambda: jax.block_until_ready(compiled(state, x)), compile=compile_s, temp=temp,
              residuals=residuals, flops=flops, params=_nbytes(params) / 4,
              motion_params=_nbytes(nnx.state(model, MotionParam)) / 4, times=[])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--frames', type=int, default=14)
  p.add_argument('--size', type=int, default=32, help='latent height = width')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--rows', default='base,motion,motion_remat,mm_remat')
  args = p.parse_args(argv)
  rows = [prepare(r, args.frames, args.size) for r in args.rows.split(',')]
  for _ in range(args.repeats):  # interleaved, so a shared CPU's load drifts evenly over the rows
    for r in rows:
      t0 = time.perf_counter()
      r['call']()
      r['times'].append(time.perf_counter() - t0)
  base = next((r for r in rows if r['row'] == 'base'), None)
  print(f'\nvideo UNet fwd+bwd, {args.frames} frames, {args.size}x{args.size} latent, batch 1, fp32, '
        f'block_out_channels {MEDIUM["block_out_channels"]}, layers_per_block {MEDIUM["layers_per_block"]}, '
        f'{args.repeats} interleaved repeats (median); {jax.devices()[0].device_kind} x{jax.device_count()}')
  head = (f'{"row":<14}{"params M":>10}{"motion M":>10}{"GFLOP":>9}{"step s":>9}{"compile s":>11}'
          f'{"XLA temp GiB":>14}{"residuals GiB":>15}{"motion share (time/flops)":>27}')
  print(head)
  print('-' * len(head))
  for r in rows:
    step = statistics.median(r['times'])
    share = '-'
    if base is not None and r is not base:
      b = statistics.median(base['times'])
      share = f'{(step - b) / step:.0%} / {(r["flops"] - base["flops"]) / r["flops"]:.0%}'
    print(f'{r["row"]:<14}{r["params"] / 1e6:>10.2f}{r["motion_params"] / 1e6:>10.2f}{r["flops"] / 1e9:>9.0f}'
          f'{step:>9.2f}{r["compile"]:>11.1f}{r["temp"] / 2**30:>14.2f}{r["residuals"] / 2**30:>15.2f}'
          f'{share:>27}')


if __name__ == '__main__':
  main()
