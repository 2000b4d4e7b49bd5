"""Jobs that `run.py` dispatches on `config.job`: each is `run(config)` of its module (`<pkg>/job.py`)."""

from __future__ import annotations

import importlib

JOBS = {
    'demo': 'tgvac_jax.demo',
    'train': 'tgvac_jax.train.job',                # configs/frame.py, motion.py, vae.py
    'cache_latents': 'tgvac_jax.train.job',        # configs/cache_latents.py
    'infer': 'tgvac_jax.infer.job',                # configs/infer.py
    'eval': 'tgvac_jax.eval.job',                  # configs/eval.py
    'compile': 'tgvac_jax.compile.job',            # configs/compile.py
    'app': 'tgvac_jax.app.job',                    # configs/app.py
}


def run(config) -> None:
  job = config.get('job')
  if job not in JOBS:
    raise ValueError(f'config.job is {job!r}; known jobs: {sorted(JOBS)}')
  importlib.import_module(JOBS[job]).run(config)
