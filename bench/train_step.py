"""Our jitted train step vs a diffusers PyTorch train step on the same CPU: same UNet config and weights, same
batch size, AdamW; frame stage (every UNet weight trains) and motion stage (spatial weights frozen; ours with
motion modules, theirs diffusers `UNetMotionModel`, only `motion_modules` train).

  python bench/train_step.py                          # small and medium configs, both stages
  python bench/train_step.py --configs small --stages frame --repeats 5 --threads 1

Both sides take the same cached-latent batch (`train/cache_latents.py` format: target posterior, occluded and
mask latents, caption embeddings) and do the same work per step: draw the posterior sample, t and the noise, drop
conditions for classifier-free guidance (the empty caption's embedding from the frozen text encoder), UNet
forward, ε-MSE, backward, global-norm clipping (1.0), AdamW, EMA of the trained weights. Ours is the trainer's
step (`train/step.py` via `make_train_step`, jitted with the state donated, as `state.setup` does, on one
device, fp32); theirs is the usual diffusers training loop body (fp32, eager, `torch.optim.AdamW`,
`clip_grad_norm_`, `torch._foreach_lerp_` EMA). Each side runs in its own process, as users run them (in one
process the two frameworks' allocators share a heap); steps are interleaved (torch, ours, torch, ...), each after
a 0.5 s pause (`bench/interleave.py` says why), and the medians reported, since the CPU may be shared. Then each
side runs `--repeats` times back to back (`alone`). Both sides run with the allocator `tgvac_jax/host.py` sets up
(the header line says which). With glibc's malloc the two columns differ on VMs whose balloon driver reports freed
memory to the hypervisor (this project's 2-core VMs load `virtio_balloon`): XLA maps its temp buffer afresh every
step, and memory left free for the ~2.5 s of a pause and torch's step is given back, so touching it again costs
host faults (small motion on the AMD: our step 2.4-2.7 s with 1.8-2.2 s of system time right after torch's,
1.1-1.4 s with 0.1 s alone). tcmalloc, where installed, keeps the freed buffer for the next step, and the two
columns agree.
`ratio` = ours / torch (goal <= 0.8). `compile` = our trace + XLA compile. `peak MiB` = the most resident memory
one step adds over the resident memory before it (the kernel's peak-RSS mark, reset before the step:
activations, gradients, temporaries); `XLA temp` = the compiled step's temporary buffers (XLA's own count).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from interleave import allocator, cpu_name, interleaved  # noqa: E402  (bench/, the script's own folder)

CONFIGS = {
    'small': dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, cross_attention_dim=256,
                  attention_head_dim=4),
    'medium': dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=768,
                   attention_head_dim=8),  # bench/video_unet.py's MEDIUM
}
MOTION_HEADS = 8
LR, CLIP, EMA_DECAY, WEIGHT_DECAY = 5e-4, 1.0, 0.9999, 1e-2
WARMUP = 3  # untimed steps per side: our first steps after compiling run slower (small motion, 2-core Intel Xeon:
# 2126, 1845, 1664, 1510 ms, then 1382-1518, after one warm-up step)


def _status_kib(field: str) -> int:
  with open('/proc/self/status') as f:
    return int(next(line.split()[1] for line in f if line.startswith(field + ':')))


def peak_added_rss(fn) -> int:
  """The most resident memory `fn()` adds over what was resident before it: the kernel's peak-RSS mark (VmHWM),
  reset to the current RSS first (`/proc/self/clear_refs` 5), after the allocator has returned its free memory to
  the system (glibc's `malloc_trim`, tcmalloc's `MallocExtension_ReleaseFreeMemory` where it is preloaded), so a
  step cannot hide its allocations in memory an earlier step freed."""
  ctypes.CDLL('libc.so.6').malloc_trim(0)
  release = getattr(ctypes.CDLL(None), 'MallocExtension_ReleaseFreeMemory', None)
  if release is not None:
    release()
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  base = _status_kib('VmRSS')
  fn()
  return (_status_kib('VmHWM') - base) * 1024


def build(name: str, stage: str, frames: int, batch: int, size: int):
  """Torch and our models with the same weights, and one cached-latent batch in both layouts."""
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from convert import animatediff, clip as convert_clip, unet as convert_unet  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.motion import MotionConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.unet import UNetConfig  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  config = UNetConfig.sd15(**CONFIGS[name], in_channels=12, out_channels=4, sample_size=size)
  t_unet = diffusers.UNet2DConditionModel(**config.to_dict())
  width = config.cross_attention_dim
  t_text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=64, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1, num_attention_heads=4,
      max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
  motion = None
  if stage == 'motion':
    motion = MotionConfig(num_attention_heads=MOTION_HEADS, norm_num_groups=config.norm_num_groups,
                          norm_across_frames=True, zero_init=False)  # diffusers normalises across frames
    adapter = diffusers.MotionAdapter(block_out_channels=config.block_out_channels,
                                      motion_layers_per_block=config.layers_per_block,
                                      motion_norm_num_groups=config.norm_num_groups,
                                      motion_num_attention_heads=MOTION_HEADS, use_motion_mid_block=True)
  ours, _ = convert_unet.from_torch(t_unet.state_dict(), config.to_dict(), motion=motion)
  if stage == 'motion':
    animatediff.load_motion_state(ours, {k: v.numpy() for k, v in adapter.state_dict().items()})
    t_unet = diffusers.UNetMotionModel.from_unet2d(t_unet, adapter)
  te, _ = convert_clip.from_torch(t_text.state_dict(), t_text.config.to_dict())

  z = random_latents(stage, frames, batch, size)
  with torch.no_grad():
    z['context'] = t_text(torch.from_numpy(z['input_ids']).long()).last_hidden_state.numpy()
  return t_unet.train(), t_text, ours, te, z


def random_latents(stage: str, frames: int, batch: int, size: int) -> dict:
  """A random cached-latent batch without its caption embeddings (`context`): posterior mean and std of the
  targets, occluded and mask latents, caption ids."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  lat = (batch,) + ((frames,) if stage == 'motion' else ()) + (size, size, 4)
  z = {k: rng.standard_normal(lat, np.float32) for k in ('target_mean', 'occluded', 'mask')}
  z['target_std'] = np.abs(0.1 * rng.standard_normal(lat, np.float32))
  z['input_ids'] = rng.integers(2, 60, (batch, 77)).astype(np.int32)
  return z


def trainer_config():
  """Our trainer's config with the optimizer settings torch's side uses (lr, no warmup, clipping, weight decay,
  EMA decay)."""
  from tgvac_jax.train.config import base_config  # pylint: disable=import-outside-toplevel

  c = base_config()
  c.optim.lr, c.optim.warmup_steps, c.optim.clip_norm, c.optim.weight_decay = LR, 0, CLIP, WEIGHT_DECAY
  c.ema_decay = EMA_DECAY
  return c


def jitted_step(stage: str, unet, text_encoder, compute_dtype: str = 'float32'):
  """The trainer's step for `unet` (all of it trained for 'frame', its `MotionParam`s for 'motion') on one device:
  (the jitted step with the state donated, the initial state, the frozen weights)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from tgvac_jax.models.motion import MotionParam  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.optimizer import make_optimizer  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.state import TrainState  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.step import diffusion_loss_fn, make_train_step  # pylint: disable=import-outside-toplevel

  c = trainer_config()
  c.stage, c.compute_dtype = stage, compute_dtype
  graphdef, params, rest = nnx.split(unet, MotionParam if stage == 'motion' else nnx.Param, ...)
  te_def, te_state = nnx.split(text_encoder)
  empty = np.ones((1, 77), np.int32)
  empty[0, 0] = 0
  loss = diffusion_loss_fn(c, {'unet': graphdef, 'text_encoder': te_def}, empty)
  tx, schedule = make_optimizer(c.optim, c.num_steps)
  step = jax.jit(make_train_step(loss, tx, schedule, c.ema_decay), donate_argnums=0)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     ema=jax.tree.map(jnp.copy, params), rng=jax.random.key_data(jax.random.key(0)),
                     skipped=jnp.zeros((), jnp.int32))
  return step, state, {'unet': rest, 'text_encoder': te_state}


def ours_step(stage: str, unet, text_encoder, batch: dict):
  """The trainer's step on one device: (a function running one step, compile seconds, XLA temp bytes, the
  compiled step)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  step, state, frozen = jitted_step(stage, unet, text_encoder)
  x = {k: jnp.asarray(v) for k, v in batch.items()}
  t0 = time.perf_counter()
  compiled = step.lower(state, frozen, x).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  temp = float(mem.temp_size_in_bytes) if mem is not None else float('nan')
  holder = {'state': state}

  def run():
    holder['state'], metrics = compiled(holder['state'], frozen, x)
    return float(jax.block_until_ready(metrics['loss']))
  return run, compile_s, temp, compiled


def torch_step(stage: str, unet, text_encoder, batch: dict):
  """The diffusers training loop body (ε-prediction, SD-1.5 scaled-linear betas, condition dropout 5/5/5 %)."""
  import torch  # pylint: disable=import-outside-toplevel

  trained = [p for n, p in unet.named_parameters() if stage == 'frame' or 'motion_modules' in n]
  for n, p in unet.named_parameters():
    p.requires_grad_(stage == 'frame' or 'motion_modules' in n)
  opt = torch.optim.AdamW(trained, lr=LR, weight_decay=WEIGHT_DECAY)
  ema = [p.detach().clone() for p in trained]
  abar = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0)
  video = stage == 'motion'
  layout = (lambda a: torch.from_numpy(a).permute(0, 4, 1, 2, 3)) if video else \
      (lambda a: torch.from_numpy(a).permute(0, 3, 1, 2))  # channels first: (B, C, [F,] H, W)
  mean, std, occ, mask = (layout(batch[k]).contiguous() for k in ('target_mean', 'target_std', 'occluded', 'mask'))
  context = torch.from_numpy(batch['context'])
  if video:  # UNetMotionModel takes the caption per frame (AnimateDiffPipeline repeats it so)
    context = context.repeat_interleave(mean.shape[2], dim=0)
  empty_ids = torch.ones((1, 77), dtype=torch.long)
  empty_ids[0, 0] = 0
  b = mean.shape[0]
  per_sample = lambda f, x: f.view((b,) + (1,) * (x.ndim - 1))  # noqa: E731
  per_context = lambda f: f.repeat_interleave(len(context) // b).view(-1, 1, 1)  # noqa: E731

  def run():
    x0 = mean + std * torch.randn_like(mean)
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (b,))
    a = per_sample(abar[t], x0)
    z_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    u = torch.rand(b)
    drop_text, drop_concat = (u < 0.05) | (u >= 0.1) & (u < 0.15), (u >= 0.05) & (u < 0.15)
    with torch.no_grad():
      empty = text_encoder(empty_ids).last_hidden_state
    ctx = torch.where(per_context(drop_text), empty, context)
    cond = torch.cat([occ, mask], dim=1)
    cond = torch.where(per_sample(drop_concat, cond), torch.zeros_like(cond), cond)
    pred = unet(torch.cat([z_t, cond], dim=1), t, ctx).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, CLIP)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, trained, 1 - EMA_DECAY)  # pylint: disable=protected-access
    return float(loss.detach())
  return run


def _side(conn, side: str, name: str, stage: str, frames: int, batch: int, size: int, threads: int) -> None:
  """One side in its own process: builds both models from the same seed, keeps its own, then runs a step per
  request ('step' -> seconds, 'peak' -> peak added bytes) until 'stop'."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  if threads == 1:
    torch.set_num_threads(1)
  t_unet, t_text, unet, te, z = build(name, stage, frames, batch, size)
  trained = (p.numel() for n, p in t_unet.named_parameters() if stage == 'frame' or 'motion_modules' in n)
  info = {'trained': sum(trained),
          'platform': jax.devices()[0].platform, 'torch_threads': torch.get_num_threads()}
  if side == 'ours':
    run, info['compile_s'], info['temp'], _ = ours_step(stage, unet, te, z)
    del t_unet, t_text
  else:
    run = torch_step(stage, t_unet, t_text, z)
    del unet, te
  info['loss'] = run()
  conn.send(info)
  while (request := conn.recv()) != 'stop':
    if request == 'peak':
      conn.send(peak_added_rss(run))
    else:
      t0 = time.perf_counter()
      run()
      conn.send(time.perf_counter() - t0)


class Side:
  """A side's worker process; calling it runs one step there and returns its seconds."""

  def __init__(self, side: str, *args):
    ctx = multiprocessing.get_context('spawn')  # a fresh interpreter: neither framework loaded before
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_side, args=(child, side) + args, daemon=True)
    self.proc.start()

  def ready(self) -> dict:
    return self.conn.recv()

  def __call__(self) -> float:
    self.conn.send('step')
    return self.conn.recv()

  def peak(self) -> int:
    self.conn.send('peak')
    return self.conn.recv()

  def stop(self) -> None:
    self.conn.send('stop')
    self.proc.join()


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--configs', default='small,medium')
  p.add_argument('--stages', default='frame,motion')
  p.add_argument('--size', type=int, default=32, help='latent height = width (32: 256 px images)')
  p.add_argument('--batch', type=int, default=2, help='frame stage: images per step')
  p.add_argument('--clips', type=int, default=1, help='motion stage: clips per step')
  p.add_argument('--frames', type=int, default=14, help='motion stage: frames per clip')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--threads', type=int, default=0,
                 help='1: pin the processes to one core, torch.set_num_threads(1), single-threaded XLA (a per-core '
                      'comparison; on a shared, oversubscribed CPU torch\'s spinning OpenMP threads otherwise '
                      'slow its steps by 10-100x); 0: library defaults')
  args = p.parse_args()
  if args.threads == 1:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false').strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

  versions = ', '.join(f'{d} {importlib.metadata.version(d)}' for d in ('jax', 'torch', 'diffusers'))
  print(f'{cpu_name()}, {os.cpu_count()} cores, {versions}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, '
        f'{allocator()}, load avg {os.getloadavg()[0]:.1f}', flush=True)
  rows = []
  for name in args.configs.split(','):
    for stage in args.stages.split(','):
      batch = args.batch if stage == 'frame' else args.clips
      sides = {side: Side(side, name, stage, args.frames, batch, args.size, args.threads) for side in ('torch', 'ours')}
      info = {side: fn.ready() for side, fn in sides.items()}
      interleaved(sides, WARMUP - 1)
      medians, times = interleaved(sides, args.repeats, pause_s=0.5)
      alone = {}
      for side, fn in sides.items():
        fn()  # the first run after the other side's is not counted
        alone[side] = interleaved({side: fn}, args.repeats, pause_s=0.5)[0][side]
      peaks = {side: fn.peak() for side, fn in sides.items()}
      for fn in sides.values():
        fn.stop()
      tq, oq = medians['torch'], medians['ours']
      shape = f'{batch}x{args.frames}' if stage == 'motion' else f'{batch}'
      rows.append((name, stage, shape, info['torch']['trained'], tq, oq, alone['torch'], alone['ours'],
                   info['ours']['compile_s'], peaks['torch'], peaks['ours'], info['ours']['temp']))
      print(f'  {name} {stage} batch {shape} (jax on {info["ours"]["platform"]}, torch threads '
            f'{info["torch"]["torch_threads"]}): torch {tq * 1e3:.0f} ms, ours {oq * 1e3:.0f} ms, ratio {oq / tq:.2f}, '
            f'compile {info["ours"]["compile_s"]:.1f} s, first losses torch {info["torch"]["loss"]:.3f} ours '
            f'{info["ours"]["loss"]:.3f} (torch runs {[round(v * 1e3) for v in times["torch"]]}, ours '
            f'{[round(v * 1e3) for v in times["ours"]]}); alone: torch {alone["torch"] * 1e3:.0f} ms, ours '
            f'{alone["ours"] * 1e3:.0f} ms', flush=True)

  print(f'\nTrain step (UNet fwd+bwd, clip, AdamW, EMA) from cached latents, {args.size}x{args.size} latent, fp32, '
        f'median of {args.repeats} interleaved runs (load avg now {os.getloadavg()[0]:.1f})')
  print('| config | stage | batch | trained M | torch ms | ours ms | ours/torch | alone: torch ms | ours ms | '
        'ours/torch | our compile s | torch peak MiB | our peak MiB | XLA temp MiB |')
  print('|---' * 14 + '|')
  for name, stage, shape, n, tq, oq, ta, oa, comp, pt, po, temp in rows:
    print(f'| {name} | {stage} | {shape} | {n / 1e6:.2f} | {tq * 1e3:.0f} | {oq * 1e3:.0f} | {oq / tq:.2f} | '
          f'{ta * 1e3:.0f} | {oa * 1e3:.0f} | {oa / ta:.2f} | {comp:.1f} | {pt / 2**20:.0f} | {po / 2**20:.0f} | '
          f'{temp / 2**20:.0f} |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
