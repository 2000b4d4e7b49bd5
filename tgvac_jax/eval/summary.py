"""Per-frame records -> the paper's tables: Table 2 (CLIP, LPIPS, TC on easy and hard frames, §4.2), Table 5
(mIoU_full and mIoU_occ, §4.5, ×100, under both conventions for unoccluded frames and over occluded frames only),
and PSNR/SSIM of the occluded region. `summarize` pools one method's records; `markdown` renders one row per
method, so an ablation is a dict of summaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SPLITS = ('easy', 'hard', 'all')
METRICS = ('clip', 'lpips', 'tc', 'psnr_occ', 'ssim_occ', 'iou_c2f', 'iou_savos', 'iou_occ_c2f', 'iou_occ_savos')


def _mean(values) -> float | None:
  v = [x for x in values if x is not None]
  return float(np.mean(v)) if v else None


def summarize(records: Sequence[Mapping[str, Any]], tc_space: str | None = None) -> dict[str, Any]:
  """{'tc_space', 'splits': {easy|hard|all: {frames, videos, occluded_frames, <metric means>,
  iou_occ_occluded}}}; a mean over no defined value is None. `iou_occ_occluded` averages the occluded IoU over
  frames with a non-empty occluded region, where the two conventions agree."""
  out = {'tc_space': tc_space, 'splits': {}}
  for split in SPLITS:
    rs = [r for r in records if split == 'all' or r['split'] == split]
    occ = [r for r in rs if r['occluded']]
    s = {'frames': len(rs), 'videos': len({r['video'] for r in rs}), 'occluded_frames': len(occ)}
    s.update({m: _mean(r[m] for r in rs) for m in METRICS})
    s['iou_occ_occluded'] = _mean(r['iou_occ_c2f'] for r in occ)
    out['splits'][split] = s
  return out


def _fmt(x: float | None, scale: float = 1.0, digits: int = 3) -> str:
  if x is None:
    return 'n/a'
  return 'inf' if math.isinf(x) else f'{x * scale:.{digits}f}'


def _row(cells) -> str:
  return '| ' + ' | '.join(cells) + ' |'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return [_row(header), _row(['---'] * len(header))] + [_row(r) for r in rows]


def markdown(summaries: Mapping[str, Mapping[str, Any]], title: str = 'Evaluation') -> str:
  """Markdown tables for {method name: summary}."""
  spaces = sorted({s['tc_space'] or 'n/a' for s in summaries.values()})
  tc = f'TC ↑ ({", ".join(spaces)})'
  lines = [f'# {title}', '', '## Completion quality (paper Table 2)', '']
  t2 = []
  for name, s in summaries.items():
    e, h = s['splits']['easy'], s['splits']['hard']
    t2.append([name] + [_fmt(x[m]) for x in (e, h) for m in ('clip', 'lpips', 'tc')])
  lines += _table(['Method'] + [f'{split} {m}' for split in ('Easy', 'Hard') for m in ('CLIP ↑', 'LPIPS ↓', tc)], t2)
  lines += ['', f'TC is the mean cosine between consecutive generated frames in the {" / ".join(spaces)} embedding '
            'space; CLIP is the cosine between CLIP image embeddings of the generated and ground-truth object. '
            'Easy: occlusion below 50 %, hard: 50 % or more.', '']
  lines += ['## Amodal segmentation (paper Table 5, ×100)', '']
  t5 = []
  for name, s in summaries.items():
    a = s['splits']['all']
    t5.append([name] + [_fmt(a[m], 100, 2) for m in ('iou_c2f', 'iou_occ_c2f', 'iou_occ_savos', 'iou_occ_occluded')])
  lines += _table(['Method', 'mIoU_full', 'mIoU_occ (C2F-Seg: unoccluded = 0)', 'mIoU_occ (SaVos: unoccluded = 1)',
                   'mIoU_occ (occluded frames only)'], t5)
  lines += ['', 'Over all frames. C2F-Seg scores a frame whose two regions are both empty 0, SaVos 1 (mIoU_full is '
            "C2F-Seg's; the SaVos value, `iou_savos` in the JSON, differs only where both masks are empty).", '']
  lines += ['## Occluded region (A − M)', '']
  rq = []
  for name, s in summaries.items():
    rq.append([name] + [_fmt(s['splits'][sp][m], 1, 2 if m == 'psnr_occ' else 3)
                        for sp in SPLITS for m in ('psnr_occ', 'ssim_occ')])
  lines += _table(['Method'] + [f'{sp.capitalize()} {m}' for sp in SPLITS for m in ('PSNR ↑', 'SSIM ↑')], rq)
  lines += ['', '## Frames', '']
  counts = [[name] + [str(s['splits'][sp][k]) for sp in SPLITS for k in ('frames', 'videos')]
            for name, s in summaries.items()]
  lines += _table(['Method'] + [f'{sp.capitalize()} {k}' for sp in SPLITS for k in ('frames', 'videos')], counts)
  return '\n'.join(lines) + '\n'
