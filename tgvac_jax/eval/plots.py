"""PNG plots of per-frame records (matplotlib, Agg): occluded IoU against occlusion rate over all frames, and the
metrics along one video with its occlusion rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from tgvac_jax.eval.evaluate import HARD  # noqa: E402

ALONG = (('iou_c2f', 'IoU'), ('iou_occ_c2f', 'occluded IoU'), ('lpips', 'LPIPS'), ('clip', 'CLIP'), ('tc', 'TC'),
         ('ssim_occ', 'SSIM (occluded)'))


def occluded_iou_vs_rate(records: Sequence[Mapping[str, Any]], path: Path, bins: int = 10) -> None:
  """Scatter of occluded IoU (frames with an occluded region) against occlusion rate, with binned means."""
  rs = [r for r in records if r['occluded']]
  fig, ax = plt.subplots(figsize=(6, 4))
  if rs:
    x = np.array([r['occlusion_rate'] for r in rs])
    y = np.array([r['iou_occ_c2f'] for r in rs])
    ax.scatter(x, y, s=6, alpha=0.4, label='frames')
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(bins) if (idx == i).any()]
    means = [y[idx == i].mean() for i in range(bins) if (idx == i).any()]
    ax.plot(centers, means, 'o-', color='C3', label='bin mean')
    ax.legend(loc='lower left')
  ax.axvline(HARD, color='gray', ls='--', lw=1)
  ax.set(xlabel='occlusion rate |A−M| / |A|', ylabel='occluded IoU', xlim=(0, 1), ylim=(-0.02, 1.02),
         title=f'Occluded IoU vs occlusion ({len(rs)} occluded frames)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def along_video(records: Sequence[Mapping[str, Any]], video: str, path: Path) -> None:
  """Every available per-frame metric of `video` against the frame index, over its occlusion rate."""
  rs = sorted((r for r in records if r['video'] == video), key=lambda r: r['frame'])
  t = [r['frame'] for r in rs]
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.fill_between(t, [r['occlusion_rate'] for r in rs], color='0.85', label='occlusion rate')
  for key, label in ALONG:
    values = [np.nan if r[key] is None else r[key] for r in rs]
    if not np.isnan(values).all():
      ax.plot(t, values, '.-', label=label)
  ax.set(xlabel='frame', ylabel='value', ylim=(-0.02, 1.05), title=video)
  ax.legend(fontsize=7, ncol=2, loc='lower left')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
