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


def test_unknown_config_key_names_the_closest_keys(tmp_path):
  """One line, from difflib over the config file's flattened keys (nested ones too), before any job starts."""
  res = _run('--config', 'configs/motion.py:tiny', f'--config.workdir={tmp_path}', '--config.optim.lrr=1e-4')
  assert res.returncode != 0
  assert res.stderr.strip().splitlines() == ["run.py: error: unknown config key 'optim.lrr'; closest: optim.lr, "
                                             "optim.b2, optim.b1"]
  res = _run('--config', 'configs/demo.py', '--config.wrkdir=x')
  assert res.stderr.strip().splitlines() == ["run.py: error: unknown config key 'wrkdir'; closest: workdir"]
  assert os.listdir(tmp_path) == []


def test_known_keys_and_variants_still_parse(tmp_path):
  """A bad value of a known key is not reported as an unknown key (the job's own check speaks instead)."""
  res = _run('--config', 'configs/frame.py:tiny', '--config.stage=nope', f'--config.workdir={tmp_path}')
  assert res.returncode != 0 and 'unknown config key' not in res.stderr
  assert "run.py: error: stage 'nope' is not one of" in res.stderr and os.listdir(tmp_path) == []
