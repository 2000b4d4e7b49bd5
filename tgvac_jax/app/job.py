"""`python run.py --config configs/app.py`: the web page over a trained model (configs/app.py says what it offers).

Start: the checkpoint and the examples are checked, the model is loaded and compiled once for the first
example's shape (logged with the times), then the page is served on host:port until Ctrl-C.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging as absl_logging

from configs import demo as demo_configs
from configs import infer as infer_configs
from tgvac_jax.app import examples as examples_lib
from tgvac_jax.app import page as page_lib
from tgvac_jax.app.requests import Limits, RequestFolders
from tgvac_jax.app.service import Completions, infer_config
from tgvac_jax.infer import job as infer_job
from tgvac_jax.infer import resize
from tgvac_jax.infer.sam2 import require_folder

log = logging.getLogger(__name__)

TITLE = 'TGVAC: text-guided video amodal completion'
SAMPLER_KEYS = ('steps', 'guidance_scale', 'window_length', 'stride', 'chunk_size')
DEMO_STAMP = 'demo_stage.json'  # tgvac_jax.demo.STAMP (importing the demo costs seconds: TFDS, the trainer)


def demo_sampling(checkpoint: str | os.PathLike) -> dict:
  """The settings configs/demo.py samples its own model with, when `checkpoint` is a demo's `motion/model`
  (the variant -- full or quick -- recognised by its motion stage); {} for another checkpoint."""
  stamp = Path(checkpoint).absolute().parent / DEMO_STAMP
  if not stamp.is_file():
    return {}
  trained = json.loads(stamp.read_text()).get('config') or {}
  for variant in (None, 'quick'):
    d = demo_configs.get_config(variant)
    if (trained.get('num_steps'), trained.get('data', {}).get('clip_len')) == (d.motion.steps, d.motion.clip_len):
      s = d.sample
      return {'steps': s.steps, 'guidance_scale': s.guidance_scale, 'window_length': s.window_length,
              'stride': d.unseen.stride, 'chunk_size': s.chunk_size, 'mask_threshold': s.mask_threshold,
              'mask_closing': s.mask_closing, 'fit': s.fit, 'object_context': s.object_context,
              'temporal_prior': s.temporal_prior}
  return {}


def resolved_infer_block(c) -> tuple[ml_collections.ConfigDict, str]:
  """configs/app.py's `infer` block with its 0s (the checkpoint's defaults) filled in, and where they came from."""
  block = c.infer.copy_and_resolve_references()
  demo = demo_sampling(c.checkpoint)
  paper = infer_configs.get_config()
  for key in SAMPLER_KEYS:
    if not block.sampler[key]:
      block.sampler[key] = demo.get(key, paper.sampler[key])
  if not block.mask_threshold:
    block.mask_threshold = demo.get('mask_threshold', paper.mask_threshold)
  if block.mask_closing < 0:
    block.mask_closing = demo.get('mask_closing', paper.mask_closing)
  if not block.fit:
    block.fit = demo.get('fit', paper.fit)
  if block.object_context < 0:
    block.object_context = demo.get('object_context', paper.object_context)
  if block.temporal_prior < 0:
    block.temporal_prior = demo.get('temporal_prior', paper.temporal_prior)
  return block, ('the demo\'s sampler settings (configs/demo.py)' if demo else 'configs/infer.py\'s defaults')


def check_checkpoint(checkpoint: str) -> None:
  if not Path(checkpoint).is_dir():
    raise FileNotFoundError(f'no checkpoint at {checkpoint}: train the demo model first (python run.py --config '
                            'configs/demo.py, about 25 minutes on 2 CPU cores) or point at another pipeline '
                            'checkpoint with --config.checkpoint=FOLDER')


def free_port(host: str = '127.0.0.1') -> int:
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def warm_up(service: Completions, shape: tuple[int, int, int], caption: str) -> float:
  """Compiles the completion program for videos of `shape` (frames, height, width) at the default settings, as a
  request would run it (with a step listener); returns the seconds it took."""
  t0 = time.time()
  ic = service.config
  config, _ = infer_job.completion_from_config(ic)
  completer = service.completer.with_config(config)
  completer.on_step = lambda i, total: None
  n, h, w = shape
  placement = resize.placement((h, w), resize.model_resolution(ic.resolution, completer.sample_size),
                               completer.size_multiple, ic.fit)
  frames = np.zeros((n,) + placement.canvas + (3,), np.uint8)
  visible = np.zeros((n,) + placement.canvas, bool)
  completer(frames, visible, caption or 'an object', seed=0)
  return time.time() - t0


class App:
  """A started page: `url`, the `service`, `close()`."""

  def __init__(self, page, service: Completions, url: str, cleanup):
    self.page, self.service, self.url, self._cleanup = page, service, url, cleanup

  def close(self) -> None:
    self.page.close()
    self._cleanup()


def start(c) -> App:
  """Loads and compiles the model, lists the examples and serves the page (returns once it is up)."""
  t0 = time.time()
  check_checkpoint(c.checkpoint)
  if c.sam2:
    require_folder(c.sam2)
  if c.share:
    log.warning('share=True: Gradio makes the page public through its servers')
  roots = [Path(r) for r in c.examples.split(',') if r] if c.examples else examples_lib.demo_roots(c.checkpoint)
  block, source = resolved_infer_block(c)
  ic = infer_config(block, c.checkpoint)
  made_workdir = not c.workdir
  workdir = Path(c.workdir or tempfile.mkdtemp(prefix='tgvac-app-')).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  gradio_temp = os.environ.get('GRADIO_TEMP_DIR')
  os.environ['GRADIO_TEMP_DIR'] = str(workdir / 'gradio')  # the page's own copies of uploads and results
  folders = RequestFolders(workdir / 'requests', c.keep_minutes * 60)

  def cleanup():
    folders.close()
    if gradio_temp is None:
      os.environ.pop('GRADIO_TEMP_DIR', None)
    else:
      os.environ['GRADIO_TEMP_DIR'] = gradio_temp
    if made_workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  atexit.register(cleanup)

  examples = examples_lib.list_examples(roots, workdir / 'thumbnails', c.max_examples)
  completer = infer_job.load_completer(ic)
  load_s = time.time() - t0
  limits = Limits(c.max_frames, c.max_pixels, c.max_upload_mb, c.max_samples, c.max_steps)
  service = Completions(completer, ic, examples, folders, limits, sam2=c.sam2, sam2_device=c.sam2_device)
  compile_s = 0.0
  if c.warmup:
    shape = (examples[0].frames,) + examples[0].size if examples else (ic.sampler.window_length, 64, 64)
    compile_s = warm_up(service, shape, examples[0].caption if examples else '')
  s = ic.sampler
  defaults = {'steps': s.steps, 'guidance_scale': s.guidance_scale, 'window_length': s.window_length,
              'stride': s.stride, 'num_samples': ic.num_samples, 'seed': ic.seed}
  about = (f'Model `{Path(c.checkpoint).absolute()}`; sampler defaults from {source}. '
           f'{len(examples)} example clips. One completion runs at a time; the others wait in a queue.')
  keep_s = int(c.keep_minutes * 60)
  page = page_lib.build(service, defaults, title=TITLE, about=about,
                        delete_cache=(max(1, min(3600, keep_s // 4)), max(1, keep_s)))
  page.launch(server_name=c.host, server_port=c.port, share=c.share, prevent_thread_lock=True, quiet=True,
              allowed_paths=[str(workdir)])
  absl_logging.info('[app] model %s loaded in %.1fs, compiled for %s in %.1fs; %d examples; serving %s '
                    '(started in %.1fs)', c.checkpoint, load_s, 'the first example' if examples else 'a default shape',
                    compile_s, len(examples), page.local_url, time.time() - t0)
  return App(page, service, page.local_url, cleanup)


def run(c) -> None:
  app = start(c)
  print(f'TGVAC app: {app.url}  (Ctrl-C stops it)', flush=True)
  try:
    app.page.block_thread()
  finally:
    app.close()
