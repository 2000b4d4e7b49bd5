"""The README's first command, shrunk: run.py -> the demo job -> files on disk."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1200)


def test_demo_writes_completions(tmp_path):
  res = _run('--config', 'configs/demo.py', f'--config.workdir={tmp_path}', '--config.data.num_videos=10',
             '--config.data.size=32', '--config.data.clip_len=10', '--config.data.num_examples=1',
             '--config.sample.steps=2', '--config.sample.window_length=4', '--config.sample.stride=2')
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((tmp_path / 'completions' / 'summary.json').read_text())
  assert summary['trained'] is False and len(summary['clips']) == 1
  clip = tmp_path / 'completions' / 'clip_0'
  assert len(list(clip.glob('frame_*.png'))) == 10 and len(list(clip.glob('amodal_mask_*.png'))) == 10
  assert not (tmp_path / 'completions.tmp').exists()


def test_unknown_job_is_one_clear_error(tmp_path):
  res = _run('--config', 'configs/demo.py', '--config.job=nope')
  assert res.returncode != 0 and "config.job is 'nope'" in res.stderr
