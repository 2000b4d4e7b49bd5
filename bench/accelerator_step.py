"""The paper-scale train steps on a GPU/TPU: SD-1.5's UNet (random weights, 12 input channels) at 256^2 (32x32
latent) from cached latents, bf16 compute with float32 master weights, AdamW, clipping, EMA, as the trainer runs
them; the frame stage at batch 16 and the motion stage (motion modules trained, spatial weights frozen) at 16 clips
of 14 frames, each with cuDNN flash attention and with XLA's attention.

  python bench/accelerator_step.py                   # issue 8's GPU table, on the accelerator JAX finds
  python bench/accelerator_step.py --model small --batch 2 --clips 1 --frames 4 --attention xla   # a CPU check

Each row runs in its own process, so `peak` is that row's alone (the allocator's high-water mark where the device
reports one, else XLA's count of arguments + outputs + temporaries) and a row that fails (a shape cuDNN does not
take, out of memory) costs only its line. `MFU` = model FLOPs per step / step time / the device's peak dense bf16
FLOP/s (`train/metrics.PEAK_FLOPS`). Model FLOPs are XLA's count for the same step lowered with XLA attention and
without remat, so recomputation does not count and cuDNN's custom calls (which XLA does not count) do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from train_step import CONFIGS, jitted_step, random_latents  # noqa: E402  (bench/, the script's own folder)

MODELS = {'sd15': {}, **CONFIGS}
REMAT = {'frame': 'none', 'motion': 'motion'}  # configs/frame.py's and configs/motion.py's


def build(args, stage: str, attention: str, remat: str):
  """Our UNet (motion modules for 'motion'), a one-layer text encoder of the UNet's context width, and a
  random cached-latent batch; weights made on the device in one jit, as the trainer makes them."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.motion import MotionConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.stages import _jit_init  # pylint: disable=import-outside-toplevel  (the trainer's init)

  impl = None if attention == 'default' else attention
  motion = (MotionConfig(remat=remat == 'motion', attention_impl=impl) if stage == 'motion' else None)
  unet_cfg = UNetConfig.sd15(**MODELS[args.model], in_channels=12, out_channels=4, sample_size=args.size,
                             remat=remat == 'full', attention_impl=impl, motion=motion)
  width = unet_cfg.cross_attention_dim
  text_cfg = CLIPTextConfig(vocab_size=64, hidden_size=width, intermediate_size=2 * width, projection_dim=width,
                            num_hidden_layers=1, num_attention_heads=4, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
  dtype = jnp.dtype(args.dtype)
  unreplicated = lambda abstract: None  # noqa: E731  (one device: no out_shardings)
  unet = _jit_init(lambda: UNet2DConditionModel(unet_cfg, dtype=dtype, rngs=nnx.Rngs(0)), unreplicated)
  te = _jit_init(lambda: CLIPTextModel(text_cfg, dtype=dtype, rngs=nnx.Rngs(1)), unreplicated)

  batch = args.batch if stage == 'frame' else args.clips
  z = random_latents(stage, args.frames, batch, args.size)
  z['context'] = np.random.default_rng(1).standard_normal((batch, 77, width), np.float32)
  return unet, te, {k: jnp.asarray(v) for k, v in z.items()}


def row(args, stage: str, attention: str) -> dict:
  """One row, in this process: compile, time, count."""
  import jax  # pylint: disable=import-outside-toplevel

  from tgvac_jax.train.metrics import peak_flops  # pylint: disable=import-outside-toplevel

  remat = args.remat or REMAT[stage]
  unet, te, z = build(args, stage, attention, remat)
  step, state, frozen = jitted_step(stage, unet, te, args.dtype)
  del unet, te
  t0 = time.perf_counter()
  compiled = step.lower(state, frozen, z).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(args.warmup + args.repeats):
    t0 = time.perf_counter()
    state, metrics = compiled(state, frozen, z)
    jax.block_until_ready(metrics['loss'])
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  mem = compiled.memory_analysis()
  peak = stats.get('peak_bytes_in_use') or (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                            + mem.temp_size_in_bytes)
  step_s = statistics.median(times)
  loss = float(metrics['loss'])
  del step, state, frozen, compiled, metrics

  # The model FLOPs, after the peak is read: the same step without recomputation and with XLA's attention, so
  # every FLOP is counted once.
  unet, te, z = build(args, stage, 'xla', 'none')
  step, state, frozen = jitted_step(stage, unet, te, args.dtype)
  flops = float(step.lower(state, frozen, z).cost_analysis()['flops'])
  device_peak = peak_flops(device)
  return {'stage': stage, 'attention': attention, 'remat': remat, 'compile_s': compile_s, 'step_s': step_s,
          'tflop': flops / 1e12, 'mfu': flops / step_s / device_peak if device_peak else None,
          'peak_gib': peak / 2**30, 'loss': loss, 'device': device.device_kind}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--model', default='sd15', choices=sorted(MODELS))
  p.add_argument('--stages', default='frame,motion')
  p.add_argument('--attention', default='cudnn,xla',
                 help="comma-separated: 'cudnn', 'xla', 'default' (attention.path's choice)")
  p.add_argument('--size', type=int, default=32, help='latent height = width (32: 256 px images)')
  p.add_argument('--batch', type=int, default=16, help='frame stage: images per step')
  p.add_argument('--clips', type=int, default=16, help='motion stage: clips per step')
  p.add_argument('--frames', type=int, default=14, help='motion stage: frames per clip')
  p.add_argument('--dtype', default='bfloat16', help='compute dtype (weights, moments and EMA stay float32)')
  p.add_argument('--remat', default='', choices=('', 'none', 'full', 'motion'),
                 help="'': the stage config's (frame none, motion 'motion')")
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--row', default='', help=argparse.SUPPRESS)  # 'stage,attention': run one row, print its JSON
  args = p.parse_args()
  if args.row:
    print('ROW ' + json.dumps(row(args, *args.row.split(','))), flush=True)
    return

  rows = []
  for stage in args.stages.split(','):
    for attention in args.attention.split(','):
      cmd = [sys.executable] + sys.argv + ['--row', f'{stage},{attention}']
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
      out = [line[4:] for line in proc.stdout.splitlines() if line.startswith('ROW ')]
      if proc.returncode or not out:
        error = (proc.stderr.strip().splitlines() or ['no output'])[-1]
        print(f'  {stage} / {attention}: failed ({error[:300]})', flush=True)
        continue
      r = json.loads(out[0])
      rows.append(r)
      print(f'  {stage} / {attention}: {r["step_s"] * 1e3:.1f} ms, compile {r["compile_s"]:.0f} s, '
            f'loss {r["loss"]:.3f}', flush=True)
  if not rows:
    sys.exit('accelerator_step.py: every row failed')
  shapes = {'frame': f'{args.batch}', 'motion': f'{args.clips}x{args.frames}'}
  print(f'\n{args.model} UNet train step on {rows[0]["device"]}, {args.size}x{args.size} latent, {args.dtype} '
        f'compute, median of {args.repeats}')
  print('| stage | batch | attention | remat | step ms | examples/s | model TFLOP/step | MFU | peak GiB | '
        'compile s |')
  print('|---' * 10 + '|')
  for r in rows:
    n = args.batch if r['stage'] == 'frame' else args.clips
    mfu = f'{100 * r["mfu"]:.1f}%' if r['mfu'] is not None else 'n/a'
    print(f'| {r["stage"]} | {shapes[r["stage"]]} | {r["attention"]} | {r["remat"]} | {r["step_s"] * 1e3:.1f} | '
          f'{n / r["step_s"]:.1f} | {r["tflop"]:.2f} | {mfu} | {r["peak_gib"]:.1f} | {r["compile_s"]:.0f} |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does (a no-op on GPU/TPU hosts)
  main()
