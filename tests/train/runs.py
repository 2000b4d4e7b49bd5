"""Training runs through `run.py` in subprocesses, shared by the trainer tests.

A tiny frame-stage config on 16 px procedural clips. Subprocesses share a persistent XLA compilation cache, so a
run repeating an earlier program skips its compile, and runs go side by side where they can (compiles are mostly
single-threaded). The reference run is started once per test process and runs in the background until a test
needs its results."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tgvac_jax.train.metrics import METRICS_FILE, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
TMP = Path(tempfile.mkdtemp(prefix='tgvac-trainer-tests-'))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
STEPS = 16            # the reference run's length
EVERY = 4             # steps between checkpoints
TINY = ('--config', 'configs/frame.py:tiny', '--config.data.size=16', '--config.data.procedural_videos=8',
        '--config.model.unet_channels=(32,)', '--config.model.vae_channels=(16,32)', '--config.model.text_width=32',
        '--config.model.text_layers=1', f'--config.checkpoint.every={EVERY}', '--config.log.every=4',
        '--config.log.val_every=0')


class Run:
  """A run.py subprocess writing into `workdir` (its output in `workdir`.log)."""

  def __init__(self, workdir: Path, *args: str, devices: int = 8, log: str = ''):
    self.workdir = workdir
    self.log = workdir.parent / (log or f'{workdir.name}.log')
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu',
               JAX_COMPILATION_CACHE_DIR=str(TMP / 'xla-cache'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    with open(self.log, 'w') as out:
      self.proc = subprocess.Popen([sys.executable, 'run.py', *TINY, f'--config.workdir={workdir}', *args],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

  def wait(self, timeout: float = 900) -> int:
    return self.proc.wait(timeout=timeout)

  def done(self) -> Path:
    """Waits for a successful end; returns the workdir."""
    assert self.wait() == 0, self.output()
    return self.workdir

  def output(self, n: int = 4000) -> str:
    return self.log.read_text()[-n:]

  def losses(self) -> dict[int, float]:
    return losses(self.workdir)

  def wait_for(self, cond, timeout: float = 900, poll: float = 0.02) -> None:
    """Polls `cond()` until it holds; fails if the process ends first."""
    t = time.time()
    while not cond():
      assert self.proc.poll() is None, f'the run ended (rc {self.proc.returncode}) too early:\n{self.output()}'
      assert time.time() - t < timeout, 'waited too long'
      time.sleep(poll)


def losses(workdir: Path) -> dict[int, float]:
  return {r['step']: r['loss'] for r in read_jsonl(workdir / METRICS_FILE)}


@functools.lru_cache(maxsize=None)
def reference() -> Run:
  """An uninterrupted STEPS-step run on 8 devices with validation GIFs at the end (started on the first call)."""
  return Run(TMP / 'reference', f'--config.num_steps={STEPS}', f'--config.log.val_every={STEPS}',
             '--config.log.val_steps=2')
