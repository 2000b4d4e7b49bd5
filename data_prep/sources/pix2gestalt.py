"""pix2gestalt image pairs: `<root>/occlusion/`, `whole/`, `whole_mask/`, `visible_object_mask/`, files matched by
stem (any image extension). Used by the frame stage, either straight from the folder (a Grain random-access
source: `len()` and `[i]`) or written as F = 1 records by the builder (`paired = True`: no synthesis).

Per pair: occluded = occlusion image, amodal = whole image with the background set to white by whole_mask,
amodal_mask = whole_mask, visible_mask = visible_object_mask & whole_mask, occluder_mask = amodal & ~visible
(only the hidden part of the object is known; the occluder's full extent is not in the dataset).
"""

from __future__ import annotations

import os

import numpy as np

from data_prep.sources.base import FrameError, Source, SourceError, VideoError, read_binary_mask, read_rgb

FOLDERS = ('occlusion', 'whole', 'whole_mask', 'visible_object_mask')
EXTS = ('.png', '.jpg', '.jpeg', '.webp')


def _index(d: str) -> dict[str, str]:
  return {os.path.splitext(f)[0]: os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(EXTS)}


class Pix2GestaltSource(Source):
  name = 'pix2gestalt'
  paired = True

  def __init__(self, root: str, caption: str = ''):
    self.root, self.caption = root, caption
    missing = [f for f in FOLDERS if not os.path.isdir(os.path.join(root, f))]
    if missing:
      raise SourceError(f'pix2gestalt: {root} lacks folder(s) {missing} (expected {list(FOLDERS)})')
    idx = {f: _index(os.path.join(root, f)) for f in FOLDERS}
    stems = set(idx['occlusion'])
    self.incomplete = sorted(s for s in stems | set().union(*map(set, idx.values()))
                             if any(s not in idx[f] for f in FOLDERS))
    self.stems = sorted(s for s in stems if all(s in idx[f] for f in FOLDERS))
    if not self.stems:
      raise SourceError(f'pix2gestalt: no complete pair under {root}')
    self.files = {s: tuple(idx[f][s] for f in FOLDERS) for s in self.stems}

  def describe(self) -> dict:
    return {'source': self.name, 'root': os.path.abspath(self.root), 'caption': self.caption}

  def videos(self) -> list[str]:
    return list(self.stems)

  def tracks(self, video_id: str):
    raise VideoError('pix2gestalt holds ready pairs, not tracks')

  def __len__(self) -> int:
    return len(self.stems)

  def load(self, stem: str) -> dict:
    """-> occluded, amodal (H,W,3) uint8; visible_mask, amodal_mask, occluder_mask (H,W) bool."""
    occ_p, whole_p, wm_p, vm_p = self.files[stem]
    occluded, whole = read_rgb(occ_p), read_rgb(whole_p)
    amodal_mask, visible = read_binary_mask(wm_p), read_binary_mask(vm_p)
    shapes = {occluded.shape[:2], whole.shape[:2], amodal_mask.shape, visible.shape}
    if len(shapes) != 1:
      raise VideoError(f'{stem}: image sizes differ {sorted(shapes)}')
    visible &= amodal_mask
    amodal = np.where(amodal_mask[..., None], whole, np.uint8(255)).astype(np.uint8)
    return dict(occluded=occluded, amodal=amodal, visible_mask=visible, amodal_mask=amodal_mask,
                occluder_mask=amodal_mask & ~visible)

  def __getitem__(self, i: int) -> dict:
    out = self.load(self.stems[i])
    out['caption'] = self.caption
    return out

  def pair_clips(self, stem: str, resolution: tuple[int, int] | None = None):
    """Builder hook: one F = 1 clip per pair. -> [(key, arrays, meta)]."""
    from data_prep.occlusion import occlusion_coverage, occlusion_rates, resize_mask, resize_rgb
    try:
      d = self.load(stem)
    except FrameError as e:
      raise VideoError(str(e)) from e
    a = {k: v[None] for k, v in d.items()}
    if resolution is not None:
      for k in ('occluded', 'amodal'):
        a[k] = resize_rgb(a[k], resolution)
      a['amodal_mask'] = resize_mask(a['amodal_mask'], resolution)
      a['occluder_mask'] = resize_mask(a['occluder_mask'], resolution) & a['amodal_mask']
      a['visible_mask'] = a['amodal_mask'] & ~a['occluder_mask']
      a['amodal'] = np.where(a['amodal_mask'][..., None], a['amodal'], np.uint8(255)).astype(np.uint8)
    rates = occlusion_rates(a['amodal_mask'], a['occluder_mask'])
    meta = dict(source=self.name, video_id=stem, object_id=1, class_name='object', occluder_video_id='',
                occluder_object_id=0, difficulty='hard' if rates.mean() >= 0.5 else 'easy', frame_indices=[0],
                occluder_frame_indices=[0], source_num_frames=1, occlusion_rate=[float(r) for r in rates],
                coverage=occlusion_coverage(a['amodal_mask'], a['occluder_mask']),
                object_size=float(a['amodal_mask'].mean()), caption=self.caption)
    return [(f'{stem}/1/0', a, meta)]
