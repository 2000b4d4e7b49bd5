"""Completing many videos: `complete_sequences(completer, sequences, out_dir, settings)`.

Output per sequence: `out_dir/<name>/` as `outputs.py` lays it out. Every sequence folder is written to a
temporary sibling and renamed into place when complete, so a killed run leaves no half-written sequence; a rerun
removes the temporaries such a run left, skips the sequences already there (unless `overwrite`) and completes
the rest. A finished folder is skipped only if its completion.json was made from the same input, caption, model
and settings; one made otherwise stops the run with an error (before anything is compiled) rather than being
passed off as this run's result. `stop()` (a SIGTERM, see infer/job.py) is asked before every model call: the
sequences already computed are written, the rest are left for the rerun.

Spread: each process takes every `process_count`-th sequence (its share; no communication between processes).
Inside a process, sequences of one shape (frames x canvas) are batched: `batch_size` rows per model call, one row
per video and hypothesis, spread over the completer's mesh (`shard='videos'`) -- and the compiled program is
reused for every batch of that shape. Every input is checked before the first compile.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from tgvac_jax.files import atomic_folder
from tgvac_jax.infer import hypotheses, outputs, propagate, resize
from tgvac_jax.infer.complete import AmodalCompleter, close_masks
from tgvac_jax.infer.sources import InputSequence

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InferSettings:
  resolution: int = 0          # square model resolution; 0: the checkpoint's (unet sample_size x VAE factor)
  fit: str = 'pad'             # resize.FITS
  num_samples: int = 1         # hypotheses per video, seeds seed, seed + 1, ...
  seed: int = 0
  select: str = 'coverage'     # hypotheses.CRITERIA: which hypothesis is written
  keep_samples: bool = False   # also write every hypothesis under samples/<k>/
  batch_size: int = 0          # rows (videos x samples) per model call; 0: the completer's devices (1 without)
  preview_height: int = 256    # side-by-side mp4/GIF panel height (never above the input's)
  fps: float = 10.0            # for frame folders; video files keep their own
  overwrite: bool = False      # redo sequences whose folder exists
  keep_visible: bool = True    # the visible part is observed: write the input's pixels there, and in the mask
  object_context: float = 1.0  # fit 'object' / 'follow': object sizes of scene kept on each side of the object
  temporal_prior: int = 0      # > 0: where the model drew nothing, the object of the least-occluded frame within this
                               # many frames, moved with the visible part (infer/propagate.py); 0: off

  def __post_init__(self):
    if self.fit not in resize.FITS:
      raise ValueError(f'fit {self.fit!r} is not one of {resize.FITS}')
    if self.select not in hypotheses.CRITERIA:
      raise ValueError(f'select {self.select!r} is not one of {hypotheses.CRITERIA}')
    if self.num_samples < 1 or self.batch_size < 0 or self.fps <= 0 or self.preview_height < 1:
      raise ValueError('num_samples, fps and preview_height must be >= 1 and batch_size >= 0')
    if self.temporal_prior < 0:
      raise ValueError(f'temporal_prior {self.temporal_prior} must be >= 0 (frames searched each way; 0: off)')
    if self.object_context < 0:
      raise ValueError(f'object_context {self.object_context} must be >= 0 (object sizes of scene on each side)')


def caption_tokens(tokenize, caption: str) -> int:
  """Token count of a caption with its start/end tokens (what the text encoder would need)."""
  return len(tokenize.tokenizer(caption, verbose=False)['input_ids'])


def _remove_stale(out_dir: Path, name: str) -> None:
  """Temporaries of a killed run (`atomic_folder`'s .<name>.tmp-* / .<name>.old-*)."""
  for p in list(out_dir.glob(f'.{name}.tmp-*')) + list(out_dir.glob(f'.{name}.old-*')):
    shutil.rmtree(p, ignore_errors=True)


def _made_by(info: dict) -> dict:
  """What in a completion.json decides the written result: the input, the caption, the model and the settings --
  not how the work was spread over devices and calls (batch_size, shard, chunk_size), nor when or where it ran."""
  info = json.loads(json.dumps(info, sort_keys=True, default=str))  # as written: lists for tuples, str for the rest
  settings = {k: v for k, v in info.get('settings', {}).items() if k not in ('overwrite', 'batch_size')}
  completion = dict(info.get('completion', {}))
  completion['sampler'] = {k: v for k, v in completion.get('sampler', {}).items() if k not in ('shard', 'chunk_size')}
  return {'caption': info.get('caption'), 'source': info.get('source'), 'checkpoint': info.get('checkpoint'),
          'dtype': info.get('dtype'), 'settings': settings, 'completion': completion}


def _differences(a, b, prefix: str = '') -> list[str]:
  """Dotted paths where two JSON trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f'{prefix}{k}.')]
  return [] if a == b else [f'{prefix[:-1]} ({a!r} there, {b!r} now)']


def _check_done(folder: Path, seq: InputSequence, completer: AmodalCompleter, settings: InferSettings,
                record: dict | None) -> None:
  """A finished folder may be skipped only if this run would have written the same."""
  try:
    there = _made_by(json.loads((folder / outputs.INFO_NAME).read_text()))
  except (OSError, ValueError) as e:
    raise ValueError(f'{folder} exists but is not a finished completion (no readable {outputs.INFO_NAME}: {e}); '
                     'remove it or set overwrite=True') from e
  now = _made_by({'caption': seq.text, 'source': seq.describe(), 'settings': dataclasses.asdict(settings),
                  'completion': dataclasses.asdict(completer.config), **(record or {})})
  diff = _differences(there, now)
  if diff:
    raise ValueError(f'{folder} was completed with other inputs or settings: {"; ".join(diff[:3])}'
                     f'{"; ..." if len(diff) > 3 else ""}. Set overwrite=True to redo it, or write to another out')


class _Planned:
  def __init__(self, seq: InputSequence, num_frames: int, placement: resize.Placement, tokens: int):
    self.seq, self.num_frames, self.placement, self.tokens = seq, num_frames, placement, tokens

  @property
  def shape(self):
    return self.num_frames, self.placement.canvas


def _plan(completer: AmodalCompleter, todo: Sequence[InputSequence], settings: InferSettings) -> list[_Planned]:
  resolution = resize.model_resolution(settings.resolution, completer.sample_size)
  max_len = getattr(completer.tokenize, 'max_length', None)
  planned = []
  for seq in todo:
    n, h, w = seq.check()
    tokens = caption_tokens(completer.tokenize, seq.text) if max_len else 0
    if max_len and tokens > max_len:
      log.warning('%s: the caption has %d tokens, CLIP reads %d: it is truncated', seq.name, tokens, max_len)
    planned.append(_Planned(seq, n, resize.placement((h, w), resolution, completer.size_multiple, settings.fit),
                            tokens))
  return planned


def _info(p: _Planned, completer: AmodalCompleter, settings: InferSettings, seeds, scores, chosen: int,
          timings: dict, fps: float, record: dict | None) -> dict:
  max_len = getattr(completer.tokenize, 'max_length', None)
  return {
      'sequence': p.seq.name, 'caption': p.seq.text, 'caption_tokens': p.tokens,
      'caption_truncated': bool(max_len and p.tokens > max_len), 'source': p.seq.describe(),
      'frames': p.num_frames, 'input_size': list(p.placement.size), 'model_canvas': list(p.placement.canvas),
      'content_box': list(p.placement.box), 'input_region': list(p.placement.input_region),
      'region_track': [list(t) for t in p.placement.track] if p.placement.track else None, 'fps': fps,
      'hypotheses': {'seeds': seeds, 'scores': scores, 'select': settings.select, 'chosen': chosen},
      'settings': dataclasses.asdict(settings), 'completion': dataclasses.asdict(completer.config),
      'timings': timings, 'devices': [str(d) for d in (completer.mesh.devices.flat if completer.mesh is not None
                                                       else jax.local_devices()[:1])],
      **(record or {})}


def _observed(rgb: np.ndarray, amodal: np.ndarray, frames: np.ndarray, visible: np.ndarray):
  """The completion with the visible part as observed: amodal ⊇ visible by definition, and the model's decoded
  pixels there are a lossy copy of what the input shows (at the input size, not the model's)."""
  return np.where(visible[..., None], frames, rgb), amodal | visible


def _with_prior(rgb: np.ndarray, amodal: np.ndarray, prior_rgb: np.ndarray, prior: np.ndarray):
  """The completion, and where it has no object but temporal propagation has, propagation's: the shape a
  neighbouring frame showed, moved with the visible part, where the model left a hidden part out."""
  add = prior & ~amodal
  return np.where(add[..., None], prior_rgb, rgb), amodal | add


def _finish(out_dir: Path, p: _Planned, clip, rgb: np.ndarray, amodal: np.ndarray, visible: np.ndarray,
            completer: AmodalCompleter, settings: InferSettings, timings: dict, record: dict | None) -> None:
  """One video's hypotheses (S, N, ...) at the canvas -> the chosen one (and all, with keep_samples) at the
  input size, written atomically to out_dir/<name>/."""
  scores = hypotheses.scores(amodal, visible)
  chosen = hypotheses.choose(scores, settings.select)
  keep = range(len(rgb)) if settings.keep_samples else [chosen]
  back = {k: resize.from_model(rgb[k], p.placement, completer.config.mask_threshold) for k in keep}
  if settings.keep_visible:
    back = {k: _observed(*b, clip.frames, clip.visible) for k, b in back.items()}
  # seams closed (most run between the visible part and the completed one, or across a thin occluder), then the
  # temporal prior adds what neighbouring frames showed where the model drew nothing
  radius = resize.input_pixels(p.placement, completer.config.mask_closing)
  back = {k: (r, close_masks(m, radius)) for k, (r, m) in back.items()}
  if settings.temporal_prior:
    prior = propagate.temporal_propagation(clip.frames, clip.visible, window=settings.temporal_prior)
    back = {k: _with_prior(*b, *prior) for k, b in back.items()}
  samples = tuple(np.stack([back[k][j] for k in keep]) for j in (0, 1)) if settings.keep_samples else None
  fps = clip.fps or settings.fps
  seeds = [settings.seed + k for k in range(settings.num_samples)]
  info = _info(p, completer, settings, seeds, scores, chosen, timings, fps, record)
  atomic_folder(out_dir / p.seq.name, lambda tmp: outputs.write_completion(
      tmp, clip.stems, clip.frames, clip.visible, *back[chosen], info, fps=fps,
      preview_height=settings.preview_height, write_visible=p.seq.prompt is not None, samples=samples))


def complete_sequences(completer: AmodalCompleter, sequences: Sequence[InputSequence], out_dir,
                       settings: InferSettings = InferSettings(), *, record: dict | None = None,
                       process_index: int | None = None, process_count: int | None = None,
                       progress: bool = True, stop: Callable[[], bool] | None = None) -> dict[str, str]:
  """Completes this process's share of `sequences` into `out_dir/<name>/`; returns {name: 'done' | 'skipped' |
  'stopped'} ('stopped': left undone because `stop()` turned true).

  record: extra fields for every completion.json (checkpoint, dtype, config, ...). process_index/count default to
  jax's (each process takes sequences[index::count]).
  """
  names = [s.name for s in sequences]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'sequence names used twice: {dupes}')
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  out_dir = Path(out_dir).absolute()
  share = list(sequences)[pi::pc]
  status = {}
  for seq in share:
    _remove_stale(out_dir, seq.name)
    if not settings.overwrite and (out_dir / seq.name).is_dir():
      _check_done(out_dir / seq.name, seq, completer, settings, record)
      status[seq.name] = 'skipped'
  if status:
    log.info('%d of %d sequences already done in %s: skipped', len(status), len(share), out_dir)
  planned = _plan(completer, [s for s in share if s.name not in status], settings)
  log.info('process %d of %d: %d sequences to complete (its share of %d: %s)', pi, pc, len(planned), len(names),
           ', '.join(p.seq.name for p in planned))

  groups: dict = {}
  for p in planned:
    groups.setdefault(p.shape, []).append(p)
  rows = settings.batch_size or completer.batch_multiple
  per_call = max(1, rows // settings.num_samples)
  seeds = [settings.seed + k for k in range(settings.num_samples)]
  t0, frames_done = time.time(), 0
  bar = tqdm(total=len(planned), unit='video', disable=not progress, desc='complete')
  for group in groups.values():
    first_call = True
    for start in range(0, len(group), per_call):
      batch = group[start:start + per_call]
      if stop is not None and stop():
        break
      log.info('process %d: completing %s%s', pi, ', '.join(p.seq.name for p in batch),
               ' (the first of its shape: may compile)' if first_call else '')  # past the stop check: this call runs to its end
      t_read = time.time()
      clips = [p.seq.load() for p in batch]
      read_s = (time.time() - t_read) / len(batch)
      if settings.fit in resize.AROUND_OBJECT:
        for p, clip in zip(batch, clips):
          p.placement = resize.around_object(p.placement, clip.visible, settings.object_context,
                                             follow=settings.fit == 'follow')
      canvas = [resize.to_model(c.frames, c.visible, p.placement) for c, p in zip(clips, batch)]
      s = settings.num_samples
      t_call = time.time()
      out = completer(np.stack([f for f, _ in canvas for _ in range(s)]),
                      np.stack([m for _, m in canvas for _ in range(s)]),
                      [p.seq.text for p in batch for _ in range(s)], seed=seeds * len(batch))
      call_s = time.time() - t_call
      for i, (p, clip) in enumerate(zip(batch, clips)):
        timings = {'read_s': round(read_s, 3), 'call_s': round(call_s, 3), 'call_videos': len(batch),
                   'call_rows': len(batch) * s, 'first_call_of_shape': first_call}  # this one may have compiled
        _finish(out_dir, p, clip, out.rgb[i * s:(i + 1) * s], out.mask[i * s:(i + 1) * s], canvas[i][1],
                completer, settings, timings, record)
        status[p.seq.name] = 'done'
        frames_done += p.num_frames
        bar.update(1)
        bar.set_postfix(frames_per_s=f'{frames_done / (time.time() - t0):.2f}')
      first_call = False
  bar.close()
  for p in planned:
    status.setdefault(p.seq.name, 'stopped')
  return status
