"""The §3.4 window schedule for N = 1, L-1, L, L+1, 100 and every stride 1..L, and its weights."""

import numpy as np
import pytest

from tgvac_jax.diffusion import windows as win


def _reference_starts(n, length, stride):
  if n <= length:
    return [0]
  starts = list(range(0, n - length + 1, stride))
  if starts[-1] + length != n:
    starts.append(n - length)
  return starts


@pytest.mark.parametrize('length', [1, 2, 5, 14])
def test_schedule_properties(length):
  for n in sorted({1, max(length - 1, 1), length, length + 1, 100}):
    for stride in range(1, length + 1):
      ws = win.window_schedule(n, length, stride)
      idx = ws.indices()
      eff = min(length, n)
      assert ws.length == eff and idx.shape == (ws.num_windows, eff)
      assert list(ws.starts) == _reference_starts(n, length, stride)
      assert ws.starts[0] == 0 and idx.max() == n - 1 and idx.min() == 0         # first and last frame
      assert all(b > a for a, b in zip(ws.starts, ws.starts[1:]))               # no duplicate windows
      assert all(s % stride == 0 for s in ws.starts[:-1])                       # strided, but the tail
      gaps = np.diff(ws.starts)
      assert (gaps <= stride).all() and (gaps >= 1).all()                       # overlap or touch, never a hole
      cov = ws.coverage('flat')
      np.testing.assert_array_equal(cov, np.bincount(idx.reshape(-1), minlength=n))
      assert (cov >= 1).all()
      if n <= length:
        assert ws.num_windows == 1
      else:
        k = (n - length) // stride + 1
        assert ws.num_windows == k + ((k - 1) * stride + length != n)


def test_paper_setting():
  ws = win.window_schedule(28, 14, 4)
  assert ws.starts == (0, 4, 8, 12, 14)
  assert win.window_schedule(26, 14, 4).starts == (0, 4, 8, 12)   # already ends at 26: no tail window
  assert win.window_schedule(100, 14, 14).starts == (0, 14, 28, 42, 56, 70, 84, 86)
  assert win.window_schedule(5, 14, 4).starts == (0,) and win.window_schedule(5, 14, 4).length == 5


def test_weights():
  np.testing.assert_array_equal(win.window_weights(4, 'flat'), np.ones(4))
  np.testing.assert_array_equal(win.window_weights(14, 'pyramid'), [1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1])
  np.testing.assert_array_equal(win.window_weights(5, 'pyramid'), [1, 2, 3, 2, 1])
  np.testing.assert_array_equal(win.window_weights(1, 'pyramid'), [1])
  ws = win.window_schedule(10, 4, 2)
  expect = np.zeros(10)
  for s in ws.starts:
    expect[s:s + 4] += [1, 2, 2, 1]
  np.testing.assert_array_equal(ws.coverage('pyramid'), expect)


def test_bad_input():
  with pytest.raises(ValueError, match=r'stride \(5\) > window_length \(4\)'):
    win.window_schedule(10, 4, 5)
  with pytest.raises(ValueError, match='window_length'):
    win.window_schedule(10, 0, 1)
  with pytest.raises(ValueError, match='stride must be >= 1'):
    win.window_schedule(10, 4, 0)
  with pytest.raises(ValueError, match='at least 1 frame'):
    win.window_schedule(0, 4, 2)
  with pytest.raises(ValueError, match='weighting'):
    win.window_weights(4, 'gaussian')
