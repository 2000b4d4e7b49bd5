"""The §3.4 temporal sampler with a small video UNet: (a) its overhead over the denoiser calls it makes and
(b) its compile time against the number of steps and of frames.

  python bench/sampler.py                     # both tables
  python bench/sampler.py --only overhead --repeats 5

(a) overhead = sampler wall time / (denoiser calls x one call's time). One call = one chunk of windows through
    the guided UNet (cond + uncond in one batch), jitted alone with the same shapes; calls = steps x chunks.
    Goal <= 1.05: gathering windows, scatter-add averaging and the DDIM update cost next to nothing. Reported
    three ways: wall-clock and process-CPU-time ratios (minimum of interleaved runs), and "derived" = 1 + the
    same sampler's time with a free denoiser / (calls x one call), which is robust on a shared machine.
(b) compile = trace + XLA compile of the whole sampler (one jit program). Goal: flat in the number of steps
    (lax.scan) and nearly flat in frames (windows go through lax.map, only the gather/scatter sizes change).
The UNet is our `UNet2DConditionModel` (12 input channels, motion modules), small and random-initialised.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--only', choices=('overhead', 'compile'), default=None)
  p.add_argument('--size', type=int, default=16, help='latent height = width')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--steps', type=int, default=10, help='DDIM steps for the overhead runs')
  args = p.parse_args()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from tgvac_jax.diffusion import DDIMConfig, TemporalSamplerConfig, temporal_sample  # noqa: E402
  from tgvac_jax.diffusion.guidance import Cond, guided_output  # noqa: E402
  from tgvac_jax.diffusion.temporal_sampler import _plan  # noqa: E402  (the static window layout)
  from tgvac_jax.models.motion import MotionConfig  # noqa: E402
  from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

  config = UNetConfig(
      in_channels=12, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
      down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'), up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
      cross_attention_dim=64, attention_head_dim=2, norm_num_groups=8, sample_size=args.size,
      motion=MotionConfig(num_attention_heads=2, norm_num_groups=8, max_seq_length=32))
  graphdef, state = nnx.split(UNet2DConditionModel(config, rngs=nnx.Rngs(0)))
  n_params = sum(x.size for x in jax.tree.leaves(state))

  def eps_fn(params, z, t, cond):  # the pipeline's denoiser: z_t ⊕ E(x) ⊕ E(m), text by cross-attention
    return nnx.merge(graphdef, params)(jnp.concatenate([z, cond.frames], -1), t, cond.context)

  hw = args.size
  empty = jnp.zeros((1, 77, 64))

  def inputs(b, n):
    k = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(k[0], (b, n, hw, hw, 4)),
            Cond(jax.random.normal(k[1], (b, n, hw, hw, 8)), jax.random.normal(k[2], (b, 77, 64))))

  def sampler_fn(cfg):
    return jax.jit(lambda s, z, c, u: temporal_sample(eps_fn, s, z, c, None, cfg, uncond_context=u))

  def timed(fn, *a):
    """(wall, process CPU) seconds; CPU time is robust to being descheduled on a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - t0, time.process_time() - c0

  def trivial_eps(params, z, t, cond):  # ~free denoiser: what is left is the sampler's own work
    return 0.5 * z + 0.1 * cond.frames[..., :4]

  print(f'cpu count {os.cpu_count()}, jax {jax.__version__} ({jax.devices()[0].platform}), UNet {n_params / 1e6:.2f}M '
        f'params, latent {hw}x{hw}, load avg {os.getloadavg()[0]:.1f}', flush=True)

  if args.only in (None, 'overhead'):
    rows = []
    for b, n, chunk in ((1, 28, 1), (1, 28, 5), (1, 56, 4), (2, 28, 1)):
      cfg = TemporalSamplerConfig(chunk_size=chunk, ddim=DDIMConfig(num_inference_steps=args.steps))
      plan = _plan(n, cfg, 1)
      z, cond = inputs(b, n)
      sample = sampler_fn(cfg).lower(state, z, cond, empty).compile()
      # one denoiser call, exactly as the sampler makes it: chunk windows x b videos, guided (2x batch)
      zc, cc = inputs(plan.chunk * b, cfg.window_length)
      one = jax.jit(lambda s, z, c, u: guided_output(eps_fn, s, z, 500, c, scale=cfg.guidance_scale,
                                                     uncond_context=u)).lower(state, zc, cc, empty).compile()
      jax.block_until_ready(one(state, zc, cc, empty))
      jax.block_until_ready(sample(state, z, cond, empty))
      calls = args.steps * plan.num_chunks
      # interleaved, and the minimum over repeats: the CPU may be shared, and contention only ever adds time
      t_calls, t_samples = [], []
      for _ in range(args.repeats):
        t_calls += [timed(one, state, zc, cc, empty) for _ in range(3)]
        t_samples.append(timed(sample, state, z, cond, empty))
      wall = min(t[0] for t in t_samples) / (calls * min(t[0] for t in t_calls))
      cpu = min(t[1] for t in t_samples) / (calls * min(t[1] for t in t_calls))
      # the sampler's own cost (gather, lax.map loop, scatter-add, DDIM) with a free denoiser
      free = jax.jit(lambda s, z, c, u: temporal_sample(trivial_eps, s, z, c, None, cfg, uncond_context=u)
                     ).lower(state, z, cond, empty).compile()
      jax.block_until_ready(free(state, z, cond, empty))
      t_free = min(timed(free, state, z, cond, empty)[0] for _ in range(5))
      t_call = min(t[0] for t in t_calls)
      derived = 1 + t_free / (calls * t_call)
      rows.append((b, n, plan.num_windows, chunk, calls, t_call, min(t[0] for t in t_samples), wall, cpu,
                   t_free, derived))
      print(f'  overhead B={b} N={n} chunk={chunk}: {calls} calls; calls (wall, cpu) '
            f'{[(round(a * 1e3), round(c * 1e3)) for a, c in t_calls]} ms; sampler '
            f'{[(round(a, 2), round(c, 2)) for a, c in t_samples]} s; free-denoiser sampler {t_free * 1e3:.1f} ms '
            f'-> wall {wall:.3f}, cpu {cpu:.3f}, derived {derived:.4f}', flush=True)
    print(f'\n(a) overhead = sampler time / (calls x one call), L=14 s=4, {args.steps} DDIM steps, guidance 7.5; '
          f'min of {args.repeats} interleaved runs (load avg now {os.getloadavg()[0]:.1f}). "derived" = 1 + '
          '(sampler with a free denoiser) / (calls x one call), the load-robust estimate.')
    print('| B | frames | windows | chunk | calls | one call ms | sampler s | wall ratio | CPU-time ratio | '
          'free-denoiser sampler ms | derived |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for b, n, w, c, calls, tc, ts, wall, cpu, tf, der in rows:
      print(f'| {b} | {n} | {w} | {c} | {calls} | {tc * 1e3:.0f} | {ts:.2f} | {wall:.3f} | {cpu:.3f} | '
            f'{tf * 1e3:.1f} | {der:.4f} |')

  if args.only in (None, 'compile'):
    rows = []
    for steps, n in ((10, 28), (30, 28), (100, 28), (30, 56), (30, 112)):
      cfg = TemporalSamplerConfig(chunk_size=2, ddim=DDIMConfig(num_inference_steps=steps))
      z, cond = inputs(1, n)
      t0 = time.perf_counter()
      lowered = sampler_fn(cfg).lower(state, z, cond, empty)
      t1 = time.perf_counter()
      lowered.compile()
      t2 = time.perf_counter()
      rows.append((steps, n, _plan(n, cfg, 1).num_windows, t1 - t0, t2 - t1))
      print(f'  compile steps={steps} N={n}: trace {t1 - t0:.2f} s, compile {t2 - t1:.2f} s', flush=True)
    print(f'\n(b) compile time, L=14 s=4 chunk 2 (load avg now {os.getloadavg()[0]:.1f})')
    print('| steps | frames | windows | trace+lower s | XLA compile s | total s |')
    print('|---|---|---|---|---|---|')
    for steps, n, w, tr, co in rows:
      print(f'| {steps} | {n} | {w} | {tr:.2f} | {co:.2f} | {tr + co:.2f} |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
