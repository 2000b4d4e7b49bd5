"""Session fixtures of the inference tests: a tiny random TGVAC pipeline checkpoint (unet/ vae/ text_encoder/
tokenizer/: 12-channel UNet (16, 32), VAE (8, 16), 1-layer CLIP text encoder, the character-level tokenizer; it
runs at 16 x 16, the UNet's sample_size 8 x the VAE's factor 2), a tiny SAM-2 video model folder, and the infer
config shrunk to match."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))

from configs import infer as infer_configs  # noqa: E402
from fakes import RESOLUTION, random_model, tiny_unet_config  # noqa: E402
from tgvac_jax import text  # noqa: E402
from tgvac_jax.models.checkpoint import save_pipeline  # noqa: E402
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel  # noqa: E402
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig  # noqa: E402


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


@pytest.fixture(scope='session')
def tiny_sam2(tmp_path_factory):
  """A random-initialised transformers SAM-2 video model at 64 x 64 input, saved like a downloaded one.

  Sizes obey the model's couplings: memory features are 64 wide (the memory attention's key/value width is
  fixed at 64) and narrower than the 128-wide hidden size (object pointers are split into 64-wide tokens)."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import Sam2VideoConfig, Sam2VideoModel  # pylint: disable=import-outside-toplevel
  from transformers.models.sam2.configuration_sam2 import (  # pylint: disable=import-outside-toplevel
      Sam2HieraDetConfig, Sam2VisionConfig)
  s = 64
  hiera = Sam2HieraDetConfig(hidden_size=8, num_attention_heads=1, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
                             embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                             window_size_per_stage=[2, 2, 2, 2], global_attention_blocks=[3],
                             window_positional_embedding_background_size=[2, 2])
  vision = Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8],
                            backbone_feature_sizes=[[s // 4] * 2, [s // 8] * 2, [s // 16] * 2], fpn_hidden_size=128)
  config = Sam2VideoConfig(
      vision_config=vision, image_size=s,
      prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16, mask_input_channels=4),
      mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
      num_maskmem=2, memory_attention_hidden_size=128, memory_attention_num_layers=1,
      memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[s // 16] * 2,
      memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
      memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64)
  torch.manual_seed(0)
  folder = tmp_path_factory.mktemp('sam2') / 'sam2-tiny'
  Sam2VideoModel(config).save_pretrained(str(folder))
  return folder


@pytest.fixture(scope='session')
def infer_config(tiny_checkpoint):
  """configs/infer.py shrunk for the tiny model (windows of 4, stride 2, 2 DDIM steps, one device); every test
  uses these sampler settings so they all share compiled programs."""
  def make(**overrides):
    c = infer_configs.get_config()
    c.update_from_flattened_dict({'checkpoint': str(tiny_checkpoint), 'sampler.window_length': 4,
                                  'sampler.stride': 2, 'sampler.steps': 2, 'mask_threshold': 0.8, 'shard': 'none',
                                  'preview_height': 64, **overrides})
    return c
  return make
