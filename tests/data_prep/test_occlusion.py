"""Synthesis geometry: visible = amodal ∧ ¬occluder exactly, the target is the source object on white, Table-1
coverage on a hand-computed case, and the easy/hard bands."""

import numpy as np
import pytest

from data_prep import occlusion as occ
from data_prep.sources.procedural import ProceduralSource


def test_coverage_and_rates_hand_computed():
  # 3 frames of 4x4. Object A: a 2x2 block moving right by one column per frame. Occluder O: column 2.
  a = np.zeros((3, 4, 4), bool)
  o = np.zeros((3, 4, 4), bool)
  for t in range(3):
    a[t, 1:3, t:t + 2] = True
    o[t, :, 2] = True
  # frame 0: A cols 0-1, no overlap; frame 1: cols 1-2, overlap col 2 (2 px); frame 2: cols 2-3, overlap col 2.
  np.testing.assert_allclose(occ.occlusion_rates(a, o), [0.0, 0.5, 0.5])
  # ∪A = rows 1-2 x cols 0-3 = 8 px; ∪(A∩O) = rows 1-2 x col 2 = 2 px.
  assert occ.occlusion_coverage(a, o) == pytest.approx(2 / 8)
  # empty object: defined as 0, no division by zero
  assert occ.occlusion_coverage(np.zeros_like(a), o) == 0.0
  np.testing.assert_array_equal(occ.occlusion_rates(np.zeros_like(a), o), 0)


def test_compose_is_exact():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  occ_rgb = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  a = rng.random((4, 16, 16)) < 0.4
  o = rng.random((4, 16, 16)) < 0.3
  occluded, amodal, visible = occ.compose(frames, a, occ_rgb, o)
  np.testing.assert_array_equal(visible, a & ~o)
  np.testing.assert_array_equal(amodal[a], frames[a])
  assert (amodal[~a] == 255).all()
  np.testing.assert_array_equal(occluded[o], occ_rgb[o])
  np.testing.assert_array_equal(occluded[~o], frames[~o])


@pytest.fixture(scope='module')
def proc():
  return ProceduralSource(num_videos=6, size=48, min_frames=10, max_frames=12, second_sprite_prob=0.0)


@pytest.mark.parametrize('difficulty', ['easy', 'hard'])
def test_synthesize_clip_geometry(proc, difficulty):
  cfg = occ.SynthConfig(clip_len=5, resolution=32, candidates=64)
  f0, l0 = proc.render('proc00000')
  f1, l1 = proc.render('proc00001')
  idx = np.arange(5)
  clip = occ.synthesize_clip(f0[idx], l0[idx] == 1, f1[idx], l1[idx] == 1, cfg, np.random.default_rng(1),
                             difficulty=difficulty)
  assert clip is not None
  # the invariant, exactly
  np.testing.assert_array_equal(clip.visible_mask, clip.amodal_mask & ~clip.occluder_mask)
  # target = the source object's pixels (source frames cropped/resized like the clip), white elsewhere
  y0, x0, ch, cw = clip.placement['crop']
  src = occ.resize_rgb(np.ascontiguousarray(f0[idx][:, y0:y0 + ch, x0:x0 + cw]), (32, 32))
  a = clip.amodal_mask
  np.testing.assert_array_equal(clip.amodal[a], src[a])
  assert (clip.amodal[~a] == 255).all()
  # the input shows the source where the occluder is absent
  np.testing.assert_array_equal(clip.occluded[~clip.occluder_mask], src[~clip.occluder_mask])
  # stored statistics agree with the masks
  np.testing.assert_allclose(clip.occlusion_rate, occ.occlusion_rates(a, clip.occluder_mask))
  assert clip.coverage == pytest.approx(occ.occlusion_coverage(a, clip.occluder_mask))
  mean = clip.occlusion_rate.mean()
  lo, hi = cfg.hard_range if difficulty == 'hard' else cfg.easy_range
  assert lo - 0.1 <= mean <= hi + 0.1, mean
  assert clip.difficulty == ('hard' if mean >= 0.5 else 'easy')


def test_easy_and_hard_both_occur(proc):
  cfg = occ.SynthConfig(clip_len=4, resolution=32, clips_per_track=3, candidates=32)
  vids = proc.videos()
  diffs = []
  for i, v in enumerate(vids[:4]):
    other = proc.tracks(vids[(i + 1) % len(vids)])[0]
    clips = occ.synthesize_track(proc.tracks(v)[0], lambda r: other, cfg, np.random.default_rng(i),
                                 lambda *a: None)
    diffs += [c.difficulty for c in clips]
  assert 'easy' in diffs and 'hard' in diffs


def test_frame_selection_rejects_border_contact_and_drops():
  cfg = occ.SynthConfig(clip_len=3, border=1, contact=1, min_area=0.01, max_area_change=0.35)
  m = np.zeros((6, 20, 20), bool)
  m[:, 5:10, 5:10] = True
  m[2, 0:5, 5:10] = True            # frame 2 touches the top border
  m[4] = False
  m[4, 5:7, 5:7] = True             # frame 4: sudden area drop (25 -> 4 px)
  others = np.zeros_like(m)
  others[5, 10:14, 5:10] = True     # frame 5: another object right next to it
  ok, area = occ.frame_ok(m, others, None, cfg)
  assert ok.tolist() == [True, True, False, True, True, False]
  assert occ.clip_starts(ok, area, cfg) == []          # every 3-window holds a rejected frame or the drop
  ok2, area2 = occ.frame_ok(m[:2].repeat(3, 0), None, None, cfg)
  assert occ.clip_starts(ok2, area2, cfg) == [0, 1, 2, 3]
