"""A DAVIS-style folder with amodal ground truth, and the prediction folders that inference writes.

```
ROOT/JPEGImages/<seq>/<stem>.jpg|png        input frames (the occluded video)
ROOT/Annotations/<seq>/<stem>.png           visible masks (the model's input)
ROOT/AmodalAnnotations/<seq>/<stem>.png     amodal masks (ground truth for mIoU)
ROOT/AmodalObjects/<seq>/<stem>.png         optional: the whole object as RGBA, alpha = amodal mask (ground
                                            truth for CLIP, LPIPS, TC, PSNR/SSIM); without it only masks count
ROOT/captions.json                          {"<seq>": "text describing the whole object"}
```
Mask PNGs are DAVIS palette images (pixel = object id, 0 background; the object is `object_id`) or grayscale /
binary images (any non-zero pixel is the object). The stems of a sequence must agree across the folders.

Predictions (`OUT/<seq>/amodal_mask/<stem>.png`, `OUT/<seq>/object/<stem>.png` RGBA) follow the same rules.
Objects are compared composited over white, the form the model generates and the dataset stores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from tgvac_jax.data.images import FrameError, read_label
from tgvac_jax.infer.io import natural_key

FRAMES, VISIBLE, AMODAL, OBJECTS, CAPTIONS = 'JPEGImages', 'Annotations', 'AmodalAnnotations', 'AmodalObjects', \
    'captions.json'
PRED_MASKS, PRED_OBJECTS = 'amodal_mask', 'object'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


class GroundTruth(NamedTuple):
  name: str
  stems: list[str]
  visible: np.ndarray            # (N, H, W) bool
  amodal: np.ndarray             # (N, H, W) bool
  objects: np.ndarray | None     # (N, H, W, 3) uint8, the whole object over white


class Prediction(NamedTuple):
  amodal: np.ndarray             # (N, H, W) bool
  objects: np.ndarray | None     # (N, H, W, 3) uint8 over white


def is_amodal_root(path: str | os.PathLike) -> bool:
  return (Path(path) / AMODAL).is_dir() and (Path(path) / VISIBLE).is_dir()


def stems(folder: Path) -> list[str]:
  """Stems of the image files in `folder` in natural order, as inference reads frames (empty if no folder)."""
  if not folder.is_dir():
    return []
  return sorted((p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def _file(folder: Path, stem: str) -> Path:
  for suffix in IMAGE_SUFFIXES:
    if (folder / (stem + suffix)).is_file():
      return folder / (stem + suffix)
  raise FileNotFoundError(f'{folder}: no image named {stem}')


def read_object_mask(path: Path, object_id: int) -> np.ndarray:
  """(H, W) bool: palette PNG pixels equal to `object_id`, or any non-zero pixel of a grayscale/binary PNG."""
  try:
    with Image.open(path) as im:
      palette = im.mode == 'P'
    labels = read_label(str(path))
  except (FrameError, OSError) as e:
    raise ValueError(f'unreadable mask {path}: {e}') from None
  return labels == object_id if palette else labels > 0


def read_object(path: Path) -> np.ndarray:
  """RGBA (or RGB) image -> (H, W, 3) uint8 composited over white."""
  try:
    with Image.open(path) as im:
      im.load()
      rgba = np.asarray(im.convert('RGBA'), np.float32)
  except OSError as e:
    raise ValueError(f'unreadable object image {path}: {e}') from None
  alpha = rgba[..., 3:] / 255.0
  return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def sequences(root: str | os.PathLike) -> list[str]:
  """Sequence names of an amodal root (those with amodal annotations), checked for complete ground truth."""
  root = Path(root)
  if not is_amodal_root(root):
    raise FileNotFoundError(f'{root}: not an amodal root (needs {VISIBLE}/ and {AMODAL}/)')
  names = sorted(p.name for p in (root / AMODAL).iterdir() if p.is_dir())
  if not names:
    raise FileNotFoundError(f'{root / AMODAL}: no sequences')
  for name in names:
    want = stems(root / AMODAL / name)
    if not want:
      raise FileNotFoundError(f'{root / AMODAL / name}: no masks')
    for sub in (VISIBLE, OBJECTS):
      have = stems(root / sub / name)
      if (sub == VISIBLE or have) and have != want:
        raise ValueError(f'{root / sub / name}: frames {_diff(want, have)} do not match {AMODAL}/{name}')
  return names


def _diff(want: list[str], have: list[str]) -> str:
  missing = sorted(set(want) - set(have), key=natural_key)
  extra = sorted(set(have) - set(want), key=natural_key)
  return '; '.join(x for x in (f'missing {missing[:5]}' if missing else '', f'extra {extra[:5]}' if extra else '') if x)


def has_objects(root: str | os.PathLike) -> bool:
  return (Path(root) / OBJECTS).is_dir()


def read_ground_truth(root: str | os.PathLike, name: str, object_id: int = 1) -> GroundTruth:
  root = Path(root)
  names = stems(root / AMODAL / name)
  visible = np.stack([read_object_mask(_file(root / VISIBLE / name, s), object_id) for s in names])
  amodal = np.stack([read_object_mask(_file(root / AMODAL / name, s), object_id) for s in names])
  objects = None
  if stems(root / OBJECTS / name):
    objects = np.stack([read_object(_file(root / OBJECTS / name, s)) for s in names])
  _same_size(name, visible, amodal, objects)
  return GroundTruth(name, names, visible, amodal, objects)


def check_predictions(out: str | os.PathLike, names: list[str], root: str | os.PathLike) -> list[str]:
  """Raises FileNotFoundError naming sequences or frames that `out` lacks; returns those without objects."""
  out, root = Path(out), Path(root)
  missing, no_objects = [], []
  for name in names:
    want = stems(root / AMODAL / name)
    have = stems(out / name / PRED_MASKS)
    if have != want:
      missing.append(f'{name} ({_diff(want, have) if have else "absent"})')
    elif stems(out / name / PRED_OBJECTS) != want:
      no_objects.append(name)
  if missing:
    raise FileNotFoundError(f'{out}: predictions missing for {len(missing)} sequence(s): {", ".join(missing[:5])}')
  return no_objects


def read_prediction(out: str | os.PathLike, name: str, frame_stems: list[str]) -> Prediction:
  out = Path(out) / name
  amodal = np.stack([read_object_mask(_file(out / PRED_MASKS, s), 1) for s in frame_stems])
  objects = None
  if stems(out / PRED_OBJECTS) == frame_stems:
    objects = np.stack([read_object(_file(out / PRED_OBJECTS, s)) for s in frame_stems])
  _same_size(f'prediction {name}', amodal, objects)
  return Prediction(amodal, objects)


def _same_size(what: str, *arrays) -> None:
  sizes = {a.shape[1:3] for a in arrays if a is not None}
  if len(sizes) > 1:
    raise ValueError(f'{what}: frames of different sizes {sorted(sizes)}')


def _palette_png(mask: np.ndarray, path: Path) -> None:
  im = Image.fromarray(mask.astype(np.uint8))
  im.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
  im.save(path)


def write_sequence(root: Path, name: str, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray,
                   objects: np.ndarray | None, jpeg_quality: int = 0) -> None:
  """Writes one sequence in the layout above: frames as PNG (as JPEG at `jpeg_quality`, as DAVIS ships them, when
  it is set), masks as palette PNGs with object id 1."""
  for sub in (FRAMES, VISIBLE, AMODAL) + ((OBJECTS,) if objects is not None else ()):
    (root / sub / name).mkdir(parents=True, exist_ok=True)
  for t in range(len(frames)):
    stem = f'{t:05d}'
    frame = Image.fromarray(frames[t])
    if jpeg_quality:
      frame.save(root / FRAMES / name / f'{stem}.jpg', quality=jpeg_quality)
    else:
      frame.save(root / FRAMES / name / f'{stem}.png')
    _palette_png(visible[t], root / VISIBLE / name / f'{stem}.png')
    _palette_png(amodal[t], root / AMODAL / name / f'{stem}.png')
    if objects is not None:
      rgba = np.concatenate([objects[t], np.where(amodal[t], 255, 0).astype(np.uint8)[..., None]], axis=-1)
      Image.fromarray(rgba).save(root / OBJECTS / name / f'{stem}.png')
