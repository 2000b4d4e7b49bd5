"""The non-learned ablation baselines on hand-made clips with known answers."""

import numpy as np

from tgvac_jax.eval import baselines
from tgvac_jax.infer import propagate


def test_visible_only_is_the_visible_part():
  frames = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
  vis = np.zeros((3, 8, 8), bool)
  vis[:, 2:5, 2:5] = True
  rgb, amodal = baselines.visible_only(frames, vis)
  assert (amodal == vis).all() and (rgb[vis] == frames[vis]).all() and (rgb[~vis] == 255).all()


def test_temporal_propagation_moves_the_less_occluded_frame():
  """A square moving down 1 px per frame, the right half of frame 1 hidden: the baseline restores it exactly from
  an unoccluded neighbour, using only frames and visible masks (the shift is ambiguous sideways, where half the
  square is hidden; the least motion wins there)."""
  n, size = 3, 24
  frames = np.full((n, size, size, 3), 90, np.uint8)
  whole = np.zeros((n, size, size), bool)
  for t in range(n):
    whole[t, 6 + t:12 + t, 4:10] = True
    frames[t][whole[t]] = (200, 30, 30)
  vis = whole.copy()
  vis[1, :, 7:] = False   # hide the right half of the square in frame 1
  rgb, amodal = baselines.temporal_propagation(frames, vis, window=1)
  assert (amodal == whole).all()
  assert (rgb[1][whole[1]] == (200, 30, 30)).all() and (rgb[1][~whole[1]] == 255).all()


def test_shift_matches_roll_inside():
  x = np.arange(36).reshape(6, 6)
  s = propagate.shift(x, 2, -1)
  assert (s[2:, :5] == x[:4, 1:]).all() and (s[:2] == 0).all() and (s[:, 5] == 0).all()
