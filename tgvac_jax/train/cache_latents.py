"""Cached latents: encode a built dataset once with the frozen VAE and text encoder, then train from the latents.

  python run.py --config configs/cache_latents.py:motion --config.cache.out=latents/ --config.data.dataset=data/
  python run.py --config configs/motion.py --config.data.cached_latents=latents/

One record per dataset record (a whole stored clip, or a pix2gestalt pair as a 1-frame clip), resized to
`data.size` without random crops or flips, holding what `latents.encode_batch` gives for it: the VAE posterior
(mean, std) of the amodal target, posterior means of the occluded frames and of the visible-mask image, the text
embeddings and the token ids. The step draws the target latent from (mean, std) with its own key, so training
from the cache equals training from the same pixels. The trainer's reader (`latent_dataset`) picks one random
frame per record for the frame stage, a random `clip_len` window for the motion stage.

On disk (`cache.out`, default `<workdir>/latents`):
  <split>.json                              settings, record layout, shard list (written first)
  <split>-<k>-of-<n>.array_record           shard k: records [k * shard_size, (k + 1) * shard_size), in order;
                                            each record is `np.savez` bytes (read with allow_pickle=False)
Shards are written under a hidden temporary name and renamed when complete, so a killed run leaves no partial
shard visible and a rerun encodes only the missing ones. Process i of n encodes shards i, i + n, ... (shards,
not single records, so a rerun with another process count still finds the finished ones).

Library: the job (`config.job = 'cache_latents'`, its distributed start and procedural dataset) is train/job.py.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from tgvac_jax import text
from tgvac_jax.data import pix2gestalt
from tgvac_jax.data.pipeline import LoaderConfig, clip_dataset, data_source, frame_dataset, grain_pipeline
from tgvac_jax.train import stages
from tgvac_jax.train.latents import LATENT_KEYS, encode_batch
from tgvac_jax.train.sharding import make_mesh

FORMAT = 'tgvac-latents-1'
WRITER_OPTIONS = 'group_size:1'  # one record per chunk: random access reads only that record
FRAME_KEYS = ('target_mean', 'target_std', 'occluded', 'mask')  # per-frame latents (F, h, w, c); the rest per clip


class CacheError(FileNotFoundError):
  """A cache folder that is missing, incomplete or made with other settings."""


# ------------------------------------------------------------------------------------------- records

def encode_record(arrays: dict[str, Any]) -> bytes:
  """A record's arrays (and str/int scalars) -> `np.savez` bytes (no pickle)."""
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  return buf.getvalue()


def decode_record(data: bytes) -> dict[str, np.ndarray]:
  with np.load(io.BytesIO(data), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def shard_name(split: str, k: int, n: int) -> str:
  return f'{split}-{k:05d}-of-{n:05d}.array_record'


def read_metadata(path: str | os.PathLike, split: str = 'train') -> dict:
  meta_path = Path(path) / f'{split}.json'
  if not meta_path.is_file():
    raise CacheError(f'{path}: no cached latents for split {split!r} ({meta_path.name} missing; write them with '
                     '`python run.py --config configs/cache_latents.py:<stage>`)')
  meta = json.loads(meta_path.read_text())
  if meta.get('format') != FORMAT:
    raise CacheError(f'{meta_path}: not a latent cache of format {FORMAT!r}')
  return meta


def shard_paths(path: str | os.PathLike, meta: dict) -> list[Path]:
  """Every shard, in record order; raises CacheError naming the missing ones (an unfinished cache)."""
  paths = [Path(path) / s['file'] for s in meta['shards']]
  missing = [p.name for p in paths if not p.is_file()]
  if missing:
    raise CacheError(f'{path}: incomplete latent cache, {len(missing)} of {len(paths)} shards missing '
                     f'({", ".join(missing[:3])}{", ..." if len(missing) > 3 else ""}); rerun the cache command')
  return paths


# ------------------------------------------------------------------------------------------- the reader

class PickExample(grain.transforms.RandomMap):
  """A record -> one training example: a random frame (no frame axis) or a random `clip_len` window, drawing
  from the rng as the pixel pipeline's transforms do (one integer), so a seed picks the same frames."""

  def __init__(self, clip_len: int | None):
    self.clip_len = clip_len

  def random_map(self, data: bytes, rng: np.random.Generator) -> dict:
    rec = decode_record(data)
    n = len(rec['target_mean'])
    if self.clip_len is None:
      t = int(rng.integers(0, n))
      pick = lambda a: a[t]  # noqa: E731
    else:
      if self.clip_len > n:
        raise ValueError(f'cached clips hold {n} frames, clip_len {self.clip_len} requested')
      t0 = int(rng.integers(0, n - self.clip_len + 1))
      pick = lambda a: a[t0:t0 + self.clip_len]  # noqa: E731
    return {k: pick(rec[k]) if k in FRAME_KEYS else rec[k] for k in LATENT_KEYS}


def check_compatible(meta: dict, config) -> None:
  """A cache made with other weights, size or compute dtype than `config` trains would not equal pixel
  training: one error naming every difference."""
  want = json.loads(json.dumps(settings(config)))
  diff = [f'{k}: cache {meta["settings"].get(k)!r}, config {v!r}' for k, v in want.items()
          if k not in ('stage', 'clip_len') and meta['settings'].get(k) != v]
  if diff:
    raise ValueError('cached latents were made with other settings than this run (' + '; '.join(diff) + ')')


def latent_dataset(path: str, split: str = 'train', *, batch_size: int, seed: int = 0, process_index: int = 0,
                   process_count: int = 1, worker_count: int = 0, stage: str | None = None,
                   clip_len: int | None = None, config=None) -> grain.IterDataset:
  """The trainer's batches from a cache: {target_mean, target_std, occluded, mask (B, [F,] h, w, c), context
  (B, S, D), input_ids (B, L)}, this process's slice, shuffled by `seed`, endless, checkpointable.

  `stage`: 'frame' (one random frame per record) or 'motion' (`clip_len`-frame windows); default: the stage the
  cache was made for, with its clip_len. `config`: the training config, checked against the cache's settings."""
  meta = read_metadata(path, split)
  if config is not None:
    check_compatible(meta, config)
  stage = stage or meta['settings']['stage']
  if stage not in ('frame', 'motion'):
    raise ValueError(f'latent caches serve the frame and motion stages, not {stage!r}')
  if stage == 'motion':
    clip_len = clip_len or meta['settings']['clip_len']
    if not clip_len:
      raise ValueError(f'{path} was cached for the frame stage: give clip_len for motion-stage windows')
  source = grain.sources.ArrayRecordDataSource([str(p) for p in shard_paths(path, meta)])
  if len(source) == 0:
    raise CacheError(f'{path}: the latent cache holds no records')
  cfg = LoaderConfig(batch_size=batch_size, seed=seed, worker_count=worker_count, num_epochs=None)
  return grain_pipeline(source, PickExample(clip_len if stage == 'motion' else None), cfg, process_index,
                        process_count)


# ------------------------------------------------------------------------------------------- the writer

def settings(config) -> dict:
  """What the cached values depend on (recorded in the metadata, compared by `check_compatible`)."""
  return {
      'stage': config.stage,
      'clip_len': int(config.data.clip_len) if config.stage == 'motion' else None,
      'size': int(config.data.size),
      'compute_dtype': config.compute_dtype,
      'init_checkpoint': '' if config.init.from_scratch else os.path.abspath(config.init.checkpoint),
      'from_scratch': bool(config.init.from_scratch),
      'seed': int(config.seed) if config.init.from_scratch else None,  # scratch weights come from the seed
      'model': config.model.to_dict() if config.init.from_scratch else None,
  }


class _Slice:
  """Records [start, stop) of a random-access source."""

  def __init__(self, source, start: int, stop: int):
    self.source, self.start, self.stop = source, start, stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, i: int):
    return self.source[self.start + i]


def _pixel_source(config, split: str):
  """(random-access source of records, is_pairs): a built dataset, or one pix2gestalt folder (frame stage)."""
  pairs = [p.strip() for p in config.data.pix2gestalt.split(',') if p.strip()]
  if config.data.dataset and pairs or len(pairs) > 1:
    raise ValueError('cache one data source at a time (data.dataset or one data.pix2gestalt folder), each into '
                     'its own cache.out')
  if pairs:
    if config.stage != 'frame':
      raise ValueError('pix2gestalt pairs are single frames: cache them for the frame stage')
    return pix2gestalt.Pix2GestaltPairs(pairs[0]), True
  if not config.data.dataset:
    raise ValueError('set data.dataset (a built dataset folder) or data.pix2gestalt')
  if not os.path.exists(config.data.dataset):
    raise FileNotFoundError(f'data.dataset {config.data.dataset}: no such folder')
  return data_source(config.data.dataset, split), False


def encode_program(vae_def: nnx.GraphDef, te_def: nnx.GraphDef):
  """The cache's one program: ((vae, text encoder) weights, pixel batch) -> `encode_batch` latents, jitted."""
  return jax.jit(lambda frozen, batch: encode_batch(nnx.merge(vae_def, frozen[0]), nnx.merge(te_def, frozen[1]),
                                                    batch))


class Encoder:
  """The frozen VAE and text encoder of the run, replicated on this process's devices; `__call__` encodes one
  pixel batch (padded to a fixed size, so one compile serves every batch) and returns numpy latents."""

  def __init__(self, config, configs: dict, vocab_size: int, batch_size: int):
    devices = jax.local_devices()
    self.mesh = make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1}), devices)
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    models = stages.build_models(config, self.mesh, configs, vocab_size)
    (self.vae_def, vae), (self.te_def, te) = nnx.split(models['vae']), nnx.split(models['text_encoder'])
    self.frozen = (vae, te)
    self._fn = encode_program(self.vae_def, self.te_def)

  def __call__(self, batch: dict) -> dict[str, np.ndarray]:
    n = len(batch['input_ids'])
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], self.batch_size - n, axis=0)])  # noqa: E731
    sharding = NamedSharding(self.mesh, P('data'))
    x = {k: jax.device_put(pad(np.asarray(batch[k])), sharding)
         for k in ('occluded', 'visible_mask', 'amodal', 'input_ids')}
    out = jax.device_get(self._fn(self.frozen, x))
    return {k: np.asarray(v)[:n] for k, v in out.items()}


def _same_metadata(out: Path, split: str, meta: dict) -> bool:
  """True when `<split>.json` exists (an earlier or concurrent run) with this content; an error when it differs."""
  path = out / f'{split}.json'
  if not path.exists():
    return False
  old = json.loads(path.read_text())
  if old != json.loads(json.dumps(meta)):  # tuples -> lists, as read back
    diff = sorted(k for k in set(old) | set(meta) if old.get(k) != json.loads(json.dumps(meta.get(k))))
    raise ValueError(f'{path} exists with other settings ({", ".join(diff)} differ): remove the folder or choose '
                     'another cache.out')
  return True


def _write_metadata(out: Path, split: str, meta: dict) -> None:
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / f'.{split}.json.tmp-{os.getpid()}'
  tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + '\n')
  os.replace(tmp, out / f'{split}.json')


def _write_shard(path: Path, records) -> None:
  """Writes the records to a hidden temporary file renamed to `path` at the end (removed on any error)."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.unlink(missing_ok=True)  # left by a killed run (only this shard's owner writes this name)
  writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
  try:
    for data in records:
      writer.write(data)
    writer.close()
    os.replace(tmp, path)
  except BaseException:
    writer.close()
    tmp.unlink(missing_ok=True)
    raise


def cache(config, process_index: int = 0, process_count: int = 1) -> Path:
  """Encodes this process's unfinished shards of `config.data.*` into `config.cache.out`; returns that folder.
  Every check runs before anything is compiled or written."""
  c = config.cache
  if config.stage not in ('frame', 'motion'):
    raise ValueError(f'latent caches serve the frame and motion stages, not {config.stage!r}')
  if c.shard_size < 1 or c.batch_size < 1:
    raise ValueError(f'cache.shard_size ({c.shard_size}) and cache.batch_size ({c.batch_size}) must be >= 1')
  source, pairs = _pixel_source(config, c.split)
  total = len(source)
  if total == 0:
    raise CacheError(f'{config.data.dataset or config.data.pix2gestalt}: no records in split {c.split!r}')
  n_shards = -(-total // c.shard_size)
  shards = [{'file': shard_name(c.split, k, n_shards), 'start': k * c.shard_size,
             'count': min(c.shard_size, total - k * c.shard_size)} for k in range(n_shards)]
  configs = stages.check_init(config)
  tokenizer_dir, vocab = stages.ensure_tokenizer(config)
  out = Path(c.out or os.path.join(config.workdir, 'latents'))
  meta = {'format': FORMAT, 'split': c.split, 'num_records': total, 'shard_size': int(c.shard_size),
          'shards': shards, 'settings': settings(config), 'keys': list(LATENT_KEYS) + ['caption', 'index'],
          'source': os.path.abspath(config.data.dataset or config.data.pix2gestalt)}
  written = _same_metadata(out, c.split, meta)
  mine = [s for s in shards[process_index::process_count] if not (out / s['file']).is_file()]
  if not mine:
    return out
  encoder = Encoder(config, configs, vocab, c.batch_size)
  if not written:
    _write_metadata(out, c.split, meta)
  tokenizer = text.Tokenize(tokenizer_dir)
  loader = LoaderConfig.eval(batch_size=c.batch_size, size=config.data.size, worker_count=config.data.worker_count,
                             output='uint8')
  bar = tqdm(total=sum(s['count'] for s in shards[process_index::process_count]), unit='rec',
             desc=f'latents {process_index + 1}/{process_count}',
             initial=sum(s['count'] for s in shards[process_index::process_count] if s not in mine))

  def records(shard):
    part = _Slice(source, shard['start'], shard['start'] + shard['count'])
    make = frame_dataset if pairs else clip_dataset
    index = shard['start']
    for batch in make(part, loader, tokenizer=tokenizer, process_index=0, process_count=1):
      if pairs:  # frames -> 1-frame clips
        batch = {k: v[:, None] if k in ('occluded', 'visible_mask', 'amodal') else v for k, v in batch.items()}
      z = encoder(batch)
      for i, caption in enumerate(batch['caption']):
        yield encode_record({**{k: z[k][i] for k in LATENT_KEYS}, 'caption': str(caption), 'index': index})
        index += 1
        bar.update(1)

  try:
    for shard in mine:
      _write_shard(out / shard['file'], records(shard))
  finally:
    bar.close()
  return out

