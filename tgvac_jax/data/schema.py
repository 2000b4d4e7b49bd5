"""The on-disk record of one clip (TFDS features, array_record) and its decoding to numpy.

One record = one clip of F frames at H x W:
  occluded        (F,) encoded PNG/JPEG bytes   the input video (object + synthetic occluder)
  amodal          (F,) encoded PNG/JPEG bytes   the target: the whole object on white
  visible_mask    (F,H,W) uint8 {0,1}, zlib     amodal_mask & ~occluder_mask
  amodal_mask     (F,H,W) uint8 {0,1}, zlib
  occluder_mask   (F,H,W) uint8 {0,1}, zlib
  caption         text describing the whole object
  source, video_id, object_id, class_name, occluder_video_id, occluder_object_id, difficulty ('easy'|'hard')
  frame_indices, occluder_frame_indices (F,) int32   frame indices in the source tracks
  source_num_frames int32, occlusion_rate (F,) float32, coverage float32, object_size float32
pix2gestalt pairs are stored as F = 1 clips (occluder_mask = amodal & ~visible there).

Images are stored as raw encoded bytes (a `Tensor` of objects), not TFDS `Image` features: TFDS cannot skip
decoding in its numpy path, and the frame stage decodes only the one frame it samples.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

IMAGE_KEYS = ('occluded', 'amodal')
MASK_KEYS = ('visible_mask', 'amodal_mask', 'occluder_mask')
TEXT_KEYS = ('caption', 'source', 'video_id', 'class_name', 'occluder_video_id', 'difficulty')


def features():
  """The TFDS FeaturesDict of a record (imported lazily: tfds is heavy)."""
  import tensorflow_datasets as tfds
  tf = tfds.features
  mask = lambda: tf.Tensor(shape=(None, None, None), dtype=np.uint8, encoding='zlib')
  return tf.FeaturesDict({
      'occluded': tf.Tensor(shape=(None,), dtype=np.object_),
      'amodal': tf.Tensor(shape=(None,), dtype=np.object_),
      'visible_mask': mask(),
      'amodal_mask': mask(),
      'occluder_mask': mask(),
      'caption': tf.Text(),
      'source': tf.Text(),
      'video_id': tf.Text(),
      'class_name': tf.Text(),
      'occluder_video_id': tf.Text(),
      'difficulty': tf.Text(),
      'object_id': tf.Scalar(dtype=np.int32),
      'occluder_object_id': tf.Scalar(dtype=np.int32),
      'source_num_frames': tf.Scalar(dtype=np.int32),
      'frame_indices': tf.Tensor(shape=(None,), dtype=np.int32),
      'occluder_frame_indices': tf.Tensor(shape=(None,), dtype=np.int32),
      'occlusion_rate': tf.Tensor(shape=(None,), dtype=np.float32),
      'coverage': tf.Scalar(dtype=np.float32),
      'object_size': tf.Scalar(dtype=np.float32),
  })


# ------------------------------------------------------------------------------------------- encoding

def encode_image(x: np.ndarray, fmt: str = 'png', quality: int = 95) -> bytes:
  """(H,W,3) uint8 -> PNG (lossless, deterministic) or JPEG bytes."""
  buf = io.BytesIO()
  im = Image.fromarray(np.ascontiguousarray(x, np.uint8))
  if fmt == 'png':
    im.save(buf, format='PNG', compress_level=3)
  elif fmt in ('jpeg', 'jpg'):
    im.save(buf, format='JPEG', quality=int(quality), subsampling=0 if quality >= 90 else 2)
  else:
    raise ValueError(f'image format must be png or jpeg, got {fmt!r}')
  return buf.getvalue()


def encode_record(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], image_format: str = 'png',
                  jpeg_quality: int = 95, target_format: str = 'png') -> dict:
  """Numpy clip arrays (occluded, amodal (F,H,W,3) uint8; masks (F,H,W) bool) + metadata -> a TFDS example."""
  ex = {
      'occluded': np.array([encode_image(f, image_format, jpeg_quality) for f in arrays['occluded']],
                           dtype=object),
      'amodal': np.array([encode_image(f, target_format, jpeg_quality) for f in arrays['amodal']], dtype=object),
  }
  for k in MASK_KEYS:
    ex[k] = np.ascontiguousarray(arrays[k], dtype=np.uint8)
  for k in TEXT_KEYS:
    ex[k] = str(meta[k])
  for k in ('object_id', 'occluder_object_id', 'source_num_frames'):
    ex[k] = np.int32(meta[k])
  for k in ('frame_indices', 'occluder_frame_indices'):
    ex[k] = np.asarray(meta[k], np.int32)
  ex['occlusion_rate'] = np.asarray(meta['occlusion_rate'], np.float32)
  ex['coverage'] = np.float32(meta['coverage'])
  ex['object_size'] = np.float32(meta['object_size'])
  return ex


# ------------------------------------------------------------------------------------------- decoding

def decode_image(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert('RGB'))


def decode_images(encoded: Sequence[bytes], frames: Sequence[int] | None = None) -> np.ndarray:
  """(F,) encoded bytes -> (len(frames),H,W,3) uint8."""
  idx = range(len(encoded)) if frames is None else frames
  return np.stack([decode_image(encoded[i]) for i in idx])


def _text(x) -> str:
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)


def decode_record(rec: Mapping[str, Any], frames: Sequence[int] | None = None) -> dict:
  """A record from `tfds.data_source` -> numpy uint8 images, bool masks and str metadata.

  `frames`: decode only these frame indices (the frame stage samples one)."""
  sel = slice(None) if frames is None else np.asarray(frames)
  out = {k: decode_images(rec[k], frames) for k in IMAGE_KEYS}
  for k in MASK_KEYS:
    out[k] = np.asarray(rec[k])[sel].astype(bool)
  for k in TEXT_KEYS:
    out[k] = _text(rec[k])
  for k in ('object_id', 'occluder_object_id', 'source_num_frames'):
    out[k] = int(rec[k])
  out['occlusion_rate'] = np.asarray(rec['occlusion_rate'], np.float32)[sel]
  out['coverage'] = float(rec['coverage'])
  out['object_size'] = float(rec['object_size'])
  return out


def find_dataset_dir(path: str) -> str:
  """A TFDS version folder (the one holding dataset_info.json) at or below `path`; errors if none or several."""
  import os
  if os.path.exists(os.path.join(path, 'dataset_info.json')):
    return path
  found = sorted(root for root, dirs, files in os.walk(path)
                 if 'dataset_info.json' in files and 'incomplete' not in root)
  if not found:
    raise FileNotFoundError(f'no built dataset (dataset_info.json) under {path}')
  if len(found) > 1:
    raise ValueError(f'several datasets under {path}: {found}; pass one of them')
  return found[0]
