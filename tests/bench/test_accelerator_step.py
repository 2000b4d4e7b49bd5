"""bench/accelerator_step.py on CPU with a small UNet: model FLOPs that ignore recomputation, MFU from the device's
peak, and a failing row that costs only its line. `slow`: three small-UNet train steps compile (~14 min on 2
cores); the bench itself is for GPUs/TPUs."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'bench')
sys.path.insert(0, BENCH)

import accelerator_step  # noqa: E402

SMALL = dict(model='small', size=8, batch=2, clips=1, frames=3, dtype='float32', warmup=0, repeats=1)


@pytest.mark.slow
def test_model_flops_ignore_remat_and_mfu_uses_the_device_peak(monkeypatch):
  from tgvac_jax.train import metrics  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(metrics, 'PEAK_FLOPS', (('cpu', 1e12),) + metrics.PEAK_FLOPS)
  plain = accelerator_step.row(SimpleNamespace(**SMALL, remat='none'), 'motion', 'xla')
  remat = accelerator_step.row(SimpleNamespace(**SMALL, remat='motion'), 'motion', 'xla')
  assert plain['remat'] == 'none' and remat['remat'] == 'motion'
  assert plain['tflop'] == pytest.approx(remat['tflop'], rel=1e-9) and plain['tflop'] > 0
  assert plain['mfu'] == pytest.approx(plain['tflop'] * 1e12 / plain['step_s'] / 1e12, rel=1e-9)
  assert plain['loss'] == pytest.approx(remat['loss'], rel=1e-5)  # same step, recomputed or not


@pytest.mark.slow
def test_a_failing_row_costs_only_its_line():
  args = [f'--{k}={v}' for k, v in SMALL.items()] + ['--stages=frame', '--attention=cudnn,xla']
  proc = subprocess.run([sys.executable, os.path.join(BENCH, 'accelerator_step.py')] + args,
                        capture_output=True, text=True, timeout=600, check=True)
  lines = proc.stdout.splitlines()
  assert any(line.startswith('  frame / cudnn: failed (') for line in lines), proc.stdout  # no cuDNN on a CPU
  table = [line for line in lines if line.startswith('| frame |')]
  assert len(table) == 1 and '| xla |' in table[0] and '| n/a |' in table[0]  # MFU unknown without a peak
