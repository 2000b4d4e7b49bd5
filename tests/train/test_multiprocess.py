"""Two processes on localhost (jax.distributed, CPU collectives, 4 devices each) train like one with 8 devices.

The workers load the weights from a pipeline folder (the sharded, multi-host read path of `stages`); the reference
is the same weights initialised in this process."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.train import runs, tiny
from tests.train.mp_worker import STEPS
from tgvac_jax.train import sharding
from tgvac_jax.train.checkpoints import CHECKPOINT_DIR, MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  trainee = tiny.trainee('frame')
  batches = [tiny.encode(trainee, sharding.global_batch(tiny.pixel_batch(step), trainee.mesh))
             for step in range(STEPS)]
  np.savez(tmp_path / 'batches.npz', **{f'{i}/{k}': np.asarray(v) for i, b in enumerate(batches) for k, v in b.items()})
  out = tmp_path / 'mp.npz'
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
             PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
  cmd = [sys.executable, '-m', 'tests.train.mp_worker']
  args = [str(port), tiny.frame_model(), str(tmp_path / 'batches.npz'), str(out)]
  procs = [subprocess.Popen(cmd + [str(i)] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  # the reference meanwhile: one process, 8 devices, the same config, batches and steps
  state, losses = tiny.copy_state(trainee.state), []
  for batch in batches:
    state, metrics = trainee.train_step(state, batch)
    losses.append(float(metrics['loss']))
  logs = []
  for p in procs:
    logs.append(p.communicate(timeout=1200)[0])
  assert all(p.returncode == 0 for p in procs), '\n'.join(log[-3000:] for log in logs)

  got = np.load(out)
  print(f'losses, 2 processes x 4 devices: {got["losses"]}; 1 process x 8 devices: {np.asarray(losses)}')
  np.testing.assert_allclose(got['losses'], losses, rtol=1e-6, atol=0)
  ref = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
  assert set(ref) == set(got.files) - {'losses'}
  worst = max(float(np.abs(got[k] - v).max()) for k, v in ref.items())
  print(f'params after {STEPS} steps: max |difference| {worst:.2e}')
  assert worst <= 1e-6


@pytest.mark.slow
def test_two_processes_stop_together_on_sigterm():
  """A preemption notice reaching one process of a two-process run (jax.distributed, 4 CPU devices each) stops
  both at the same step, after a committed checkpoint of that step and the exported model, with exit status 0.
  (Before: the trainer's Python SIGTERM handler hid the signal from JAX's preemption sync and both kept going.)"""
  port = _free_port()
  workdir = runs.TMP / 'two_processes'
  args = ('--config.num_steps=1000', '--config.distributed.initialize=True',
          f'--config.distributed.coordinator_address=127.0.0.1:{port}', '--config.distributed.num_processes=2')
  procs = [runs.Run(workdir, *args, f'--config.distributed.process_id={i}', devices=4, log=f'two_processes_{i}.log')
           for i in range(2)]
  procs[0].wait_for(lambda: max(procs[0].losses(), default=0) >= runs.EVERY + 2)
  procs[1].proc.send_signal(signal.SIGTERM)
  codes = [p.wait(timeout=300) for p in procs]
  assert codes == [0, 0], '\n'.join(p.output() for p in procs)
  got = runs.losses(workdir)
  stop = max(got)
  assert sorted(got) == list(range(1, stop + 1)) and stop < 1000
  steps = sorted(int(d) for d in os.listdir(workdir / CHECKPOINT_DIR) if d.isdigit())
  assert steps[-1] == stop, (steps, stop)
  assert not [p for p in (workdir / CHECKPOINT_DIR).iterdir() if 'tmp' in p.name]
  assert f'stop signal: saved step {stop}' in procs[0].output(20000), procs[0].output()
  assert (workdir / MODEL_DIR / 'unet' / 'model.safetensors').is_file()
