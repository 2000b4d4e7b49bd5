"""What one completed video leaves on disk (every file at the input's size and frame names):

  object/<stem>.png         RGBA: the whole object (visible and completed parts), alpha = its amodal mask
  amodal_mask/<stem>.png    the amodal mask, 0 / 255
  visible_mask/<stem>.png   the visible masks used (only when SAM-2 made them from a first-frame prompt)
  samples/<k>/...           object/ and amodal_mask/ of every hypothesis (only with keep_samples)
  side_by_side.mp4 / .gif   input | visible mask | completion | amodal-mask overlay (green: visible part,
                            red: completed part), scaled to the preview height
  completion.json           settings, checkpoint, caption, hypothesis scores and timings
The caller writes into a temporary folder that is renamed into place at the end (`files.atomic_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tgvac_jax.infer import io

INFO_NAME = 'completion.json'
VISIBLE_RGB, COMPLETED_RGB = np.array([0, 200, 0]), np.array([230, 0, 0])


def object_rgba(rgb: np.ndarray, amodal: np.ndarray) -> np.ndarray:
  """(..., H, W, 3) uint8 + (..., H, W) bool -> RGBA with alpha = mask."""
  return np.concatenate([rgb, (amodal * np.uint8(255))[..., None]], axis=-1)


def overlay(frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """The input with the amodal mask tinted: green where the object is visible, red where it was completed."""
  tint = np.where(visible[..., None], VISIBLE_RGB, COMPLETED_RGB)
  out = np.where(amodal[..., None], (1 - alpha) * frames + alpha * tint, frames)
  return out.round().astype(np.uint8)


def side_by_side(frames: np.ndarray, visible: np.ndarray, rgb: np.ndarray, amodal: np.ndarray,
                 height: int) -> np.ndarray:
  """(N, H, W, ...) panels -> (N, h, 4 w, 3) uint8, h = min(H, height)."""
  n, h, w = frames.shape[:3]
  ph = min(h, height)
  pw = max(1, round(w * ph / h))
  vis = np.repeat((visible * np.uint8(255))[..., None], 3, axis=-1)
  panels = [frames, vis, rgb, overlay(frames, visible, amodal)]
  rows = []
  for i in range(n):
    rows.append(np.concatenate([np.asarray(Image.fromarray(p[i]).resize((pw, ph), Image.BILINEAR))
                                if (ph, pw) != (h, w) else p[i] for p in panels], axis=1))
  return np.stack(rows)


def _write_masks_and_objects(folder: Path, stems, rgb: np.ndarray, amodal: np.ndarray) -> None:
  (folder / 'object').mkdir(parents=True)
  (folder / 'amodal_mask').mkdir()
  rgba = object_rgba(rgb, amodal)
  for i, stem in enumerate(stems):
    io.write_png(folder / 'object' / f'{stem}.png', rgba[i])
    io.write_png(folder / 'amodal_mask' / f'{stem}.png', amodal[i] * np.uint8(255))


def write_completion(folder: Path, stems, frames: np.ndarray, visible: np.ndarray, rgb: np.ndarray,
                     amodal: np.ndarray, info: dict, *, fps: float, preview_height: int,
                     write_visible: bool = False, samples: tuple[np.ndarray, np.ndarray] | None = None) -> None:
  """Writes the layout above into `folder` (an empty temporary folder). frames/rgb (N, H, W, 3) uint8,
  visible/amodal (N, H, W) bool at the input size; samples: every hypothesis' (rgb, amodal), (S, N, ...)."""
  _write_masks_and_objects(folder, stems, rgb, amodal)
  if write_visible:
    (folder / 'visible_mask').mkdir()
    for i, stem in enumerate(stems):
      io.write_png(folder / 'visible_mask' / f'{stem}.png', visible[i] * np.uint8(255))
  if samples is not None:
    for k, (s_rgb, s_amodal) in enumerate(zip(*samples)):
      _write_masks_and_objects(folder / 'samples' / str(k), stems, s_rgb, s_amodal)
  preview = side_by_side(frames, visible, rgb, amodal, preview_height)
  io.write_mp4(folder / 'side_by_side.mp4', preview, fps)
  io.write_gif(folder / 'side_by_side.gif', preview, fps)
  (folder / INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + '\n')
