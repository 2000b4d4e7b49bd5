"""The training loop (the 'train' job's set-up, its checks and tool imports are in train/job.py):

restore the newest training checkpoint of the workdir, or start fresh -> for each step: this process's batch ->
global batch -> jitted step -> metrics (bar, metrics.jsonl, TensorBoard) -> every `checkpoint.every` steps an async
Orbax save plus the EMA pipeline export (`workdir/model/`; the diffusion stages write `config.diffusion` there as
scheduler/, the vae stage the latent scaling_factor it measures into the VAE's config) -> every `log.val_every`
steps validation GIFs (sampled with `config.diffusion`). SIGTERM (or a multi-host preemption notice) saves and
returns cleanly.

Steps count `train_step` calls: with `optim.grad_accum = k`, one optimizer step is k of them, and `num_steps`,
`checkpoint.every` and `log.*` (optimizer steps in the config) are multiplied by k here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import logging

from tgvac_jax.train import checkpoints as ckpts
from tgvac_jax.train.inputs import scale_frames
from tgvac_jax.train.metrics import MetricsLogger, peak_flops
from tgvac_jax.train.sharding import data_parallel_size, global_batch
from tgvac_jax.train.state import Trainee, TrainState
from tgvac_jax.train.step import schedule_config
from tgvac_jax.train.validate import Validator


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


def train(config, workdir: Path, mesh, trainee: Trainee, iterator) -> None:
  """Runs `config.num_steps` (resuming from the workdir's newest training checkpoint) on a set-up `trainee` and
  this process's batch `iterator` (a checkpointable Grain iterator)."""
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
