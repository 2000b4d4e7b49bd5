"""The videos inference runs on: one `InputSequence` per object to complete, from files or from memory.

A sequence is a video (file, frame folder or array), its caption, and the object as per-frame visible masks
(mask folder or array) or as a first-frame SAM-2 prompt. Sequences come from
  davis_sequences     a DAVIS-style root: JPEGImages/<seq>/*.jpg (or JPEGImages/480p/<seq>), Annotations/<seq>/*.png
                      palette masks, captions.json {seq: caption} or {seq: {object id: caption}} (one output per
                      object, named <seq>_<id>);
  manifest_sequences  a JSONL file, one {"video", "text", "masks" | "prompt_mask" | "box" | "points"
                      [, "labels", "object_id", "name"]} per line, paths relative to the file.
Nothing heavy happens until `load()`; `probe()` and `check()` only list folders and read first frames, so every
bad input is found before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from tgvac_jax.infer import io, sam2

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.\-]*$')


class Clip:
  """A loaded sequence: frames (N, H, W, 3) uint8, visible masks (N, H, W) bool, frame stems, fps or None."""

  def __init__(self, frames: np.ndarray, visible: np.ndarray, stems: tuple[str, ...], fps: float | None):
    self.frames, self.visible, self.stems, self.fps = frames, visible, stems, fps


@dataclasses.dataclass
class InputSequence:
  """One object in one video. Give `video` (path) or `frames` (array); `masks` (folder), `visible` (array) or
  `prompt` (first frame, tracked by the SAM-2 model in `sam2_folder`)."""
  name: str
  text: str
  video: str | os.PathLike | None = None
  frames: np.ndarray | None = None
  masks: str | os.PathLike | None = None
  visible: np.ndarray | None = None
  prompt: sam2.Prompt | None = None
  object_id: int | None = None
  stems: tuple[str, ...] | None = None
  fps: float | None = None
  sam2_folder: str | os.PathLike | None = None
  sam2_device: str = 'cpu'

  def __post_init__(self):
    if not NAME_RE.match(self.name):
      raise ValueError(f'sequence name {self.name!r}: use letters, digits, "_", "-" and "." only')
    if (self.video is None) == (self.frames is None):
      raise ValueError(f'{self.name}: give exactly one of video (a path) and frames (an array)')
    if sum(x is not None for x in (self.masks, self.visible, self.prompt)) != 1:
      raise ValueError(f'{self.name}: give exactly one of masks (a folder), visible (an array) and a first-frame '
                       'prompt (mask, box or points)')

  def probe(self) -> tuple[int, int, int]:
    """(num_frames, height, width) without loading the video."""
    if self.frames is not None:
      if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
        raise ValueError(f'{self.name}: frames must be (N, H, W, 3), got {self.frames.shape}')
      return self.frames.shape[:3]
    return io.probe_video(self.video)

  def check(self) -> tuple[int, int, int]:
    """Every cheap check (counts, sizes, first-frame object, prompt, SAM-2 folder); returns `probe()`."""
    n, h, w = self.probe()
    if self.masks is not None:
      first = io.mask_files(self.masks, n)[0]
      io.resolve_object_id(first, self.object_id)
      shape = io.read_mask(first, self.object_id).shape
      if shape != (h, w):
        raise ValueError(f'{first}: mask is {shape[1]}x{shape[0]}, frames are {w}x{h}')
    elif self.visible is not None:
      if self.visible.shape != (n, h, w):
        raise ValueError(f'{self.name}: visible masks {self.visible.shape} do not match frames {(n, h, w)}')
      if not self.visible[0].any():
        raise ValueError(f'{self.name}: the first-frame mask is empty (the object must be visible in frame 1)')
    else:
      self.prompt.check((h, w))
      sam2.require_folder(self.sam2_folder)
    return n, h, w

  def load(self) -> Clip:
    if self.frames is not None:
      video = io.Video(np.asarray(self.frames, np.uint8),
                       self.stems or tuple(f'{i:05d}' for i in range(len(self.frames))), self.fps)
    else:
      video = io.read_video(self.video)
    n, h, w = video.frames.shape[:3]
    if self.masks is not None:
      visible = io.read_masks(self.masks, n, (h, w), self.object_id)
    elif self.visible is not None:
      visible = np.asarray(self.visible, bool)
    else:
      visible = sam2.propagate(self.sam2_folder, video.frames, self.prompt, device=self.sam2_device)
    return Clip(video.frames, visible, video.stems, video.fps or self.fps)

  def describe(self) -> dict:
    """What the completion.json records about the input."""
    d = {'video': str(self.video) if self.video is not None else 'array',
         'masks': str(self.masks) if self.masks is not None else 'array' if self.visible is not None else None,
         'object_id': self.object_id}
    if self.prompt is not None:
      d['prompt'] = {'mask': self.prompt.mask is not None, 'box': self.prompt.box,
                     'points': self.prompt.points, 'labels': self.prompt.labels,
                     'sam2_folder': str(self.sam2_folder)}
    return d


def _image_root(root: Path, kind: str) -> Path:
  base = root / kind
  if (base / '480p').is_dir():  # the DAVIS-2017 release layout
    return base / '480p'
  if not base.is_dir():
    raise FileNotFoundError(f'{root}: no {kind}/ folder (expected a DAVIS-style root)')
  return base


def davis_sequences(root: str | os.PathLike, captions: str | os.PathLike | None = None,
                    object_id: int | None = None, names: tuple[str, ...] = ()) -> list[InputSequence]:
  """Sequences of a DAVIS-style root, sorted by name; `names` keeps only those."""
  root = Path(root)
  frames_root, masks_root = _image_root(root, 'JPEGImages'), _image_root(root, 'Annotations')
  captions = Path(captions) if captions else root / 'captions.json'
  if not captions.is_file():
    raise FileNotFoundError(f'{captions}: no captions file ({{"<sequence>": "caption", ...}})')
  texts = json.loads(captions.read_text())
  seqs = sorted((p.name for p in frames_root.iterdir() if p.is_dir()), key=io.natural_key)
  if names:
    unknown = sorted(set(names) - set(seqs))
    if unknown:
      raise ValueError(f'{root}: no sequences {unknown}')
    seqs = [s for s in seqs if s in names]
  missing = [s for s in seqs if s not in texts]
  if missing:
    raise ValueError(f'{captions}: no caption for {missing}')
  out = []
  for s in seqs:
    per_object = texts[s] if isinstance(texts[s], dict) else {object_id: texts[s]}
    for oid, text in per_object.items():
      oid = None if oid is None else int(oid)
      name = s if not isinstance(texts[s], dict) else f'{s}_{oid}'
      out.append(InputSequence(name, text, video=frames_root / s, masks=masks_root / s, object_id=oid))
  return out


def _csv(value) -> str:
  """A manifest's box/points/labels as the prompt parser's text: [[x, y], [x, y]] or "x,y;x,y"."""
  if value is None:
    return ''
  return ','.join(str(v) for v in np.ravel(value)) if isinstance(value, list) else str(value)


def manifest_sequences(path: str | os.PathLike, *, sam2_folder=None, sam2_device: str = 'cpu'
                       ) -> list[InputSequence]:
  """Sequences of a JSONL manifest (see the module docstring); names default to the video's file/folder name."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such manifest')
  out, seen = [], set()
  for i, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{i}: not JSON ({e})') from e
    where = f'{path}:{i}'
    if not isinstance(entry, dict) or 'video' not in entry or 'text' not in entry:
      raise ValueError(f'{where}: each line needs "video" and "text"')
    rel = lambda p: None if p is None else (path.parent / p)  # noqa: E731 -- absolute paths stay absolute
    video = rel(entry['video'])
    name = entry.get('name') or video.stem
    if name in seen:
      raise ValueError(f'{where}: sequence name {name!r} is used twice (give "name")')
    seen.add(name)
    prompt = None
    if entry.get('masks') is None:
      mask = entry.get('prompt_mask')
      prompt = sam2.parse_prompt(None if mask is None else io.read_mask(rel(mask), entry.get('object_id')),
                                 *(_csv(entry.get(k)) for k in ('box', 'points', 'labels')))
    out.append(InputSequence(name, entry['text'], video=video, masks=rel(entry.get('masks')), prompt=prompt,
                             object_id=entry.get('object_id'), sam2_folder=sam2_folder, sam2_device=sam2_device))
  if not out:
    raise ValueError(f'{path}: no sequences')
  return out
