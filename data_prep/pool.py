"""One function over many items in N worker processes, with a bounded number of items in flight.

Workers are spawned (not forked: the parent may hold JAX or torch threads), so a script that starts a pool needs
the `if __name__ == '__main__':` guard. They receive the function once; items go one at a time, so memory stays
at N items however long the list. Results arrive in completion order. A worker
that dies (out of memory, killed) ends the map with an error instead of a hang; on Linux a worker dies with its
parent, so `kill -9` of a build leaves no orphan writing behind the next run's back. `workers <= 1` runs inline.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar('T')
R = TypeVar('R')

_FN: Callable | None = None


def default_workers() -> int:
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def _die_with_parent():
  if sys.platform.startswith('linux'):
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _init(fn: Callable):
  global _FN
  _die_with_parent()
  _FN = fn


def _call(item):
  return _FN(item)


class WorkerDied(RuntimeError):
  """A worker process ended without finishing its item."""


class WorkerPool:
  """`fn` (which must pickle: a module-level function or a picklable object) in `workers` processes, started at
  the first `map` and shared by every `map` until `close`. Use as a context manager."""

  def __init__(self, fn: Callable[[T], R], workers: int, in_flight: int | None = None):
    self.fn, self.workers, self.in_flight = fn, workers, in_flight or 2 * workers
    self._ex: cf.ProcessPoolExecutor | None = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self):
    if self._ex is not None:
      self._ex.shutdown(wait=True, cancel_futures=True)
      self._ex = None

  def map(self, items: Iterable[T]) -> Iterator[tuple[T, R]]:
    """-> (item, fn(item)) as they complete."""
    if self.workers <= 1:
      for it in items:
        yield it, self.fn(it)
      return
    if self._ex is None:
      self._ex = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context('spawn'),
                                        initializer=_init, initargs=(self.fn,))
    pending: dict[cf.Future, T] = {}
    items = iter(items)
    try:
      while True:
        for it in items:
          try:
            pending[self._ex.submit(_call, it)] = it
          except cf.process.BrokenProcessPool as e:  # a worker died before this item went out
            raise _died([it] + list(pending.values())) from e
          if len(pending) >= self.in_flight:
            break
        if not pending:
          return
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for f in done:
          it = pending.pop(f)
          try:
            res = f.result()
          except cf.process.BrokenProcessPool as e:
            raise _died([it] + list(pending.values())) from e
          yield it, res
    except BaseException:
      self.close()
      raise


def _died(flight: list) -> WorkerDied:
  return WorkerDied(f'a worker process died (out of memory? killed?) with {len(flight)} item(s) in flight: '
                    f'{", ".join(map(repr, flight[:8]))}; rerun to resume, perhaps with fewer workers')
