"""DAVIS-2017 reader: `JPEGImages/<res>/<seq>/00000.jpg` + palette PNGs `Annotations/<res>/<seq>/00000.png`.

Annotation pixels hold instance ids (0 background, 255 void). Sequences come from `ImageSets/2017/<split>.txt`
when present, else every folder under JPEGImages. Class names come from `davis_semantics.json`
({seq: {id: class}}) when present, else from the sequence name ("dog-agility" -> "dog"); captions are "a <class>".
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from data_prep.sources.base import Source, SourceError, Track, VideoError, read_labels, read_rgb

IMAGE_EXT = ('.jpg', '.jpeg', '.png')


def _listdir(path: str, exts) -> list[str]:
  return sorted(f for f in os.listdir(path) if f.lower().endswith(exts) and not f.startswith('.'))


class DavisSource(Source):
  name = 'davis'

  def __init__(self, root: str, resolution: str = '480p', splits: str | tuple[str, ...] = ('train', 'val')):
    self.root, self.resolution = root, resolution
    self.img_dir = os.path.join(root, 'JPEGImages', resolution)
    self.ann_dir = os.path.join(root, 'Annotations', resolution)
    if not os.path.isdir(self.img_dir):
      raise SourceError(f'DAVIS: no frame folder {self.img_dir} (expected <root>/JPEGImages/{resolution}/<seq>/)')
    if not os.path.isdir(self.ann_dir):
      raise SourceError(f'DAVIS: missing annotation folder {self.ann_dir} '
                        f'(expected <root>/Annotations/{resolution}/<seq>/00000.png)')
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    seqs: list[str] = []
    for s in splits:
      p = os.path.join(root, 'ImageSets', '2017', f'{s}.txt')
      if os.path.isfile(p):
        with open(p) as f:
          seqs += [l.strip() for l in f if l.strip()]
    self._seqs = sorted(set(seqs)) if seqs else sorted(
        d for d in os.listdir(self.img_dir) if os.path.isdir(os.path.join(self.img_dir, d)))
    self.splits = splits
    sem = os.path.join(root, 'davis_semantics.json')
    self.semantics = json.load(open(sem)) if os.path.isfile(sem) else {}

  def describe(self) -> dict:
    return {'source': self.name, 'root': os.path.abspath(self.root), 'resolution': self.resolution,
            'splits': list(self.splits)}

  def videos(self) -> list[str]:
    return list(self._seqs)

  def _files(self, seq: str) -> tuple[list[str], list[str]]:
    idir, adir = os.path.join(self.img_dir, seq), os.path.join(self.ann_dir, seq)
    if not os.path.isdir(idir):
      raise VideoError(f'{seq}: no frame folder {idir}')
    if not os.path.isdir(adir):
      raise VideoError(f'{seq}: no annotation folder {adir}')
    frames, anns = _listdir(idir, IMAGE_EXT), _listdir(adir, ('.png',))
    if len(frames) != len(anns):
      raise VideoError(f'{seq}: {len(frames)} frames but {len(anns)} annotation PNGs (they must match one to one)')
    if [os.path.splitext(f)[0] for f in frames] != [os.path.splitext(a)[0] for a in anns]:
      raise VideoError(f'{seq}: frame and annotation names differ')
    return [os.path.join(idir, f) for f in frames], [os.path.join(adir, a) for a in anns]

  @functools.lru_cache(maxsize=2)
  def _labels(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
    """-> labels (N,H,W) uint8, readable (N,) bool. Unreadable annotations become empty, unusable frames."""
    _, anns = self._files(seq)
    return read_labels(anns, seq)

  def class_of(self, seq: str, obj: int) -> str:
    sem = self.semantics.get(seq, {})
    return str(sem.get(str(obj), sem.get(obj, seq.split('-')[0].replace('_', ' '))))

  def tracks(self, seq: str) -> list[Track]:
    frames, _ = self._files(seq)
    labels, readable = self._labels(seq)
    ids = [int(i) for i in np.unique(labels) if i not in (0, 255)]
    if not ids:
      raise VideoError(f'{seq}: no annotated objects (all masks empty)')
    out = []
    for obj in ids:
      def load_masks(obj=obj):
        lab, _ = self._labels(seq)
        m = lab == obj
        others = (lab != obj) & (lab != 0) & (lab != 255)
        return m, others

      def load_frames(idx):
        return np.stack([read_rgb(frames[i], int(i)) for i in idx])

      cls = self.class_of(seq, obj)
      out.append(Track(self.name, seq, obj, cls, f'a {cls}', len(frames), load_masks, load_frames,
                       usable=readable.copy(), source_num_frames=len(frames)))
    return out
