"""Frames of any size <-> the model's resolution, and back.

The model was trained on square crops at one resolution R and needs sides that are multiples of its total
down-sampling. Four ways to get there:
  pad        scale the whole frame into R x R keeping its aspect ratio, pad the rest (the default: the model
             sees what it was trained on, nothing is cut off);
  stretch    resize to R x R (aspect ratio lost);
  short_side scale the short side to R, pad the long side up to a multiple of the down-sampling (more pixels
             for wide videos; the convolutional model runs on the non-square canvas);
  object     a square of the input around the object's visible path, with `context` object sizes of scene on
             each side, scaled to R x R (`around_object`): a small object in a large frame keeps its shape
             instead of shrinking to a few of the model's pixels, and appears at the scale the model was
             trained on. Never smaller than R input pixels (no enlarging); as `pad` where the square would not
             be smaller than the frame.
Frames are padded by repeating their edge pixels, masks with background. Results come back by cropping the
content box and resizing to the input region's size; outside the region there is no object (white, not in the
mask). Masks are resized as fractions and thresholded at one half.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from tgvac_jax.infer.complete import amodal_mask

FITS = ('pad', 'stretch', 'short_side', 'object')


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where an input of `size` (H, W) sits on the model's `canvas` (H, W): its `region` (top, left, h, w; None:
  the whole frame; it may reach past the frame's edges) becomes the canvas's content box (top, left, h, w)."""
  size: tuple[int, int]
  canvas: tuple[int, int]
  box: tuple[int, int, int, int]
  region: tuple[int, int, int, int] | None = None

  @property
  def input_region(self) -> tuple[int, int, int, int]:
    return self.region or (0, 0) + tuple(self.size)


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
  if fit == 'object':  # `pad` until the object is known (around_object)
    fit = 'pad'
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


def around_object(pl: Placement, visible: np.ndarray, context: float) -> Placement:
  """`pl` (an R x R canvas) with its region narrowed to a square around the object's visible path in (N, H, W)
  `visible`: the path's box plus `context` times the object's largest visible extent on each side."""
  rows, cols = visible.any((0, 2)), visible.any((0, 1))
  if context < 0:
    raise ValueError(f'object context {context} must be >= 0 (object sizes of scene around the object)')
  if not rows.any():
    return pl
  per_frame = [max(np.ptp(np.nonzero(m.any(1))[0]), np.ptp(np.nonzero(m.any(0))[0])) + 1 for m in visible if m.any()]
  (y0, y1), (x0, x1) = (np.nonzero(rows)[0][[0, -1]] + (0, 1)), (np.nonzero(cols)[0][[0, -1]] + (0, 1))
  side = max(round(max(y1 - y0, x1 - x0) + 2 * context * max(per_frame)), pl.canvas[0], pl.canvas[1])
  if side >= max(pl.size):
    return pl

  def start(lo, hi, length):  # centred on the path, inside the frame where the square fits in it
    s = round((lo + hi - side) / 2)
    return min(max(s, 0), length - side) if side <= length else (length - side) // 2

  return dataclasses.replace(pl, box=(0, 0) + tuple(pl.canvas),
                             region=(start(y0, y1, pl.size[0]), start(x0, x1, pl.size[1]), side, side))


def _cut(x: np.ndarray, region: tuple[int, int, int, int], **pad) -> np.ndarray:
  """x[:, top:top + h, left:left + w], padded where the region reaches past the frame."""
  top, left, h, w = region
  H, W = x.shape[1:3]
  before, after = (max(0, -top), max(0, -left)), (max(0, top + h - H), max(0, left + w - W))
  widths = ((0, 0), (before[0], after[0]), (before[1], after[1])) + ((0, 0),) * (x.ndim - 3)
  x = np.pad(x, widths, **pad) if any(before + after) else x
  return x[:, top + before[0]:top + before[0] + h, left + before[1]:left + before[1] + w]


def to_model(frames: np.ndarray, masks: np.ndarray, pl: Placement) -> tuple[np.ndarray, np.ndarray]:
  """(N, H, W, 3) uint8 frames and (N, H, W) bool masks -> the same on the canvas."""
  top, left, ch, cw = pl.box
  pad = ((0, 0), (top, pl.canvas[0] - top - ch), (left, pl.canvas[1] - left - cw))
  if pl.region is not None:
    frames, masks = _cut(frames, pl.region, mode='edge'), _cut(masks, pl.region, constant_values=False)
  frames = np.stack([_resize(f, (ch, cw)) for f in frames])
  return (np.pad(frames, pad + ((0, 0),), mode='edge'),
          np.pad(_resize_masks(masks, (ch, cw)), pad, constant_values=False))


def from_model(rgb: np.ndarray, pl: Placement, mask_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Canvas-sized (N, h, w, 3) uint8 object-on-white results -> the object and its amodal mask at the input's size.

  The mask is taken from the resized object, not resized from the canvas's mask: bilinear colour edges give a
  smoother boundary than an upsampled binary mask (measured on a validation build, docs/experiments.md)."""
  top, left, ch, cw = pl.box
  rt, rl, rh, rw = pl.input_region
  rgb = np.stack([_resize(np.ascontiguousarray(f), (rh, rw)) for f in rgb[:, top:top + ch, left:left + cw]])
  if pl.region is not None:  # pasted into white frames; what lies past the frame's edges is dropped
    out = np.full((len(rgb),) + tuple(pl.size) + (3,), 255, np.uint8)
    ys, xs = slice(max(rt, 0), min(rt + rh, pl.size[0])), slice(max(rl, 0), min(rl + rw, pl.size[1]))
    out[:, ys, xs] = rgb[:, ys.start - rt:ys.stop - rt, xs.start - rl:xs.stop - rl]
    rgb = out
  return rgb, np.asarray(amodal_mask(rgb, mask_threshold))


def input_pixels(pl: Placement, model_pixels: int) -> int:
  """A length on the model's canvas in the input's pixels."""
  _, _, rh, rw = pl.input_region
  return round(model_pixels * max(rh / pl.box[2], rw / pl.box[3]))


def model_resolution(requested: int, trained: int) -> int:
  """The square resolution to run at: `requested` if set, else the one the model was trained at."""
  if not (requested or trained):
    raise ValueError('the checkpoint does not state its resolution (unet sample_size); set resolution')
  return requested or trained
