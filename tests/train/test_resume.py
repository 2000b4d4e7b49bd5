"""Exact resume: a run killed with SIGKILL at a random step after a checkpoint and resumed gives the losses of an
uninterrupted run bit for bit (same data order, same noise); resumed on 2 devices from the checkpoint written on
8 it gives them within 1e-6. The resumed run is then stopped with SIGTERM: it saves that step and exits 0."""

import os
import random
import shutil
import signal
import time

from tests.train import runs
from tgvac_jax.train.checkpoints import CHECKPOINT_DIR, MODEL_DIR
from tgvac_jax.train.metrics import METRICS_FILE


def committed_steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / CHECKPOINT_DIR) if d.isdigit())


def test_kill_then_resume_on_8_and_on_2_devices():
  ref = runs.reference()
  ref.wait_for(lambda: (ref.workdir / METRICS_FILE).exists())  # compiled (and cached): the others skip that
  killed = runs.Run(runs.TMP / 'killed', '--config.num_steps=1000')
  kill_at = random.Random().randint(runs.EVERY + 1, 2 * runs.EVERY)
  first_ckpt = killed.workdir / CHECKPOINT_DIR / str(runs.EVERY)
  killed.wait_for(lambda: first_ckpt.is_dir() and max(killed.losses(), default=0) >= kill_at)
  killed.proc.send_signal(signal.SIGKILL)
  killed.wait()
  killed_rows = killed.losses()
  saved = committed_steps(killed.workdir)[-1]
  info = f'kill aimed at step {kill_at}, landed after {max(killed_rows)}, newest checkpoint {saved}'
  assert runs.EVERY <= saved <= runs.STEPS - 5 and max(killed_rows) > saved, info

  shutil.copytree(killed.workdir, runs.TMP / 'killed_copy')
  t0 = time.time()
  resumed = runs.Run(killed.workdir, '--config.num_steps=1000')
  on_two = runs.Run(runs.TMP / 'killed_copy', f'--config.num_steps={runs.STEPS}', devices=2)
  metrics = killed.workdir / METRICS_FILE
  resumed.wait_for(lambda: metrics.stat().st_mtime > t0 and max(resumed.losses(), default=0) >= saved + 6)
  resumed.proc.send_signal(signal.SIGTERM)
  assert resumed.wait() == 0, resumed.output()
  on_two.done()
  want = ref.done() and runs.losses(ref.workdir)

  got = resumed.losses()
  stop = max(got)
  assert sorted(got) == list(range(1, stop + 1)), info      # rows after the checkpoint were replaced, not doubled
  assert min(stop, runs.STEPS) - saved >= 5, info          # at least 5 losses after the restored checkpoint
  expected = {s: want[s] for s in range(1, min(stop, runs.STEPS) + 1)}
  assert {s: got[s] for s in expected} == expected, info   # exact: before the kill and after the resume

  two = runs.losses(on_two.workdir)
  assert sorted(two) == list(range(1, runs.STEPS + 1))
  for s in range(saved + 1, runs.STEPS + 1):
    assert abs(two[s] - want[s]) <= 1e-6, (s, two[s], want[s], info)

  # SIGTERM: the stop step was saved (committed, no temporary folders) and exported
  assert committed_steps(killed.workdir)[-1] == stop
  assert not [p for p in (killed.workdir / CHECKPOINT_DIR).iterdir() if 'tmp' in p.name]
  assert (killed.workdir / MODEL_DIR / 'unet' / 'model.safetensors').is_file()
