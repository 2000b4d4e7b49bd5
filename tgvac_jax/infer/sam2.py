"""First-frame prompt -> a visible mask in every frame, by SAM-2 (the paper's §3.3 "visible masks from SAM-2").

The prompt is a mask, a box, or points (positive/negative clicks) on the first frame; transformers'
`Sam2VideoModel` (PyTorch, from a local folder such as a saved `facebook/sam2.1-hiera-tiny`; safetensors only)
tracks it through the video. The pre- and post-processing of transformers' `Sam2VideoProcessor` are done here
with plain torch (that processor needs torchvision): frames resized to the model's square input size
(bilinear, anti-aliased), scaled to [0, 1] and normalised by the folder's image mean/std (ImageNet by default);
point and box coordinates scaled to that size; predicted mask logits resized to the frame size, object where > 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OBJECT_ID = 1


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One object on the first frame: a mask (H, W) bool, or a box (x0, y0, x1, y1) and/or points (x, y) with
  labels (1 object, 0 background), in pixels of the input frame."""
  mask: np.ndarray | None = None
  box: tuple[float, float, float, float] | None = None
  points: tuple[tuple[float, float], ...] = ()
  labels: tuple[int, ...] = ()

  def check(self, size: tuple[int, int]) -> None:
    """One clear error for a prompt that cannot describe an object in a frame of `size` (H, W)."""
    h, w = size
    if self.mask is not None:
      if self.box is not None or self.points:
        raise ValueError('give the first-frame prompt as a mask, or as a box and/or points, not both')
      if self.mask.shape != (h, w):
        raise ValueError(f'prompt mask is {self.mask.shape[1]}x{self.mask.shape[0]}, frames are {w}x{h}')
      if not self.mask.any():
        raise ValueError('the first-frame prompt mask is empty')
      return
    if self.box is None and not self.points:
      raise ValueError('no first-frame prompt: give a mask, a box or points')
    if self.box is not None:
      x0, y0, x1, y1 = self.box
      if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f'box {self.box} is not x0 < x1 <= {w}, y0 < y1 <= {h} inside the frame')
    if len(self.labels) != len(self.points):
      raise ValueError(f'{len(self.points)} points but {len(self.labels)} labels')
    if any(not (0 <= x < w and 0 <= y < h) for x, y in self.points):
      raise ValueError(f'points {self.points} are not all inside the {w}x{h} frame')
    if any(lab not in (0, 1) for lab in self.labels):
      raise ValueError(f'point labels must be 1 (object) or 0 (background), got {self.labels}')
    if self.points and self.box is None and 1 not in self.labels:
      raise ValueError('points without a box need at least one positive (label 1) point')


def _numbers(text: str, what: str) -> list[float]:
  try:
    return [float(v) for v in text.replace(';', ',').split(',') if v.strip()]
  except ValueError as e:
    raise ValueError(f'{what} {text!r}: expected comma-separated numbers') from e


def parse_prompt(mask: np.ndarray | None = None, box: str = '', points: str = '', labels: str = '') -> Prompt:
  """From config strings: box 'x0,y0,x1,y1'; points 'x,y;x,y'; labels '1,0' (default: all positive)."""
  b = _numbers(box, 'box') if box else None
  if b is not None and len(b) != 4:
    raise ValueError(f'box {box!r}: expected x0,y0,x1,y1')
  p = _numbers(points, 'points') if points else []
  if len(p) % 2:
    raise ValueError(f'points {points!r}: expected x,y pairs')
  pts = tuple(zip(p[::2], p[1::2]))
  labs = tuple(int(v) for v in _numbers(labels, 'point labels')) if labels else (1,) * len(pts)
  return Prompt(mask, tuple(b) if b else None, pts, labs)


def _norm_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
  for name in ('video_preprocessor_config.json', 'preprocessor_config.json'):
    path = folder / name
    if path.is_file():
      cfg = json.loads(path.read_text())
      if 'image_mean' in cfg and 'image_std' in cfg:
        return tuple(cfg['image_mean']), tuple(cfg['image_std'])
  return IMAGENET_MEAN, IMAGENET_STD


def require_folder(folder: str | os.PathLike | None) -> Path:
  """The SAM-2 model folder, or a FileNotFoundError saying how to make one."""
  if folder is None or not (Path(folder) / 'config.json').is_file():
    raise FileNotFoundError(f'SAM-2 folder {folder} not found (set sam2 to a folder holding a transformers SAM-2 '
                            'video model: on a machine with internet access, Sam2VideoModel.from_pretrained('
                            '"facebook/sam2.1-hiera-tiny").save_pretrained(folder))')
  return Path(folder)


def load_model(folder: str | os.PathLike | None):
  """transformers `Sam2VideoModel` from a local folder (safetensors weights; nothing is downloaded)."""
  folder = require_folder(folder)
  from transformers import Sam2VideoModel  # pylint: disable=import-outside-toplevel
  try:
    model = Sam2VideoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{folder}: not a transformers SAM-2 video model with safetensors weights ({e})') from e
  return model.eval()


def propagate(folder: str | os.PathLike, frames: np.ndarray, prompt: Prompt, *, device: str = 'cpu',
              model=None) -> np.ndarray:
  """frames (N, H, W, 3) uint8 + a first-frame prompt -> visible masks (N, H, W) bool, one per frame."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError('first-frame prompts need PyTorch for SAM-2: pip install torch==2.13.0 '
                     '(or the sam2 extra)') from e
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  from transformers.models.sam2_video.modeling_sam2_video import (  # pylint: disable=import-outside-toplevel
      Sam2VideoInferenceSession)

  n, h, w = frames.shape[:3]
  prompt.check((h, w))
  model = model if model is not None else load_model(folder)
  model.to(device)
  size = model.image_size
  mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in _norm_stats(Path(folder)))
  x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
  x = F.interpolate(x, (size, size), mode='bilinear', align_corners=False, antialias=True) / 255
  session = Sam2VideoInferenceSession(video=(x - mean) / std, video_height=h, video_width=w,
                                      inference_device=device, inference_state_device=device,
                                      video_storage_device=device, dtype=torch.float32)
  obj = session.obj_id_to_idx(OBJECT_ID)
  if prompt.mask is not None:
    m = torch.from_numpy(prompt.mask)[None, None].float()
    m = F.interpolate(m, (size, size), mode='bilinear', align_corners=False, antialias=True) >= 0.5
    session.add_mask_inputs(obj, 0, m.float().to(device))
  else:
    scale = torch.tensor([size / w, size / h])
    coords = [list(prompt.box[:2]), list(prompt.box[2:])] if prompt.box is not None else []
    coords += [list(p) for p in prompt.points]
    labels = ([2, 3] if prompt.box is not None else []) + list(prompt.labels)  # SAM's box-corner labels
    session.add_point_inputs(obj, 0, {
        'point_coords': (torch.tensor(coords, dtype=torch.float32) * scale)[None, None].to(device),
        'point_labels': torch.tensor(labels, dtype=torch.int32)[None, None].to(device)})
  session.obj_with_new_inputs = [OBJECT_ID]
  masks = np.zeros((n, h, w), bool)
  with torch.inference_mode():
    for out in model.propagate_in_video_iterator(session, start_frame_idx=0, show_progress_bar=n > 1):
      logits = F.interpolate(out.pred_masks.float(), (h, w), mode='bilinear', align_corners=False)
      masks[out.frame_idx] = logits[0, 0].cpu().numpy() > 0
  return masks
