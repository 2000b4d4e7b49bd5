"""What the page runs, without the page: one request -> configs/infer.py's config for it -> the infer job's own
sequence, checks and `complete_sequences` into the request's folder -> the files to show and download.

The model is loaded once (`Completions`); each request gets a shallow copy of the completer with its sampler
settings (`AmodalCompleter.with_config`) and a step listener for the progress bar. Requests run one at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from configs import infer as infer_configs
from tgvac_jax.app import examples as examples_lib
from tgvac_jax.app.requests import Limits, RequestFolders, UserError, masks_input, video_input
from tgvac_jax.eval import amodal_root
from tgvac_jax.infer import io, outputs
from tgvac_jax.infer import job as infer_job
from tgvac_jax.infer.batch import caption_tokens, complete_sequences
from tgvac_jax.infer.complete import AmodalCompleter
from tgvac_jax.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

UPLOAD_NAME = 'upload'   # the sequence (and output folder) name of an uploaded video
GALLERY_FRAMES = 6       # frames per hypothesis strip


@dataclasses.dataclass
class Request:
  """One Run click. `example` (an `Example.key`) or an uploaded `video`; for an upload, a `masks` zip (with
  `object_id`, 0: the only object) or a first-frame SAM-2 prompt (`box`, `points`, `labels`)."""
  text: str
  example: str = ''
  video: str | None = None
  masks: str | None = None
  object_id: int = 0
  box: str = ''
  points: str = ''
  labels: str = ''
  steps: int = 0
  guidance_scale: float = 0.0
  window_length: int = 0
  stride: int = 0
  num_samples: int = 1
  seed: int = 0


@dataclasses.dataclass
class Result:
  request: str                             # the request folder's name
  folder: Path                             # the completion, as configs/infer.py writes it
  preview: Path                            # side-by-side mp4 (with a ground-truth row for an example)
  archive: Path                            # zip of `folder`
  scores: dict | None                      # an example's mIoU / occluded mIoU
  hypotheses: list[tuple[Path, str]]       # (strip image, label) per hypothesis when there are several
  timings: dict


def infer_config(base: ml_collections.ConfigDict, checkpoint: str) -> ml_collections.ConfigDict:
  """configs/infer.py's config with the app's `infer` block and checkpoint: what each request starts from."""
  c = infer_configs.get_config()
  c.update(base.to_dict())
  c.checkpoint = str(checkpoint)
  return c


class Completions:
  """The loaded model, the example clips and the request folders; `complete` serves one request."""

  def __init__(self, completer: AmodalCompleter, config: ml_collections.ConfigDict,
               examples: list[examples_lib.Example], folders: RequestFolders, limits: Limits = Limits(), *,
               sam2: str = '', sam2_device: str = 'cpu'):
    self.completer, self.config, self.folders, self.limits = completer, config, folders, limits
    self.examples = {e.key: e for e in examples}
    self.sam2, self.sam2_device = sam2, sam2_device
    self._lock = threading.Lock()

  # ------------------------------------------------------------------------------------------- request -> config
  def request_config(self, req: Request, folder: Path) -> ml_collections.ConfigDict:
    """The configs/infer.py config that completes `req` into `folder/out/<name>` (inputs already in `folder`)."""
    ic = self.config.copy_and_resolve_references()
    for key, value in (('steps', req.steps), ('guidance_scale', req.guidance_scale),
                       ('window_length', req.window_length), ('stride', req.stride)):
      if value:
        ic.sampler[key] = type(ic.sampler[key])(value)
    ic.num_samples, ic.seed = int(req.num_samples), int(req.seed)
    ic.keep_samples = ic.num_samples > 1  # the gallery shows every hypothesis
    ic.text = req.text.strip()
    if req.example:
      if req.example not in self.examples:
        raise UserError(f'no example {req.example!r}: pick one from the list')
      ex = self.examples[req.example]
      ic.video, ic.masks = str(ex.root / amodal_root.FRAMES / ex.name), str(ex.root / amodal_root.VISIBLE / ex.name)
      ic.object_id = 1  # amodal roots mark their object with palette id 1
      name = ex.name
    else:
      if not req.video:
        raise UserError('no video: pick an example or upload a video (mp4/webm/gif) or a zip of frames')
      ic.video = str(video_input(Path(req.video), folder / 'in', self.limits))
      if req.masks:
        ic.masks, ic.object_id = str(masks_input(Path(req.masks), folder / 'in', self.limits)), int(req.object_id)
      elif req.box.strip() or req.points.strip():
        if not self.sam2:
          raise UserError('a first-frame box or clicks need SAM-2: start the app with --config.sam2=<a local '
                          'transformers SAM-2 folder>, or upload per-frame masks')
        ic.box, ic.points, ic.point_labels = req.box.strip(), req.points.strip(), req.labels.strip()
        ic.sam2, ic.sam2_device = self.sam2, self.sam2_device
      else:
        raise UserError('no object: upload its per-frame masks (a zip of PNGs)' +
                        (' or give a first-frame box or clicks' if self.sam2 else ''))
      name = UPLOAD_NAME
    ic.out = str(folder / 'out' / name)
    return ic

  def check_caption(self, text: str) -> None:
    text = text.strip()
    if not text:
      raise UserError('the caption is empty: describe the whole object (e.g. "a large red heart")')
    max_len = getattr(self.completer.tokenize, 'max_length', None)
    if max_len:
      tokens = caption_tokens(self.completer.tokenize, text)
      if tokens > max_len:
        raise UserError(f'the caption is {tokens} tokens long; the text encoder reads {max_len}: shorten it')

  def check_settings(self, req: Request) -> None:
    lim = self.limits
    if not 1 <= int(req.num_samples) <= lim.max_samples:
      raise UserError(f'hypotheses: 1 to {lim.max_samples}, got {req.num_samples}')
    if req.steps and not 1 <= int(req.steps) <= lim.max_steps:
      raise UserError(f'steps: 1 to {lim.max_steps}, got {req.steps}')

  # ------------------------------------------------------------------------------------------- the run
  def complete(self, req: Request, progress: Callable[[float, str], None] | None = None) -> Result:
    """Serves one request; a bad input is a `UserError` and leaves no request folder behind."""
    progress = progress or (lambda fraction, desc: None)
    self.check_caption(req.text)
    self.check_settings(req)
    with self._lock:
      t0 = time.time()
      folder = self.folders.new()
      try:
        return self._complete(req, folder, progress, t0)
      except (ValueError, FileNotFoundError, CheckpointError) as e:  # the library's input errors
        shutil.rmtree(folder, ignore_errors=True)
        # name uploads as the user did, not by their copies in the request folder
        raise UserError(str(e).replace(f'{folder / "in"}/', '').replace(str(folder), 'the request')) from e
      except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

  def _complete(self, req: Request, folder: Path, progress, t0: float) -> Result:
    progress(0.0, 'reading the input')
    ic = self.request_config(req, folder)
    seqs, out_dir = infer_job.single_sequence(ic)
    n, h, w = seqs[0].probe()
    self.limits.check_video(n, h, w)
    seqs[0].check()
    config, _ = infer_job.completion_from_config(ic)
    completer = self.completer.with_config(config)
    steps = config.sampler.ddim.num_inference_steps
    completer.on_step = lambda i, total: progress(0.05 + 0.85 * i / total, f'denoising: step {i} of {total}')
    progress(0.05, f'encoding {n} frames; {steps} denoising steps follow')
    t_call = time.time()
    complete_sequences(completer, seqs, out_dir, infer_job.settings_from_config(ic),
                       record={**infer_job.run_record(ic, 0.0), 'app_request': folder.name}, progress=False)
    t_done = time.time()
    progress(0.92, 'writing the previews and the zip')
    done = out_dir / seqs[0].name
    ex = self.examples.get(req.example) if req.example else None
    scores, preview = None, done / 'side_by_side.mp4'
    if ex is not None:
      scores = examples_lib.score(ex, out_dir)
      preview = folder / 'side_by_side_with_ground_truth.mp4'
      examples_lib.with_ground_truth(ex, done, preview, ic.fps, ic.preview_height)
    hypotheses = self._gallery(done, folder / 'gallery') if ic.num_samples > 1 else []
    archive = Path(shutil.make_archive(str(folder / f'{seqs[0].name}_completion'), 'zip', root_dir=out_dir,
                                      base_dir=seqs[0].name))
    timings = {'started': t0, 'completion_s': round(t_done - t_call, 3), 'total_s': round(time.time() - t0, 3)}
    log.info('request %s: %d frames %dx%d, %d step(s) x %d hypothesis(es) in %.1fs', folder.name, n, w, h, steps,
             ic.num_samples, timings['total_s'])
    return Result(folder.name, done, preview, archive, scores, hypotheses, timings)

  @staticmethod
  def _gallery(done: Path, out: Path) -> list[tuple[Path, str]]:
    """One strip per hypothesis: `GALLERY_FRAMES` of its object frames over white, side by side."""
    out.mkdir()
    chosen = json.loads((done / outputs.INFO_NAME).read_text())['hypotheses']
    items = []
    for k, seed in enumerate(chosen['seeds']):
      files = io.list_images(done / 'samples' / str(k) / 'object', ('.png',))
      pick = np.linspace(0, len(files) - 1, min(GALLERY_FRAMES, len(files))).round().astype(int)
      path = out / f'hypothesis_{k}.png'
      Image.fromarray(np.concatenate([amodal_root.read_object(files[i]) for i in pick], axis=1)).save(path)
      mark = ', written to object/' if k == chosen['chosen'] else ''
      score = ', '.join(f'{name} {v:.2f}' for name, v in chosen['scores'][k].items())
      items.append((path, f'seed {seed}: {score}{mark}'))
    return items
