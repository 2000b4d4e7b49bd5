"""Side-by-side timing for the benchmarks: the sides run alternately, so a shared, noisy CPU slows both alike."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping


def cpu_name() -> str:
  """The CPU's model name, which every figure must carry ('?' where /proc/cpuinfo does not say)."""
  with open('/proc/cpuinfo') as f:
    return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '?')


def allocator() -> str:
  """The process's allocator set-up (`tgvac_jax/host.py`), which moves CPU step times by up to 2x."""
  return ', '.join(f'{k}={os.environ.get(k, "")!r}' for k in ('LD_PRELOAD', 'GLIBC_TUNABLES'))


def machine_line(jax, torch) -> str:
  """What an ours-vs-torch table was measured on: CPU, cores, torch threads, versions, allocator, load."""
  return (f'{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, jax {jax.__version__}, '
          f'torch {torch.__version__}, {allocator()}, load avg {os.getloadavg()[0]:.1f}')


def interleaved(sides: Mapping[str, Callable[[], object]], repeats: int, pause_s: float = 0.0
                ) -> tuple[dict[str, float], dict[str, list[float]]]:
  """Runs every side once per round, `repeats` rounds; (median seconds per side, every run's seconds per side).

  `pause_s`: idle seconds before each run, so a side starts on quiet cores. PyTorch's OpenMP workers keep spinning
  for a while after its last parallel region; without a pause the side that runs right after torch shares the
  cores with them (bench/train_step.py on a 2-core Intel Xeon: our step 229-304 ms after torch's, 207-213 ms after
  a 0.5 s pause). Useful only for runs much longer than a thread wake-up (a few ms)."""
  runs = {side: [] for side in sides}
  for _ in range(repeats):
    for side, fn in sides.items():
      time.sleep(pause_s)
      t0 = time.perf_counter()
      fn()
      runs[side].append(time.perf_counter() - t0)
  return {side: statistics.median(r) for side, r in runs.items()}, runs
