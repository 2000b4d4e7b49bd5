"""`python run.py --config configs/eval.py`: the paper's metrics for a model's completions (§4.2, §4.5).

  data = a built dataset (its `split`, default validation) -> exported once to OUT/ground_truth/ as an amodal root
       | an amodal root (the DAVIS-style layout of `amodal_root.py`)
  predictions (OUT/predictions/ by default) = OUT/<seq>/amodal_mask/*.png and OUT/<seq>/object/*.png; with
       `checkpoint` set, sequences without predictions are completed first (batch inference), else they must exist
  -> OUT/metrics/: table.md (Table 2 and Table 5 shapes, region PSNR/SSIM), summary.json, frames.json (one record
     per frame), plots/ (occluded IoU vs occlusion, metrics along the first videos); written atomically.

Paths, the CLIP folder and the LPIPS weights are checked before anything is written, sequence and frame lists
before inference or scoring. Several processes: process 0 exports, each completes its share of the sequences,
process 0 scores and writes the report.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jax
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from tgvac_jax.data import pipeline, schema
from tgvac_jax.eval import amodal_root, plots
from tgvac_jax.eval.evaluate import evaluate_predictions, make_scorers
from tgvac_jax.eval.summary import markdown, summarize
from tgvac_jax.files import atomic_folder
from tgvac_jax.models import checkpoint

GROUND_TRUTH, PREDICTIONS, METRICS = 'ground_truth', 'predictions', 'metrics'
EXPORT_INFO = 'export.json'


# --------------------------------------------------------------------------------------------- CLIP weights
def load_clip_vision(path: str | os.PathLike):
  """Our CLIPVisionModelWithProjection from a local folder: one of our component checkpoints, a transformers
  `CLIPVisionModelWithProjection`, or a full transformers `CLIPModel` (its vision half is used)."""
  from convert import clip as convert_clip
  from convert.from_diffusers import read_state_dict
  folder = Path(path)
  config_path = folder / 'config.json'
  if not config_path.is_file():
    raise FileNotFoundError(f'CLIP folder {folder}: no config.json')
  d = json.loads(config_path.read_text())
  if '_class' in d:
    module, _ = checkpoint.load_component(folder)
  else:
    arch = d.get('architectures') or []
    sd = read_state_dict(folder)
    if 'CLIPModel' in arch:
      d = {**d['vision_config'], 'projection_dim': d.get('projection_dim', 512),
           'architectures': ['CLIPVisionModelWithProjection']}
      sd = {k: v for k, v in sd.items() if k.startswith(('vision_model.', 'visual_projection.'))}
    module, _ = convert_clip.from_torch(sd, d)
  if type(module).__name__ != 'CLIPVisionModelWithProjection':
    raise ValueError(f'CLIP folder {folder}: holds a {type(module).__name__}, not a CLIP vision tower')
  return module


# --------------------------------------------------------------------------------------------- dataset export
def _sequence_name(i: int, rec: dict) -> str:
  return f'{i:05d}_' + re.sub(r'[^A-Za-z0-9_-]+', '-', f'{rec["source"]}_{rec["video_id"]}_{rec["object_id"]}')


def export_split(dataset: str, split: str, root: Path, max_videos: int = 0) -> Path:
  """The clips of a built dataset's split as an amodal root (frames, visible and amodal masks, the whole object
  over white as RGBA, captions), written atomically; an existing export of the same split is reused."""
  info = {'dataset': os.path.abspath(schema.find_dataset_dir(dataset)), 'split': split, 'max_videos': max_videos}
  if (root / EXPORT_INFO).is_file() and json.loads((root / EXPORT_INFO).read_text()) == info:
    return root
  source = pipeline.data_source(dataset, split)
  n = len(source) if max_videos <= 0 else min(max_videos, len(source))

  def write(tmp: Path) -> None:
    captions = {}
    for i in tqdm(range(n), desc=f'export {split}', unit='clip'):
      rec = schema.decode_record(source[i])
      name = _sequence_name(i, rec)
      amodal_root.write_sequence(tmp, name, rec['occluded'], rec['visible_mask'], rec['amodal_mask'], rec['amodal'])
      captions[name] = rec['caption']
    (tmp / amodal_root.CAPTIONS).write_text(json.dumps(captions, indent=1, sort_keys=True) + '\n')
    (tmp / EXPORT_INFO).write_text(json.dumps(info) + '\n')
  return atomic_folder(root, write)


# --------------------------------------------------------------------------------------------- inference
def complete(c, root: Path, names: list[str], predictions: Path) -> None:
  """Completes the root's sequences that have no prediction folder yet (`infer.batch.complete_sequences`: every
  device and process, atomic per sequence) with the model at `c.checkpoint` and the settings in `c.infer`."""
  from tgvac_jax.infer import job as infer_job
  from tgvac_jax.infer.batch import complete_sequences
  from tgvac_jax.infer.sources import davis_sequences
  ic = c.infer.copy_and_resolve_references()
  ic.checkpoint = c.checkpoint
  settings = infer_job.settings_from_config(ic)
  seqs = davis_sequences(root, None, c.object_id, tuple(names))
  for seq in seqs:  # inputs first: a bad sequence fails before the model is read
    seq.check()
  completer = infer_job.load_completer(ic)
  complete_sequences(completer, seqs, predictions, settings,
                     record={'checkpoint': os.path.abspath(c.checkpoint), 'config': ic.to_dict()})


# --------------------------------------------------------------------------------------------- outputs
def _json_safe(x):
  """NaN and ±inf -> None (strict JSON)."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_json_safe(v) for v in x]
  return x


def write_report(out: Path, name: str, records: list[dict], summary: dict, settings: dict,
                 plot_videos: int) -> Path:
  """OUT/metrics/ with the table, the summary, the per-frame records and the plots, atomically."""
  def write(tmp: Path) -> None:
    (tmp / 'table.md').write_text(markdown({name: summary}, title=f'Evaluation of {name}'))
    (tmp / 'summary.json').write_text(json.dumps(_json_safe({'name': name, 'summary': summary,
                                                             'settings': settings}), indent=1) + '\n')
    (tmp / 'frames.json').write_text(json.dumps(_json_safe(records)) + '\n')
    (tmp / 'plots').mkdir()
    plots.occluded_iou_vs_rate(records, tmp / 'plots' / 'occluded_iou_vs_occlusion.png')
    for video in list(dict.fromkeys(r['video'] for r in records))[:plot_videos]:
      plots.along_video(records, video, tmp / 'plots' / f'along_{video}.png')
  return atomic_folder(out / METRICS, write)


# --------------------------------------------------------------------------------------------- the job
def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'tgvac eval: {name}')


def run(c) -> None:
  if not c.data:
    raise ValueError('config.data is empty: give a built dataset folder or an amodal root')
  if not os.path.exists(c.data):
    raise FileNotFoundError(f'config.data {c.data} does not exist')
  for key in ('clip', 'checkpoint'):
    if c[key] and not os.path.isdir(c[key]):
      raise FileNotFoundError(f'config.{key} {c[key]} is not a folder')
  out = Path(c.out).absolute()
  predictions = Path(c.predictions or out / PREDICTIONS).absolute()
  root = Path(c.data)
  is_root = amodal_root.is_amodal_root(root)
  scorers = None  # the metric networks first: a bad CLIP folder or LPIPS file fails before anything is written
  if not is_root or amodal_root.has_objects(root):
    scorers = make_scorers(c.lpips_net, c.lpips_weights or None, load_clip_vision(c.clip) if c.clip else None,
                           chunk=c.chunk)
  if not is_root:
    if jax.process_index() == 0:
      logging.info('exporting the %s split of %s to %s', c.split, c.data, out / GROUND_TRUTH)
      export_split(c.data, c.split, out / GROUND_TRUTH, c.max_videos)
    _barrier('ground truth exported')
    root = out / GROUND_TRUTH
  names = amodal_root.sequences(root)
  if c.max_videos > 0:
    names = names[:c.max_videos]
  if c.checkpoint:
    complete(c, root, names, predictions)  # each process completes its share
    _barrier('predictions written')
  if jax.process_index() != 0:  # process 0 scores and writes the report
    return
  no_objects = amodal_root.check_predictions(predictions, names, root)
  if no_objects:
    logging.warning('%d sequence(s) have no object images (only mask metrics): %s', len(no_objects),
                    ', '.join(no_objects[:5]))

  pairs = ((truth, amodal_root.read_prediction(predictions, n, truth.stems))
           for n in names for truth in [amodal_root.read_ground_truth(root, n, c.object_id)])
  records = evaluate_predictions(pairs, scorers, total=len(names))
  summary = summarize(records, scorers.tc_space if scorers else None)
  settings = {'data': os.path.abspath(c.data), 'split': c.split, 'ground_truth': str(root.absolute()),
              'predictions': str(predictions), 'clip': c.clip or None, 'lpips_net': c.lpips_net,
              'object_id': c.object_id}
  report = write_report(out, c.name, records, summary, settings, c.plot_videos)
  logging.info('wrote %s', report)
  print(markdown({c.name: summary}, title=f'Evaluation of {c.name}'))
