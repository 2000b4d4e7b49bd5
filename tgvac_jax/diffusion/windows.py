"""The §3.4 window schedule: overlapping clips of the training length and their averaging weights.

Windows start at 0, s, 2s, ... and a last window is anchored at the end when the strided ones do not reach it,
so every frame is covered. A video shorter than the window is one window of all its frames. Everything here is
static (numpy at trace time): the sampler gathers/scatters with these fixed indices.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

WEIGHTINGS = ('flat', 'pyramid')


def window_weights(length: int, kind: str = 'flat') -> np.ndarray:
  """Per-position weights inside one window. `flat`: all ones, a plain average of overlapping predictions (the
  paper: "averaged based on the number of times they are processed"). `pyramid`: 1, 2, ..., peak, ..., 2, 1
  (AnimateDiff-Evolved / FreeNoise), so frames near a window's edges count less."""
  if length < 1:
    raise ValueError(f'window length must be >= 1, got {length}')
  if kind == 'flat':
    return np.ones(length, np.float32)
  if kind == 'pyramid':
    i = np.arange(length)
    return (np.minimum(i, length - 1 - i) + 1).astype(np.float32)
  raise ValueError(f'window weighting {kind!r} is not one of {WEIGHTINGS}')


@dataclasses.dataclass(frozen=True)
class WindowSchedule:
  """Which frames each window covers. `length` is the effective window length (min(L, num_frames))."""
  num_frames: int
  length: int
  starts: tuple[int, ...]

  @property
  def num_windows(self) -> int:
    return len(self.starts)

  def indices(self) -> np.ndarray:
    """(num_windows, length) int32 frame indices."""
    return (np.asarray(self.starts, np.int32)[:, None] + np.arange(self.length, dtype=np.int32)[None]).astype(
        np.int32)

  def weights(self, kind: str = 'flat') -> np.ndarray:
    """(num_windows, length) float32 weight of each window position."""
    return np.broadcast_to(window_weights(self.length, kind), (self.num_windows, self.length)).copy()

  def coverage(self, kind: str = 'flat') -> np.ndarray:
    """(num_frames,) summed weight per frame: the denominator of the weighted average (> 0 everywhere)."""
    acc = np.zeros(self.num_frames, np.float32)
    np.add.at(acc, self.indices().reshape(-1), self.weights(kind).reshape(-1))
    return acc


def validate(window_length: int, stride: int) -> None:
  """Raise one clear ValueError for impossible window settings."""
  if window_length < 1:
    raise ValueError(f'window_length (L) must be >= 1, got {window_length}')
  if stride < 1:
    raise ValueError(f'stride must be >= 1, got {stride}')
  if stride > window_length:
    raise ValueError(f'stride ({stride}) > window_length ({window_length}) would leave frames no window covers')


@functools.lru_cache(maxsize=256)
def window_schedule(num_frames: int, window_length: int, stride: int) -> WindowSchedule:
  """Starts 0, s, 2s, ... <= N - L, plus N - L if the last strided window stops short of the end."""
  validate(window_length, stride)
  if num_frames < 1:
    raise ValueError(f'the video must have at least 1 frame, got {num_frames}')
  if num_frames <= window_length:
    return WindowSchedule(num_frames, num_frames, (0,))
  starts = list(range(0, num_frames - window_length + 1, stride))
  if starts[-1] + window_length < num_frames:
    starts.append(num_frames - window_length)
  return WindowSchedule(num_frames, window_length, tuple(starts))
