"""The trainer's data: this process's slice of every global batch, endless, deterministic in the seed and
checkpointable (`iter(ds)` is a Grain iterator with get_state/set_state).

Pixels (uint8, converted on device): frames for the frame and VAE stages (one random frame per clip record, and/or
pix2gestalt pairs), `clip_len`-frame clips for the motion stage. Or cached latents (`data.cached_latents`, written
by `configs/cache_latents.py`), which the step reads instead of running the VAE and text encoder.
"""

from __future__ import annotations

import os

import grain
import numpy as np

from tgvac_jax import text
from tgvac_jax.data import pix2gestalt
from tgvac_jax.data.pipeline import FrameTransform, LoaderConfig, clip_dataset, data_source, frame_dataset
from tgvac_jax.train import stages
from tgvac_jax.train.cache_latents import latent_dataset
from tgvac_jax.train.latents import PIXEL_KEYS
from tgvac_jax.train.state import micro_batch_size


class NoRecordsError(FileNotFoundError):
  """A dataset path that holds no training records."""


def local_batch_size(config, process_count: int) -> int:
  micro = micro_batch_size(config)
  if micro % process_count:
    raise ValueError(f'batch size {micro} is not divisible by the {process_count} processes')
  return micro // process_count


def _paths(config, stage) -> list[str]:
  paths = [config.data.dataset] if config.data.dataset else []
  if stage.name != 'motion':
    paths += [p.strip() for p in config.data.pix2gestalt.split(',') if p.strip()]
  if not paths:
    raise NoRecordsError(f'stage {stage.name!r}: no training data: set data.dataset (a built dataset folder)'
                         + ('' if stage.name == 'motion' else ' and/or data.pix2gestalt') + ' or data.cached_latents')
  return paths


def _source(path: str):
  """A random-access source of records: a built dataset or a pix2gestalt folder; NoRecordsError if empty."""
  if not os.path.exists(path):
    raise NoRecordsError(f'{path}: no such dataset folder')
  try:
    src = pix2gestalt.Pix2GestaltPairs(path) if pix2gestalt.is_pix2gestalt(path) else data_source(path)
  except FileNotFoundError as e:
    raise NoRecordsError(f'{path}: no training records ({e})') from e
  if len(src) == 0:
    raise NoRecordsError(f'{path}: the dataset has no training records')
  return src


def _training_source(config, stage):
  """Every training record of the stage (data.dataset and pix2gestalt folders, concatenated)."""
  sources = [_source(p) for p in _paths(config, stage)]
  return sources[0] if len(sources) == 1 else grain.MapDataset.concatenate(
      [grain.MapDataset.source(s) for s in sources])


def make_dataset(config, process_index: int, process_count: int) -> grain.IterDataset:
  """This process's batches (batch_size // grad_accum // process_count examples each); see the module docstring.
  Several frame sources (data.dataset and pix2gestalt folders) are concatenated before shuffling, so each is
  drawn in proportion to its size. Raises NoRecordsError for a dataset path without records."""
  stage = stages.get_stage(config)
  batch = local_batch_size(config, process_count)
  if config.data.cached_latents:
    if stage.name == 'vae':
      raise ValueError('the vae stage trains on pixels: unset data.cached_latents')
    return latent_dataset(config.data.cached_latents, batch_size=batch, seed=config.data.shuffle_seed,
                          process_index=process_index, process_count=process_count,
                          worker_count=config.data.worker_count, stage=stage.name, clip_len=config.data.clip_len,
                          config=config)
  source = _training_source(config, stage)
  tokenizer = None
  if stage.name != 'vae':
    tokenizer = text.Tokenize(stages.ensure_tokenizer(config)[0])
  loader = LoaderConfig(batch_size=batch, size=config.data.size,
                        num_frames=config.data.clip_len if stage.video else None, seed=config.data.shuffle_seed,
                        worker_count=config.data.worker_count, output='uint8')
  make = clip_dataset if stage.video else frame_dataset
  ds = make(source, loader, tokenizer=tokenizer, process_index=process_index, process_count=process_count)
  keys = PIXEL_KEYS if tokenizer is not None else tuple(k for k in PIXEL_KEYS if k != 'input_ids')
  return ds.map(lambda b: {k: b[k] for k in keys})


def scale_frames(config, count: int) -> np.ndarray:
  """`count` amodal training frames, uint8 (count, size, size, 3), spread evenly over the training records and the
  same at every call: the fixed sample the vae stage measures its latent scaling_factor on."""
  source = _training_source(config, stages.get_stage(config))
  transform = FrameTransform(LoaderConfig.eval(size=config.data.size, output='uint8'))
  return np.stack([transform.random_map(source[i * len(source) // count], np.random.default_rng(i))['amodal']
                   for i in range(count)])
