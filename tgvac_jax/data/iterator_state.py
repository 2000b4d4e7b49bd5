"""Saving and restoring a Grain iterator's position with Orbax, next to the model state.

In a trainer's `ocp.CheckpointManager`, put the iterator under its own item:

    mngr.save(step, args=ocp.args.Composite(state=..., data=save_args(iterator)))
    mngr.restore(step, args=ocp.args.Composite(state=..., data=restore_args(iterator)))

(`grain.checkpoint.CheckpointSave/Restore` go through Grain's Orbax handler; each process writes its own JSON, so
multi-host runs resume every process's shard.) `save`/`restore` below are the same for a standalone folder.
"""

from __future__ import annotations

import grain


def save_args(iterator) -> grain.checkpoint.CheckpointSave:
  return grain.checkpoint.CheckpointSave(iterator)


def restore_args(iterator) -> grain.checkpoint.CheckpointRestore:
  return grain.checkpoint.CheckpointRestore(iterator)


def save(directory: str, step: int, iterator, key: str = 'data') -> None:
  """Writes the iterator state of `step` under `directory` (an Orbax CheckpointManager folder)."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(directory) as mngr:
    mngr.save(step, args=ocp.args.Composite(**{key: save_args(iterator)}))
    mngr.wait_until_finished()


def restore(directory: str, iterator, step: int | None = None, key: str = 'data'):
  """Sets `iterator` to the saved position (latest step if None); returns it."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(directory) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {directory}')
    mngr.restore(step, args=ocp.args.Composite(**{key: restore_args(iterator)}))
  return iterator
