"""Temporal consistency: consecutive cosines by formula."""

import numpy as np

from tgvac_jax.eval.temporal_consistency import consecutive_cosines


def test_consecutive_cosines():
  e = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 3.0], [-1.0, 0.0]])
  np.testing.assert_allclose(consecutive_cosines(e), [0.0, 1.0, 0.0])
  np.testing.assert_allclose(consecutive_cosines(np.ones((5, 4))), 1.0)
  assert consecutive_cosines(np.ones((1, 4))).shape == (0,)
