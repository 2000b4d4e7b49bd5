"""The worker pool: the same results as inline, two processes shared by successive maps, and a worker killed
mid-item ends the map with an error naming the items in flight, instead of a hang."""

import os
import signal

import pytest

from data_prep.pool import WorkerDied, WorkerPool


def _square(x):
  if x < 0:
    os.kill(os.getpid(), signal.SIGKILL)
  return x * x, os.getpid()


def test_pool():
  with WorkerPool(_square, 1) as inline:
    assert dict(inline.map(range(6))) == {x: (x * x, os.getpid()) for x in range(6)}
  with WorkerPool(_square, 2, in_flight=3) as pool:
    first = dict(pool.map(range(10)))
    second = dict(pool.map(range(10, 14)))
    assert {x: r[0] for x, r in (first | second).items()} == {x: x * x for x in range(14)}
    pids = {r[1] for r in (first | second).values()}
    assert len(pids) <= 2 and os.getpid() not in pids
    with pytest.raises(WorkerDied, match='-1'):
      dict(pool.map([5, -1, 6]))
