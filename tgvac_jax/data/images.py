"""Image and mask files -> numpy, decoded fully so a truncated file fails at read time, naming the file.

Shared by the library's pix2gestalt folder reader and the dataset builder's source readers (`data_prep`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


class FrameError(RuntimeError):
  """One frame cannot be decoded."""

  def __init__(self, path: str, reason: str, index: int | None = None):
    super().__init__(f'unreadable frame {path}: {reason}')
    self.path, self.reason, self.index = path, reason, index


def read_rgb(path: str, index: int | None = None) -> np.ndarray:
  """Decodes an image file fully (so truncated files fail here, not later) to (H,W,3) uint8."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      return np.asarray(im.convert('RGB'))
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for corrupt/truncated files
    raise FrameError(path, f'{type(e).__name__}: {e}', index) from e


def read_label(path: str, index: int | None = None) -> np.ndarray:
  """Reads an annotation PNG as (H,W) integer labels: palette index for 'P' images, else the first channel."""
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode == 'P':
        return np.asarray(im).astype(np.uint8)
      if im.mode in ('L', '1', 'I', 'I;16'):
        return np.asarray(im).astype(np.int32)
      return np.asarray(im.convert('L')).astype(np.int32)
  except (OSError, ValueError, SyntaxError) as e:
    raise FrameError(path, f'{type(e).__name__}: {e}', index) from e


def read_binary_mask(path: str, index: int | None = None) -> np.ndarray:
  """A mask file -> (H,W) bool (any nonzero pixel is foreground)."""
  return read_label(path, index) > 0
