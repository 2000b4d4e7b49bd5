"""A tiny random TGVAC pipeline checkpoint (unet/ vae/ text_encoder/ tokenizer/) shared by the inference tests:
12-channel UNet (16, 32), VAE (8, 16), 1-layer CLIP text encoder, the character-level tokenizer. The model runs
at 16 x 16 (the UNet's sample_size 8 x the VAE's factor 2)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from tgvac_jax import text
from tgvac_jax.models.checkpoint import fill_params, save_pipeline
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
from tgvac_jax.models.params import flat_params
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig

RESOLUTION = 16


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


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp('ckpt')
  vocab = text.write_char_tokenizer(root / 'tok')
  vae = random_model(lambda: AutoencoderKL(AutoencoderKLConfig(
      block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1, sample_size=RESOLUTION,
      down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2), rngs=nnx.Rngs(0)), 1)
  clip = random_model(lambda: CLIPTextModel(CLIPTextConfig(
      vocab_size=vocab, hidden_size=16, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
      num_attention_heads=2, bos_token_id=0, eos_token_id=1), rngs=nnx.Rngs(0)), 2)
  unet = random_model(lambda: UNet2DConditionModel(tiny_unet_config(), rngs=nnx.Rngs(0)), 3)
  return save_pipeline(root / 'model', {'unet': unet, 'vae': vae, 'text_encoder': clip}, {'tokenizer': root / 'tok'})
