"""Frames of any size <-> the model's resolution, and back.

The model was trained on square crops at one resolution R and needs sides that are multiples of its total
down-sampling. Three ways to get there:
  pad        scale the whole frame into R x R keeping its aspect ratio, pad the rest (the default: the model
             sees what it was trained on, nothing is cut off);
  stretch    resize to R x R (aspect ratio lost);
  short_side scale the short side to R, pad the long side up to a multiple of the down-sampling (more pixels
             for wide videos; the convolutional model runs on the non-square canvas).
Frames are padded by repeating their edge pixels, masks with background. Results come back by cropping the
content box and resizing to the input size; masks are resized as fractions and thresholded at one half.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from tgvac_jax.infer.complete import amodal_mask

FITS = ('pad', 'stretch', 'short_side')


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where an input of `size` (H, W) sits on the model's `canvas` (H, W): the content box (top, left, h, w)."""
  size: tuple[int, int]
  canvas: tuple[int, int]
  box: tuple[int, int, int, int]


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def placement(size: tuple[int, int], resolution: int, multiple: int, fit: str = 'pad') -> Placement:
  h, w = size
  if fit not in FITS:
    raise ValueError(f'fit {fit!r} is not one of {FITS}')
  if resolution <= 0 or resolution % multiple:
    raise ValueError(f'resolution {resolution} must be a positive multiple of {multiple} (the model\'s '
                     'down-sampling)')
  if fit == 'stretch':
    return Placement((h, w), (resolution, resolution), (0, 0, resolution, resolution))
  scale = resolution / max(h, w) if fit == 'pad' else resolution / min(h, w)
  ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
  canvas = (resolution, resolution) if fit == 'pad' else (_round_up(ch, multiple), _round_up(cw, multiple))
  return Placement((h, w), canvas, ((canvas[0] - ch) // 2, (canvas[1] - cw) // 2, ch, cw))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 (H, W, 3) or float32 (H, W) -> `size` (H, W), bilinear (anti-aliased when shrinking)."""
  if image.shape[:2] == tuple(size):
    return image
  mode = 'F' if image.dtype == np.float32 else None
  return np.asarray(Image.fromarray(image, mode=mode).resize((size[1], size[0]), Image.BILINEAR))


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  return np.stack([_resize(m.astype(np.float32), size) >= 0.5 for m in masks])


def to_model(frames: np.ndarray, masks: np.ndarray, pl: Placement) -> tuple[np.ndarray, np.ndarray]:
  """(N, H, W, 3) uint8 frames and (N, H, W) bool masks -> the same on the canvas."""
  top, left, ch, cw = pl.box
  pad = ((0, 0), (top, pl.canvas[0] - top - ch), (left, pl.canvas[1] - left - cw))
  frames = np.stack([_resize(f, (ch, cw)) for f in frames])
  return (np.pad(frames, pad + ((0, 0),), mode='edge'),
          np.pad(_resize_masks(masks, (ch, cw)), pad, constant_values=False))


def from_model(rgb: np.ndarray, pl: Placement, mask_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Canvas-sized (N, h, w, 3) uint8 object-on-white results -> the object and its amodal mask at the input's size.

  The mask is taken from the resized object, not resized from the canvas's mask: bilinear colour edges give a
  smoother boundary than an upsampled binary mask (measured on a validation build, docs/experiments.md)."""
  top, left, ch, cw = pl.box
  rgb = np.stack([_resize(np.ascontiguousarray(f), pl.size) for f in rgb[:, top:top + ch, left:left + cw]])
  return rgb, np.asarray(amodal_mask(rgb, mask_threshold))


def input_pixels(pl: Placement, model_pixels: int) -> int:
  """A length on the model's canvas in the input's pixels."""
  return round(model_pixels * max(pl.size[0] / pl.box[2], pl.size[1] / pl.box[3]))


def model_resolution(requested: int, trained: int) -> int:
  """The square resolution to run at: `requested` if set, else the one the model was trained at."""
  if not (requested or trained):
    raise ValueError('the checkpoint does not state its resolution (unet sample_size); set resolution')
  return requested or trained
