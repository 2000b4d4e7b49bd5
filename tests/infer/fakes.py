"""Tiny inputs for the inference tests: random models without a slow init, frame folders and masks."""

from __future__ import annotations

import numpy as np
from flax import nnx
from PIL import Image

from tgvac_jax.models.checkpoint import fill_params
from tgvac_jax.models.params import flat_params
from tgvac_jax.models.unet import UNetConfig

RESOLUTION = 16
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (3 * 252)


def tiny_unet_config(in_channels: int = 12) -> UNetConfig:
  return UNetConfig(in_channels=in_channels, block_out_channels=(16, 32), layers_per_block=1,
                    down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), norm_num_groups=8, cross_attention_dim=16,
                    attention_head_dim=2, sample_size=RESOLUTION // 2)


def random_model(make, seed: int):
  """`make()` built abstractly and filled with numpy random weights (a compiled or eager random init of even a
  tiny UNet takes a minute on a loaded 2-core CPU; this takes a second): norms 1, biases 0, other weights
  N(0, 1 / fan_in)."""
  module = nnx.eval_shape(make)
  rng = np.random.default_rng(seed)
  values = {}
  for path, var in flat_params(module).items():
    shape = var.get_value().shape
    if path.endswith('scale'):
      values[path] = np.ones(shape, np.float32)
    elif path.endswith('bias'):
      values[path] = np.zeros(shape, np.float32)
    else:
      fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
      values[path] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
  fill_params(module, values)
  return module


def write_frames(folder, n: int, size: tuple[int, int], seed: int = 0, ext: str = 'png') -> np.ndarray:
  """n random frames of `size` (H, W) as <00000>.<ext> files; returns them (as written, for png)."""
  folder.mkdir(parents=True, exist_ok=True)
  frames = np.random.default_rng(seed).integers(0, 256, (n,) + tuple(size) + (3,), dtype=np.uint8)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(folder / f'{i:05d}.{ext}')
  return frames


def object_labels(n: int, size: tuple[int, int], ids=(1,)) -> np.ndarray:
  """(n, H, W) uint8 labels: object k is a box moving right by one pixel a frame."""
  h, w = size
  labels = np.zeros((n, h, w), np.uint8)
  for k, oid in enumerate(ids):
    for i in range(n):
      labels[i, 2 + 6 * k:6 + 6 * k, i + 1:i + w // 2] = oid
  return labels


def write_masks(folder, labels: np.ndarray, palette: bool = False) -> None:
  """One PNG per frame: DAVIS palette images (pixel = object id) or binary 0/255 images."""
  folder.mkdir(parents=True, exist_ok=True)
  for i, lab in enumerate(labels):
    if palette:
      im = Image.fromarray(lab, mode='P')
      im.putpalette(PALETTE)
    else:
      im = Image.fromarray((lab > 0).astype(np.uint8) * 255)
    im.save(folder / f'{i:05d}.png')
