"""Temporal consistency (paper §4.2, after Esser et al. 2023): the mean cosine between the image embeddings of
consecutive frames of the generated video (`summary.py` takes the mean over the frames of a split). CLIP image
embeddings as the paper; without CLIP weights the LPIPS backbone's pooled features (`lpips.LPIPS.embedding`),
which tables then label as a different feature space.
"""

from __future__ import annotations

import numpy as np


def consecutive_cosines(embeddings: np.ndarray) -> np.ndarray:
  """(N, D) embeddings of one video's frames -> (N-1,) cos(e_t, e_{t+1}) (vectors are normalised here)."""
  e = np.asarray(embeddings, np.float64)
  e = e / np.linalg.norm(e, axis=-1, keepdims=True)
  return np.sum(e[:-1] * e[1:], axis=-1)
