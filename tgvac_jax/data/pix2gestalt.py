"""pix2gestalt image pairs read straight from their folder: `<root>/occlusion/`, `whole/`, `whole_mask/`,
`visible_object_mask/`, files matched by stem (any image extension). A Grain random-access source (`len()`,
`[i]`) for the frame stage; the dataset builder's `data_prep` source wraps it to write F = 1 records.

Per pair: occluded = occlusion image, amodal = whole image with the background set to white by whole_mask,
amodal_mask = whole_mask, visible_mask = visible_object_mask & whole_mask, occluder_mask = amodal & ~visible
(only the hidden part of the object is known; the occluder's full extent is not in the dataset).
"""

from __future__ import annotations

import os

import numpy as np

from tgvac_jax.data.images import read_binary_mask, read_rgb

FOLDERS = ('occlusion', 'whole', 'whole_mask', 'visible_object_mask')
EXTS = ('.png', '.jpg', '.jpeg', '.webp')


class Pix2GestaltFolderError(FileNotFoundError):
  """The folder lacks one of the four sub-folders, or holds no complete pair."""


def is_pix2gestalt(root: str) -> bool:
  return os.path.isdir(os.path.join(root, 'occlusion')) and os.path.isdir(os.path.join(root, 'whole_mask'))


def _index(d: str) -> dict[str, str]:
  return {os.path.splitext(f)[0]: os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(EXTS)}


class Pix2GestaltPairs:
  """Complete pairs sorted by stem; `incomplete` lists stems missing from some folder (left out)."""

  def __init__(self, root: str, caption: str = ''):
    self.root, self.caption = root, caption
    missing = [f for f in FOLDERS if not os.path.isdir(os.path.join(root, f))]
    if missing:
      raise Pix2GestaltFolderError(f'pix2gestalt: {root} lacks folder(s) {missing} (expected {list(FOLDERS)})')
    idx = {f: _index(os.path.join(root, f)) for f in FOLDERS}
    stems = set(idx['occlusion'])
    self.incomplete = sorted(s for s in stems | set().union(*map(set, idx.values()))
                             if any(s not in idx[f] for f in FOLDERS))
    self.stems = sorted(s for s in stems if all(s in idx[f] for f in FOLDERS))
    if not self.stems:
      raise Pix2GestaltFolderError(f'pix2gestalt: no complete pair under {root}')
    self.files = {s: tuple(idx[f][s] for f in FOLDERS) for s in self.stems}

  def __len__(self) -> int:
    return len(self.stems)

  def load(self, stem: str) -> dict:
    """-> occluded, amodal (H,W,3) uint8; visible_mask, amodal_mask, occluder_mask (H,W) bool. Raises FrameError
    for an unreadable file, ValueError when the four images differ in size."""
    occ_p, whole_p, wm_p, vm_p = self.files[stem]
    occluded, whole = read_rgb(occ_p), read_rgb(whole_p)
    amodal_mask, visible = read_binary_mask(wm_p), read_binary_mask(vm_p)
    shapes = {occluded.shape[:2], whole.shape[:2], amodal_mask.shape, visible.shape}
    if len(shapes) != 1:
      raise ValueError(f'{stem}: image sizes differ {sorted(shapes)}')
    visible &= amodal_mask
    amodal = np.where(amodal_mask[..., None], whole, np.uint8(255)).astype(np.uint8)
    return dict(occluded=occluded, amodal=amodal, visible_mask=visible, amodal_mask=amodal_mask,
                occluder_mask=amodal_mask & ~visible)

  def __getitem__(self, i: int) -> dict:
    out = self.load(self.stems[i])
    out['caption'] = self.caption
    return out
