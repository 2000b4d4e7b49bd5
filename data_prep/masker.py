"""Object masks for box-only sources (LaSOT): a user's mask folder, or SAM-2 from the boxes (paper: SAM + fixes).

`FolderMasks(root)`: `<root>/<seq>/<frame>.png` or `<root>/<class>/<seq>/<frame>.png`, any nonzero pixel is the
object; frame names as in the source (LaSOT: 00000001). A missing file means "no mask" (that frame is unusable).

`Sam2BoxMasker(model_dir, cache_dir)`: transformers `Sam2Model` + `Sam2Processor` loaded from a local folder
(imported lazily; a missing folder is a clear error), prompted with each frame's box; masks are written into
`cache_dir` in the FolderMasks layout, so later runs (and the reader) reuse them.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from data_prep.sources.base import read_binary_mask


class FolderMasks:
  def __init__(self, root: str):
    if not os.path.isdir(root):
      raise FileNotFoundError(f'mask folder {root} does not exist')
    self.root = root

  def seq_dir(self, cls: str, seq: str) -> str | None:
    for d in (os.path.join(self.root, seq), os.path.join(self.root, cls, seq)):
      if os.path.isdir(d):
        return d
    return None

  def path(self, cls: str, seq: str, name: str) -> str | None:
    d = self.seq_dir(cls, seq)
    if d is None:
      return None
    p = os.path.join(d, name + '.png')
    return p if os.path.isfile(p) else None

  def load(self, cls: str, seq: str, name: str, index: int | None = None) -> np.ndarray | None:
    p = self.path(cls, seq, name)
    return None if p is None else read_binary_mask(p, index)


class Sam2BoxMasker(FolderMasks):
  """SAM-2 masks from boxes, cached as PNGs. Frames are segmented independently from their own box."""

  def __init__(self, model_dir: str, cache_dir: str, device: str = 'cpu'):
    if not model_dir or not os.path.isdir(model_dir):
      raise FileNotFoundError(f'SAM-2 masks need a local model folder (e.g. facebook/sam2.1-hiera-tiny downloaded '
                              f'once), got {model_dir!r}')
    try:
      import torch
      from transformers import Sam2Model, Sam2Processor
    except ImportError as e:
      raise ImportError('SAM-2 masks need torch and a transformers release with Sam2Model') from e
    os.makedirs(cache_dir, exist_ok=True)
    super().__init__(cache_dir)
    self._args = (model_dir, cache_dir, device)
    self.torch, self.device = torch, device
    self.processor = Sam2Processor.from_pretrained(model_dir, local_files_only=True)
    self.model = Sam2Model.from_pretrained(model_dir, local_files_only=True).to(device).eval()

  def __reduce__(self):  # a worker process loads its own copy from the folder
    return type(self), self._args

  def segment(self, image: np.ndarray, box_xyxy) -> np.ndarray:
    inputs = self.processor(images=Image.fromarray(image), input_boxes=[[list(map(float, box_xyxy))]],
                            return_tensors='pt').to(self.device)
    with self.torch.no_grad():
      out = self.model(**inputs, multimask_output=False)
    masks = self.processor.post_process_masks(out.pred_masks.cpu(), inputs['original_sizes'])[0]
    return np.asarray(masks).reshape(-1, *image.shape[:2])[0] > 0

  def load_or_segment(self, cls: str, seq: str, name: str, image_fn, box_xyxy, index=None) -> np.ndarray:
    m = self.load(cls, seq, name, index)
    if m is not None:
      return m
    m = self.segment(image_fn(), box_xyxy)
    d = os.path.join(self.root, seq)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{name}.png.tmp{os.getpid()}')  # workers may segment the same occluder frame
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp, format='PNG')
    os.replace(tmp, os.path.join(d, name + '.png'))
    return m
