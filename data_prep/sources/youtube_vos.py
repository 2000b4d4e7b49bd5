"""YouTube-VOS reader: `<root>/meta.json`, `JPEGImages/<vid>/<5 digits>.jpg`, palette `Annotations/<vid>/*.png`.

Frame names are 5-digit numbers that need not start at 0; in the train split only every 5th frame is annotated.
A track uses the annotated frames of its video (JPEG folders may hold more frames: train_all_frames). Object ids
and categories come from meta.json ({"videos": {vid: {"objects": {"1": {"category": ..., "frames": [...]}}}}});
captions are "a <category>".
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from data_prep.sources.base import Source, SourceError, Track, VideoError, read_labels, read_rgb


class YoutubeVOSSource(Source):
  name = 'youtube_vos'

  def __init__(self, root: str):
    self.root = root
    meta = os.path.join(root, 'meta.json')
    if not os.path.isfile(meta):
      raise SourceError(f'YouTube-VOS: no {meta} (pass the split folder, e.g. <ytvos>/train)')
    self.img_dir, self.ann_dir = os.path.join(root, 'JPEGImages'), os.path.join(root, 'Annotations')
    if not os.path.isdir(self.img_dir):
      raise SourceError(f'YouTube-VOS: no frame folder {self.img_dir}')
    if not os.path.isdir(self.ann_dir):
      raise SourceError(f'YouTube-VOS: missing annotation folder {self.ann_dir}')
    with open(meta) as f:
      self.meta = json.load(f).get('videos', {})

  def describe(self) -> dict:
    return {'source': self.name, 'root': os.path.abspath(self.root)}

  def videos(self) -> list[str]:
    return sorted(self.meta)

  def _files(self, vid: str) -> tuple[list[str], list[str], int]:
    idir, adir = os.path.join(self.img_dir, vid), os.path.join(self.ann_dir, vid)
    if not os.path.isdir(adir):
      raise VideoError(f'{vid}: no annotation folder {adir}')
    if not os.path.isdir(idir):
      raise VideoError(f'{vid}: no frame folder {idir}')
    anns = sorted(f for f in os.listdir(adir) if f.endswith('.png'))
    jpgs = {os.path.splitext(f)[0]: f for f in os.listdir(idir) if f.lower().endswith(('.jpg', '.jpeg'))}
    missing = [a for a in anns if os.path.splitext(a)[0] not in jpgs]
    if missing:
      raise VideoError(f'{vid}: {len(missing)} annotation PNG(s) without a frame ({missing[0]}, ...): '
                       f'{len(jpgs)} frames vs {len(anns)} masks')
    if not anns:
      raise VideoError(f'{vid}: no annotation PNGs')
    frames = [os.path.join(idir, jpgs[os.path.splitext(a)[0]]) for a in anns]
    return frames, [os.path.join(adir, a) for a in anns], len(jpgs)

  @functools.lru_cache(maxsize=2)
  def _labels(self, vid: str):
    _, anns, _ = self._files(vid)
    return read_labels(anns, vid)

  def tracks(self, vid: str) -> list[Track]:
    frames, anns, n_src = self._files(vid)
    objects = self.meta[vid].get('objects', {})
    labels, readable = self._labels(vid)
    present = set(int(i) for i in np.unique(labels)) - {0, 255}
    names = [os.path.splitext(os.path.basename(a))[0] for a in anns]
    out = []
    for oid, info in sorted(objects.items(), key=lambda kv: int(kv[0])):
      obj = int(oid)
      if obj not in present:
        continue
      listed = set(info.get('frames', names))
      usable = readable & np.array([n in listed for n in names])

      def load_masks(obj=obj):
        lab, _ = self._labels(vid)
        return lab == obj, (lab != obj) & (lab != 0) & (lab != 255)

      def load_frames(idx):
        return np.stack([read_rgb(frames[i], int(i)) for i in idx])

      cls = str(info.get('category', 'object'))
      out.append(Track(self.name, vid, obj, cls, f'a {cls}', len(frames), load_masks, load_frames,
                       usable=usable, source_num_frames=n_src))
    if not out:
      raise VideoError(f'{vid}: no annotated objects (all masks empty)')
    return out
