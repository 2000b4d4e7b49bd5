"""What the frozen VAE and text encoder make of a pixel batch: the UNet's inputs before noise.

One function for the train step (pixels in) and the cache command (latents written once, read instead of pixels):
the target keeps its posterior (mean, std) and the step draws `mean + std * eps` from its own key, so training
from cached latents equals training from pixels for the same noise and posterior sample. Conditioning latents
are posterior means (as the sampler in `infer/complete.py` encodes them), so they cache as they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tgvac_jax.data.pipeline import to_model_range

PIXEL_KEYS = ('occluded', 'visible_mask', 'amodal', 'input_ids')
LATENT_KEYS = ('target_mean', 'target_std', 'occluded', 'mask', 'context', 'input_ids')


def is_latent_batch(batch) -> bool:
  return 'target_mean' in batch


def model_range(batch: dict) -> dict:
  """uint8 loader batches (output='uint8') -> float images in [-1, 1] and the 3-channel visible-mask image;
  float batches pass through."""
  if batch['occluded'].dtype == jnp.uint8:
    return to_model_range(batch)
  return batch


def encode_batch(vae, text_encoder, batch: dict) -> dict:
  """Pixel batch (uint8 or float model range; frames (B, H, W, ...) or clips (B, F, H, W, ...)) -> latents:

  target_mean, target_std  scaled VAE posterior of the amodal target (sample: mean + std * eps)
  occluded, mask           scaled VAE posterior means of the occluded frames and the visible-mask image
  context                  text embeddings (B, S, D) of input_ids
  input_ids                passed through
  All float32. The three images go through the encoder as one batch (one encoder in the program)."""
  x = model_range(batch)
  lead = x['amodal'].shape[:-3]
  # batch-major (B, 3, ...): flattened, the batch axis stays the leading one, so a batch split over devices stays
  # split (stacked in front, the flattening merges a split axis into a whole one and XLA gathers the images: every
  # device then encodes the whole global batch; the tiny frame step compiled for a v5e-8 did)
  images = jnp.stack([x['amodal'], x['occluded'], x['visible_mask']], axis=1).astype(jnp.float32)
  post = vae.encode(images.reshape((-1,) + images.shape[-3:]))
  mean = vae.scale_latents(post.mean).astype(jnp.float32)
  mean = mean.reshape(lead[:1] + (3,) + lead[1:] + mean.shape[1:])
  std = (post.std * vae.config.scaling_factor).astype(jnp.float32).reshape(mean.shape)
  return {
      'target_mean': mean[:, 0],
      'target_std': std[:, 0],
      'occluded': mean[:, 1],
      'mask': mean[:, 2],
      'context': text_encoder(batch['input_ids']).last_hidden_state.astype(jnp.float32),
      'input_ids': batch['input_ids'],
  }


def sample_target(latents: dict, key: jax.Array) -> jax.Array:
  """The amodal target latent z_0 = mean + std * eps (one posterior sample)."""
  eps = jax.random.normal(key, latents['target_mean'].shape, jnp.float32)
  return latents['target_mean'] + latents['target_std'] * eps
