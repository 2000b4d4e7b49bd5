"""CLIP image similarity (paper §4.2, "high-level" similarity): the cosine between the CLIP image embeddings of the
generated object and the ground-truth object, frame by frame, with our `CLIPVisionModelWithProjection`.

Images are prepared as transformers' `CLIPImageProcessor` does (bicubic resize of the short side to the tower's
`image_size`, centre crop, scale to [0, 1], normalise with OpenAI CLIP's mean and std), so a converted OpenAI
tower gives the same embeddings here as in PyTorch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def preprocess(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, 3) -> float32 (N, size, size, 3) CLIP pixel values."""
  out = []
  for img in np.asarray(images, np.uint8):
    h, w = img.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    nh, nw = (size, new_long) if h <= w else (new_long, size)
    im = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2  # transformers' centre crop rounds this way
    out.append(im[top:top + size, left:left + size])
  return ((np.stack(out).astype(np.float32) / 255.0) - MEAN) / STD


def unit(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def clip_embedding_fn(model: nnx.Module) -> Callable[[np.ndarray], np.ndarray]:
  """A compiled uint8 (N, H, W, 3) -> (N, projection_dim) L2-normalised CLIP image embeddings."""
  graph, state = nnx.split(model)
  size = model.config.image_size
  run = jax.jit(lambda s, x: unit(nnx.merge(graph, s)(x).image_embeds))
  return lambda images: np.asarray(run(state, jnp.asarray(preprocess(images, size))))


def clip_similarity(pred_embeddings: np.ndarray, gt_embeddings: np.ndarray) -> np.ndarray:
  """Per-frame cosine between unit embeddings of generated and ground-truth frames: (N, D), (N, D) -> (N,)."""
  return np.sum(np.asarray(pred_embeddings) * np.asarray(gt_embeddings), axis=-1)
