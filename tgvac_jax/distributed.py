"""Starting and ending a multi-process run (`jax.distributed`), shared by the training and the inference jobs.

`initialize(config.distributed)` fills `jax.distributed.initialize` from a config's `distributed` block; unset
fields come from the cluster (TPU pods, SLURM and Open MPI set them in the environment).

Independent processes (batch inference: each completes its own share of the videos; no collective ever crosses
processes) must not take each other down. By default the coordination service does exactly that: a process that
exits waits at a shutdown barrier for all the others and aborts every process when it times out (300 s), and one
that dies aborts the rest after the heartbeat timeout (100 s); both were seen here with jax 0.10.2. With
`independent=True` the run is a recoverable one (`jax_enable_recoverability`): a process may end early, stopped or
killed, and the others go on. Process 0 alone cannot leave early: it hosts the coordination service, and the
others abort when it goes, so `wait_for_peers` holds it until every other process has ended (a killed one counts as
ended after the heartbeat timeout).
"""

from __future__ import annotations

import threading

import ml_collections
from absl import logging

# jax is imported inside the functions: configs import `config()`, and run.py reads a config before it needs jax
# (--help stays fast)

_FINISHED = 'tgvac/finished/'  # key-value store: what each process reports when it ends (see `report_end`)
_STOP = 'tgvac/stop'           # set by process 0 when it is stopped: the others stop too


def config() -> ml_collections.ConfigDict:
  """The `distributed` block of a job config."""
  d = ml_collections.ConfigDict()
  d.initialize = False           # jax.distributed.initialize() (unset fields below: from the cluster's environment)
  d.coordinator_address = ''     # host:port of process 0
  d.num_processes = 0
  d.process_id = -1
  d.heartbeat_timeout_s = 100    # a process silent this long counts as dead
  return d


def initialize(d, *, independent: bool = False) -> None:
  """`jax.distributed.initialize` with the configured fields (before any computation). independent: processes that
  never communicate (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel
  kw = {'heartbeat_timeout_seconds': int(d.get('heartbeat_timeout_s', 100))}
  if d.coordinator_address:
    kw['coordinator_address'] = d.coordinator_address
  if d.num_processes > 0:
    kw['num_processes'] = int(d.num_processes)
  if d.process_id >= 0:
    kw['process_id'] = int(d.process_id)
  if independent:
    jax.config.update('jax_enable_recoverability', True)
  jax.distributed.initialize(**kw)
  logging.info('process %d of %d, %d local / %d devices', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _processes() -> tuple[int, int]:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index(), jax.process_count()


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel  (no public client)
  return jax_distributed.global_state.client


def stop_requested() -> bool:
  """Whether process 0 was stopped and asked the others to stop (False on one process)."""
  if _processes()[1] == 1:
    return False
  try:
    _client().key_value_try_get(_STOP)
  except Exception:  # pylint: disable=broad-except  (NOT_FOUND: nobody asked)
    return False
  return True


def request_stop() -> None:
  """Process 0, stopping: the other processes stop after their current work too (they poll `stop_requested`)."""
  index, count = _processes()
  if count > 1 and index == 0:
    _client().key_value_set(_STOP, '1', allow_overwrite=True)


def report_end(summary: str) -> None:
  """This process's last word for process 0's log ('complete', 'stopped: ...')."""
  index, count = _processes()
  if count > 1:
    _client().key_value_set(_FINISHED + str(index), summary, allow_overwrite=True)


def wait_for_peers(poll_s: float = 1.0) -> dict[int, str]:
  """Process 0 of an independent run: returns when every other process has ended, with what each reported
  ({process: summary}; 'ended without a report (killed or crashed?)' for one that died). Other processes return
  at once."""
  index, n = _processes()
  if n == 1 or index != 0:
    return {}
  client = _client()
  others = list(range(1, n))
  ended = threading.Event()
  # get_live_nodes returns once every other process has ended (or is also asking): it runs aside, so that a SIGTERM
  # meanwhile still reaches this process's Python handler (which may `request_stop`)
  threading.Thread(target=lambda: (client.get_live_nodes(list(range(n))), ended.set()), daemon=True).start()
  logging.info('process 0 waits for processes %s to end (it hosts the coordination service they use)', others)
  while not ended.wait(poll_s):
    pass
  reports = dict(client.key_value_dir_get(_FINISHED))
  out = {i: reports.get(_FINISHED + str(i), 'ended without a report (killed or crashed?)') for i in others}
  for i, summary in out.items():
    logging.info('process %d: %s', i, summary)
  return out
