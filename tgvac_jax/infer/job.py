"""`python run.py --config configs/infer.py`: complete one video, or a DAVIS-style root / JSONL manifest of them.

One video (`video` set): OUT itself receives the outputs (`outputs.py`). Batch (`root` or `manifest` set):
OUT/<sequence>/ per sequence. Both go through `batch.complete_sequences`, so a rerun skips what is done (unless
`overwrite`), every folder appears whole or not at all, and every input is checked before anything compiles.

Several processes (`distributed.initialize`, e.g. one per TPU host or per SLURM task) split the sequences: each
completes its own share on its own devices, with no collective across processes, so none waits for another. A
SIGTERM stops a process cleanly: the model call under way finishes and is written, no new one starts, and the exit
status is 143 when sequences were left (a rerun completes them). A stopped process 0 stops the others the same way
(it hosts the coordination service, so it also waits for them to end: tgvac_jax/distributed.py).
"""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from tgvac_jax import distributed
from tgvac_jax.diffusion.ddim import DDIMConfig
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig
from tgvac_jax.infer import io, sam2
from tgvac_jax.infer.batch import InferSettings, complete_sequences
from tgvac_jax.infer.complete import AmodalCompleter, CompletionConfig
from tgvac_jax.infer.sources import InputSequence, davis_sequences, manifest_sequences

SHARDS = ('auto', 'none', 'videos', 'windows')
DTYPES = {'float32': None, 'bfloat16': 'bfloat16', 'float16': 'float16'}


def settings_from_config(c) -> InferSettings:
  return InferSettings(resolution=c.resolution, fit=c.fit, num_samples=c.num_samples, seed=c.seed,
                       select=c.select, keep_samples=c.keep_samples, batch_size=c.batch_size,
                       preview_height=c.preview_height, fps=c.fps, overwrite=c.overwrite,
                       keep_visible=c.keep_visible, object_context=c.object_context,
                       temporal_prior=c.temporal_prior)


def completion_from_config(c) -> tuple[CompletionConfig, Mesh | None]:
  """The sampler settings and the mesh of this process's devices (`shard`: auto = split the videos of a batch
  over the devices when there are several)."""
  if c.shard not in SHARDS:
    raise ValueError(f'shard {c.shard!r} is not one of {SHARDS}')
  if c.mask_closing < 0:
    raise ValueError(f'mask_closing {c.mask_closing} must be >= 0 (a radius in model pixels; 0: off)')
  devices = jax.local_devices()
  shard = {'auto': 'videos' if len(devices) > 1 else None, 'none': None}.get(c.shard, c.shard)
  s = c.sampler
  sampler = TemporalSamplerConfig(window_length=s.window_length, stride=s.stride, weighting=s.weighting,
                                  chunk_size=s.chunk_size, guidance_scale=s.guidance_scale,
                                  guidance_mode=s.guidance_mode, shard=shard,
                                  ddim=DDIMConfig(num_inference_steps=s.steps, eta=s.eta))
  mesh = Mesh(np.array(devices), ('data',)) if shard else None
  return CompletionConfig(sampler=sampler, vae_chunk=c.vae_chunk, mask_threshold=c.mask_threshold,
                          mask_closing=c.mask_closing), mesh


def load_completer(c) -> AmodalCompleter:
  if c.dtype not in DTYPES:
    raise ValueError(f'dtype {c.dtype!r} is not one of {sorted(DTYPES)}')
  if not c.checkpoint:
    raise ValueError('config.checkpoint is empty: give a model checkpoint folder (unet/ vae/ text_encoder/ '
                     'tokenizer/)')
  config, mesh = completion_from_config(c)
  return AmodalCompleter.from_pretrained(c.checkpoint, config, mesh=mesh, dtype=DTYPES[c.dtype])


def run_record(c, load_s: float) -> dict:
  """What every completion.json of a run records besides its sequence: the model, the config, the versions."""
  return {'checkpoint': os.path.abspath(c.checkpoint), 'dtype': c.dtype, 'config': c.to_dict(),
          'versions': {'jax': jax.__version__, 'python': platform.python_version()}, 'load_s': round(load_s, 3)}


def single_sequence(c) -> tuple[list[InputSequence], Path]:
  """The one-video job as a one-sequence batch named after OUT, written into OUT's parent (the web app's
  requests too: tgvac_jax/app)."""
  if not c.text:
    raise ValueError('config.text is empty: describe the whole object')
  out = Path(c.out).absolute()
  object_id = c.object_id or None
  prompt = None
  if not c.masks:
    mask = io.read_mask(c.prompt_mask, object_id) if c.prompt_mask else None
    prompt = sam2.parse_prompt(mask, c.box, c.points, c.point_labels)
  seq = InputSequence(out.name, c.text, video=c.video, masks=c.masks or None, prompt=prompt, object_id=object_id,
                      sam2_folder=c.sam2 or None, sam2_device=c.sam2_device)
  return [seq], out.parent


def _batch(c) -> tuple[list[InputSequence], Path]:
  names = tuple(n for n in c.sequences.split(',') if n)
  if c.root:
    seqs = davis_sequences(c.root, c.captions or None, c.object_id or None, names)
  else:
    seqs = manifest_sequences(c.manifest, sam2_folder=c.sam2 or None, sam2_device=c.sam2_device)
    if names:
      seqs = [s for s in seqs if s.name in names]
  return seqs, Path(c.out).absolute()


class _Sigterm:
  """While installed (`with`): a SIGTERM sets `got` instead of killing the process (and, on process 0 of several,
  asks the others to stop too)."""

  def __init__(self):
    self.got = threading.Event()

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if not self.got.is_set():
      logging.warning('SIGTERM: the model call under way is finished and written, then this process stops')
      self.got.set()
      distributed.request_stop()

  def __enter__(self) -> _Sigterm:
    self._before = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    signal.signal(signal.SIGTERM, self._before)


EXIT_STOPPED = 128 + signal.SIGTERM  # the status of a run stopped with sequences left, as if the signal had killed it


def run(c) -> None:
  t0 = time.time()
  given = [k for k in ('video', 'root', 'manifest') if c.get(k)]
  if len(given) != 1:
    raise ValueError('give exactly one of config.video (one video), config.root (a DAVIS-style root) and '
                     f'config.manifest (a JSONL manifest); got {given or "none"}')
  settings = settings_from_config(c)
  seqs, out_dir = single_sequence(c) if c.video else _batch(c)
  for s in seqs:  # the inputs first: a bad video or mask fails here, before the model is read
    s.check()
  if c.distributed.initialize:
    distributed.initialize(c.distributed, independent=True)
  with _Sigterm() as sigterm:
    completer = load_completer(c)
    record = run_record(c, time.time() - t0)
    status = complete_sequences(completer, seqs, out_dir, settings, record=record,
                                stop=lambda: sigterm.got.is_set() or distributed.stop_requested())
    left = [n for n, v in status.items() if v == 'stopped']
    done = sum(v == 'done' for v in status.values())
    summary = (f'{done} completed, {len(status) - done - len(left)} already done, {len(left)} left by a stop, '
               f'in {time.time() - t0:.1f}s')
    logging.info('%s -> %s', summary, out_dir if not c.video else out_dir / seqs[0].name)
    distributed.report_end(summary)
    distributed.wait_for_peers()
  if left:
    logging.warning('stopped with %d sequences of this process left (%s): rerun the same command to complete them',
                    len(left), ', '.join(left))
    raise SystemExit(EXIT_STOPPED)
