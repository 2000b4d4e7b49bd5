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
`step` = median wall time of the compiled step; `peak` = XLA's compiled memory analysis (arguments + outputs +
temporaries, aliasing subtracted), `temp` = temporaries alone (activations kept for the backward pass);
`motion share` = (step - base step) / step.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def step_fn(model: UNet2DConditionModel, row: str):
  """A jitted (state, x, t, ctx, target) -> (loss, grads) and the state to call it with."""
  if row == 'base':
    graphdef, state = nnx.split(model)

    def loss_x(x, state, t, ctx, target):
      return jnp.mean((nnx.merge(graphdef, state)(x, t, ctx) - target) ** 2)
    fn = jax.jit(lambda state, x, t, ctx, target: jax.value_and_grad(loss_x)(x, state, t, ctx, target))
    return fn, state
  graphdef, motion, rest = nnx.split(model, MotionParam, ...)

  def loss_m(motion, rest, x, t, ctx, target):
    return jnp.mean((nnx.merge(graphdef, motion, rest)(x, t, ctx) - target) ** 2)
  fn = jax.jit(lambda state, x, t, ctx, target: jax.value_and_grad(loss_m)(state[0], state[1], x, t, ctx, target))
  return fn, (motion, rest)


def measure(row: str, frames: int, size: int, repeats: int) -> dict:
  model = build(row)
  fn, state = step_fn(model, row)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, frames, size, size, MEDIUM['in_channels']), np.float32))
  t = jnp.asarray([500.0], jnp.float32)
  ctx = jnp.asarray(rng.standard_normal((1, 77, MEDIUM['cross_attention_dim']), np.float32))
  target = jnp.asarray(rng.standard_normal((1, frames, size, size, 4), np.float32))
  t0 = time.perf_counter()
  compiled = fn.lower(state, x, t, ctx, target).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  peak = temp = float('nan')
  if mem is not None:
    temp = mem.temp_size_in_bytes
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)
  jax.block_until_ready(compiled(state, x, t, ctx, target))  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, x, t, ctx, target))
    times.append(time.perf_counter() - t0)
  n_motion = sum(v.get_value().size for v in jax.tree.leaves(nnx.state(model, MotionParam),
                                                              is_leaf=lambda v: isinstance(v, nnx.Variable)))
  n_all = sum(v.get_value().size for v in jax.tree.leaves(nnx.state(model, nnx.Param),
                                                           is_leaf=lambda v: isinstance(v, nnx.Variable)))
  return dict(row=row, step=statistics.median(times), compile=compile_s, peak=peak, temp=temp,
              motion_params=n_motion, params=n_all)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--frames', type=int, default=14)
  p.add_argument('--size', type=int, default=32, help='latent height = width')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--rows', default='base,motion,motion_remat,mm_remat')
  args = p.parse_args(argv)
  rows = [measure(r, args.frames, args.size, args.repeats) for r in args.rows.split(',')]
  base = next((r['step'] for r in rows if r['row'] == 'base'), None)
  print(f'\nvideo UNet fwd+bwd, {args.frames} frames, {args.size}x{args.size} latent, batch 1, fp32, '
        f'block_out_channels {MEDIUM["block_out_channels"]}, layers_per_block {MEDIUM["layers_per_block"]}; '
        f'{jax.devices()[0].device_kind} x{jax.device_count()}')
  print(f'{"row":<14}{"params (M)":>12}{"motion (M)":>12}{"step (s)":>10}{"compile (s)":>13}{"peak (GiB)":>12}'
        f'{"temp (GiB)":>12}{"motion share":>14}')
  for r in rows:
    share = '-' if base is None or r['row'] == 'base' else f'{(r["step"] - base) / r["step"]:.0%}'
    print(f'{r["row"]:<14}{r["params"] / 1e6:>12.2f}{r["motion_params"] / 1e6:>12.2f}{r["step"]:>10.2f}'
          f'{r["compile"]:>13.1f}{r["peak"] / 2**30:>12.2f}{r["temp"] / 2**30:>12.2f}{share:>14}')


if __name__ == '__main__':
  main()
