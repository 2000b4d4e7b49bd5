"""LaSOT reader: `<root>/<class>/<class>-<n>/img/00000001.jpg` (8 digits from 1), `groundtruth.txt` ("x,y,w,h" per
frame), `full_occlusion.txt` and `out_of_view.txt` (one line of comma-separated 0/1 per frame), `nlp.txt` (one
sentence: the caption).

LaSOT has boxes, not masks. Masks come from `masks=` (a FolderMasks, see data_prep/masker.py), from SAM-2 on the
boxes (`Sam2BoxMasker`, the paper used SAM), or — a crude fallback for trials only — `masks='box'` (the box itself).
Frames flagged fully occluded or out of view, with an empty box or without a mask are unusable.
Long sequences: `frame_stride` keeps every k-th frame, and selection works on masks reduced to `select_side` px;
the chosen clips get full-resolution masks.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from data_prep.masker import FolderMasks
from data_prep.sources.base import FrameError, Source, SourceError, Track, VideoError, read_rgb


def _flags(path: str, n: int, what: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise VideoError(f'missing {path}')
  txt = open(path).read().replace('\n', ',').replace(' ', ',')
  vals = [int(float(t)) for t in txt.split(',') if t.strip()]
  if len(vals) != n:
    raise VideoError(f'{path}: {len(vals)} {what} flags for {n} frames')
  return np.asarray(vals, bool)


def _boxes(path: str, n: int) -> np.ndarray:
  if not os.path.isfile(path):
    raise VideoError(f'missing {path}')
  rows = [l.replace('\t', ',').replace(' ', ',') for l in open(path).read().splitlines() if l.strip()]
  try:
    b = np.array([[float(t) for t in r.split(',') if t][:4] for r in rows], np.float64)
  except ValueError as e:
    raise VideoError(f'{path}: unreadable box line ({e})') from e
  if b.shape != (n, 4):
    raise VideoError(f'{path}: {len(b)} boxes for {n} frames')
  return b


class LasotSource(Source):
  name = 'lasot'

  def __init__(self, root: str, masks=None, classes: str | list[str] | None = None, frame_stride: int = 1,
               select_side: int = 320):
    self.root = root
    if not os.path.isdir(root):
      raise SourceError(f'LaSOT: {root} is not a folder')
    if isinstance(masks, str) and masks != 'box':
      masks = FolderMasks(masks)
    if masks is None:
      raise SourceError('LaSOT has boxes, not masks: pass masks=<folder> (--masks), a SAM-2 checkpoint folder '
                        '(--sam2), or masks="box" for a crude box-mask trial')
    self.masks = masks
    classes = classes.split(',') if isinstance(classes, str) else classes
    self._seqs: dict[str, str] = {}
    for cls in sorted(os.listdir(root)):
      cdir = os.path.join(root, cls)
      if not os.path.isdir(cdir) or (classes and cls not in classes):
        continue
      for seq in sorted(os.listdir(cdir)):
        if os.path.isdir(os.path.join(cdir, seq, 'img')):
          self._seqs[seq] = cls
    if not self._seqs:
      raise SourceError(f'LaSOT: no <class>/<class>-<n>/img/ folders under {root}')
    self.frame_stride, self.select_side = int(frame_stride), int(select_side)

  def describe(self) -> dict:
    m = self.masks if self.masks == 'box' else type(self.masks).__name__ + ':' + os.path.abspath(self.masks.root)
    return {'source': self.name, 'root': os.path.abspath(self.root), 'masks': m, 'frame_stride': self.frame_stride,
            'select_side': self.select_side}

  def videos(self) -> list[str]:
    return sorted(self._seqs)

  def tracks(self, seq: str) -> list[Track]:
    cls = self._seqs[seq]
    sdir = os.path.join(self.root, cls, seq)
    idir = os.path.join(sdir, 'img')
    names_all = sorted(os.path.splitext(f)[0] for f in os.listdir(idir) if f.lower().endswith(('.jpg', '.jpeg')))
    n = len(names_all)
    if n == 0:
      raise VideoError(f'{seq}: no frames in {idir}')
    boxes = _boxes(os.path.join(sdir, 'groundtruth.txt'), n)
    occ = _flags(os.path.join(sdir, 'full_occlusion.txt'), n, 'full_occlusion')
    oov = _flags(os.path.join(sdir, 'out_of_view.txt'), n, 'out_of_view')
    nlp = os.path.join(sdir, 'nlp.txt')
    caption = open(nlp).read().strip() if os.path.isfile(nlp) else ''
    caption = caption or f'a {cls}'
    keep = np.arange(0, n, self.frame_stride)
    names = [names_all[i] for i in keep]
    boxes, occ, oov = boxes[keep], occ[keep], oov[keep]
    paths = [os.path.join(idir, nm + '.jpg') if os.path.isfile(os.path.join(idir, nm + '.jpg'))
             else os.path.join(idir, nm + '.jpeg') for nm in names]
    usable = ~occ & ~oov & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    cache: dict = {}

    def size() -> tuple[int, int]:
      if 'hw' not in cache:
        with Image.open(paths[0]) as im:
          cache['hw'] = (im.height, im.width)
      return cache['hw']

    def full_mask(i: int) -> np.ndarray | None:
      h, w = size()
      if self.masks == 'box':
        x, y, bw, bh = boxes[i]
        m = np.zeros((h, w), bool)
        m[max(int(y), 0):max(int(np.ceil(y + bh)), 0), max(int(x), 0):max(int(np.ceil(x + bw)), 0)] = True
        return m
      if hasattr(self.masks, 'load_or_segment'):
        x, y, bw, bh = boxes[i]
        return self.masks.load_or_segment(cls, seq, names[i], lambda: read_rgb(paths[i], i),
                                          (x, y, x + bw, y + bh), i)
      return self.masks.load(cls, seq, names[i], i)

    def load_masks():
      h, w = size()
      k = max(1, int(np.ceil(max(h, w) / self.select_side)))
      small = np.zeros((len(names), (h + k - 1) // k, (w + k - 1) // k), bool)
      use = usable.copy()
      for i in range(len(names)):
        if not use[i]:
          continue
        try:
          m = full_mask(i)
        except FrameError:
          m = None
        if m is None or m.shape != (h, w):
          use[i] = False
          continue
        small[i] = m[::k, ::k]
      cache['usable'] = use
      track.usable = use
      return small, None

    def load_window_masks(idx):
      out = []
      for i in idx:
        m = full_mask(int(i))
        if m is None:
          raise FrameError(f'{seq}/{names[int(i)]}.png', 'mask missing', int(i))
        out.append(m)
      return np.stack(out)

    def load_frames(idx):
      return np.stack([read_rgb(paths[int(i)], int(i)) for i in idx])

    track = Track(self.name, seq, 1, cls, caption, len(names), load_masks, load_frames, usable=usable,
                  source_num_frames=n, load_window_masks=load_window_masks)
    return [track]
