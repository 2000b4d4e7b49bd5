"""The training job: `python run.py --config configs/{frame,motion,vae}.py[:tiny]`.

setup (every check, before any compile) -> restore the newest training checkpoint of the workdir, or start fresh
-> for each step: this process's batch -> global batch -> jitted step -> metrics (bar, metrics.jsonl, TensorBoard)
-> every `checkpoint.every` steps an async Orbax save plus the EMA pipeline export (`workdir/model/`; the diffusion
stages write `config.diffusion` there as scheduler/, the vae stage the latent scaling_factor it measures into the
VAE's config) -> every `log.val_every` steps validation GIFs (sampled with `config.diffusion`). SIGTERM (or a
multi-host preemption notice) saves and returns cleanly.

Steps count `train_step` calls: with `optim.grad_accum = k`, one optimizer step is k of them, and `num_steps`,
`checkpoint.every` and `log.*` (optimizer steps in the config) are multiplied by k here.

A job entry, so it may reach into the tools: it builds the procedural dataset of tiny configs (data_prep) and
reads AnimateDiff motion weights (convert/animatediff.py) for `setup`.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import os
from pathlib import Path

import jax
from absl import logging

from tgvac_jax.train import checkpoints as ckpts
from tgvac_jax.train.inputs import make_dataset, scale_frames
from tgvac_jax.train.metrics import MetricsLogger, peak_flops
from tgvac_jax.train.sharding import data_parallel_size, global_batch, make_mesh
from tgvac_jax.train.stages import check_init
from tgvac_jax.train.state import Trainee, TrainState, check_config, setup
from tgvac_jax.train.step import schedule_config
from tgvac_jax.train.validate import Validator


def initialize_distributed(config) -> None:
  """`jax.distributed.initialize` with the configured fields; unset ones come from the cluster (TPU pods,
  SLURM, Open MPI set them in the environment)."""
  d = config.distributed
  kw = {}
  if d.coordinator_address:
    kw['coordinator_address'] = d.coordinator_address
  if d.num_processes > 0:
    kw['num_processes'] = int(d.num_processes)
  if d.process_id >= 0:
    kw['process_id'] = int(d.process_id)
  jax.distributed.initialize(**kw)
  logging.info('process %d of %d, %d local / %d devices', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


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
  """`setup`'s motion_init for `init.motion_adapter` (AnimateDiff mm_sd_v15_v2 / MotionAdapter), or None."""
  path = config.init.motion_adapter
  if not path:
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f'init.motion_adapter {path}: no such file or folder')
  from convert.animatediff import load_motion  # pylint: disable=import-outside-toplevel
  return lambda unet: load_motion(unet, path)


SCALE_FRAMES = 32  # at least this many training frames measure the vae stage's latent scale at each export


def export_modules(trainee: Trainee, state: TrainState, frames) -> dict:
  """The EMA modules to export. With `frames` (the vae stage), the VAE's config carries its own scaling_factor,
  measured on them with these weights: a from-scratch VAE's latents are not SD's, so 0.18215 would not fit."""
  modules = trainee.export_modules(state)
  if frames is not None:
    scale = trainee.latent_scale(state, frames)
    logging.info('latent scaling_factor %.6g: 1 / std of the EMA VAE posterior means of %d training frames', scale,
                 len(frames))
    modules['vae'].config = dataclasses.replace(modules['vae'].config, scaling_factor=scale)
  return modules


def _quiet_orbax(record) -> bool:
  """Orbax reports every save at INFO level; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def run(config) -> None:
  if _quiet_orbax not in logging.get_absl_handler().filters:
    logging.get_absl_handler().addFilter(_quiet_orbax)
  if config.distributed.initialize:
    initialize_distributed(config)
  workdir = Path(config.workdir).absolute()
  mesh = make_mesh(config.mesh)
  # every bad input fails from here to setup, before anything is compiled or written under workdir; the config
  # and the starting weights first (their messages say more than a data or tokenizer error would)
  check_config(config, mesh)
  check_init(config)
  if config.data.procedural_videos > 0 and not config.data.dataset and not config.data.cached_latents:
    config.data.dataset = procedural_dataset(config, workdir)
  iterator = iter(make_dataset(config, jax.process_index(), jax.process_count()))
  trainee = setup(config, mesh, motion_init=motion_loader(config))
  frames = None
  if trainee.stage.name == 'vae':  # a fixed sample, the same number per data-parallel shard
    dp = data_parallel_size(mesh)
    frames = scale_frames(config, -(-SCALE_FRAMES // dp) * dp)
  checkpoints = ckpts.Checkpoints(workdir, config, keep=config.checkpoint.keep,
                                  async_save=config.checkpoint.async_save)
  state = trainee.state
  if checkpoints.latest_step() is not None:
    abstract = trainee.abstract_state()
    trainee.state = state = None  # free the fresh state before the restored one arrives
    state = checkpoints.restore(abstract, iterator)
    logging.info('resumed from %s at step %d', checkpoints.directory, int(state.step))
  start = int(state.step)

  k = int(config.optim.grad_accum)
  total, save_every, log_every = config.num_steps * k, config.checkpoint.every * k, config.log.every * k
  val_every = config.log.val_every * k
  validator = Validator(config, workdir) if val_every > 0 else None
  schedule = schedule_config(config) if trainee.stage.name != 'vae' else None  # exported as scheduler/
  stop = ckpts.StopSignal(checkpoints.manager)
  logger = MetricsLogger(workdir, start_step=start, num_steps=total, batch_size=config.batch_size // k,
                         every=log_every, peak=peak_flops(configured=config.log.peak_flops))
  try:
    for step in range(start + 1, total + 1):
      state, metrics = trainee.train_step(state, global_batch(next(iterator), mesh))
      logger.flops = trainee.flops_per_step
      logger.push(step, metrics)
      stopping = stop(step)
      modules = None
      if step % save_every == 0 or step == total or stopping:
        with logger.paused():
          checkpoints.save(step, state, iterator)
          modules = export_modules(trainee, state, frames)
          ckpts.export_pipeline(workdir / ckpts.MODEL_DIR, modules, trainee.tokenizer_dir, schedule)
      if validator is not None and step % val_every == 0:
        with logger.paused():
          validator(step, modules or trainee.export_modules(state), trainee.tokenizer_dir, logger)
      if stopping:
        logger.message(f'stop signal: saved step {step} to {checkpoints.directory}; exiting')
        break
  finally:
    logger.close()
    stop.restore()
    checkpoints.close()  # waits for the last async save
