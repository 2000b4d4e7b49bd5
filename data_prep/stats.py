"""Dataset statistics per source, as the paper's Table 1.

Rows: mean #frames (of the source videos used), # object classes, # instances (source objects used as targets),
# synthesized videos (clips), average object size (mean amodal area / frame area), average occlusion rate (mean
over clips of the per-frame |A∩O|/|A|), average occlusion-coverage rate (mean over clips of |∪(A∩O)| / |∪A|).
Also easy/hard counts (per clip by mean rate, and per frame), which the evaluation splits on.

`python -m data_prep.stats <built dataset dir>` re-prints the table saved by the builder (stats.json).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Iterable, Mapping

import numpy as np

ROWS = (
    ('mean_frames', 'Mean #frames', '{:,.0f}'),
    ('classes', '# object classes', '{:,d}'),
    ('instances', '# instances', '{:,d}'),
    ('videos', '# synthesized video', '{:,d}'),
    ('avg_object_size', '# average object size', '{:.2%}'),
    ('avg_occlusion_rate', '# average occlusion rate', '{:.2f}'),
    ('avg_coverage', '# average occlusion-coverage rate', '{:.2f}'),
    ('easy_videos', '# easy videos (mean rate < 0.5)', '{:,d}'),
    ('hard_videos', '# hard videos (mean rate >= 0.5)', '{:,d}'),
    ('hard_frame_share', 'share of hard frames (rate >= 0.5)', '{:.2f}'),
)


def table1(clips: Iterable[Mapping]) -> dict:
  """Statistics of one source from per-clip metadata dicts with keys: video_id, object_id, class_name,
  source_num_frames, occlusion_rate (per frame), coverage, object_size."""
  clips = list(clips)
  if not clips:
    return {k: 0 for k, _, _ in ROWS}
  frames_by_video = {c['video_id']: int(c['source_num_frames']) for c in clips}
  rates = [np.asarray(c['occlusion_rate'], np.float64) for c in clips]
  mean_rates = np.array([r.mean() for r in rates])
  all_rates = np.concatenate(rates)
  return {
      'mean_frames': float(np.mean(list(frames_by_video.values()))),
      'classes': len({c['class_name'] for c in clips}),
      'instances': len({(c['video_id'], int(c['object_id'])) for c in clips}),
      'videos': len(clips),
      'avg_object_size': float(np.mean([c['object_size'] for c in clips])),
      'avg_occlusion_rate': float(mean_rates.mean()),
      'avg_coverage': float(np.mean([c['coverage'] for c in clips])),
      'easy_videos': int((mean_rates < 0.5).sum()),
      'hard_videos': int((mean_rates >= 0.5).sum()),
      'hard_frame_share': float((all_rates >= 0.5).mean()),
  }


def _cells(stats: Mapping[str, Mapping]) -> tuple[list[str], list[list[str]]]:
  names = list(stats)
  body = [[label] + [fmt.format(stats[n][key]) for n in names] for key, label, fmt in ROWS]
  return names, body


def format_table(stats: Mapping[str, Mapping]) -> str:
  """Plain-text table, one column per source."""
  names, body = _cells(stats)
  head = [''] + names
  widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
  line = lambda r: '  '.join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
  return '\n'.join([line(head), '  '.join('-' * w for w in widths)] + [line(r) for r in body])


def format_markdown(stats: Mapping[str, Mapping]) -> str:
  names, body = _cells(stats)
  out = ['| | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(names)]
  out += ['| ' + ' | '.join(r) + ' |' for r in body]
  return '\n'.join(out)


def save(stats: Mapping[str, Mapping], out_dir: str) -> tuple[str, str]:
  """Writes stats.json and stats.md into out_dir (atomically); returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = os.path.join(out_dir, 'stats.json'), os.path.join(out_dir, 'stats.md')
  for path, text in zip(paths, (json.dumps(stats, indent=1, sort_keys=True), format_markdown(stats) + '\n')):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('data_dir', help='a folder holding stats.json (the build output or a version folder)')
  a = p.parse_args(argv)
  found = None
  for root, _, files in os.walk(a.data_dir):
    if 'stats.json' in files:
      found = os.path.join(root, 'stats.json')
      break
  if found is None:
    raise SystemExit(f'no stats.json under {a.data_dir}')
  with open(found) as f:
    print(format_table(json.load(f)))


if __name__ == '__main__':
  main()
