"""Loader throughput for the motion stage (14 x 256^2 clips) vs the trainer's consumption, and the Table-1
statistics of the procedural source.

  python bench/loader.py [--out runs/bench_loader] [--num_videos 16] [--batch 4] [--batches 12]
                         [--step_time SECONDS] [--unet tiny|none]

Builds (or reuses) a procedural dataset at 14 x 256^2 (PNG and JPEG frames), then times batches through the Grain
pipeline with 0 and 2 worker processes. Consumption: clips/s = batch / train-step time, from --step_time (a
measured motion-stage step) or, with --unet tiny, from a timed forward+backward (motion weights only) of a small
video UNet at the same clip shape on this machine; the SD-1.5 row is an estimate from FLOPs (see the table note).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def build_data(out: str, num_videos: int, fmt: str):
  from data_prep import builder as B
  from data_prep.occlusion import SynthConfig
  from data_prep.sources.procedural import ProceduralSource
  src = ProceduralSource(num_videos=num_videos, size=256, min_frames=20, max_frames=40)
  cfg = B.BuildConfig(SynthConfig(clip_len=14, resolution=256, clips_per_track=3), image_format=fmt,
                      target_format=fmt)
  t = time.perf_counter()
  res = B.build(src, cfg, os.path.join(out, fmt), progress=False)
  return res, time.perf_counter() - t


def time_loader(ds_dir: str, workers: int, batch: int, batches: int, output: str, threads: int,
                crop: bool = True) -> float:
  """Steady-state clips/s: start-up and the first batches excluded; prefetch buffers are small (2 batches)."""
  from tgvac_jax.data.pipeline import LoaderConfig, clip_dataset
  cfg = LoaderConfig(batch_size=batch, size=256, num_frames=14, worker_count=workers, output=output,
                     read_threads=threads, read_buffer=2, crop_scale=(0.8, 1.0) if crop else (1.0, 1.0))
  it = iter(clip_dataset(ds_dir, cfg, process_index=0, process_count=1))
  for _ in range(2 + 2 * workers):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t
  it.close()
  return batches * batch / dt


def clip_cost(ds_dir: str, n: int = 8, crop: bool = True) -> dict:
  """Single-thread CPU seconds per clip, by phase (read record, decode, crop/resize/flip, format to float32)."""
  from tgvac_jax.data import augment, schema
  from tgvac_jax.data.pipeline import _format, data_source
  src = data_source(ds_dir, 'train')
  rng = np.random.default_rng(0)
  acc = dict(read=0.0, decode=0.0, augment=0.0, format_f32=0.0, format_u8=0.0)
  for i in range(n):
    t0 = time.process_time()
    rec = src[i % len(src)]
    t1 = time.process_time()
    x = schema.decode_record(rec)
    t2 = time.process_time()
    x = augment.augment_clip(x, (256, 256), rng, (0.8, 1.0) if crop else (1.0, 1.0), True)
    t3 = time.process_time()
    _format(x, 'float32', None)
    t4 = time.process_time()
    _format(x, 'uint8', None)
    t5 = time.process_time()
    for k, d in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
      acc[k] += d / n
  return acc


def tiny_unet_step(batch: int, frames: int = 14, latent: int = 32) -> tuple[float, str]:
  """Seconds per motion-stage train step (fwd+bwd w.r.t. motion weights) of a small video UNet on this host."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from tgvac_jax.models.motion import MotionConfig, MotionParam
  from tgvac_jax.models.unet import UNetConfig, create_unet
  cfg = UNetConfig(in_channels=12, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
                   cross_attention_dim=64, attention_head_dim=2,
                   down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                   up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), motion=MotionConfig(num_attention_heads=2))
  model = create_unet(cfg)
  graph, motion, rest = nnx.split(model, MotionParam, ...)

  def loss(m, r, x, t, c):
    y = nnx.merge(graph, m, r)(x, t, c)
    return jnp.mean((y - x[..., :4]) ** 2)

  step = jax.jit(jax.grad(loss))
  x = jnp.ones((batch, frames, latent, latent, 12), jnp.float32)
  t = jnp.full((batch,), 500)
  c = jnp.ones((batch, 77, 64), jnp.float32)
  jax.block_until_ready(step(motion, rest, x, t, c))
  n = 2
  t0 = time.perf_counter()
  for _ in range(n):
    jax.block_until_ready(step(motion, rest, x, t, c))
  desc = f'tiny video UNet (32/64 ch, motion) fwd+bwd, {jax.devices()[0].platform}'
  return (time.perf_counter() - t0) / n, desc


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default='runs/bench_loader')
  p.add_argument('--num_videos', type=int, default=16)
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--batches', type=int, default=10)
  p.add_argument('--step_time', type=float, default=None, help='measured motion-stage step time (s) at --batch')
  p.add_argument('--unet', choices=('tiny', 'none'), default='tiny')
  a = p.parse_args(argv)
  from data_prep.stats import format_table

  rows = []
  built = {}
  for fmt in ('png', 'jpeg'):
    res, dt = build_data(a.out, a.num_videos, fmt)
    built[fmt] = res
    n = sum(res.num_examples.values())
    print(f'[{fmt}] {res.dataset_dir}: {n} clips (build or reuse {dt:.1f}s)')
  costs = {}
  for fmt in ('png', 'jpeg'):
    for crop in (True, False):
      name = f"{fmt}{'' if crop else ' nocrop'}"
      costs[name] = clip_cost(built[fmt].dataset_dir, crop=crop)
      print(f'  {name} CPU s/clip: ' + ', '.join(f'{k} {v * 1e3:.0f} ms' for k, v in costs[name].items()),
            flush=True)
  settings = [('png', 0, 2, 'float32', True), ('png', 2, 1, 'float32', True), ('png', 2, 1, 'uint8', True),
              ('jpeg', 2, 1, 'uint8', True), ('jpeg', 2, 1, 'uint8', False), ('jpeg', 0, 2, 'uint8', False)]
  for fmt, workers, threads, output, crop in settings:
    cps = time_loader(built[fmt].dataset_dir, workers, a.batch, a.batches, output, threads, crop)
    rows.append((fmt + ('' if crop else ' nocrop'), workers, threads, output, cps))
    print(f'  {rows[-1][0]:11s} workers={workers} threads={threads} {output:7s}: {cps:6.2f} clips/s', flush=True)

  consumers = []
  if a.step_time:
    consumers.append(('measured motion-stage step (--step_time)', a.batch / a.step_time))
  if a.unet == 'tiny':
    try:
      st, desc = tiny_unet_step(a.batch)
      consumers.append((f'{desc}, {st:.2f} s/step', a.batch / st))
    except Exception as e:  # noqa: BLE001 - the model code may be mid-change; the loader numbers still stand
      print(f'(tiny UNet step not measured: {type(e).__name__}: {e})')
  # SD-1.5 at 256 px: forward ~180 GFLOP per frame (FACTS), motion-only training ~3x forward, 14 frames per clip.
  flop_per_clip = 14 * 180e9 * 3
  consumers.append(('SD-1.5 motion stage, H100 bf16 at 40% MFU (estimate)', 0.4 * 989e12 / flop_per_clip))

  best = max(r[4] for r in rows)
  print('\nCPU cost per 14x256^2 clip, one thread (ms):')
  print(f"{'frames':11s} " + ' '.join(f'{k:>10s}' for k in costs['png']) +
        f" {'f32 total':>10s} {'u8 total':>10s} {'1-core clips/s f32/u8':>22s}")
  for fmt, c in costs.items():
    tot = c['read'] + c['decode'] + c['augment'] + c['format_f32']
    tot8 = tot - c['format_f32'] + c['format_u8']
    print(f'{fmt:11s} ' + ' '.join(f'{v * 1e3:10.1f}' for v in c.values()) +
          f' {tot * 1e3:10.1f} {tot8 * 1e3:10.1f} {1 / tot:12.2f} / {1 / tot8:6.2f}')
  print('\nLoader throughput at 14x256^2 (clips/s, steady state) on this host '
        f'({os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}):')
  print(f"{'frames':11s} {'workers':>7s} {'threads':>7s} {'output':>8s} {'clips/s':>8s}")
  for fmt, w, th, o, c in rows:
    print(f'{fmt:11s} {w:7d} {th:7d} {o:>8s} {c:8.2f}')
  print('\nHeadroom = best loader clips/s / trainer clips/s (goal >= 5):')
  print(f"{'consumer':70s} {'clips/s':>8s} {'headroom':>9s}")
  for name, c in consumers:
    print(f'{name:70s} {c:8.2f} {best / c:9.2f}')
  print('\nTable 1 (procedural source):')
  print(format_table({k: v for k, v in built['png'].stats.items()}))


if __name__ == '__main__':
  main()
