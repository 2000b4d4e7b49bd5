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
             be smaller than the frame;
  follow     the same square around the object in each frame, moving with it (a camera that follows the object):
             an object that crosses the frame is seen at its own scale too.
Frames are padded by repeating their edge pixels, masks with background. Results come back by cropping the
content box and resizing to the input region's size; outside the region there is no object (white, not in the
mask). Masks are resized as fractions and thresholded at one half.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from tgvac_jax.infer.complete import amodal_mask

FITS = ('pad', 'stretch', 'short_side', 'object', 'follow')
AROUND_OBJECT = ('object', 'follow')   # fits whose region waits for the visible masks (around_object)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where an input of `size` (H, W) sits on the model's `canvas` (H, W): its `region` (top, left, h, w; None:
  the whole frame; it may reach past the frame's edges) becomes the canvas's content box (top, left, h, w)."""
  size: tuple[int, int]
  canvas: tuple[int, int]
  box: tuple[int, int, int, int]
  region: tuple[int, int, int, int] | None = None
  track: tuple[tuple[int, int], ...] | None = None   # per frame (top, left) of the region, for fit='follow'

  @property
  def input_region(self) -> tuple[int, int, int, int]:
    return self.region or (0, 0) + tuple(self.size)

  def frame_region(self, i: int) -> tuple[int, int, int, int]:
    return self.track[i] + self.input_region[2:] if self.track else self.input_region


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
  if fit in AROUND_OBJECT:  # `pad` until the object is known
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


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(y0, y1, x0, x1) of a non-empty (H, W) mask, ends exclusive."""
  rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
  return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def around_object(pl: Placement, visible: np.ndarray, context: float, follow: bool = False) -> Placement:
  """`pl` (an R x R canvas) with its region narrowed to a square around the object in (N, H, W) `visible`: its
  visible path's box (`follow`: its box in each frame) plus `context` times its largest visible extent on each
  side. Following, the square's centre is the visible box's, smoothed over 5 frames and carried over the frames
  where the object is hidden."""
  if context < 0:
    raise ValueError(f'object context {context} must be >= 0 (object sizes of scene around the object)')
  seen = [i for i, m in enumerate(visible) if m.any()]
  if not seen:
    return pl
  boxes = np.array([_box(visible[i]) for i in seen], np.float64)
  extent = max((boxes[:, 1] - boxes[:, 0]).max(), (boxes[:, 3] - boxes[:, 2]).max())
  path = extent if follow else max(boxes[:, 1].max() - boxes[:, 0].min(), boxes[:, 3].max() - boxes[:, 2].min())
  side = max(round(path + 2 * context * extent), pl.canvas[0], pl.canvas[1])
  if side >= max(pl.size):
    return pl

  def start(centre, length):  # inside the frame where the square fits in it
    s = round(centre - side / 2)
    return min(max(s, 0), length - side) if side <= length else (length - side) // 2

  if follow:
    frames = np.arange(len(visible))
    centres = [np.convolve(np.pad(np.interp(frames, seen, c), 2, mode='edge'), np.ones(5) / 5, 'valid')
               for c in ((boxes[:, 0] + boxes[:, 1]) / 2, (boxes[:, 2] + boxes[:, 3]) / 2)]
    track = tuple((start(cy, pl.size[0]), start(cx, pl.size[1])) for cy, cx in zip(*centres))
    return dataclasses.replace(pl, box=(0, 0) + tuple(pl.canvas), region=track[0] + (side, side), track=track)
  centre = (boxes[:, 0].min() + boxes[:, 1].max()) / 2, (boxes[:, 2].min() + boxes[:, 3].max()) / 2
  return dataclasses.replace(pl, box=(0, 0) + tuple(pl.canvas),
                             region=(start(centre[0], pl.size[0]), start(centre[1], pl.size[1]), side, side))


def _cut(x: np.ndarray, region: tuple[int, int, int, int], **pad) -> np.ndarray:
  """x[top:top + h, left:left + w] of one frame, padded where the region reaches past the frame."""
  top, left, h, w = region
  H, W = x.shape[:2]
  before, after = (max(0, -top), max(0, -left)), (max(0, top + h - H), max(0, left + w - W))
  widths = ((before[0], after[0]), (before[1], after[1])) + ((0, 0),) * (x.ndim - 2)
  x = np.pad(x, widths, **pad) if any(before + after) else x
  return x[top + before[0]:top + before[0] + h, left + before[1]:left + before[1] + w]


def to_model(frames: np.ndarray, masks: np.ndarray, pl: Placement) -> tuple[np.ndarray, np.ndarray]:
  """(N, H, W, 3) uint8 frames and (N, H, W) bool masks -> the same on the canvas."""
  top, left, ch, cw = pl.box
  pad = ((0, 0), (top, pl.canvas[0] - top - ch), (left, pl.canvas[1] - left - cw))
  if pl.region is not None:
    frames = np.stack([_cut(f, pl.frame_region(i), mode='edge') for i, f in enumerate(frames)])
    masks = np.stack([_cut(m, pl.frame_region(i), constant_values=False) for i, m in enumerate(masks)])
  frames = np.stack([_resize(f, (ch, cw)) for f in frames])
  return (np.pad(frames, pad + ((0, 0),), mode='edge'),
          np.pad(_resize_masks(masks, (ch, cw)), pad, constant_values=False))


def from_model(rgb: np.ndarray, pl: Placement, mask_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Canvas-sized (N, h, w, 3) uint8 object-on-white results -> the object and its amodal mask at the input's size.

  The mask is taken from the resized object, not resized from the canvas's mask: bilinear colour edges give a
  smoother boundary than an upsampled binary mask (measured on a validation build, docs/experiments.md)."""
  top, left, ch, cw = pl.box
  rgb = np.stack([_resize(np.ascontiguousarray(f), pl.input_region[2:])
                  for f in rgb[:, top:top + ch, left:left + cw]])
  if pl.region is not None:  # pasted into white frames; what lies past the frame's edges is dropped
    out = np.full((len(rgb),) + tuple(pl.size) + (3,), 255, np.uint8)
    for i, f in enumerate(rgb):
      rt, rl, rh, rw = pl.frame_region(i)
      ys, xs = slice(max(rt, 0), min(rt + rh, pl.size[0])), slice(max(rl, 0), min(rl + rw, pl.size[1]))
      out[i, ys, xs] = f[ys.start - rt:ys.stop - rt, xs.start - rl:xs.stop - rl]
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
