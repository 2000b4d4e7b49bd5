"""The two kinds of checkpoint the trainer writes.

Training checkpoints (`workdir/checkpoints/<step>/`, Orbax): the `TrainState` pytree, the Grain iterator
position and the config as JSON; saved asynchronously, the newest `keep` kept, and restorable onto any mesh (the
restore target is an abstract tree of `jax.ShapeDtypeStruct`s carrying this run's shardings). Orbax commits a step
folder by renaming it at the end, so a killed save never shows up as a step.

Model checkpoint (`workdir/model/`): the EMA weights as our pipeline folder (`unet/ vae/ text_encoder/
tokenizer/ scheduler/`, `models/checkpoint.py`), replaced atomically at every save; this is what inference and
`convert.to_diffusers` read.

Preemption: one process handles SIGTERM itself (Orbax's `reached_preemption` needs `jax.distributed`); several
processes agree on the stop step through `reached_preemption`, which every process calls every step.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from tgvac_jax.diffusion import ddim
from tgvac_jax.diffusion.schedule import ScheduleConfig
from tgvac_jax.diffusion.scheduler_config import Scheduler
from tgvac_jax.models.checkpoint import save_pipeline

CHECKPOINT_DIR = 'checkpoints'
MODEL_DIR = 'model'


class ResumeError(ValueError):
  """A training checkpoint that cannot be resumed here."""


class Checkpoints:
  """Orbax manager over `workdir/checkpoints` with items 'state', 'data' (Grain iterator) and 'config'."""

  def __init__(self, workdir: str | os.PathLike, config, *, keep: int = 3, async_save: bool = True):
    self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
    self.config_json = json.loads(config.to_json_best_effort())
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, iterator) -> None:
    """Starts writing `step` (device arrays are copied to host before this returns, so `state` may then be
    donated); the Grain position is the iterator's now."""
    self.manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
        config=ocp.args.JsonSave(self.config_json)))

  def restore(self, abstract_state: Any, iterator, step: int | None = None) -> Any:
    """The state of `step` (default: latest) laid out as `abstract_state` says (shapes, dtypes, shardings of this
    run's mesh); sets `iterator` to the saved data position."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ResumeError(f'no training checkpoint in {self.directory}')
    self._check_processes(step)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(iterator)))
    return restored['state']

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def _check_processes(self, step: int) -> None:
    """Grain saves one iterator position per process: the same process count is needed to resume the data
    exactly (the device count per process may differ)."""
    names = os.listdir(self.directory / str(step) / 'data')
    counts = {int(m.group(1)) for n in names if (m := re.match(r'process_\d+-of-(\d+)\.json$', n))}
    if counts and counts != {jax.process_count()}:
      raise ResumeError(f'{self.directory / str(step)} was written by {counts.pop()} processes; this run has '
                        f'{jax.process_count()}: the data position can only be resumed with as many processes '
                        '(use a fresh workdir and init.checkpoint=<its model/ folder> to start from its weights)')

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class StopSignal:
  """SIGTERM (cluster preemption, `kill`) -> stop at the end of the current step, after a checkpoint.

  One process: a Python handler sets a flag. Several: JAX's preemption sync manager (started by
  `jax.distributed.initialize`) catches the signal on whichever process gets it and the processes agree through
  the coordination service on the step to stop at; a Python handler would take SIGTERM from it, and the others
  would never hear of the notice (measured: a two-process run kept training)."""

  def __init__(self, manager: ocp.CheckpointManager | None = None):
    self.manager = manager
    self.received = False
    self.collective = jax.process_count() > 1 and manager is not None
    self._previous = None if self.collective else signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = True

  def __call__(self, step: int) -> bool:
    """Whether to stop after `step`; collective over processes when there are several (call on all, every
    step)."""
    if self.collective:
      return bool(self.manager.reached_preemption(step))
    return self.received

  def restore(self) -> None:
    if not self.collective:
      signal.signal(signal.SIGTERM, self._previous)


def export_pipeline(out: str | os.PathLike, modules: Mapping[str, nnx.Module], tokenizer_dir: str | None,
                    schedule: ScheduleConfig | None = None) -> Path:
  """Writes the pipeline folder `out` (components, a copy of the tokenizer and, for the diffusion stages, the
  `schedule` they trained with as scheduler/, with the DDIM spacing that schedule needs, which inference samples
  with) atomically, from process 0.
  `modules` must be addressable here (`Trainee.export_modules` gathers them to every process)."""
  out = Path(out).absolute()
  if jax.process_index() == 0:
    save_pipeline(out, modules, {'tokenizer': tokenizer_dir} if tokenizer_dir else None,
                  scheduler=Scheduler(schedule, ddim.for_schedule(schedule)) if schedule is not None else None)
    logging.info('exported EMA weights to %s', out)
  return out
