"""Pooling per-frame records into the tables, on hand-made records."""

import pytest

from tgvac_jax.eval.summary import markdown, summarize


def _rec(video, split, occluded, **m):
  base = dict(video=video, split=split, occluded=occluded, clip=None, lpips=None, tc=None, psnr_occ=None,
              ssim_occ=None, iou_c2f=1.0, iou_savos=1.0, iou_occ_c2f=0.0, iou_occ_savos=0.0)
  return {**base, **m}


def test_summarize_and_markdown():
  records = [_rec('a', 'easy', False, iou_occ_savos=1.0, lpips=0.1, tc=None, psnr_occ=None),
             _rec('a', 'easy', True, iou_occ_c2f=0.5, iou_occ_savos=0.5, lpips=0.3, tc=0.9, psnr_occ=20.0),
             _rec('b', 'hard', True, iou_c2f=0.4, iou_savos=0.4, iou_occ_c2f=0.2, iou_occ_savos=0.2, lpips=0.5,
                  tc=None, psnr_occ=30.0)]
  s = summarize(records, 'CLIP')
  e, h, a = (s['splits'][k] for k in ('easy', 'hard', 'all'))
  assert (e['frames'], e['videos'], e['occluded_frames'], a['videos']) == (2, 1, 1, 2)
  assert e['lpips'] == pytest.approx(0.2) and e['tc'] == pytest.approx(0.9) and h['tc'] is None
  assert e['iou_occ_c2f'] == pytest.approx(0.25) and e['iou_occ_savos'] == pytest.approx(0.75)
  assert e['iou_occ_occluded'] == pytest.approx(0.5) and a['iou_occ_occluded'] == pytest.approx(0.35)
  assert a['iou_c2f'] == pytest.approx(0.8) and a['psnr_occ'] == pytest.approx(25.0) and a['clip'] is None
  md = markdown({'ours': s, 'no motion': summarize(records[:1], 'CLIP')})
  assert '| ours | n/a | 0.200 | 0.900 | n/a | 0.500 | n/a |' in md
  assert '| ours | 80.00 | 23.33 | 56.67 | 35.00 |' in md
  assert '| no motion |' in md and 'TC ↑ (CLIP)' in md
