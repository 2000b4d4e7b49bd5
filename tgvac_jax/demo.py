"""The embedded demo: tiny TGVAC models trained from scratch on a CPU, then the paper's ablation in miniature.

Every step is a job users run, with a config derived from its own config file:
  1. data_prep builds the procedural dataset (clips of `data.clip_len` frames, split 80/20 by video);
  2. configs/vae.py trains the autoencoder, configs/frame.py the frame stage (eq. 2) from it and a fresh
     12-channel UNet, configs/motion.py the motion stage (eq. 3) on `motion.clip_len`-frame windows;
     `workdir/motion/model` is the pipeline checkpoint (configs/infer.py, convert.to_diffusers);
  3. configs/infer.py completes the held-out clips (longer than the training window) once per learned row,
     tgvac_jax.eval.baselines writes the non-learned rows, configs/eval.py scores every row;
  4. `workdir/ablation/`: table.md / table.json (the rows side by side) and GIFs;
  5. clips of another size and length, never seen, as a DAVIS-style folder: configs/infer.py, configs/eval.py;
  6. the "unseen generator" rows: the same two jobs on clips of data_prep/holdout_clips.py, a generator that shares
     no code with the training data's, beside the non-learned rows (never trained on, never used to choose a setting).
  7. the clips settings are chosen on: the demo's generator with another seed at the unseen clips' size (the model
     beside the visible mask), and data_prep/selection_clips.py, a third generator (beside both non-learned rows).
`parts` picks which of 4-7 run: `configs/demo.py:unseen_generator` scores an existing workdir's model on 6 alone,
`configs/demo.py:validation` on 7.
A rerun reuses every finished part (a stage whose settings and inputs are unchanged, built datasets, completed
sequences) and says so; `rebuild=True` starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx

from configs import eval as eval_config
from configs import frame as frame_config
from configs import infer as infer_config
from configs import motion as motion_config
from configs import vae as vae_config
from data_prep import holdout_clips, selection_clips
from data_prep.builder import build
from data_prep.occlusion import SynthConfig
from data_prep.sources.procedural import ProceduralSource
from data_prep.staging import BuildConfig
from tgvac_jax import text
from tgvac_jax.eval import amodal_root, baselines
from tgvac_jax.eval import job as eval_job
from tgvac_jax.files import atomic_folder
from tgvac_jax.infer import io as infer_io
from tgvac_jax.infer import job as infer_job
from tgvac_jax.infer import outputs
from tgvac_jax.models import checkpoint
from tgvac_jax.models.clip import CLIPTextModel
from tgvac_jax.models.init import jit_init
from tgvac_jax.models.unet import UNet2DConditionModel
from tgvac_jax.train import stages
from tgvac_jax.train import job as train_job
from tgvac_jax.train import checkpoints as ckpts
from tgvac_jax.train.checkpoints import MODEL_DIR

STAMP = 'demo_stage.json'   # a finished stage: its settings and its inputs' fingerprint


class Clock:
  """Wall time per part, for the log and the table."""

  def __init__(self):
    self.t0 = self.last = time.time()
    self.parts: dict[str, float] = {}

  def done(self, part: str) -> None:
    now = time.time()
    self.parts[part] = round(now - self.last, 1)
    self.last = now
    logging.info('[demo] %s: %.1fs (total %.1fs)', part, self.parts[part], now - self.t0)


def _fingerprint(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- data

def build_procedural(c, out: Path, *, seed: int, num_videos: int, size: int, clip_len: int,
                     clips_per_track: int) -> str:
  """data_prep's build of the procedural source (reused when the same build exists); the dataset folder.
  `c.data.procedural` holds the source's difficulty knobs (shapes, colours, patterns, sizes, spin, pulse,
  background, second_sprite_prob)."""
  source = ProceduralSource(num_videos=num_videos, size=size, min_frames=clip_len + 4, max_frames=clip_len + 16,
                            seed=seed, **c.data.procedural.to_dict())
  cfg = BuildConfig(synth=SynthConfig(clip_len=clip_len, resolution=size, clips_per_track=clips_per_track,
                                    occluders=c.data.occluders),
                    seed=seed)
  existed = out.is_dir()
  result = build(source, cfg, str(out), progress=False)
  logging.info('[demo] dataset %s: %s (%s)', out.name, result.num_examples, 'reused' if existed else 'built')
  return result.dataset_dir


# ------------------------------------------------------------------------------------------- training

def _trainer_config(c, base, stage: str, workdir: Path, dataset: str, init: str = ''):
  """configs/<stage>.py:tiny with the demo's sizes, data and schedule."""
  s = c[stage]
  t = base
  t.workdir = str(workdir)
  t.seed = c.seed
  t.init.from_scratch = not init
  t.init.checkpoint = init
  t.init.motion_heads = c.model.motion_heads
  t.init.motion_norm_across_frames = c.model.motion_norm_across_frames  # the motion stage's new modules
  t.data.dataset = dataset
  t.data.procedural_videos = 0
  t.data.size = c.data.size
  t.data.shuffle_seed = c.seed
  for k, v in c.model.items():
    t.model[k] = v
  t.num_steps = s.steps
  t.batch_size = s.batch_size
  t.optim.lr = s.lr
  t.optim.warmup_steps = max(1, s.steps // 20)
  t.optim.schedule = 'cosine'
  t.ema_decay = float(min(0.999, 1 - 10 / max(s.steps, 20)))
  t.checkpoint.every = s.steps
  t.checkpoint.async_save = False
  t.log.every = max(1, s.steps // 20)
  t.log.val_every = 0
  t.compute_dtype = 'float32'
  if stage != 'vae':
    t.diffusion.update(c.diffusion)
  return t


def train_stage(c, name: str, config, upstream: str, clock: Clock) -> tuple[Path, str, bool]:
  """Runs the trainer for one stage unless a finished run with the same settings and inputs is there (an
  interrupted one resumes); (model folder, fingerprint, trained now)."""
  workdir = Path(config.workdir)
  fp = _fingerprint(config.to_dict(), upstream)
  stamp = workdir / STAMP
  model = workdir / MODEL_DIR
  state = json.loads(stamp.read_text()) if stamp.is_file() else {}
  if state.get('fingerprint') == fp and state.get('finished') and model.is_dir():
    logging.info('[demo] %s stage: reusing %s (same settings; rebuild=True to retrain)', name, model)
    return model, fp, False
  if state.get('fingerprint') != fp:
    shutil.rmtree(workdir, ignore_errors=True)  # other settings or inputs: start this stage over
    workdir.mkdir(parents=True)
    stamp.write_text(json.dumps({'fingerprint': fp, 'finished': False}) + '\n')
  logging.info('[demo] %s stage: %d steps, batch %d -> %s', name, config.num_steps, config.batch_size, workdir)
  train_job.run(config)
  done = ckpts.Checkpoints(workdir, config, keep=config.checkpoint.keep, async_save=False)
  step = done.latest_step()
  done.close()
  if step != config.num_steps:  # stopped early (SIGTERM): resumable, not finished
    raise SystemExit(f'{name} stage stopped at step {step} of {config.num_steps}; run the demo again to resume')
  stamp.write_text(json.dumps({'fingerprint': fp, 'finished': True, 'config': config.to_dict()}, default=str)
                   + '\n')
  clock.done(f'train {name}')
  return model, fp, True


def frame_init(c, vae_model: Path, words: tuple[str, ...], out: Path) -> str:
  """The frame stage's starting checkpoint: the trained autoencoder (with the latent scaling_factor its stage
  measured) with a fresh 12-channel UNet and text encoder (the from-scratch stand-ins for SD-1.5's) and a
  character tokenizer with one token per word of `words` (as CLIP's BPE has for "red" or "heart"; measured
  against single characters: masks the same, LPIPS of the frame stage 0.057 -> 0.050)."""
  if out.is_dir():
    return str(out)
  tok = out.parent / f'{out.name}-tokenizer'
  if not tok.is_dir():
    atomic_folder(tok, lambda d: text.write_char_tokenizer(d, words))
  unet_cfg, _, text_cfg = stages.scratch_configs(c.model, c.data.size, len(text.load_tokenizer(tok)), motion=False)
  vae, _ = checkpoint.load_component(vae_model / 'vae')
  models = {'unet': jit_init(lambda: UNet2DConditionModel(unet_cfg, rngs=nnx.Rngs(c.seed))), 'vae': vae,
            'text_encoder': jit_init(lambda: CLIPTextModel(text_cfg, rngs=nnx.Rngs(c.seed + 2)))}
  checkpoint.save_pipeline(out, models, {'tokenizer': tok})
  return str(out)


# ------------------------------------------------------------------------------------------- rows

def _infer(c, checkpoint_dir: str, root: Path, out: Path, *, window: int, stride: int, captions: str = '',
           resolution: int = 0, prior: bool = False) -> None:
  ic = infer_config.get_config()
  ic.checkpoint, ic.root, ic.out, ic.captions = checkpoint_dir, str(root), str(out), captions
  ic.seed, ic.resolution = c.seed, resolution
  ic.shard = 'none'
  ic.sampler.window_length, ic.sampler.stride = window, stride
  ic.sampler.steps, ic.sampler.guidance_scale = c.sample.steps, c.sample.guidance_scale
  ic.sampler.chunk_size = c.sample.chunk_size
  ic.mask_threshold, ic.mask_closing = c.sample.mask_threshold, c.sample.mask_closing
  ic.fit, ic.object_context = c.sample.fit, c.sample.object_context
  ic.temporal_prior = c.sample.temporal_prior if prior else 0
  infer_job.run(ic)


def _model_row(c, model: Path, root: Path, pred: Path, stride: int, name: str, prior: bool = False) -> dict:
  """The motion-stage model on a DAVIS-style root as users run it (windows of the demo's length; `prior`: with
  the temporal prior), scored beside its predictions in pred.parent."""
  _infer(c, str(model), root, pred, window=c.sample.window_length, stride=stride, prior=prior)
  return _score(root, pred, pred.parent, name)


def _learned_rows(c, model: Path, root: Path, out: Path, stride: int, name: str) -> dict:
  """{row: summary}: the model alone (completions under out/), and with `sample.temporal_prior` the prior alone
  (the non-learned propagation it adds, scored beside the root) and the same sampling with the prior added, as the
  README's inference command runs it (under out/temporal_prior/)."""
  rows = {name: _model_row(c, model, root, out / 'completions', stride, name)}
  if c.sample.temporal_prior:
    window = c.sample.temporal_prior

    def temporal_prior(frames, visible):
      return baselines.temporal_propagation(frames, visible, window=window)
    alone = f'temporal propagation within {window} frames (the prior alone)'
    rows[alone] = _baseline_row(root, alone, temporal_prior)
    rows[f'{name} + temporal prior'] = _model_row(c, model, root, out / 'temporal_prior' / 'completions', stride,
                                                  f'{name} + temporal prior', prior=True)
  return rows


def _procedural_root(c, workdir: Path, part: str, *, seed: int, num_videos: int, size: int, clip_len: int) -> Path:
  """Clips of the demo's own generator and data settings under another seed, one per track, as the DAVIS-style
  root `workdir/<part>/davis` (its train split)."""
  data = build_procedural(c, workdir / f'{part}_data', seed=seed, num_videos=num_videos, size=size,
                          clip_len=clip_len, clips_per_track=1)
  return eval_job.export_split(data, 'train', workdir / part / 'davis', 0)


def _score(root: Path, predictions: Path, out: Path, name: str, max_videos: int = 0) -> dict:
  ec = eval_config.get_config()
  ec.data, ec.predictions, ec.out, ec.name, ec.max_videos = str(root), str(predictions), str(out), name, max_videos
  eval_job.run(ec)
  return json.loads((out / eval_job.METRICS / 'summary.json').read_text())['summary']


def write_baseline(root: Path, names: list[str], out: Path, method) -> None:
  """A non-learned row's predictions in inference's layout (per sequence, atomically; finished ones kept)."""
  for name in names:
    if (out / name).is_dir():
      continue
    gt = amodal_root.read_ground_truth(root, name)
    frames = infer_io.read_video(root / amodal_root.FRAMES / name).frames
    rgb, amodal = method(frames, gt.visible)
    atomic_folder(out / name, lambda tmp, f=frames, v=gt.visible, r=rgb, a=amodal, s=gt.stems:
                             outputs.write_completion(tmp, s, f, v, r, a, {'method': method.__name__}, fps=8.0,
                                                      preview_height=256))


def ablation_rows(c, frame_model: Path, motion_model: Path) -> list[tuple[str, dict]]:
  """(row name, how its predictions are made) in the order of the paper's Table 3."""
  w = c.sample.window_length
  rows = [('visible only', {'baseline': baselines.visible_only}),
          ('temporal propagation (non-learned)', {'baseline': baselines.temporal_propagation}),
          ('frame stage, no text', {'model': frame_model, 'window': w, 'stride': w, 'no_text': True}),
          ('frame stage', {'model': frame_model, 'window': w, 'stride': w}),
          (f'motion stage, no temporal diffusion (windows of {w}, no overlap)',
           {'model': motion_model, 'window': w, 'stride': w})]
  rows += [(f'motion stage, temporal diffusion stride {s}', {'model': motion_model, 'window': w, 'stride': s})
           for s in c.sample.strides if s < w]
  return rows


def _slug(name: str) -> str:
  return ''.join(ch if ch.isalnum() else '_' for ch in name).strip('_')[:60]


TABLE_COLUMNS = (('iou_c2f', 'amodal mIoU ↑', 100), ('iou_occ_c2f', 'occ. mIoU (C2F-Seg) ↑', 100),
                 ('iou_occ_savos', 'occ. mIoU (SaVos) ↑', 100), ('iou_occ_occluded', 'occ. mIoU (occluded frames) ↑', 100),
                 ('lpips', 'LPIPS ↓', 1), ('tc', 'TC ↑ ({tc})', 1), ('psnr_occ', 'PSNR occ. ↑', 1))


def ablation_table(results: dict[str, dict], header: str) -> str:
  """Markdown: one table per split (all, easy, hard), one row per method, the columns above."""
  tc = next((s['tc_space'] for s in results.values() if s.get('tc_space')), 'n/a')
  lines = [header, '']
  for split in ('all', 'easy', 'hard'):
    some = next(iter(results.values()))['splits'][split]
    lines += [f'### {split} frames ({some["frames"]} frames, {some["occluded_frames"]} occluded, '
              f'{some["videos"]} clips)', '']
    lines.append('| Method | ' + ' | '.join(h.format(tc=tc) for _, h, _ in TABLE_COLUMNS) + ' |')
    lines.append('|---' * (len(TABLE_COLUMNS) + 1) + '|')
    for name, s in results.items():
      cells = []
      for key, _, scale in TABLE_COLUMNS:
        v = s['splits'][split].get(key)
        cells.append('n/a' if v is None else f'{v * scale:.{2 if scale == 100 or key == "psnr_occ" else 3}f}')
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines.append('mIoU ×100 over every frame of the held-out clips; C2F-Seg scores a frame without occlusion 0, '
               'SaVos 1; "occluded frames" averages over frames with a hidden part only. TC: mean cosine between '
               f'consecutive completed frames in the {tc} space (no CLIP weights offline). PSNR over the hidden '
               'region A − M.')
  return '\n'.join(lines) + '\n'


def ablation_gifs(root: Path, names: list[str], predictions: dict[str, Path], out: Path, size: int = 96) -> None:
  """Per clip one GIF: input | visible mask | each row's completion | ground truth, `size` pixels per panel."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out.mkdir(parents=True, exist_ok=True)
  for name in names:
    gt = amodal_root.read_ground_truth(root, name)
    frames = infer_io.read_video(root / amodal_root.FRAMES / name).frames
    vis = np.repeat((gt.visible * np.uint8(255))[..., None], 3, axis=-1)
    panels = [frames, vis] + [amodal_root.read_prediction(p, name, gt.stems).objects for p in predictions.values()]
    panels.append(gt.objects)
    rows = [np.concatenate([np.asarray(Image.fromarray(p[t]).resize((size, size), Image.NEAREST)) for p in panels],
                           axis=1) for t in range(len(frames))]
    infer_io.write_gif(out / f'{name}.gif', np.stack(rows), 6.0)
  (out / 'panels.txt').write_text('input | visible mask | ' + ' | '.join(predictions) + ' | ground truth\n')


def _baseline_row(root: Path, name: str, method=None) -> dict:
  """A non-learned row (`method`, or BASELINES[name]) on a generated root, scored once beside it: the clips (their
  settings are in the root's name) fix the row."""
  rowdir = root.parent / f'{root.name}_{_slug(name)}'
  summary = rowdir / eval_job.METRICS / 'summary.json'
  if not summary.is_file():
    write_baseline(root, amodal_root.sequences(root), rowdir / 'predictions', method or BASELINES[name])
    _score(root, rowdir / 'predictions', rowdir, name)
  return json.loads(summary.read_text())['summary']


def unseen_generator(c, motion_model: Path, key: str, workdir: Path) -> tuple[dict, str]:
  """The README's inference command and configs/eval.py on both families of data_prep/holdout_clips.py, beside
  visible-only and temporal propagation; ({family: {row: summary}}, markdown). The clips and the non-learned rows
  live under `unseen_generator.root` (they do not depend on the model, so other workdirs may share them), the
  model's completions under this workdir's model and sampler fingerprint."""
  g = c.unseen_generator
  shared = Path(g.root).absolute() if g.root else workdir / 'unseen_generator'
  ukey = _fingerprint(key, g.to_dict())
  learned = f'TGVAC demo model (motion stage, stride {g.stride})'
  results, parts = {}, []
  for family in g.families:
    root = holdout_clips.write_root(shared / f'{family}_seed{g.seed}_{g.size}x{g.frames}', family, g.clips, g.seed,
                                    g.size, g.frames)
    rows = {name: _baseline_row(root, name) for name in g.baselines}
    rows.update(_learned_rows(c, motion_model, root, workdir / 'unseen_generator' / ukey / family, g.stride,
                              learned))
    results[family] = rows
    some = next(iter(rows.values()))['splits']['all']
    parts.append(ablation_table(rows, f'## Unseen generator, {family} family: {some["videos"]} clips of {g.frames} '
                                      f'frames at {g.size}² ({root})').replace('## ', '### ', 1))
  head = ['## The demo\'s model on clips of another generator (data_prep/holdout_clips.py, seed '
          f'{g.seed}; never trained on, never used to choose a setting)', '',
          '| family | ' + ' | '.join(next(iter(results.values()))) + ' |', '|---' * (1 + len(rows)) + '|']
  for family, rows in results.items():
    cells = [f"{100 * r['splits']['all']['iou_occ_occluded']:.1f} / {100 * r['splits']['all']['iou_c2f']:.1f}"
             for r in rows.values()]
    head.append(f'| {family} | ' + ' | '.join(cells) + ' |')
  head += ['', 'Each cell: occluded mIoU on occluded frames / amodal mIoU over all frames, ×100.', '']
  return results, '\n'.join(head) + '\n' + '\n'.join(parts)


# ------------------------------------------------------------------------------------------- the job

PARTS = ('ablation', 'unseen', 'unseen_generator', 'validation')
BASELINES = {'visible only': baselines.visible_only,
             'temporal propagation (non-learned)': baselines.temporal_propagation}


def run(c) -> None:
  for knob, value, allowed in (('parts', c.parts, PARTS), ('unseen_generator.baselines', c.unseen_generator.baselines,
                                                            tuple(BASELINES)),
                               ('unseen_generator.families', c.unseen_generator.families, holdout_clips.FAMILIES)):
    bad = [v for v in value if v not in allowed]
    if bad:
      raise ValueError(f'{knob}={tuple(value)!r}: unknown {bad[0]!r}; allowed: a subset of {allowed}')
  clock = Clock()
  workdir = Path(c.workdir).absolute()
  if c.rebuild and workdir.exists():
    logging.info('[demo] rebuild=True: removing %s', workdir)
    shutil.rmtree(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  # compiled programs persist in the workdir: a rerun skips most of the compile time too
  jax.config.update('jax_compilation_cache_dir', str(workdir / 'jax_cache'))

  dataset = build_procedural(c, workdir / 'data', seed=c.seed, num_videos=c.data.num_videos, size=c.data.size,
                             clip_len=c.data.clip_len, clips_per_track=c.data.clips_per_track)
  clock.done('dataset')

  vae_cfg = _trainer_config(c, vae_config.get_config('tiny'), 'vae', workdir / 'vae', dataset)
  vae_model, fp, _ = train_stage(c, 'vae', vae_cfg, _fingerprint(dataset), clock)
  words = ProceduralSource.caption_words()
  init = frame_init(c, vae_model, words, workdir / 'frame_init' / _fingerprint(fp, words, c.model.to_dict()))
  frame_cfg = _trainer_config(c, frame_config.get_config('tiny'), 'frame', workdir / 'frame', dataset, init)
  frame_model, fp, _ = train_stage(c, 'frame', frame_cfg, fp, clock)
  motion_cfg = _trainer_config(c, motion_config.get_config('tiny'), 'motion', workdir / 'motion', dataset,
                               str(frame_model))
  motion_cfg.data.clip_len = c.motion.clip_len
  motion_model, fp, _ = train_stage(c, 'motion', motion_cfg, fp, clock)
  logging.info('[demo] pipeline checkpoint: %s', motion_model)

  # the held-out clips as an amodal root, and every row's predictions under eval/<model and sampler fingerprint>/
  # (configs/infer.py's defaults are in it: a row's completions are that job's output)
  key = _fingerprint(fp, c.sample.to_dict(), c.eval.to_dict(), infer_config.get_config().to_dict())
  ablation = workdir / 'ablation'
  printed = []
  if 'ablation' in c.parts:
    evaldir = workdir / 'eval' / key
    gt_root = eval_job.export_split(dataset, 'validation', evaldir / 'ground_truth', c.eval.max_videos)
    names = amodal_root.sequences(gt_root)
    no_text = evaldir / 'captions_no_text.json'
    if not no_text.is_file():
      no_text.write_text(json.dumps({n: '' for n in names}) + '\n')
    results, predictions = {}, {}
    for name, how in ablation_rows(c, frame_model, motion_model):
      rowdir = evaldir / _slug(name)
      pred = rowdir / 'predictions'
      reused = pred.is_dir() and sorted(p.name for p in pred.iterdir() if p.is_dir()) == names
      if 'baseline' in how:
        write_baseline(gt_root, names, pred, how['baseline'])
      else:
        _infer(c, str(how['model']), gt_root, pred, window=how['window'], stride=how['stride'],
               captions=str(no_text) if how.get('no_text') else '')
      logging.info('[demo] row %r: predictions %s', name, 'reused' if reused else 'written')
      results[name] = _score(gt_root, pred, rowdir, name)
      predictions[name] = pred
      clock.done(f'row {name}')

    header = (f'## Ablation on {len(names)} held-out clips of {c.data.clip_len} frames at {c.data.size}² '
              f'(motion window {c.sample.window_length}, {c.sample.steps} DDIM steps, guidance '
              f'{c.sample.guidance_scale}, seed {c.seed})')
    table = ablation_table(results, header)

    def write(tmp: Path) -> None:
      (tmp / 'table.md').write_text(table)
      (tmp / 'table.json').write_text(json.dumps(results, indent=1) + '\n')
      ablation_gifs(gt_root, names[:c.eval.gif_videos], predictions, tmp / 'gifs')
    atomic_folder(ablation, write)
    clock.done('ablation table and GIFs')
    printed.append(table)

  if 'unseen' in c.parts:
    # clips it never saw, of another size and length, through configs/infer.py and configs/eval.py as users run them
    u = c.unseen
    unseen_root = _procedural_root(c, workdir, 'unseen', seed=c.seed + 1000, num_videos=u.num_videos, size=u.size,
                                   clip_len=u.clip_len)
    ukey = _fingerprint(key, u.to_dict())
    w, unseen = c.sample.window_length, {}
    # clips longer than two windows: does temporal diffusion (stride) beat windows side by side (no overlap)?
    for stride in dict.fromkeys((w, u.stride)):
      row = (f'motion stage, windows of {w}, no overlap' if stride == w else
             f'motion stage, temporal diffusion stride {stride}')
      unseen_pred = workdir / 'unseen' / ukey / f'stride{stride}' / 'completions'
      unseen[row] = _model_row(c, motion_model, unseen_root, unseen_pred, stride, row)
    unseen_table = ablation_table(unseen, f'## Unseen DAVIS-style clips: {u.size}², {u.clip_len} frames '
                                          f'({unseen_root})')
    ablation.mkdir(parents=True, exist_ok=True)
    (ablation / 'unseen.md').write_text(unseen_table)
    clock.done('unseen clips')
    printed.append(unseen_table)

  if 'unseen_generator' in c.parts:
    generator, generator_md = unseen_generator(c, motion_model, key, workdir)
    ablation.mkdir(parents=True, exist_ok=True)
    (ablation / 'unseen_generator.md').write_text(generator_md)
    (ablation / 'unseen_generator.json').write_text(json.dumps(generator, indent=1) + '\n')
    clock.done('unseen generator')
    printed.append(generator_md)

  if 'validation' in c.parts:
    v = c.validation
    root = _procedural_root(c, workdir, 'validation', seed=v.seed, num_videos=v.num_videos, size=v.size,
                            clip_len=v.clip_len)
    rows = {}
    baseline = workdir / 'validation' / 'visible_only'
    write_baseline(root, amodal_root.sequences(root), baseline / 'predictions', baselines.visible_only)
    rows['visible only'] = _score(root, baseline / 'predictions', baseline, 'visible only')
    vdir = workdir / 'validation' / _fingerprint(key, v.to_dict())   # this model and sampler's completions
    rows.update(_learned_rows(c, motion_model, root, vdir, v.stride,
                              f'motion stage, temporal diffusion stride {v.stride}'))
    md = ablation_table(rows, f'## Validation build (seed {v.seed}; settings are chosen on it and the next): '
                              f'{v.size}², {v.clip_len} frames ({root})')
    # the same model on a third generator's clips (data_prep/selection_clips.py): choosing on the demo's own
    # generator alone rewards learning that generator
    s = v.selection
    sel = selection_clips.write_root(workdir / 'validation' / f'selection_seed{s.seed}_{v.size}x{v.clip_len}', 'task',
                                     s.clips, s.seed, v.size, v.clip_len)
    rows = {name: _baseline_row(sel, name) for name in BASELINES}
    rows.update(_learned_rows(c, motion_model, sel, vdir / 'selection', v.stride,
                              f'motion stage, temporal diffusion stride {v.stride}'))
    md += '\n' + ablation_table(rows, f'## Selection generator (data_prep/selection_clips.py, seed {s.seed}; chosen '
                                      f'on, never trained on): {v.size}², {v.clip_len} frames ({sel})')
    ablation.mkdir(parents=True, exist_ok=True)
    (ablation / 'validation.md').write_text(md)
    clock.done('validation build')
    printed.append(md)

  # the full demo's timings; a run of some parts alone keeps its own
  timings = 'timings.json' if 'ablation' in c.parts else f"timings_{'_'.join(c.parts)}.json"
  ablation.mkdir(parents=True, exist_ok=True)
  (ablation / timings).write_text(json.dumps({'seconds': clock.parts,
                                              'total_seconds': round(time.time() - clock.t0, 1)}) + '\n')
  for part in printed:
    print(part)
  print(f'pipeline checkpoint: {motion_model}\nablation: {ablation}\n'
        f'total wall time: {time.time() - clock.t0:.0f}s  {json.dumps(clock.parts)}')
