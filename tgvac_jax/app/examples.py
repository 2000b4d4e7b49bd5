"""The page's example clips: sequences of amodal roots (`eval/amodal_root.py`) with their captions, thumbnails
and ground truth, scored like configs/eval.py scores them.

A demo workdir (configs/demo.py) holds two such roots beside its checkpoint `<workdir>/motion/model`: the
held-out clips it evaluated (`<workdir>/eval/<key>/ground_truth/`) and the unseen DAVIS-style clips
(`<workdir>/unseen/davis/`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tgvac_jax.eval import amodal_root, evaluate, summary
from tgvac_jax.infer import io, outputs

THUMB = 128  # thumbnail side, pixels


@dataclasses.dataclass(frozen=True)
class Example:
  key: str          # unique on the page: <root label>/<sequence>
  root: Path
  name: str
  caption: str
  frames: int
  size: tuple[int, int]
  thumbnail: Path

  def ground_truth(self) -> amodal_root.GroundTruth:
    return amodal_root.read_ground_truth(self.root, self.name)


def demo_roots(checkpoint: str | os.PathLike) -> list[Path]:
  """The example roots of the demo workdir that holds `checkpoint` (none for another checkpoint); of several
  evaluation folders (other sampler settings), the newest."""
  ckpt = Path(checkpoint).absolute()
  if ckpt.parent.name != 'motion':
    return []
  workdir = ckpt.parent.parent
  held_out = sorted((p for p in (workdir / 'eval').glob('*/ground_truth') if amodal_root.is_amodal_root(p)),
                    key=lambda p: p.stat().st_mtime)
  unseen = workdir / 'unseen' / 'davis'
  return held_out[-1:] + ([unseen] if amodal_root.is_amodal_root(unseen) else [])


def _label(root: Path) -> str:
  """A short name for a root on the page: 'held-out' / 'unseen' for the demo's, else the folder name."""
  if root.name == 'ground_truth':
    return 'held-out'
  if root.name == 'davis' and root.parent.name == 'unseen':
    return 'unseen'
  return root.name


def thumbnail(frames: np.ndarray, visible: np.ndarray, path: Path) -> None:
  """The middle frame with the visible mask tinted green, `THUMB` pixels on its long side."""
  t = len(frames) // 2
  tinted = outputs.overlay(frames[t:t + 1], visible[t:t + 1], visible[t:t + 1])[0]
  h, w = tinted.shape[:2]
  scale = THUMB / max(h, w)
  Image.fromarray(tinted).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST).save(path)


def list_examples(roots: list[Path], thumbs: Path, max_per_root: int) -> list[Example]:
  """Every sequence (up to `max_per_root` per root) with its caption; thumbnails are written into `thumbs`."""
  thumbs.mkdir(parents=True, exist_ok=True)
  out = []
  for root in roots:
    root = Path(root)
    captions = json.loads((root / amodal_root.CAPTIONS).read_text())
    label = _label(root)
    for name in amodal_root.sequences(root)[:max_per_root]:
      gt = amodal_root.read_ground_truth(root, name)
      frames = io.read_video(root / amodal_root.FRAMES / name).frames
      thumb = thumbs / f'{len(out):03d}_{name}.png'
      thumbnail(frames, gt.visible, thumb)
      out.append(Example(f'{label}/{name}', root, name, captions.get(name, ''), len(frames), frames.shape[1:3],
                         thumb))
  return out


def score(example: Example, predictions: Path) -> dict:
  """configs/eval.py's mask scores of one completed example (`predictions/<name>/`): {'miou', 'occ_miou',
  'occ_miou_occluded_frames', 'frames', 'occluded_frames'}, mIoU x 100 (C2F-Seg convention)."""
  gt = example.ground_truth()
  pred = amodal_root.read_prediction(predictions, example.name, gt.stems)
  s = summary.summarize(evaluate.evaluate_video(gt, pred))['splits']['all']
  pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
  return {'miou': pct(s['iou_c2f']), 'occ_miou': pct(s['iou_occ_c2f']),
          'occ_miou_occluded_frames': pct(s['iou_occ_occluded']), 'frames': s['frames'],
          'occluded_frames': s['occluded_frames']}


def with_ground_truth(example: Example, completed: Path, out: Path, fps: float, height: int) -> None:
  """The side-by-side preview over the same four panels for the ground truth (input | visible mask | true
  object | true amodal mask), as one mp4."""
  gt = example.ground_truth()
  frames = io.read_video(example.root / amodal_root.FRAMES / example.name).frames
  pred = amodal_root.read_prediction(completed.parent, completed.name, gt.stems)
  truth = gt.objects if gt.objects is not None else np.where(gt.amodal[..., None], frames, 255).astype(np.uint8)
  rows = [outputs.side_by_side(frames, gt.visible, pred.objects, pred.amodal, height),
          outputs.side_by_side(frames, gt.visible, truth, gt.amodal, height)]
  io.write_mp4(out, np.concatenate(rows, axis=1), fps)
