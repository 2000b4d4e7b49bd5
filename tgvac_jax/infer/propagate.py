"""Temporal propagation, non-learned: each frame borrows the object from the nearest less-occluded frame of its
neighbourhood (largest visible area within `window` frames), moved by the translation that best matches the two
visible regions (coverage of this frame's visible pixels, then colour agreement, then the smallest motion).

It is the ablation's temporal baseline (`eval/baselines.py`) and, with `temporal_prior`, what inference adds to a
model's completion where the model drew nothing: the shape a frame showed a moment earlier or later.

Frames (N, H, W, 3) uint8 and visible masks (N, H, W) bool in; (rgb, amodal) out: the object over white and its
amodal mask, the form the model's completions have.
"""

from __future__ import annotations

import numpy as np

WHITE = np.uint8(255)


def visible_only(frames: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  visible = np.asarray(visible, bool)
  return np.where(visible[..., None], frames, WHITE), visible.copy()


def shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """x moved by (dy, dx) pixels along its first two axes; what enters from the border is zero."""
  out = np.zeros_like(x)
  h, w = x.shape[:2]
  ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
  xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
  out[yd, xd] = x[ys, xs]
  return out


def match_translation(src: np.ndarray, src_mask: np.ndarray, dst: np.ndarray, dst_mask: np.ndarray,
                      max_shift: int) -> tuple[int, int]:
  """The integer (dy, dx) within ±max_shift that moves src's visible region onto dst's: most of dst's visible
  pixels covered, then the smallest mean colour difference (0..1) where both are visible, then the smallest
  shift (an occluded side leaves the match ambiguous along it: prefer the least motion)."""
  best, best_score = (0, 0), -np.inf
  n_dst = max(int(dst_mask.sum()), 1)
  src_f, dst_f = src.astype(np.float32) / 255, dst.astype(np.float32) / 255
  for dy in range(-max_shift, max_shift + 1):
    for dx in range(-max_shift, max_shift + 1):
      both = shift(src_mask, dy, dx) & dst_mask
      k = int(both.sum())
      if k == 0:
        continue
      colour = float(np.abs(shift(src_f, dy, dx)[both] - dst_f[both]).mean())
      score = k / n_dst - colour - 1e-4 * (abs(dy) + abs(dx))
      if score > best_score:
        best, best_score = (dy, dx), score
  return best


def temporal_propagation(frames: np.ndarray, visible: np.ndarray, window: int = 4,
                         max_shift: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
  """See the module docstring. max_shift: the largest translation searched, as a fraction of the frame side."""
  visible = np.asarray(visible, bool)
  rgb, amodal = visible_only(frames, visible)
  n = len(frames)
  area = visible.sum(axis=(1, 2))
  r = max(1, round(max_shift * min(frames.shape[1:3])))
  for t in range(n):
    near = range(max(0, t - window), min(n, t + window + 1))
    s = max(near, key=lambda i: (area[i], -abs(i - t)))
    if area[s] <= area[t]:
      continue
    dy, dx = match_translation(frames[s], visible[s], frames[t], visible[t], r)
    moved = shift(visible[s], dy, dx) & ~visible[t]
    amodal[t] |= moved
    rgb[t][moved] = shift(frames[s], dy, dx)[moved]
  return rgb, amodal
