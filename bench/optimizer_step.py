"""The weight update alone (global-norm clipping, AdamW, EMA, skip if not finite) on the trained weights of
bench/train_step.py's configs: ours (`train/optimizer.update_weights` under `train/step.only_if`, jitted with the
state donated, as the trainer runs it) as a conditional and as a select, vs torch's (`clip_grad_norm_`,
`torch.optim.AdamW`, `torch._foreach_lerp_` EMA, as bench/train_step.py's torch side).

  python bench/optimizer_step.py
  python bench/optimizer_step.py --configs medium --stages frame --repeats 21

The update is memory-bound: it reads weights, gradients, both moments and the EMA and writes four of them back
(`GB/s` counts those 9 passes over the fp32 weights, plus the norm's read of the gradients). A select chooses
between the new and old values after computing the new ones, so XLA:CPU materialises the new weights and moments
and reads them again; the conditional computes them only on the branch that keeps them. The variants run
alternately in one process (`bench/interleave.py`), `ratio` = ours / torch.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from interleave import allocator, cpu_name, interleaved  # noqa: E402  (bench/, the script's own folder)
from train_step import CLIP, CONFIGS, EMA_DECAY, LR, MOTION_HEADS, WEIGHT_DECAY, trainer_config  # noqa: E402


def trained_shapes(name: str, stage: str) -> list[tuple[int, ...]]:
  """Shapes of the weights that train: the whole UNet (frame) or its motion modules (motion)."""
  import diffusers  # pylint: disable=import-outside-toplevel

  from tgvac_jax.models.unet import UNetConfig  # pylint: disable=import-outside-toplevel

  config = UNetConfig.sd15(**CONFIGS[name], in_channels=12, out_channels=4)
  if stage == 'frame':
    return [tuple(p.shape) for p in diffusers.UNet2DConditionModel(**config.to_dict()).parameters()]
  adapter = diffusers.MotionAdapter(block_out_channels=config.block_out_channels,
                                    motion_layers_per_block=config.layers_per_block,
                                    motion_norm_num_groups=config.norm_num_groups,
                                    motion_num_attention_heads=MOTION_HEADS, use_motion_mid_block=True)
  return [tuple(p.shape) for p in adapter.parameters()]


def ours(shapes, conditional: bool):
  """(one update, XLA temp bytes) with our trainer's update on fresh weights and fixed gradients."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from tgvac_jax.train.optimizer import make_optimizer, update_weights  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.step import only_if  # pylint: disable=import-outside-toplevel

  c = trainer_config()
  tx, _ = make_optimizer(c.optim, c.num_steps)
  update = update_weights(tx, c.ema_decay)
  rng = np.random.default_rng(0)
  params = [jnp.asarray(0.01 * rng.standard_normal(s, np.float32)) for s in shapes]
  grads = [jnp.asarray(1e-4 * rng.standard_normal(s, np.float32)) for s in shapes]

  def step(state, grads):
    norm = optax.tree.norm(grads)
    return only_if(jnp.isfinite(norm), functools.partial(update, grads=grads, grad_norm=norm), state,
                   conditional=conditional)

  state = (params, tx.init(params), [jnp.copy(p) for p in params])
  compiled = jax.jit(step, donate_argnums=0).lower(state, grads).compile()
  holder = [state]

  def run():
    holder[0] = jax.block_until_ready(compiled(holder[0], grads))
  return run, compiled.memory_analysis().temp_size_in_bytes


def torch_update(shapes):
  import torch  # pylint: disable=import-outside-toplevel

  gen = torch.Generator().manual_seed(0)
  params = [(0.01 * torch.randn(s, generator=gen)).requires_grad_() for s in shapes]
  grads = [1e-4 * torch.randn(s, generator=gen) for s in shapes]
  opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
  ema = [p.detach().clone() for p in params]

  def run():
    for p, g in zip(params, grads):
      p.grad = g
    torch.nn.utils.clip_grad_norm_(params, CLIP)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1 - EMA_DECAY)  # pylint: disable=protected-access
  return run


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--configs', default='small,medium')
  p.add_argument('--stages', default='frame,motion')
  p.add_argument('--repeats', type=int, default=11)
  args = p.parse_args()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  versions = ', '.join(f'{d} {importlib.metadata.version(d)}' for d in ('jax', 'optax', 'torch'))
  print(f'{cpu_name()}, {os.cpu_count()} cores, {versions}, {allocator()}, load avg {os.getloadavg()[0]:.1f}',
        flush=True)
  print('| config | stage | trained M | torch ms | ours conditional ms | ratio | ours select ms | ratio | '
        'conditional GB/s | XLA temp MiB conditional / select |')
  print('|---' * 10 + '|')
  for name in args.configs.split(','):
    for stage in args.stages.split(','):
      shapes = trained_shapes(name, stage)
      n = sum(functools.reduce(lambda a, b: a * b, s, 1) for s in shapes)
      cond, cond_temp = ours(shapes, conditional=True)
      select, select_temp = ours(shapes, conditional=False)
      sides = {'torch': torch_update(shapes), 'conditional': cond, 'select': select}
      interleaved(sides, 2)
      t, _ = interleaved(sides, args.repeats)
      gbs = 10 * 4 * n / t['conditional'] / 1e9
      print(f'| {name} | {stage} | {n / 1e6:.2f} | {t["torch"] * 1e3:.1f} | {t["conditional"] * 1e3:.1f} | '
            f'{t["conditional"] / t["torch"]:.2f} | {t["select"] * 1e3:.1f} | {t["select"] / t["torch"]:.2f} | '
            f'{gbs:.1f} | {cond_temp / 2**20:.0f} / {select_temp / 2**20:.0f} |', flush=True)


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
