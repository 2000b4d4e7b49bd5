"""Our jitted UNet forward vs diffusers' PyTorch UNet on the same CPU, same config, same input.

  python bench/unet_forward.py                       # SD-1.5 and a small config, batch 1 and 2, 32x32 latent
  python bench/unet_forward.py --configs small --repeats 9

Both sides run float32 with the same random weights (ours converted from the torch model) on the same inputs;
torch under `inference_mode`, ours as one `jax.jit` program (nnx.split once, pure function, nnx.merge inside).
Runs are interleaved (torch, ours, torch, ours, ...) and the medians reported, since the CPU may be shared.
`ratio` = ours / torch (goal <= 0.8). `compile` = our trace + XLA compile time for that input shape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

from interleave import allocator, interleaved  # noqa: E402  (bench/, the script's own folder)

CONFIGS = {
    'sd15': dict(),  # UNetConfig.sd15()
    'small': dict(block_out_channels=(64, 128, 256, 256), layers_per_block=1, cross_attention_dim=256,
                  attention_head_dim=4, sample_size=32),
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--configs', default='sd15,small')
  p.add_argument('--batches', default='1,2')
  p.add_argument('--size', type=int, default=32, help='latent height = width')
  p.add_argument('--repeats', type=int, default=7)
  p.add_argument('--xla-flags', default=None, help='extra XLA_FLAGS for our side')
  p.add_argument('--threads', type=int, default=0,
                 help='1: pin the process to one core, torch.set_num_threads(1), single-threaded XLA (a per-core '
                      'comparison that a shared, oversubscribed CPU disturbs less); 0: library defaults')
  args = p.parse_args()
  if args.threads == 1:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    args.xla_flags = ((args.xla_flags or '') + ' --xla_cpu_multi_thread_eigen=false').strip()
  if args.xla_flags:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + args.xla_flags).strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

  import diffusers  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from convert.unet import from_torch  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.unet import UNetConfig  # pylint: disable=import-outside-toplevel

  if args.threads == 1:
    torch.set_num_threads(1)
  print(f'cpu count {os.cpu_count()}, torch threads {torch.get_num_threads()}, jax {jax.__version__} '
        f'({jax.devices()[0].platform}), torch {torch.__version__}, diffusers {diffusers.__version__}, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, {allocator()}, '
        f'load avg {os.getloadavg()[0]:.1f}', flush=True)
  rows = []
  for name in args.configs.split(','):
    config = UNetConfig.sd15(**CONFIGS[name])
    torch.manual_seed(0)
    tm = diffusers.UNet2DConditionModel(**config.to_dict()).eval()
    ours, config = from_torch(tm.state_dict(), config.to_dict())
    graphdef, state = nnx.split(ours)
    del ours

    @jax.jit
    def forward(state, x, t, ctx):
      return nnx.merge(graphdef, state)(x, t, ctx)

    for batch in (int(b) for b in args.batches.split(',')):
      rng = np.random.default_rng(batch)
      x = rng.standard_normal((batch, config.in_channels, args.size, args.size), np.float32)
      t = np.full((batch,), 500.0, np.float32)
      ctx = rng.standard_normal((batch, 77, config.cross_attention_dim), np.float32)
      tx, tt, tc = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)
      jx, jt, jc = (jax.device_put(a) for a in (x.transpose(0, 2, 3, 1), t, ctx))

      t0 = time.perf_counter()
      compiled = forward.lower(state, jx, jt, jc).compile()
      compile_s = time.perf_counter() - t0

      def run_torch():
        with torch.inference_mode():
          return tm(tx, tt, tc).sample

      def run_ours():
        return jax.block_until_ready(compiled(state, jx, jt, jc))

      ref, got = run_torch().numpy(), np.asarray(run_ours()).transpose(0, 3, 1, 2)  # warm-up + sanity
      err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
      medians, times = interleaved({'torch': run_torch, 'ours': run_ours}, args.repeats)
      tq, oq = medians['torch'], medians['ours']
      rows.append((name, batch, tq, oq, oq / tq, compile_s, err))
      print(f'  {name} batch {batch}: torch {tq * 1e3:.0f} ms, ours {oq * 1e3:.0f} ms, ratio {oq / tq:.2f}, '
            f'compile {compile_s:.1f} s, rel err {err:.1e}  (torch runs {[round(v * 1e3) for v in times["torch"]]}'
            f', ours {[round(v * 1e3) for v in times["ours"]]})', flush=True)
    del tm, state

  print(f'\nUNet forward, {args.size}x{args.size} latent, fp32, median of {args.repeats} interleaved runs '
        f'(load avg now {os.getloadavg()[0]:.1f})')
  print('| config | batch | torch ms | ours ms | ours/torch | our compile s | rel err |')
  print('|---|---|---|---|---|---|---|')
  for name, batch, tq, oq, ratio, comp, err in rows:
    print(f'| {name} | {batch} | {tq * 1e3:.0f} | {oq * 1e3:.0f} | {ratio:.2f} | {comp:.1f} | {err:.1e} |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
