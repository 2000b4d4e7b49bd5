"""Temporal consistency: consecutive cosines by formula."""

import numpy as np

from tgvac_jax.eval.temporal_consistency import consecutive_cosines, temporal_consistency


def test_consecutive_cosines():
  e = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 3.0], [-1.0, 0.0]])
  np.testing.assert_allclose(consecutive_cosines(e), [0.0, 1.0, 0.0])
  assert temporal_consistency(e) == 1 / 3
  assert temporal_consistency(np.ones((5, 4))) == 1.0
  assert np.isnan(temporal_consistency(np.ones((1, 4))))
