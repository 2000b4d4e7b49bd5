"""DAVIS-2017 through the TFDS `davis` builder (optional; building it needs TensorFlow and a download).

`root` is the TFDS data_dir holding a prepared `davis/480p` (or `davis/full_resolution`). Each TFDS record is one
video: `video.frames` (RGB) and `video.segmentations` (palette indices = instance ids). Class names come from the
video name; captions are "a <class>". Without TensorFlow this source reports how to get it.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from data_prep.sources.base import Source, SourceError, Track, VideoError


class TfdsDavisSource(Source):
  name = 'tfds_davis'

  def __init__(self, root: str | None = None, config: str = '480p', splits: str | tuple[str, ...] = ('train',
                                                                                                     'validation')):
    if importlib.util.find_spec('tensorflow') is None:
      raise SourceError('the TFDS `davis` source needs TensorFlow (pip install tensorflow) to build the TFDS '
                        'dataset; without it use --source davis on the extracted DAVIS-2017 folders')
    import tensorflow_datasets as tfds
    self.builder = tfds.builder(f'davis/{config}', data_dir=root)
    try:
      self.builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds here (network, checksum, missing TF ops)
      raise SourceError(f'could not prepare TFDS davis/{config} in {root}: {e}') from e
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    self._index: dict[str, tuple[str, int]] = {}
    self._ds = {}
    for s in splits:
      ds = self.builder.as_data_source(split=s)
      self._ds[s] = ds
      for i in range(len(ds)):
        name = ds[i]['metadata']['video_name']
        self._index[name.decode() if isinstance(name, bytes) else str(name)] = (s, i)
    self.config, self.root, self.splits = config, root, splits

  def __reduce__(self):  # a worker process opens the prepared dataset itself
    return type(self), (self.root, self.config, self.splits)

  def describe(self) -> dict:
    return {'source': self.name, 'root': self.root, 'config': self.config, 'splits': list(self.splits)}

  def videos(self) -> list[str]:
    return sorted(self._index)

  @functools.lru_cache(maxsize=2)
  def _video(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    s, i = self._index[name]
    v = self._ds[s][i]['video']
    frames = np.stack([np.asarray(f) for f in v['frames']])
    seg = np.stack([np.asarray(m)[..., 0] for m in v['segmentations']]).astype(np.uint8)
    return frames, seg

  def tracks(self, name: str) -> list[Track]:
    frames, seg = self._video(name)
    ids = [int(i) for i in np.unique(seg) if i not in (0, 255)]
    if not ids:
      raise VideoError(f'{name}: no annotated objects (all masks empty)')
    cls = name.split('-')[0]
    out = []
    for obj in ids:
      def load_masks(obj=obj):
        _, sg = self._video(name)
        return sg == obj, (sg != obj) & (sg != 0) & (sg != 255)

      out.append(Track(self.name, name, obj, cls, f'a {cls}', len(frames), load_masks,
                       lambda idx: self._video(name)[0][np.asarray(idx)], source_num_frames=len(frames)))
    return out
