"""The embedded demo: the whole pipeline on a CPU with nothing downloaded.

1. builds the procedural synthetic-occlusion dataset (data_prep, TFDS array_record);
2. streams validation clips through the Grain loader;
3. builds tiny TGVAC models from scratch (12-channel UNet with motion modules, VAE, CLIP text encoder, a
   character-level CLIP tokenizer);
4. completes the clips with the §3.4 overlapping-window sampler and writes, per clip, one image per frame
   (occluded input | visible mask | completion | ground truth), the predicted amodal masks and summary.json.
The models are untrained until the trainer lands, so completions are noise: the demo proves the plumbing.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np
from absl import logging
from flax import nnx
from PIL import Image

from data_prep.builder import BuildConfig, build
from data_prep.occlusion import SynthConfig
from data_prep.sources import get_source
from tgvac_jax import text
from tgvac_jax.data.pipeline import LoaderConfig, clip_dataset
from tgvac_jax.diffusion.ddim import DDIMConfig
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig
from tgvac_jax.infer.complete import AmodalCompleter, CompletionConfig
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
from tgvac_jax.models.init import jit_init
from tgvac_jax.models.motion import MotionConfig
from tgvac_jax.models.unet import UNetConfig, create_unet
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig


def _models(c, vocab_size: int):
  m = c.model
  vae_cfg = AutoencoderKLConfig(block_out_channels=tuple(m.vae_channels), norm_num_groups=16,
                                down_block_types=('DownEncoderBlock2D',) * len(m.vae_channels),
                                up_block_types=('UpDecoderBlock2D',) * len(m.vae_channels), sample_size=c.data.size)
  text_cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=m.text_width, intermediate_size=2 * m.text_width,
                            projection_dim=m.text_width, num_hidden_layers=m.text_layers, num_attention_heads=4,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
  n = len(m.unet_channels)
  unet_cfg = UNetConfig(in_channels=3 * vae_cfg.latent_channels, block_out_channels=tuple(m.unet_channels),
                        down_block_types=('CrossAttnDownBlock2D',) * (n - 1) + ('DownBlock2D',),
                        up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * (n - 1), layers_per_block=1,
                        norm_num_groups=16, cross_attention_dim=m.text_width, attention_head_dim=4,
                        sample_size=c.data.size // vae_cfg.downsample_factor,
                        motion=MotionConfig(num_attention_heads=4, norm_num_groups=16) if m.motion else None)
  return (create_unet(unet_cfg, seed=c.seed), jit_init(lambda: AutoencoderKL(vae_cfg, rngs=nnx.Rngs(c.seed + 1))),
          jit_init(lambda: CLIPTextModel(text_cfg, rngs=nnx.Rngs(c.seed + 2))))


def _save_clip(folder: str, batch: dict, i: int, rgb: np.ndarray, mask: np.ndarray) -> dict:
  os.makedirs(folder)
  occluded, visible, target = batch['occluded'][i], batch['visible_mask'][i], batch['amodal'][i]
  gt = batch['amodal_mask'][i].astype(bool)
  for f in range(rgb.shape[0]):
    vis = np.repeat(visible[f][..., None] * 255, 3, axis=-1).astype(np.uint8)
    Image.fromarray(np.concatenate([occluded[f], vis, rgb[f], target[f]], axis=1)).save(
        os.path.join(folder, f'frame_{f:04d}.png'))
    Image.fromarray(mask[f].astype(np.uint8) * 255).save(os.path.join(folder, f'amodal_mask_{f:04d}.png'))
  inter = (mask & gt).sum(axis=(1, 2))
  union = (mask | gt).sum(axis=(1, 2))
  return {'caption': str(batch['caption'][i]), 'frames': int(rgb.shape[0]),
          'mean_occlusion_rate': float(batch['occlusion_rate'][i].mean()),
          'amodal_miou': float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))}


def run(c) -> None:
  t0 = time.time()
  workdir = os.path.abspath(c.workdir)
  os.makedirs(workdir, exist_ok=True)

  logging.info('[1/4] procedural dataset -> %s', workdir)
  source = get_source('procedural', None, num_videos=c.data.num_videos, size=c.data.size,
                      min_frames=c.data.clip_len + 4, max_frames=c.data.clip_len + 16, seed=c.seed)
  built = build(source, BuildConfig(synth=SynthConfig(clip_len=c.data.clip_len, resolution=c.data.size),
                                    seed=c.seed), os.path.join(workdir, 'data'))
  logging.info('      %s: %s clips', built.dataset_dir, built.num_examples)

  logging.info('[2/4] validation clips through the Grain loader')
  loader = clip_dataset(built.dataset_dir, LoaderConfig.eval(batch_size=c.data.num_examples, size=c.data.size,
                                                             output='uint8', worker_count=0), split='validation')
  batch = next(iter(loader))

  logging.info('[3/4] tiny TGVAC models from scratch')
  tok_dir = os.path.join(workdir, 'tokenizer')
  vocab_size = text.write_char_tokenizer(tok_dir)
  unet, vae, text_encoder = _models(c, vocab_size)
  sampler = TemporalSamplerConfig(window_length=c.sample.window_length, stride=c.sample.stride,
                                  guidance_scale=c.sample.guidance_scale, chunk_size=c.sample.chunk_size,
                                  ddim=DDIMConfig(num_inference_steps=c.sample.steps))
  completer = AmodalCompleter(unet, vae, text_encoder, text.Tokenize(tok_dir),
                              CompletionConfig(sampler=sampler))

  logging.info('[4/4] completing %d clips of %d frames (windows of %d, stride %d, %d DDIM steps)',
               batch['occluded'].shape[0], batch['occluded'].shape[1], c.sample.window_length, c.sample.stride,
               c.sample.steps)
  t1 = time.time()
  out = completer(batch['occluded'], batch['visible_mask'].astype(bool), list(batch['caption']), seed=c.seed)
  seconds = time.time() - t1

  final = os.path.join(workdir, 'completions')
  tmp = final + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  clips = [_save_clip(os.path.join(tmp, f'clip_{i}'), batch, i, out.rgb[i], out.mask[i])
           for i in range(out.rgb.shape[0])]
  summary = {'clips': clips, 'sampling_seconds_incl_compile': round(seconds, 2),
             'total_seconds': round(time.time() - t0, 2), 'devices': [str(d) for d in jax.devices()],
             'trained': False}
  with open(os.path.join(tmp, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  logging.info('done in %.1fs: %s', time.time() - t0, final)
  print(json.dumps(summary, indent=2))
