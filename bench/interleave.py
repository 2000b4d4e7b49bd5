"""Side-by-side timing for the benchmarks: the sides run alternately, so a shared, noisy CPU slows both alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(sides: Mapping[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float],
                                                                                  dict[str, list[float]]]:
  """Runs every side once per round, `repeats` rounds; (median seconds per side, every run's seconds per side)."""
  runs = {side: [] for side in sides}
  for _ in range(repeats):
    for side, fn in sides.items():
      t0 = time.perf_counter()
      fn()
      runs[side].append(time.perf_counter() - t0)
  return {side: statistics.median(r) for side, r in runs.items()}, runs
