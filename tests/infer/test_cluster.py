"""Batch inference as a cluster runs it: `run.py --config configs/infer.py` over a DAVIS-style root as two
`jax.distributed` processes x 4 CPU devices on localhost, against the same command as one process.

Process 1 gets a SIGTERM while its first model call (with its compile) is under way: it writes that sequence,
starts no other and exits 143, leaving no partial folder; process 0 completes its own share meanwhile and exits 0.
The same command again skips the finished sequences (their files untouched) and completes the rest -- with process 0
done at once and waiting for process 1, which it must (it hosts the coordination service). The union of the
outputs equals the one-process run's byte for byte; completion.json only in what the result depends on (not the
timings, devices or process ids).
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
RUN_FIELDS = ('timings', 'devices', 'load_s', 'config')  # completion.json fields that say how and where it ran


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _Infer:
  """One `run.py --config configs/infer.py` process on 4 CPU devices (its output in <out>.<process>.log)."""

  def __init__(self, tmp: Path, checkpoint: Path, root: Path, out: Path, process: int = 0, port: int = 0):
    self.log = out.parent / f'{out.name}.{process}.log'
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
               JAX_COMPILATION_CACHE_DIR=str(tmp / 'xla-cache'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    args = ['--config', 'configs/infer.py', f'--config.checkpoint={checkpoint}', f'--config.root={root}',
            f'--config.out={out}', '--config.sampler.window_length=4', '--config.sampler.stride=2',
            '--config.sampler.steps=2', '--config.mask_threshold=0.8', '--config.preview_height=64',
            '--config.batch_size=1']  # one sequence per model call: a stop can fall between two of them
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


def _pair(tmp, checkpoint, root, out) -> list[_Infer]:
  port = _free_port()
  return [_Infer(tmp, checkpoint, root, out, i, port) for i in range(2)]


def _files(folder: Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _result_info(data: bytes) -> dict:
  return {k: v for k, v in json.loads(data).items() if k not in RUN_FIELDS}


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
  procs[1].wait_for('process 1 of 2: 2 sequences to complete')  # its first model call (and compile) follows
  procs[1].proc.send_signal(signal.SIGTERM)
  codes = [p.wait() for p in procs]
  assert codes == [0, job.EXIT_STOPPED], '\n'.join(p.output()[-3000:] for p in procs)
  assert sorted(p.name for p in two.iterdir()) == ['bear', 'car', 'dog']  # no partial folder, no temporary
  assert 'stopped with 1 sequences of this process left (emu)' in procs[1].output()
  assert 'process 1: 1 completed, 0 already done, 1 left by a stop' in procs[0].output()
  stamps = {p: p.stat().st_mtime_ns for p in two.rglob('*')}

  # the same command again: process 0 has nothing left and waits for process 1, which completes emu
  procs = _pair(tmp_path, tiny_checkpoint, root, two)
  codes = [p.wait() for p in procs]
  assert codes == [0, 0], '\n'.join(p.output()[-3000:] for p in procs)
  assert 'process 0 of 2: 0 sequences to complete' in procs[0].output()
  assert 'process 1 of 2: 1 sequences to complete (its share of 4: emu)' in procs[1].output()
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert sorted(p.name for p in two.iterdir()) == sorted(NAMES)

  assert reference.wait() == 0, reference.output()[-3000:]
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
  for i, p in enumerate(procs):
    p.wait_for(f'process {i} of 2: 2 sequences to complete')
  procs[0].proc.send_signal(signal.SIGTERM)
  codes = [p.wait() for p in procs]
  assert codes == [job.EXIT_STOPPED] * 2, '\n'.join(p.output()[-3000:] for p in procs)
  written = {p.name for p in (tmp_path / 'out').iterdir()} if (tmp_path / 'out').exists() else set()
  assert written <= {'bear', 'car'}, written  # the first of each share at most; no temporary left
  assert 'process 1: ' in procs[0].output() and 'left by a stop' in procs[0].output().split('process 1: ')[1]


def test_a_rerun_with_other_settings_is_refused(tmp_path, infer_config):
  """A finished folder is skipped only when it holds what this run would write: not another seed's or caption's."""
  write_frames(tmp_path / 'frames', 5, (20, 24))
  write_masks(tmp_path / 'masks', object_labels(5, (20, 24)))
  c = infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'), text='a red ball',
                   out=str(tmp_path / 'out'))
  job.run(c)
  before = _files(tmp_path / 'out')
  c.batch_size, c.shard = 2, 'auto'  # how the work is spread does not matter: skipped
  job.run(c)
  assert _files(tmp_path / 'out') == before
  for key, value, message in [('seed', 1, r'settings.seed \(0 there, 1 now\)'),
                              ('text', 'a blue ball', r"caption \('a red ball' there, 'a blue ball' now\)")]:
    with pytest.raises(ValueError, match=f'out was completed with other inputs or settings: {message}'):
      job.run(infer_config(**{**c.to_dict(), key: value}))
    assert _files(tmp_path / 'out') == before
  c.overwrite, c.batch_size, c.shard, c.seed = True, 0, 'none', 1
  job.run(c)
  assert _files(tmp_path / 'out') != before
