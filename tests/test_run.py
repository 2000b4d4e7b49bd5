"""run.py: job dispatch and one-line errors (the demo itself: tests/test_demo.py)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1200)


def test_unknown_job_is_one_clear_error(tmp_path):
  res = _run('--config', 'configs/demo.py', '--config.job=nope')
  assert res.returncode != 0 and "config.job is 'nope'" in res.stderr
