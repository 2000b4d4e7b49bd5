"""pix2gestalt image pairs as a builder source: each pair becomes one F = 1 record (`paired = True`: no synthesis).
The folder layout and the per-pair arrays are the library reader's (`tgvac_jax.data.pix2gestalt`)."""

from __future__ import annotations

import os

import numpy as np

from data_prep.sources.base import FrameError, Source, SourceError, VideoError
from tgvac_jax.data.pix2gestalt import Pix2GestaltFolderError, Pix2GestaltPairs


class Pix2GestaltSource(Pix2GestaltPairs, Source):
  name = 'pix2gestalt'
  paired = True

  def __init__(self, root: str, caption: str = ''):
    try:
      super().__init__(root, caption)
    except Pix2GestaltFolderError as e:
      raise SourceError(str(e)) from e

  def describe(self) -> dict:
    return {'source': self.name, 'root': os.path.abspath(self.root), 'caption': self.caption}

  def videos(self) -> list[str]:
    return list(self.stems)

  def tracks(self, video_id: str):
    raise VideoError('pix2gestalt holds ready pairs, not tracks')

  def pair_clips(self, stem: str, resolution: tuple[int, int] | None = None):
    """Builder hook: one F = 1 clip per pair. -> [(key, arrays, meta)]."""
    from data_prep.occlusion import occlusion_coverage, occlusion_rates, resize_mask, resize_rgb
    try:
      d = self.load(stem)
    except (FrameError, ValueError) as e:
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
