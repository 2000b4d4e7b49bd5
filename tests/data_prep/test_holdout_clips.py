"""data_prep/holdout_clips.py, the demo's second clip generator: its rasterizer against the analytic polygon area, its
masks against an independent rasterization, its DAVIS-style folder through inference's and evaluation's readers,
and its independence from the procedural source."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from data_prep import holdout_clips as hc

SIZE, FRAMES = 48, 8


def _point_coverage(polygons, h: int, w: int, ss: int = 6) -> np.ndarray:
  """Coverage from matplotlib's point-in-polygon test on an ss x ss grid of sample points per pixel: another
  rasterizer (and another supersampling) than the generator's PIL fill."""
  off = (np.arange(ss) + 0.5) / ss
  ys = (np.arange(h)[:, None] + off[None]).ravel()
  xs = (np.arange(w)[:, None] + off[None]).ravel()
  pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
  inside = np.zeros(len(pts), bool)
  for poly in polygons:
    inside |= MplPath(np.asarray(poly)).contains_points(pts)
  return inside.reshape(h, ss, w, ss).mean(axis=(1, 3))


@pytest.mark.parametrize('shape', hc.FULL_SHAPES)
def test_antialiased_area_matches_the_shoelace_area(shape):
  rng = np.random.default_rng(len(shape))
  poly = hc.place(hc.outline(shape), rng.uniform(30, 34, 2), rng.uniform(12, 20), rng.uniform(0, 6.3),
                  rng.uniform(0.85, 1.15))
  cov = hc.coverage([poly], 64, 64)
  exact = hc.polygon_area(poly)
  assert abs(cov.sum() - exact) <= 0.01 * exact, (cov.sum(), exact)
  assert ((cov > 0) & (cov < 1)).any(), 'edges are antialiased'


def test_circle_outline_has_the_circle_area():
  cov = hc.coverage([hc.place(hc.outline('circle'), (40.3, 39.7), 25.0)], 80, 80)
  assert abs(cov.sum() - np.pi * 25.0 ** 2) <= 0.003 * np.pi * 25.0 ** 2


@pytest.mark.parametrize('family', hc.FAMILIES)
def test_masks_match_an_independent_rasterization(family):
  clip = hc.make_clip(family, 5, 0, size=SIZE, num_frames=FRAMES)
  tg = clip.spec['target']
  unit = hc.outline(tg['shape'])
  for f in range(FRAMES):
    target = _point_coverage([hc.place(unit, tg['centre'][f], tg['radius'][f], tg['angle'][f], tg['aspect'])],
                             SIZE, SIZE)
    occ = np.max([_point_coverage([hc._occluder_polygon(o, f, SIZE)], SIZE, SIZE) for o in clip.spec['occluders']],
                 axis=0)
    amodal, visible = target >= 0.5, (target >= 0.5) & (occ < 0.5)
    edge = (np.abs(target - 0.5) < 0.2) | (np.abs(occ - 0.5) < 0.2)   # where two rasterizers may round apart
    assert not (clip.amodal[f] != amodal)[~edge].any()
    assert not (clip.visible[f] != visible)[~edge].any()
    assert (clip.amodal[f] != amodal).mean() < 0.01 and (clip.visible[f] != visible).mean() < 0.01
    # where the object shows whole (no edge of it or of an occluder in the pixel or next to it), the frame is the
    # object
    whole = (target == 1) & (occ == 0)
    whole = whole & np.roll(whole, 1, 0) & np.roll(whole, -1, 0)
    whole = whole & np.roll(whole, 1, 1) & np.roll(whole, -1, 1)
    assert np.abs(clip.frames[f][whole].astype(int) - clip.objects[f][whole].astype(int)).max(initial=0) <= 1
  assert not (clip.visible & ~clip.amodal).any()


def test_every_clip_is_an_amodal_test_visible_in_frame_one():
  for family in hc.FAMILIES:
    for i in range(3):
      clip = hc.make_clip(family, 1, i, size=SIZE, num_frames=FRAMES)
      hidden = 1 - clip.visible.sum((1, 2)) / np.maximum(clip.amodal.sum((1, 2)), 1)
      assert clip.visible[0].any() and (hidden >= 0.05).mean() >= 0.4
      assert (clip.amodal.sum((1, 2)) > 0).all()


def test_captions_stay_in_the_demo_vocabulary():
  from configs import demo as demo_config
  from data_prep.sources.procedural import ProceduralSource
  words = set(ProceduralSource.caption_words())
  task = demo_config.get_config().data.procedural
  rng = np.random.default_rng(0)
  for family in hc.FAMILIES:
    for _ in range(60):
      spec = hc._layers(rng, family, FRAMES, 128)
      text = hc.caption(spec, 128).split()
      assert set(text) <= words, text
      if family == 'task':  # the demo's task: its shapes and sizes, plain
        assert text[-1] in task.shapes and text[1] in task.sizes and len(text) == 4, text


def test_determinism_by_seed():
  a = hc.make_clip('full', 7, 2, size=SIZE, num_frames=FRAMES)
  b = hc.make_clip('full', 7, 2, size=SIZE, num_frames=FRAMES)
  c = hc.make_clip('full', 8, 2, size=SIZE, num_frames=FRAMES)
  assert a.caption == b.caption and np.array_equal(a.frames, b.frames) and np.array_equal(a.visible, b.visible)
  assert not np.array_equal(a.frames, c.frames)


def test_davis_layout_reads_back_through_inference_and_evaluation(tmp_path):
  from tgvac_jax.eval import amodal_root
  from tgvac_jax.infer.sources import davis_sequences
  root = hc.write_root(tmp_path / 'full', 'full', 2, seed=3, size=SIZE, num_frames=FRAMES)
  clips = [hc.make_clip('full', 3, i, size=SIZE, num_frames=FRAMES) for i in range(2)]
  assert sorted(p.suffix for p in (root / 'JPEGImages' / clips[0].name).iterdir()) == ['.jpg'] * FRAMES
  seqs = davis_sequences(root)
  assert [s.name for s in seqs] == [c.name for c in clips] and [s.text for s in seqs] == [c.caption for c in clips]
  assert amodal_root.sequences(root) == [c.name for c in clips]
  for seq, clip in zip(seqs, clips):
    assert seq.check() == (FRAMES, SIZE, SIZE)
    loaded = seq.load()
    assert np.array_equal(loaded.visible, clip.visible)
    mse = np.mean((loaded.frames.astype(float) - clip.frames) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 28, 'the JPEG frames are the clip (quality 90: PSNR above 28 dB)'
    gt = amodal_root.read_ground_truth(root, clip.name)
    assert np.array_equal(gt.amodal, clip.amodal) and np.array_equal(gt.visible, clip.visible)
    assert np.array_equal(gt.objects, clip.objects)
  stamp = (root / 'captions.json').stat().st_mtime_ns
  assert hc.write_root(root, 'full', 2, seed=3, size=SIZE, num_frames=FRAMES) == root
  assert (root / 'captions.json').stat().st_mtime_ns == stamp, 'the same settings reuse the folder'
  assert json.loads((root / 'holdout.json').read_text())['family'] == 'full'


def test_bad_family_is_one_error_and_nothing_on_disk(tmp_path):
  with pytest.raises(ValueError, match="family='fishbowl'"):
    hc.write_root(tmp_path / 'x', 'fishbowl', 2)
  assert not list(tmp_path.iterdir())


def test_shares_no_code_with_the_procedural_source():
  tree = ast.parse(Path(hc.__file__).read_text())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert not any(m and (m.startswith('data_prep') or 'procedural' in m) for m in imported), imported
