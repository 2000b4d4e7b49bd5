"""Video amodal completion with a TGVAC model: (frames, visible masks, caption) -> whole object + amodal mask.

The UNet sees z_t ⊕ E(x) ⊕ E(m) (noisy target, VAE of the occluded frames, VAE of the visible mask drawn as a
3-channel image) and the CLIP text; the §3.4 temporal sampler denoises videos of any length in overlapping windows.
Encoding, sampling and decoding are one jit program per input shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tgvac_jax.diffusion.guidance import Cond
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig, temporal_sample


@dataclasses.dataclass(frozen=True)
class CompletionConfig:
  sampler: TemporalSamplerConfig = TemporalSamplerConfig()
  vae_chunk: int = 8              # frames per VAE call: bounds encoder/decoder memory on long videos
  mask_threshold: float = 0.15    # output pixel is object where it is this far from white (max over RGB, 0..1)


class Completion(NamedTuple):
  rgb: np.ndarray    # (B, N, H, W, 3) uint8: the whole object on white
  mask: np.ndarray   # (B, N, H, W) bool: its amodal mask


def amodal_mask(rgb: np.ndarray | jax.Array, threshold: float) -> np.ndarray | jax.Array:
  """Object pixels of an object-on-white image: any channel darker than white by more than `threshold`."""
  x = rgb.astype(jnp.float32) / 255.0
  return (1.0 - x).max(axis=-1) > threshold


def mask_image(mask: jax.Array) -> jax.Array:
  """Visible mask (..., H, W) bool -> the 3-channel image in [-1, 1] the VAE encodes."""
  return jnp.repeat(jnp.where(mask, 1.0, -1.0)[..., None], 3, axis=-1).astype(jnp.float32)


def _map_frames(fn, x: jax.Array, chunk: int) -> jax.Array:
  """fn over (n, ...) frames in chunks of `chunk` (lax.map, so memory is one chunk's), padding the tail."""
  n = x.shape[0]
  pad = -n % chunk
  xs = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  out = jax.lax.map(fn, xs.reshape((-1, chunk) + x.shape[1:]))
  return out.reshape((-1,) + out.shape[2:])[:n]


class AmodalCompleter:
  """Holds the four TGVAC parts and completes batches of videos.

  unet: 12-input-channel `UNet2DConditionModel` (motion modules optional); vae: `AutoencoderKL`; text_encoder:
  `CLIPTextModel`; tokenize: caption(s) -> int32 ids (`tgvac_jax.text.Tokenize`).
  """

  def __init__(self, unet: nnx.Module, vae: nnx.Module, text_encoder: nnx.Module, tokenize,
               config: CompletionConfig = CompletionConfig()):
    lat = vae.config.latent_channels
    if unet.config.in_channels != 3 * lat:
      raise ValueError(f'the UNet takes {unet.config.in_channels} input channels; TGVAC needs 3 x {lat} '
                       '(noisy latent, occluded frames, visible mask)')
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
      raise ValueError(f'UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder width '
                       f'{text_encoder.config.hidden_size}')
    self.config = config
    self.tokenize = tokenize
    self.factor = vae.config.downsample_factor
    self.latent_channels = lat
    self._graphs = tuple(nnx.split(m) for m in (unet, vae, text_encoder))
    self._params = tuple(state for _, state in self._graphs)
    self._run = jax.jit(self._complete)

  def _complete(self, params, frames, visible, ids, empty_ids, key):
    (ug, _), (vg, _), (tg, _) = self._graphs
    unet, vae, text = (nnx.merge(g, p) for g, p in zip((ug, vg, tg), params))
    cfg = self.config
    b, n, h, w, _ = frames.shape
    encode = vae.encode_latents  # no key: the posterior mean, so the conditioning is not noisy
    x = frames.astype(jnp.float32) * (2 / 255) - 1
    cond_lat = jnp.concatenate([_map_frames(encode, x.reshape((b * n, h, w, 3)), cfg.vae_chunk),
                                _map_frames(encode, mask_image(visible.reshape((b * n, h, w))), cfg.vae_chunk)],
                               axis=-1)
    cond_lat = cond_lat.reshape((b, n) + cond_lat.shape[1:])
    context = text(ids).last_hidden_state
    empty = text(empty_ids).last_hidden_state

    def eps(unet_params, z, t, cond):
      model = nnx.merge(ug, unet_params)
      return model(jnp.concatenate([z, cond.frames.astype(z.dtype)], axis=-1), t, cond.context)

    z_T = jax.random.normal(key, (b, n, h // self.factor, w // self.factor, self.latent_channels), jnp.float32)
    z0 = temporal_sample(eps, params[0], z_T, Cond(cond_lat, context), key, cfg.sampler, uncond_context=empty)
    rgb = _map_frames(vae.decode_latents, z0.reshape((b * n,) + z0.shape[2:]), cfg.vae_chunk)
    rgb = jnp.clip(jnp.round((rgb + 1) * 127.5), 0, 255).astype(jnp.uint8).reshape((b, n, h, w, 3))
    return rgb, amodal_mask(rgb, cfg.mask_threshold)

  def __call__(self, frames: np.ndarray, visible_masks: np.ndarray, captions: str | Sequence[str], *,
               seed: int = 0) -> Completion:
    """frames (B, N, H, W, 3) uint8, visible_masks (B, N, H, W) bool, one caption per video -> `Completion`.

    A single video without the batch axis ((N, H, W, 3), (N, H, W), str) is accepted too.
    """
    frames, visible_masks = np.asarray(frames), np.asarray(visible_masks)
    single = frames.ndim == 4
    if single:
      frames, visible_masks, captions = frames[None], visible_masks[None], [captions]
    captions = [captions] if isinstance(captions, str) else list(captions)
    if frames.ndim != 5 or frames.shape[-1] != 3:
      raise ValueError(f'frames must be (B, N, H, W, 3) uint8, got shape {frames.shape}')
    if visible_masks.shape != frames.shape[:-1]:
      raise ValueError(f'visible masks {visible_masks.shape} do not match frames {frames.shape[:-1]}')
    if len(captions) != frames.shape[0]:
      raise ValueError(f'{len(captions)} captions for {frames.shape[0]} videos')
    h, w = frames.shape[2:4]
    if h % self.factor or w % self.factor:
      raise ValueError(f'frame size {h}x{w} is not divisible by {self.factor} (VAE and UNet down-sampling)')
    ids = jnp.asarray(self.tokenize(captions))
    empty = jnp.asarray(self.tokenize(['']))
    rgb, mask = self._run(self._params, jnp.asarray(frames, jnp.uint8), jnp.asarray(visible_masks, bool), ids,
                          empty, jax.random.key(seed))
    rgb, mask = np.asarray(rgb), np.asarray(mask)
    return Completion(rgb[0], mask[0]) if single else Completion(rgb, mask)
