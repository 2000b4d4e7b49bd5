"""Spatial augmentation applied identically to every frame and mask of a clip: random crop, resize, flip.

Images are resampled bilinearly (PIL), masks by nearest sample (a numpy gather); afterwards the visible mask is recomputed as
amodal & ~occluder and the target is set to white outside the amodal mask, so the synthesis invariants survive
augmentation exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def sample_crop(src_hw: tuple[int, int], out_hw: tuple[int, int], scale: tuple[float, float],
                rng: np.random.Generator) -> tuple[float, float, float, float]:
  """A crop box (x0, y0, x1, y1) of the output aspect, `scale` in [lo, hi] of the largest such box."""
  h, w = src_hw
  oh, ow = out_hw
  full = min(h / oh, w / ow)
  s = rng.uniform(scale[0], scale[1]) if scale[1] > scale[0] else scale[0]
  ch, cw = oh * full * s, ow * full * s
  y0 = rng.uniform(0, h - ch) if h > ch else 0.0
  x0 = rng.uniform(0, w - cw) if w > cw else 0.0
  return x0, y0, x0 + cw, y0 + ch


def _resize(img: np.ndarray, box, out_hw) -> np.ndarray:
  return np.asarray(Image.fromarray(img).resize((out_hw[1], out_hw[0]), Image.BILINEAR, box=box))


def crop_resize_rgb(frames: np.ndarray, box, out_hw) -> np.ndarray:
  """(F,H,W,3) uint8 -> (F,oh,ow,3) uint8."""
  if _identity(frames.shape[1:3], box, out_hw):
    return frames
  return np.stack([_resize(f, box, out_hw) for f in frames])


def crop_resize_mask(masks: np.ndarray, box, out_hw) -> np.ndarray:
  """(F,H,W) bool -> (F,oh,ow) bool, nearest sample at each output pixel centre (one numpy gather)."""
  if _identity(masks.shape[1:3], box, out_hw):
    return masks
  h, w = masks.shape[1:3]
  x0, y0, x1, y1 = box
  ys = np.clip(np.floor(y0 + (np.arange(out_hw[0]) + 0.5) * (y1 - y0) / out_hw[0]).astype(np.intp), 0, h - 1)
  xs = np.clip(np.floor(x0 + (np.arange(out_hw[1]) + 0.5) * (x1 - x0) / out_hw[1]).astype(np.intp), 0, w - 1)
  return masks[:, ys[:, None], xs[None, :]]


def _identity(src_hw, box, out_hw) -> bool:
  h, w = src_hw
  return (tuple(out_hw) == (h, w) and abs(box[0]) < 1e-6 and abs(box[1]) < 1e-6 and abs(box[2] - w) < 1e-6
          and abs(box[3] - h) < 1e-6)


def augment_clip(x: dict, out_hw: tuple[int, int], rng: np.random.Generator, scale=(1.0, 1.0),
                 flip: bool = False) -> dict:
  """x: occluded, amodal (F,H,W,3) uint8; amodal_mask, occluder_mask (F,H,W) bool. Same crop/flip for all."""
  h, w = x['occluded'].shape[1:3]
  box = sample_crop((h, w), out_hw, scale, rng)
  do_flip = bool(flip and rng.random() < 0.5)
  out = dict(x)
  for k in ('occluded', 'amodal'):
    out[k] = crop_resize_rgb(x[k], box, out_hw)
  for k in ('amodal_mask', 'occluder_mask'):
    out[k] = crop_resize_mask(x[k], box, out_hw)
  if do_flip:
    for k in ('occluded', 'amodal', 'amodal_mask', 'occluder_mask'):
      out[k] = out[k][:, :, ::-1]
  out['visible_mask'] = out['amodal_mask'] & ~out['occluder_mask']
  if not _identity((h, w), box, out_hw):
    # resampling blends the object's edge into the white; keep the target exactly "object on white"
    out['amodal'] = np.where(out['amodal_mask'][..., None], out['amodal'], np.uint8(255))
  return out
