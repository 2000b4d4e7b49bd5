"""Validation during training: a few fixed clips completed by the current EMA model, as GIFs.

Each GIF is one row per frame: occluded input | visible mask | completion | ground truth (the autoencoder stage
shows target | reconstruction). Written to `workdir/validation/<step>/clip_<i>.gif` and TensorBoard's image tab.
The clips come from the dataset's validation split (its train split when it has none), the same at every call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from tgvac_jax import text
from tgvac_jax.data.pipeline import LoaderConfig, clip_dataset
from tgvac_jax.diffusion import ddim
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig
from tgvac_jax.files import atomic_folder
from tgvac_jax.infer.complete import AmodalCompleter, CompletionConfig
from tgvac_jax.train.metrics import MetricsLogger, gif_bytes
from tgvac_jax.train.step import schedule_config

VALIDATION_DIR = 'validation'


def validation_clips(config) -> dict[str, np.ndarray] | None:
  """`config.log.val_clips` uint8 clips of `data.clip_len` frames (no augmentation); None without a built
  dataset (pix2gestalt pairs and cached latents have no clips to show)."""
  path = config.data.dataset
  if not path:
    return None
  loader = LoaderConfig.eval(batch_size=config.log.val_clips, size=config.data.size, num_frames=config.data.clip_len,
                             output='uint8', worker_count=0)
  for split in ('validation', 'train'):
    try:
      ds = clip_dataset(path, loader, split=split, process_index=0, process_count=1)
    except (ValueError, KeyError):  # no such split, or an empty one
      continue
    return next(iter(ds))
  return None


def _rows(*videos: np.ndarray) -> np.ndarray:
  """Videos (T, H, W, 3) uint8 side by side -> (T, H, k*W, 3)."""
  return np.concatenate(videos, axis=2)


def _mask_video(mask: np.ndarray) -> np.ndarray:
  return np.repeat(mask.astype(np.uint8)[..., None] * 255, 3, axis=-1)


class Validator:
  """Completes the fixed validation clips with given modules and writes the GIFs (process 0)."""

  def __init__(self, config, workdir: str | os.PathLike):
    self.config = config
    self.workdir = Path(workdir)
    self.clips = validation_clips(config)
    if self.clips is None:
      logging.warning('validation GIFs need data.dataset (a built clip dataset); none will be written')

  def __call__(self, step: int, modules: Mapping[str, nnx.Module], tokenizer_dir: str | None,
               logger: MetricsLogger | None = None) -> list[Path]:
    if self.clips is None:
      return []
    c = self.config
    b = self.clips
    if 'unet' in modules:
      schedule = schedule_config(c)
      sampler = TemporalSamplerConfig(window_length=c.data.clip_len, stride=max(1, c.data.clip_len // 2),
                                      schedule=schedule,
                                      ddim=ddim.for_schedule(schedule, num_inference_steps=c.log.val_steps))
      completer = AmodalCompleter(modules['unet'], modules['vae'], modules['text_encoder'],
                                  text.Tokenize(tokenizer_dir), CompletionConfig(sampler=sampler))
      out = completer(b['occluded'], b['visible_mask'].astype(bool), [str(x) for x in b['caption']], seed=c.seed)
      rows = [_rows(b['occluded'][i], _mask_video(b['visible_mask'][i]), out.rgb[i], b['amodal'][i])
              for i in range(len(out.rgb))]
    else:
      recon = _reconstruct(modules['vae'], b['amodal'])
      rows = [_rows(b['amodal'][i], recon[i]) for i in range(len(recon))]
    if jax.process_index() != 0:
      return []

    def write(tmp: Path) -> None:
      for i, frames in enumerate(rows):
        (tmp / f'clip_{i}.gif').write_bytes(gif_bytes(frames))

    folder = atomic_folder(self.workdir / VALIDATION_DIR / f'{step:08d}', write)
    if logger is not None:
      for i, frames in enumerate(rows):
        logger.gif(step, f'val/clip_{i}', frames)
    return sorted(folder.glob('*.gif'))


def _reconstruct(vae: nnx.Module, videos: np.ndarray) -> np.ndarray:
  """uint8 videos (B, T, H, W, 3) through the autoencoder (posterior mean) -> uint8."""
  x = jnp.asarray(videos, jnp.float32).reshape((-1,) + videos.shape[2:]) * (2 / 255) - 1
  y = nnx.jit(lambda m, x: m(x))(vae, x)
  return np.asarray(jnp.clip(jnp.round((y + 1) * 127.5), 0, 255).astype(jnp.uint8)).reshape(videos.shape)
