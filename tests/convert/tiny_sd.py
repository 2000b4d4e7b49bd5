"""A tiny random Stable Diffusion folder (diffusers/transformers `save_pretrained`) for converter tests.

The tokenizer is a real `CLIPTokenizer` over a 58-entry vocabulary written here (letters, their `</w>` forms, one
merged word), so `tokenizer/` is copied and loadable like a real one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8, projection_dim=16)
VAE = dict(block_out_channels=(8, 16), down_block_types=('DownEncoderBlock2D',) * 2,
           up_block_types=('UpDecoderBlock2D',) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1,
           sample_size=16)
UNET = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
            up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=8, sample_size=8)


def text_model(seed: int = 0, **kw):
  from transformers import CLIPTextConfig, CLIPTextModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  return CLIPTextModel(CLIPTextConfig(**{**TEXT, **kw})).eval()


def vision_model(seed: int = 0, **kw):
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  return CLIPVisionModelWithProjection(CLIPVisionConfig(**{**VISION, **kw})).eval()


def vae_model(seed: int = 0, **kw):
  from diffusers import AutoencoderKL  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  m = AutoencoderKL(**{**VAE, **kw}).eval()
  _perturb(m)
  return m


def unet_model(seed: int = 0, **kw):
  from diffusers import UNet2DConditionModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  m = UNet2DConditionModel(**{**UNET, **kw}).eval()
  _perturb(m)
  return m


def _perturb(m) -> None:
  """Random norm affines and biases (diffusers initialises them to 1/0, which would hide layout mistakes)."""
  with torch.no_grad():
    for name, p in m.named_parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn_like(p))


def write_tokenizer(folder: Path) -> None:
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    _write_tokenizer(Path(tmp), folder, CLIPTokenizer)


def _write_tokenizer(raw: Path, folder: Path, CLIPTokenizer) -> None:  # noqa: N803
  vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
  for c in 'abcdefghijklmnopqrstuvwxyz':
    vocab[c] = len(vocab)
    vocab[c + '</w>'] = len(vocab)
  vocab['ca'] = len(vocab)
  vocab['cat</w>'] = len(vocab)
  (raw / 'vocab.json').write_text(json.dumps(vocab))
  (raw / 'merges.txt').write_text('#version: 0.2\nc a\nca t</w>\n')
  tok = CLIPTokenizer(str(raw / 'vocab.json'), str(raw / 'merges.txt'), pad_token='<|endoftext|>',
                      model_max_length=77)
  tok.save_pretrained(str(folder))


def write_sd_folder(root: Path, *, skip: tuple[str, ...] = (), bin_weights: tuple[str, ...] = ()) -> Path:
  """root/{unet,vae,text_encoder,tokenizer,scheduler}/ + model_index.json; `skip` leaves components out,
  `bin_weights` saves those components as *.bin instead of safetensors."""
  from diffusers import DDIMScheduler  # pylint: disable=import-outside-toplevel
  root.mkdir(parents=True, exist_ok=True)
  models = {'unet': unet_model, 'vae': vae_model, 'text_encoder': text_model}
  for name, make in models.items():
    if name not in skip:
      make().save_pretrained(str(root / name), safe_serialization=name not in bin_weights)
  if 'tokenizer' not in skip:
    write_tokenizer(root / 'tokenizer')
  if 'scheduler' not in skip:
    DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(str(root / 'scheduler'))
  index = {'_class_name': 'StableDiffusionPipeline', 'unet': ['diffusers', 'UNet2DConditionModel'],
           'vae': ['diffusers', 'AutoencoderKL'], 'text_encoder': ['transformers', 'CLIPTextModel'],
           'tokenizer': ['transformers', 'CLIPTokenizer'], 'scheduler': ['diffusers', 'DDIMScheduler']}
  (root / 'model_index.json').write_text(json.dumps(index))
  return root
