"""Batch inference as a cluster runs it: `run.py --config configs/infer.py` over a DAVIS-style root as two
`jax.distributed` processes x 4 CPU devices on localhost, against the same command as one process.

Process 1 gets a SIGTERM while its first model call (with its compile) is under way: it writes that sequence,
starts no other and exits 143, leaving no partial folder; process 0 completes its own share meanwhile and exits 0.
A rerun with another seed is refused before anything is compiled; the rerun (one process: any count will do)
skips the finished sequences, their files untouched, and completes the rest. The union of the outputs equals the
one-process run's byte for byte (completion.json in what the result depends on, not in timings, devices or process
ids). Slow tier: a SIGTERM to process 0 stops both; a process
killed outright does not take the other down, and process 0 waits for a busy process 1 (it hosts the coordination
service).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import object_labels, write_frames, write_masks  # noqa: E402
from tgvac_jax.infer import job, outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAMES = ('bear', 'car', 'dog', 'emu')  # process 0: bear, dog; process 1: car, emu
RUN_FIELDS = ('timings', 'devices', 'load_s', 'config')  # completion.json: how and where it ran, not what


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _Infer:
  """One `run.py --config configs/infer.py` process on 4 CPU devices (its output in <out>.<process>.log)."""

  def __init__(self, tmp: Path, checkpoint: Path, root: Path, out: Path, process: int = 0, port: int = 0,
               extra: tuple[str, ...] = ()):
    self.log = out.parent / f'{out.name}.{process}.log'
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
               JAX_COMPILATION_CACHE_DIR=str(tmp / 'xla-cache'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    args = ['--config', 'configs/infer.py', f'--config.checkpoint={checkpoint}', f'--config.root={root}',
            f'--config.out={out}', '--config.sampler.window_length=4', '--config.sampler.stride=2',
            '--config.sampler.steps=2', '--config.mask_threshold=0.8', '--config.preview_height=64',
            '--config.batch_size=1', *extra]  # one sequence per model call: a stop can fall between two
    if port:
      args += ['--config.distributed.initialize=True', f'--config.distributed.coordinator_address=127.0.0.1:{port}',
               '--config.distributed.num_processes=2', f'--config.distributed.process_id={process}']
    with open(self.log, 'w') as f:
      self.proc = subprocess.Popen([sys.executable, 'run.py', *args], cwd=ROOT, env=env, stdout=f,
                                   stderr=subprocess.STDOUT)

  def output(self) -> str:
    return self.log.read_text()

  def wait(self, timeout: float = 900) -> int:
    return self.proc.wait(timeout=timeout)

  def wait_for(self, text: str, timeout: float = 900) -> None:
    t = time.time()
    while text not in self.output():
      assert self.proc.poll() is None, f'ended (rc {self.proc.returncode}) before {text!r}:\n{self.output()[-3000:]}'
      assert time.time() - t < timeout, f'no {text!r} after {timeout} s'
      time.sleep(0.05)


def _pair(tmp, checkpoint, root, out, *extra) -> list[_Infer]:
  port = _free_port()
  return [_Infer(tmp, checkpoint, root, out, i, port, extra) for i in range(2)]


def _files(folder: Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _result_info(data: bytes) -> dict:
  info = {k: v for k, v in json.loads(data).items() if k not in RUN_FIELDS}
  del info['settings']['batch_size']  # the rerun's
  return info


def _davis(root: Path) -> None:
  for k, name in enumerate(NAMES):  # one shape: one compile per process
    write_frames(root / 'JPEGImages' / name, 5, (20, 24), seed=k)
    write_masks(root / 'Annotations' / name, object_labels(5, (20, 24)), palette=True)
  (root / 'captions.json').write_text(json.dumps({n: f'a small {n}' for n in NAMES}))


def test_two_processes_equal_one_and_stop_cleanly(tmp_path, tiny_checkpoint):
  root = tmp_path / 'davis'
  _davis(root)
  one, two = tmp_path / 'one', tmp_path / 'two'

  reference = _Infer(tmp_path, tiny_checkpoint, root, one)  # side by side: compiles are mostly single-threaded
  procs = _pair(tmp_path, tiny_checkpoint, root, two)
  procs[1].wait_for('process 1: completing car')  # past its stop check: the call (and its compile) runs to its end
  procs[1].proc.send_signal(signal.SIGTERM)
  codes = [p.wait() for p in procs]
  assert codes == [0, job.EXIT_STOPPED], '\n'.join(p.output()[-3000:] for p in procs)
  assert sorted(p.name for p in two.iterdir()) == ['bear', 'car', 'dog']  # no partial folder, no temporary
  assert 'stopped with 1 sequences of this process left (emu)' in procs[1].output()
  assert 'process 1: 1 completed, 0 already done, 1 left by a stop' in procs[0].output()
  stamps = {p: p.stat().st_mtime_ns for p in two.rglob('*')}

  assert reference.wait() == 0, reference.output()[-3000:]
  # a rerun with another seed is refused before anything is compiled: one error line, nothing written
  other = _Infer(tmp_path, tiny_checkpoint, root, two, extra=('--config.seed=1',))
  assert other.wait() != 0
  assert other.output().strip().splitlines()[-1] == (
      f'run.py: error: {two}/bear was completed with other inputs or settings: settings.seed (0 there, 1 now). Set '
      'overwrite=True to redo it, or write to another out')
  # the rerun (how the work is spread does not count): reads the reference's compiled program from the cache
  rerun = _Infer(tmp_path, tiny_checkpoint, root, two, extra=('--config.batch_size=2',))
  assert rerun.wait() == 0, rerun.output()[-3000:]
  assert 'process 0 of 1: 1 sequences to complete (its share of 4: emu)' in rerun.output()
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert sorted(p.name for p in two.iterdir()) == sorted(NAMES)
  for name in NAMES:
    a, b = _files(one / name), _files(two / name)
    assert sorted(a) == sorted(b)
    for f in a:
      if f == outputs.INFO_NAME:
        assert _result_info(a[f]) == _result_info(b[f]), name
      else:
        assert a[f] == b[f], f'{name}/{f} differs between one process and two'


@pytest.mark.slow
def test_sigterm_to_process_0_stops_both(tmp_path, tiny_checkpoint):
  """Process 0 hosts the coordination service, so it cannot leave the others behind: stopped, it asks them to stop
  too and waits for them to end. Both exit 143 with at most their first sequence written and nothing partial."""
  root = tmp_path / 'davis'
  _davis(root)
  procs = _pair(tmp_path, tiny_checkpoint, root, tmp_path / 'out')
  procs[0].wait_for('process 0: completing bear')
  procs[1].wait_for('process 1: completing car')
  procs[0].proc.send_signal(signal.SIGTERM)
  codes = [p.wait() for p in procs]
  assert codes == [job.EXIT_STOPPED] * 2, '\n'.join(p.output()[-3000:] for p in procs)
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['bear', 'car']  # the calls under way; no temporary
  assert 'process 1: 1 completed, 0 already done, 1 left by a stop' in procs[0].output()


@pytest.mark.slow
def test_a_killed_process_does_not_take_the_other_down(tmp_path, tiny_checkpoint):
  """Without a recoverable run, JAX's coordination service aborted process 0 once process 1 missed its heartbeats.
  Here process 0 completes its share, reports process 1 as gone, and exits 0; the rerun by two processes completes
  process 1's share while process 0, with nothing left, waits for it."""
  root, out = tmp_path / 'davis', tmp_path / 'out'
  _davis(root)
  heartbeat = '--config.distributed.heartbeat_timeout_s=10'
  procs = _pair(tmp_path, tiny_checkpoint, root, out, heartbeat)
  procs[1].wait_for('process 1: completing car')
  procs[1].proc.send_signal(signal.SIGKILL)
  codes = [p.wait() for p in procs]
  assert codes == [0, -signal.SIGKILL], procs[0].output()[-3000:]
  assert 'process 1: ended without a report (killed or crashed?)' in procs[0].output()
  assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.')) == ['bear', 'dog']
  procs = _pair(tmp_path, tiny_checkpoint, root, out, heartbeat)
  codes = [p.wait() for p in procs]
  assert codes == [0, 0], '\n'.join(p.output()[-3000:] for p in procs)
  assert 'process 0 of 2: 0 sequences to complete' in procs[0].output()
  assert 'process 1: 2 completed, 0 already done, 0 left by a stop' in procs[0].output()
  assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
