"""The train package's two jobs, what run.py dispatches to (tgvac_jax/jobs.py):

  python run.py --config configs/{frame,motion,vae}.py[:tiny]        config.job = 'train'
  python run.py --config configs/cache_latents.py:<stage>           config.job = 'cache_latents'

Their set-up lives here and nowhere else in train/: the distributed start (tgvac_jax/distributed.py, shared with
inference), the procedural dataset of tiny configs (built through data_prep) and the AnimateDiff motion weights
(read through convert/animatediff.py). Being a job entry point, this module is the only one in train/ that may
import the tools; the rest of the package is library (trainer.py is the loop, cache_latents.py the latent cache).
"""

from __future__ import annotations

import logging as std_logging
import os
from pathlib import Path

import jax
from absl import logging

from tgvac_jax import distributed
from tgvac_jax.train import cache_latents, trainer
from tgvac_jax.train.inputs import make_dataset
from tgvac_jax.train.sharding import check_rows, make_mesh
from tgvac_jax.train.stages import check_init, latent_size
from tgvac_jax.train.state import check_config, micro_batch_size, setup


def procedural_dataset(config, workdir: Path) -> str:
  """Builds (once; later calls find it) `data.procedural_videos` procedural videos into workdir/data; returns the
  dataset folder. Process 0 builds while the others wait."""
  from data_prep.builder import BuildConfig, build  # pylint: disable=import-outside-toplevel
  from data_prep.occlusion import SynthConfig  # pylint: disable=import-outside-toplevel
  from data_prep.sources.procedural import ProceduralSource  # pylint: disable=import-outside-toplevel
  c = config.data
  source = ProceduralSource(num_videos=c.procedural_videos, size=c.size, min_frames=c.clip_len + 4,
                            max_frames=c.clip_len + 8, seed=config.seed)
  cfg = BuildConfig(synth=SynthConfig(clip_len=c.clip_len, resolution=c.size), seed=config.seed)
  make = lambda: build(source, cfg, str(workdir / 'data'), progress=False).dataset_dir  # noqa: E731
  if jax.process_count() == 1:
    return make()
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:
    make()
  multihost_utils.sync_global_devices('procedural dataset')
  return make()


def motion_loader(config):
  """`setup`'s motion_init for `init.motion_adapter` (AnimateDiff mm_sd_v15_v2 / MotionAdapter), or None; it also
  says the motion norm the weights were trained with, which the UNet is built with."""
  path = config.init.motion_adapter
  if not path:
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f'init.motion_adapter {path}: no such file or folder')
  from convert.animatediff import AdapterInit  # pylint: disable=import-outside-toplevel
  return AdapterInit(path)


def _quiet_orbax(record) -> bool:
  """Orbax reports every save at INFO level; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def train(config) -> None:
  """The 'train' job: every check, then the loop (`trainer.train`)."""
  if _quiet_orbax not in logging.get_absl_handler().filters:
    logging.get_absl_handler().addFilter(_quiet_orbax)
  if config.distributed.initialize:
    distributed.initialize(config.distributed)
  workdir = Path(config.workdir).absolute()
  mesh = make_mesh(config.mesh, batch=micro_batch_size(config))
  # every bad input fails from here to setup, before anything is compiled or written under workdir; the config
  # and the starting weights first (their messages say more than a data or tokenizer error would)
  check_config(config, mesh)
  check_rows(latent_size(config, check_init(config)), mesh)
  if config.data.procedural_videos > 0 and not config.data.dataset and not config.data.cached_latents:
    config.data.dataset = procedural_dataset(config, workdir)
  iterator = iter(make_dataset(config, jax.process_index(), jax.process_count()))
  trainee = setup(config, mesh, motion_init=motion_loader(config))
  trainer.train(config, workdir, mesh, trainee, iterator)


def cache(config) -> None:
  """The 'cache_latents' job: this process's shards of the latent cache (`cache_latents.cache`)."""
  if config.distributed.initialize:
    distributed.initialize(config.distributed)
  if config.data.procedural_videos > 0 and not config.data.dataset and not config.data.pix2gestalt:
    config.data.dataset = procedural_dataset(config, Path(config.workdir).absolute())
  out = cache_latents.cache(config, jax.process_index(), jax.process_count())
  print(f'process {jax.process_index()}: its latent shards are in {out} (train with '
        f'--config.data.cached_latents={out} once every process has finished)')


_ENTRIES = {'train': train, 'cache_latents': cache}  # config.job -> its entry


def run(config) -> None:
  _ENTRIES[config.job](config)
