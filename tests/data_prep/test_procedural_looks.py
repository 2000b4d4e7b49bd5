"""The procedural source's diversity knobs (issue 30): off by default, they change pixels only, and each does what
it names, checked against an independent computation (the analytic masks, PIL's own JPEG round trip, a fitted
plane, the per-channel ratio)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.sources.procedural import SHAPES, ProceduralSource, polygon_coverage, shape_mask

PLAIN = dict(num_videos=4, size=48, min_frames=3, max_frames=3, seed=2, patterns=('plain',), background='plain',
             second_sprite_prob=0.0, spin=False, pulse=False)


def _render(**kw):
  src = ProceduralSource(**(PLAIN | kw))
  return [src.render(v) for v in src.videos()], src


def test_defaults_keep_the_build_fingerprint_and_the_pixels():
  (base, src), (same, _) = _render(), _render(renderer='analytic', shading=0.0, colour_jitter=0.0,
                                              jpeg_quality=(0, 0))
  assert not {'renderer', 'shading', 'colour_jitter', 'jpeg_quality'} & set(src.describe())
  for (f0, l0), (f1, l1) in zip(base, same):
    assert np.array_equal(f0, f1) and np.array_equal(l0, l1)
  assert ProceduralSource(**PLAIN, shading=0.3).describe()['shading'] == 0.3


@pytest.mark.parametrize('shape', SHAPES)
def test_polygon_coverage_matches_the_analytic_shape(shape):
  """The PIL-filled outline against the inside-test sampled 8 x 8 per pixel: area within 3 %, masks within a pixel
  ring of the edge."""
  h = w = 40
  rad, cx, cy, angle, aspect = 14.0, 20.3, 19.6, 0.7, 1.1
  ca, sa = np.cos(angle), np.sin(angle)

  def to_pixels(uv):
    us, vs = uv[:, 0] * aspect, uv[:, 1] / aspect
    return np.stack([cx + (ca * us - sa * vs) * rad, cy + (sa * us + ca * vs) * rad], 1)
  cov = polygon_coverage(shape, h, w, to_pixels)
  ss = 8
  yy, xx = np.mgrid[0:h * ss, 0:w * ss].astype(np.float64)
  dx, dy = ((xx + 0.5) / ss - cx) / rad, ((yy + 0.5) / ss - cy) / rad
  ref = shape_mask(shape, (ca * dx + sa * dy) / aspect, (-sa * dx + ca * dy) * aspect)
  ref = ref.reshape(h, ss, w, ss).mean(axis=(1, 3))
  assert abs(cov.sum() / ref.sum() - 1) < 0.03, (cov.sum(), ref.sum())
  assert np.abs(cov - ref).max() <= 1.0 and ((cov >= 0.5) != (ref >= 0.5)).sum() <= 0.1 * (ref >= 0.5).sum()
  assert ((cov > 0.05) & (cov < 0.95)).any(), 'antialiased edges'


def test_polygon_renderer_keeps_the_objects_and_softens_their_edges():
  (analytic, _), (polygon, _) = _render(), _render(renderer='polygon')
  for (fa, la), (fp, lp) in zip(analytic, polygon):
    a, p = la > 0, lp > 0
    assert (a & p).sum() / (a | p).sum() > 0.85
    colours = lambda f: {tuple(c) for c in f[0].reshape(-1, 3)}  # noqa: E731
    assert len(colours(fp)) > len(colours(fa)), 'blended edge pixels'
  (mixed, src), (polygon, _), (analytic, _) = (_render(renderer=r, num_videos=10) for r in ('mixed', 'polygon',
                                                                                           'analytic'))
  kinds = [src._spec(v)['look']['polygon'] for v in src.videos()]
  assert set(kinds) == {True, False}, 'mixed draws both renderers'
  for kind, (fm, _), (fp, _), (fa, _) in zip(kinds, mixed, polygon, analytic):
    assert np.array_equal(fm, fp if kind else fa)


def test_jpeg_is_pils_round_trip_at_a_quality_in_range():
  (clean, _), (coded, src) = _render(), _render(jpeg_quality=(40, 40))
  for (f0, l0), (f1, l1) in zip(clean, coded):
    assert np.array_equal(l0, l1)
    buf = io.BytesIO()
    Image.fromarray(f0[0]).save(buf, format='JPEG', quality=40)
    assert np.array_equal(np.asarray(Image.open(buf).convert('RGB')), f1[0])
  assert src.describe()['jpeg_quality'] == [40, 40]
  with pytest.raises(ValueError, match='jpeg_quality'):
    ProceduralSource(**PLAIN, jpeg_quality=(90, 50))


def test_colour_jitter_is_a_gain_and_an_offset_per_video():
  (clean, _), (jittered, src) = _render(), _render(colour_jitter=0.2)
  for v, ((f0, l0), (f1, l1)) in zip(src.videos(), zip(clean, jittered)):
    assert np.array_equal(l0, l1)
    look = src._spec(v)['look']
    ok = (f0 > 60) & (f0 < 160)   # no clipping at either end after the jitter
    want = f0.astype(np.float64) * np.asarray(look['gain']) + look['offset']
    assert np.abs(f1[ok] - want[ok]).max() <= 2   # both frames are truncated to integers
    assert np.all(np.abs(np.asarray(look['gain']) - 1) <= 0.2) and abs(look['offset']) <= 8


def test_shading_is_a_linear_light_ramp_over_the_frame():
  (clean, _), (lit, src) = _render(), _render(shading=0.4)
  for v, ((f0, l0), (f1, l1)) in zip(src.videos(), zip(clean, lit)):
    assert np.array_equal(l0, l1)
    back = l0[0] == 0
    ratio = f1[0][back].astype(np.float64).mean(-1) / f0[0][back].astype(np.float64).mean(-1)
    yy, xx = np.nonzero(back)
    design = np.stack([xx, yy, np.ones_like(xx)], 1).astype(np.float64)
    fit, *_ = np.linalg.lstsq(design, ratio, rcond=None)
    assert np.abs(design @ fit - ratio).max() < 0.03, 'the background is lit by a plane'
    strength = src._spec(v)['look']['light'][1]
    assert abs(np.hypot(fit[0] * 47, fit[1] * 47) - 2 * strength) < 0.03


def test_bad_knobs_are_one_clear_error():
  with pytest.raises(ValueError, match="renderer='pil'"):
    ProceduralSource(**PLAIN, renderer='pil')
  with pytest.raises(ValueError, match='shading'):
    ProceduralSource(**PLAIN, shading=1.5)
