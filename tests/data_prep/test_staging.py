"""Staging in worker processes: a 2-worker build equals the one-process build record for record, and a 2-worker
build killed with -9 midway, then rerun, equals it too, reusing what was staged and leaving no temporary file."""

import glob
import os
import signal
import subprocess
import sys
import time

from built import DAVIS_CFG, DAVIS_FLAGS, assert_same_build
from data_prep import build as build_cli
from data_prep import builder as B
from data_prep.sources import get_source
from tgvac_jax.data import schema

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_two_workers_equal_one(davis_root, davis_reference, tmp_path):
  out = str(tmp_path / 'out')
  rc = build_cli.main(['--source', 'davis', '--root', davis_root, '--out', out, '--workers', '2', '--quiet'] +
                      DAVIS_FLAGS)
  assert rc == 0
  assert_same_build(schema.find_dataset_dir(out), davis_reference.dataset_dir)


def _children(pid: int) -> list[int]:
  with open(f'/proc/{pid}/task/{pid}/children') as f:
    return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def test_kill_9_midway_then_rerun(davis_root, davis_reference, tmp_path):
  out = str(tmp_path / 'out')
  chunk_glob = os.path.join(out, '.work', '*', 'chunks', '*.npz')
  code = (f'import fake_datasets as fake\nfrom built import DAVIS_CFG\nfrom data_prep import builder as B\n'
          f'B.build(fake.SlowDavis({davis_root!r}, delay=0.3), DAVIS_CFG, {out!r}, progress=False, workers=2)\n')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get('PYTHONPATH', '')]))
  proc = subprocess.Popen([sys.executable, '-c', code], env=env, cwd=ROOT)
  try:
    deadline = time.time() + 120
    while len(glob.glob(chunk_glob)) < 2:
      assert proc.poll() is None, 'the build ended before it could be killed'
      assert time.time() < deadline, 'no chunk staged in 120 s'
      time.sleep(0.05)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  staged = {p: os.stat(p).st_mtime_ns for p in glob.glob(chunk_glob)}
  usable = len(get_source('davis', davis_root).videos()) - 2  # 'mismatch' and 'empty' are listed as unusable
  assert 2 <= len(staged) < usable  # killed midway
  assert not glob.glob(os.path.join(out, B.DATASET_NAME, '*', '*'))  # nothing written yet
  deadline = time.time() + 20  # the workers die with their parent: none goes on writing behind the rerun's back
  while any(map(_alive, workers)) and time.time() < deadline:
    time.sleep(0.05)
  assert workers and not any(map(_alive, workers))

  res = B.build(get_source('davis', davis_root), DAVIS_CFG, out, progress=False, workers=2, keep_work=True)
  assert_same_build(res.dataset_dir, davis_reference.dataset_dir)
  assert all(os.stat(p).st_mtime_ns == t for p, t in staged.items())  # resumed: staged chunks were kept
  left = [os.path.join(d, f) for d, dirs, files in os.walk(out) for f in files + dirs
          if '.tmp' in f or 'incomplete' in f]
  assert not left
