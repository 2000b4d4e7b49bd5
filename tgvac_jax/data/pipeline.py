"""Grain input pipelines: motion-stage clips and frame-stage pairs, as numpy batches for
`jax.make_array_from_process_local_data`.

    MapDataset(tfds.data_source) -> shuffle(seed) -> [process_index::process_count] -> repeat -> random_map(decode,
    temporal window, crop/resize/flip identical over frames and masks, format) -> batch -> mp_prefetch

Batch dict (B = per-process batch; clips have the F axis, frame batches do not):
  'occluded'       (B,F,H,W,3) float32 in [-1,1]   input video (object + occluder)
  'visible_mask'   (B,F,H,W,3) float32 in {-1,1}   visible mask drawn as a 3-channel image, for the VAE
  'amodal'         (B,F,H,W,3) float32 in [-1,1]   target: the whole object on white
  'amodal_mask'    (B,F,H,W)   uint8 {0,1}
  'occluder_mask'  (B,F,H,W)   uint8 {0,1}
  'occlusion_rate' (B,F)       float32  |A∩O|/|A| after augmentation (easy < 0.5 <= hard)
  'input_ids'      (B,L)       int32    only with `tokenizer=` (a picklable str -> ids callable, e.g.
                                        `tgvac_jax.text.Tokenize(<tokenizer folder>)`, L = 77)
  'caption'        (B,)        numpy str   host-only: drop it before building device arrays (see `device_batch`)
With `output='uint8'` the three images are uint8 [0,255] and 'visible_mask' is uint8 {0,1} (B,F,H,W): 4x less
host memory and transfer; convert on device with `to_model_range`.

Iterators are checkpointable (`get_state`/`set_state`; Orbax helpers in `iterator_state.py`) and deterministic
for a seed, also with worker processes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import grain
import numpy as np

from tgvac_jax.data import augment, pix2gestalt, schema


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  batch_size: int = 2                    # per process
  size: int | tuple[int, int] = 256      # output H (, W)
  num_frames: int | None = None          # frames per clip (a random window of the stored clip); None: all
  crop_scale: tuple[float, float] = (0.8, 1.0)   # crop side / largest crop side; (1, 1) disables cropping
  flip: bool = True
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None          # None: repeat forever
  drop_remainder: bool = True
  worker_count: int = 2                  # 0: no worker processes
  worker_buffer_size: int = 2            # batches each worker keeps ready
  read_threads: int = 2                  # threads per process, each building whole batches (Grain default: 16)
  read_buffer: int = 2                   # batches prefetched by those threads (Grain default: 500 = GiBs here)
  output: str = 'float32'                # 'float32' (model range) or 'uint8'

  @property
  def hw(self) -> tuple[int, int]:
    s = self.size
    return (int(s), int(s)) if isinstance(s, (int, np.integer)) else (int(s[0]), int(s[1]))

  @classmethod
  def eval(cls, **kw) -> 'LoaderConfig':
    """No augmentation, no shuffling, one pass, keep the last partial batch."""
    base = dict(crop_scale=(1.0, 1.0), flip=False, shuffle=False, num_epochs=1, drop_remainder=False)
    base.update(kw)
    return cls(**base)


def data_source(path: str, split: str = 'train'):
  """`tfds.data_source` over a built dataset folder (the version folder or any folder above a single one)."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(schema.find_dataset_dir(path)).as_data_source(split=split)


# ------------------------------------------------------------------------------------------- formatting

def _unit(a: np.ndarray, scale: float) -> np.ndarray:
  """uint8 -> float32 a * scale - 1, in place after one conversion (the fastest numpy route measured)."""
  x = a.astype(np.float32)
  x *= np.float32(scale)
  x -= np.float32(1)
  return x


def _format(x: dict, output: str, tokenizer: Callable | None) -> dict:
  am, om, vis = x['amodal_mask'], x['occluder_mask'], x['visible_mask']
  if output == 'float32':
    img = lambda a: _unit(a, 2 / 255)
    vis_img = _unit(np.repeat(np.ascontiguousarray(vis).view(np.uint8)[..., None], 3, axis=-1), 2)
  elif output == 'uint8':
    img = lambda a: np.ascontiguousarray(a, np.uint8)
    vis_img = vis.view(np.uint8)
  else:
    raise ValueError(f"output must be 'float32' or 'uint8', got {output!r}")
  inter = np.count_nonzero(am & om, axis=(-1, -2))
  area = np.count_nonzero(am, axis=(-1, -2))
  out = {
      'occluded': img(x['occluded']),
      'visible_mask': vis_img,
      'amodal': img(x['amodal']),
      'amodal_mask': np.ascontiguousarray(am).view(np.uint8),
      'occluder_mask': np.ascontiguousarray(om).view(np.uint8),
      'occlusion_rate': np.where(area > 0, inter / np.maximum(area, 1), 0).astype(np.float32),
      'caption': np.str_(x['caption']),
  }
  if tokenizer is not None:
    out['input_ids'] = np.asarray(tokenizer(x['caption']), np.int32)
  return out


def to_model_range(batch: dict) -> dict:
  """uint8 batch (output='uint8') -> the float32 model ranges, with jax.numpy (use inside jit, on device)."""
  import jax.numpy as jnp
  out = dict(batch)
  for k in ('occluded', 'amodal'):
    out[k] = batch[k].astype(jnp.float32) * (2 / 255) - 1
  out['visible_mask'] = jnp.repeat(batch['visible_mask'][..., None], 3, axis=-1).astype(jnp.float32) * 2 - 1
  return out


def device_batch(batch: dict, sharding, keys: Sequence[str] | None = None) -> dict:
  """Numeric entries -> global jax.Arrays via `jax.make_array_from_process_local_data` (strings are dropped)."""
  import jax
  keys = keys or [k for k, v in batch.items() if np.asarray(v).dtype.kind in 'fiub']
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


# ------------------------------------------------------------------------------------------- transforms

class ClipTransform(grain.transforms.RandomMap):
  """A record -> one augmented clip (a random `num_frames` window)."""

  def __init__(self, cfg: LoaderConfig, tokenizer: Callable | None = None):
    self.cfg, self.tokenizer = cfg, tokenizer

  def random_map(self, rec: dict, rng: np.random.Generator) -> dict:
    n = len(rec['occluded'])
    f = self.cfg.num_frames or n
    if f > n:
      raise ValueError(f'clips hold {n} frames, {f} requested')
    t0 = int(rng.integers(0, n - f + 1))
    x = schema.decode_record(rec, range(t0, t0 + f))
    x = augment.augment_clip(x, self.cfg.hw, rng, self.cfg.crop_scale, self.cfg.flip)
    return _format(x, self.cfg.output, self.tokenizer)


class FrameTransform(grain.transforms.RandomMap):
  """A clip record (decodes one random frame) or a decoded pix2gestalt pair -> one augmented frame."""

  def __init__(self, cfg: LoaderConfig, tokenizer: Callable | None = None):
    self.cfg, self.tokenizer = cfg, tokenizer

  def random_map(self, rec: dict, rng: np.random.Generator) -> dict:
    if isinstance(rec['occluded'], np.ndarray) and rec['occluded'].dtype == np.uint8:  # decoded pair (H,W,3)
      x = {k: rec[k][None] for k in ('occluded', 'amodal', 'amodal_mask', 'occluder_mask')}
      x['caption'] = rec.get('caption', '')
    else:
      t = int(rng.integers(0, len(rec['occluded'])))
      x = schema.decode_record(rec, [t])
    x = augment.augment_clip(x, self.cfg.hw, rng, self.cfg.crop_scale, self.cfg.flip)
    out = _format(x, self.cfg.output, self.tokenizer)
    for k in ('occluded', 'visible_mask', 'amodal', 'amodal_mask', 'occluder_mask', 'occlusion_rate'):
      out[k] = out[k][0]
    return out


# ------------------------------------------------------------------------------------------- pipelines

def _absl_flags_parsed():
  """Grain's worker processes read absl flags; outside an absl app (pytest, scripts) mark them parsed with
  their defaults, or the first batch fails with UnparsedFlagAccessError."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def grain_pipeline(source, transform, cfg: LoaderConfig, process_index: int | None, process_count: int | None
                   ) -> grain.IterDataset:
  """source -> shuffle -> this process's slice -> repeat -> `transform` (a RandomMap) -> batch -> prefetch: the
  shape of every loader here (also the cached-latent reader's, `train/cache_latents.py`)."""
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  ds = grain.MapDataset.source(source)
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f'process {process_index}/{process_count} gets no records ({len(source)} in the source)')
  if cfg.num_epochs != 1:
    ds = ds.repeat(cfg.num_epochs)
  ds = ds.random_map(transform, seed=cfg.seed + 7919 * process_index)
  ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer))
  if cfg.worker_count > 0:
    _absl_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                     per_worker_buffer_size=cfg.worker_buffer_size))
  return it


def clip_dataset(path_or_source: Any, cfg: LoaderConfig, split: str = 'train', tokenizer: Callable | None = None,
                 process_index: int | None = None, process_count: int | None = None) -> grain.IterDataset:
  """Motion-stage clips. `path_or_source`: a built dataset folder or any random-access source of records."""
  src = data_source(path_or_source, split) if isinstance(path_or_source, str) else path_or_source
  return grain_pipeline(src, ClipTransform(cfg, tokenizer), cfg, process_index, process_count)


def frame_dataset(path_or_source: Any, cfg: LoaderConfig, split: str = 'train', tokenizer: Callable | None = None,
                  process_index: int | None = None, process_count: int | None = None) -> grain.IterDataset:
  """Frame-stage pairs: one random frame per clip record, or pix2gestalt pairs.

  `path_or_source`: a built dataset folder, a pix2gestalt folder (occlusion/ whole/ whole_mask/
  visible_object_mask/), or a random-access source."""
  src = path_or_source
  if isinstance(src, str):
    src = pix2gestalt.Pix2GestaltPairs(src) if pix2gestalt.is_pix2gestalt(src) else data_source(src, split)
  return grain_pipeline(src, FrameTransform(cfg, tokenizer), cfg, process_index, process_count)
