"""What every source reader yields: object tracks (frames, per-object masks, caption, ids) and skip reports.

A `Source` lists its videos and, per video, the object `Track`s in it. A track knows how many frames it has and
which of them are usable (annotated, not flagged occluded/out of view), loads its masks in one go (they decide
which clips qualify) and loads frames lazily (only the frames of the chosen clips are decoded).

Errors:
  `SourceError`  the dataset root itself is wrong (missing folder/file): raised at construction, before any output.
  `VideoError`   one video is malformed (frame/mask counts differ, no objects, ...): the builder reports and skips it.
  `FrameError`   one frame cannot be read (corrupt JPEG, truncated PNG): reported; clips touching it are skipped.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np

from tgvac_jax.data.images import FrameError, read_binary_mask, read_label, read_rgb  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
  """The dataset root does not look like the layout the reader expects."""


class VideoError(RuntimeError):
  """One video cannot be used; the builder reports it and goes on."""


@dataclasses.dataclass
class Track:
  """One object in one source video.

  `load_masks()` -> (masks (N,H,W) bool, others (N,H,W) bool or None): the object's mask per frame and the union
  of the other annotated objects (used to reject frames where the object touches another one).
  `load_frames(idx)` -> (len(idx),H,W,3) uint8; raises FrameError naming the bad frame.
  `usable` (N,) bool: frames the source itself allows (annotated, not flagged occluded / out of view).
  """
  source: str
  video_id: str
  object_id: int
  class_name: str
  caption: str
  num_frames: int
  load_masks: Callable[[], tuple[np.ndarray, np.ndarray | None]] = dataclasses.field(repr=False)
  load_frames: Callable[[Sequence[int]], np.ndarray] = dataclasses.field(repr=False)
  usable: np.ndarray | None = dataclasses.field(default=None, repr=False)
  source_num_frames: int | None = None  # length of the source video (Table 1's "mean #frames")
  # Optional: full-resolution masks of some frames, when load_masks() returns reduced ones (long videos).
  load_window_masks: Callable[[Sequence[int]], np.ndarray] | None = dataclasses.field(default=None, repr=False)

  def window_masks(self, idx: Sequence[int], masks: np.ndarray) -> np.ndarray:
    return self.load_window_masks(idx) if self.load_window_masks is not None else masks[np.asarray(idx)]

  @property
  def key(self) -> str:
    return f'{self.video_id}/{self.object_id}'


class Source(abc.ABC):
  """A reader over one dataset layout."""

  name: str = 'source'

  @abc.abstractmethod
  def videos(self) -> list[str]:
    """Sorted ids of all videos in the source."""

  @abc.abstractmethod
  def tracks(self, video_id: str) -> list[Track]:
    """The object tracks of one video. May raise VideoError."""

  def describe(self) -> dict:
    return {'source': self.name}


# --------------------------------------------------------------------------------------------- image helpers

def read_labels(paths: Sequence[str], video: str) -> tuple[np.ndarray, np.ndarray]:
  """A video's annotation PNGs -> labels (N,H,W) uint8 and readable (N,) bool. An unreadable or mis-sized frame
  becomes an empty, unusable one; a video with no readable annotation at all is a VideoError."""
  labels, ok, shape = [], [], None
  for i, path in enumerate(paths):
    try:
      lab = read_label(path, i)
      shape = shape or lab.shape
      if lab.shape != shape:
        raise FrameError(path, f'size {lab.shape} differs from {shape}', i)
      labels.append(lab.astype(np.uint8))
      ok.append(True)
    except FrameError:
      labels.append(None)
      ok.append(False)
  if shape is None:
    raise VideoError(f'{video}: no readable annotation')
  return np.stack([l if l is not None else np.zeros(shape, np.uint8) for l in labels]), np.asarray(ok)


def stack_frames(paths: Sequence[str], indices: Sequence[int]) -> np.ndarray:
  return np.stack([read_rgb(paths[i], i) for i in indices])
