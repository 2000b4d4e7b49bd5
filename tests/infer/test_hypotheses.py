"""Hypothesis scores against hand-counted masks, and the ranking each criterion states."""

import numpy as np
import pytest

from tgvac_jax.infer import hypotheses


def _masks():
  visible = np.zeros((3, 4, 4), bool)
  visible[:, 1:3, 1:3] = True                        # 4 visible pixels per frame
  covers = np.zeros((3, 4, 4), bool)
  covers[:, 0:3, 0:3] = True                         # contains the visible mask, same in every frame
  partial = covers.copy()
  partial[0, 1, 1] = False                           # frame 0 misses 1 of its 4 visible pixels
  partial[2] = False
  partial[2, 1:3, 1:3] = True                        # frame 2 is just the visible part
  return visible, covers, partial


def test_scores_by_hand():
  visible, covers, partial = _masks()
  s_cover, s_partial = hypotheses.scores(np.stack([covers, partial]), visible)
  assert s_cover == {'coverage': 1.0, 'stability': 1.0}
  assert s_partial['coverage'] == pytest.approx((3 / 4 + 1 + 1) / 3)
  # IoU(frame0, frame1) = 8/9, IoU(frame1, frame2) = 4/9
  assert s_partial['stability'] == pytest.approx((8 / 9 + 4 / 9) / 2)
  # frames without a visible object do not count for coverage; a single frame is perfectly stable
  assert hypotheses.coverage(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool)) == 1.0
  assert hypotheses.stability(covers[:1]) == 1.0


def test_choose_ranks_by_the_criterion_then_the_other():
  s = [{'coverage': 0.9, 'stability': 0.99}, {'coverage': 1.0, 'stability': 0.5}, {'coverage': 1.0, 'stability': 0.6}]
  assert hypotheses.choose(s, 'coverage') == 2
  assert hypotheses.choose(s, 'stability') == 0
  assert hypotheses.choose(s, 'first') == 0
  assert hypotheses.choose([s[1], s[1]], 'coverage') == 0  # ties keep the lower seed
  with pytest.raises(ValueError, match='select'):
    hypotheses.choose(s, 'best')
