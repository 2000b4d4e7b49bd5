"""Video amodal completion with a TGVAC model: (frames, visible masks, caption) -> whole object + amodal mask.

The UNet sees z_t ⊕ E(x) ⊕ E(m) (noisy target, VAE of the occluded frames, VAE of the visible mask drawn as a
3-channel image) and the CLIP text; the §3.4 temporal sampler denoises videos of any length in overlapping windows.
Encoding, sampling and decoding are one jit program per input shape, shared by every completer holding the same
architecture and settings (the graph definitions and the config are its static arguments), so loading a checkpoint
again or completing many videos of one shape compiles once. Each video's initial noise comes from its own seed:
a video's result does not depend on the other videos in its batch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tgvac_jax import target, text
from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.diffusion.guidance import Cond
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig, _axis_size, temporal_sample
from tgvac_jax.models import checkpoint

COMPONENTS = ('unet', 'vae', 'text_encoder')
_LISTEN = threading.Lock()  # one completion with a step listener at a time: `_step_listener` has one slot


@dataclasses.dataclass(frozen=True)
class CompletionConfig:
  sampler: TemporalSamplerConfig = TemporalSamplerConfig()
  vae_chunk: int = 8              # frames per VAE call: bounds encoder/decoder memory on long videos
  mask_threshold: float = 0.15    # output pixel is object where it is this far from white (max over RGB, 0..1)
  mask_closing: int = 0           # close gaps in the amodal mask up to this radius (model pixels; 0: off)


class Completion(NamedTuple):
  rgb: np.ndarray    # (B, N, H, W, 3) uint8: the whole object on white
  mask: np.ndarray   # (B, N, H, W) bool: its amodal mask


def amodal_mask(rgb: np.ndarray | jax.Array, threshold: float) -> np.ndarray | jax.Array:
  """Object pixels of an object-on-white image: any channel darker than white by more than `threshold`."""
  x = rgb.astype(jnp.float32) / 255.0
  return (1.0 - x).max(axis=-1) > threshold


def close_masks(masks: np.ndarray, radius: int) -> np.ndarray:
  """(..., H, W) bool masks with gaps narrower than a disk of `radius` pixels closed: where a thin occluder
  crossed the object, the small model draws a pale seam that the threshold cuts out; objects are solid. The result
  contains the input mask."""
  if radius <= 0:
    return masks
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  disk = x * x + y * y <= radius * radius
  flat = masks.reshape((-1,) + masks.shape[-2:])
  # padded by the radius, so the frame's edge does not erode a mask that touches it
  closed = [ndimage.binary_closing(np.pad(m, radius), disk)[radius:-radius, radius:-radius] | m for m in flat]
  return np.stack(closed).reshape(masks.shape) if flat.shape[0] else masks


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


_step_listener: list = [None]  # where `AmodalCompleter.on_step` calls of the running completion go


def _report_step(i) -> None:
  listener = _step_listener[0]
  if listener is not None:
    listener(int(i))


@functools.partial(jax.jit, static_argnames=('graphs', 'config', 'mesh', 'report_steps'))
def _complete(params, frames, visible, ids, empty_ids, keys, *, graphs, config: CompletionConfig, mesh,
              report_steps: bool = False):
  """(B, N, H, W, 3) uint8 frames, (B, N, H, W) bool masks, (B, 77) ids, (B,) keys -> object rgb and amodal mask.

  Videos stay on the leading axis throughout (VAE calls are vmapped over them), so a batch sharded over devices
  stays sharded. report_steps: the sampler tells `_report_step` after every DDIM step (one program for every
  completer, whatever its listener). Traced `split_over` its mesh, as the compile job traces it, so the run takes
  the attention the compile job measured (the Pallas kernel on TPU)."""
  with target.split_over(mesh):
    ug = graphs[0]
    unet, vae, text_encoder = (nnx.merge(g, p) for g, p in zip(graphs, params))
    b, n, h, w, _ = frames.shape
    per_video = lambda fn, x: jax.vmap(lambda v: _map_frames(fn, v, config.vae_chunk))(x)  # noqa: E731
    encode = vae.encode_latents  # no key: the posterior mean, so the conditioning is not noisy
    x = frames.astype(jnp.float32) * (2 / 255) - 1
    cond_lat = jnp.concatenate([per_video(encode, x), per_video(encode, mask_image(visible))], axis=-1)
    context = text_encoder(ids).last_hidden_state
    empty = text_encoder(empty_ids).last_hidden_state

    def eps(unet_params, z, t, cond):
      model = nnx.merge(ug, unet_params)
      return model(jnp.concatenate([z, cond.frames.astype(z.dtype)], axis=-1), t, cond.context)

    factor, lat = vae.config.downsample_factor, vae.config.latent_channels
    z_T = jax.vmap(lambda k: jax.random.normal(k, (n, h // factor, w // factor, lat), jnp.float32))(keys)
    # keys[0] drives the per-step noise of eta > 0 only; with the default eta = 0 each video depends on its own key
    z0 = temporal_sample(eps, params[0], z_T, Cond(cond_lat, context), keys[0], config.sampler,
                         uncond_context=empty, mesh=mesh, on_step=_report_step if report_steps else None)
    rgb = per_video(vae.decode_latents, z0)
    rgb = jnp.clip(jnp.round((rgb + 1) * 127.5), 0, 255).astype(jnp.uint8)
    return rgb, amodal_mask(rgb, config.mask_threshold)


class AmodalCompleter:
  """Holds the four TGVAC parts and completes batches of videos.

  unet: 12-input-channel `UNet2DConditionModel` (motion modules optional); vae: `AutoencoderKL`; text_encoder:
  `CLIPTextModel`; tokenize: caption(s) -> int32 ids (`tgvac_jax.text.Tokenize`).
  mesh: devices to spread each call over, as `config.sampler.shard` says: 'videos' splits the batch (padded to a
  multiple of the mesh axis with copies of its last video, dropped again), 'windows' splits each chunk of
  windows. Parameters are replicated on the mesh.
  on_step: None, or called with (finished DDIM steps, total steps) during every call (a progress bar; the
  results do not change). Completions with a listener run one at a time.
  """

  on_step: Callable[[int, int], None] | None = None

  def __init__(self, unet: nnx.Module, vae: nnx.Module, text_encoder: nnx.Module, tokenize,
               config: CompletionConfig = CompletionConfig(), *, mesh: Mesh | None = None):
    lat = vae.config.latent_channels
    if unet.config.in_channels != 3 * lat:
      raise ValueError(f'the UNet takes {unet.config.in_channels} input channels; TGVAC needs 3 x {lat} '
                       '(noisy latent, occluded frames, visible mask)')
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
      raise ValueError(f'UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder width '
                       f'{text_encoder.config.hidden_size}')
    if config.sampler.shard is not None and mesh is None:
      raise ValueError(f'sampler shard={config.sampler.shard!r} needs a mesh')
    if config.sampler.shard == 'windows' and config.sampler.chunk_size % _axis_size(mesh, config.sampler.mesh_axis):
      raise ValueError(f'shard="windows" needs chunk_size ({config.sampler.chunk_size}) to be a multiple of the '
                       f'devices ({_axis_size(mesh, config.sampler.mesh_axis)})')
    self.config = config
    self.tokenize = tokenize
    self.mesh = mesh if config.sampler.shard is not None else None
    self.factor = vae.config.downsample_factor
    self.size_multiple = self.factor * unet.config.downsample_factor  # frame sides must be multiples of this
    self.sample_size = (unet.config.sample_size or 0) * self.factor  # the training resolution, 0 if unknown
    graphs, params = zip(*(nnx.split(m) for m in (unet, vae, text_encoder)))
    self._graphs = tuple(graphs)
    self._params = tuple(params)
    if self.mesh is not None:
      self._params = jax.device_put(self._params, NamedSharding(self.mesh, P()))

  @classmethod
  def from_pretrained(cls, folder: str | os.PathLike, config: CompletionConfig = CompletionConfig(), *,
                      mesh: Mesh | None = None, dtype=None) -> AmodalCompleter:
    """A completer from our pipeline checkpoint folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/); every
    missing or foreign part is a `CheckpointError` naming it, raised before anything is compiled.

    The sampler's schedule and DDIM scheduler settings (spacing, offset, final alpha, clipping) are the
    checkpoint's scheduler/ (SD-1.5's without one), replacing `config`'s: they are what the model was trained
    for. `config` chooses the steps, eta and everything else."""
    folder = Path(folder)
    if not folder.is_dir():
      raise checkpoint.CheckpointError(f'checkpoint {folder} does not exist (expected a pipeline folder with '
                                       f'{", ".join(COMPONENTS)}, tokenizer)')
    missing = [c for c in COMPONENTS if not (folder / c / checkpoint.CONFIG_NAME).is_file()]
    if missing:
      raise checkpoint.CheckpointError(f'{folder} is not a TGVAC pipeline checkpoint: no {", ".join(missing)} '
                                       'component (expected unet/ vae/ text_encoder/ tokenizer/)')
    tokenize = text.Tokenize(folder / 'tokenizer')
    tokenize.tokenizer  # noqa: B018 -- load now: a missing tokenizer is an error before the weights are read
    sched = scheduler_config.read(folder)
    s = config.sampler
    config = dataclasses.replace(config, sampler=dataclasses.replace(s, schedule=sched.schedule,
                                                                     ddim=sched.sampler_ddim(s.ddim)))
    parts = checkpoint.load_pipeline(folder, COMPONENTS, dtype=dtype)
    return cls(*(parts[c][0] for c in COMPONENTS), tokenize, config, mesh=mesh)

  def with_config(self, config: CompletionConfig) -> AmodalCompleter:
    """The same weights with other sampler settings (steps, guidance, windows, ...), e.g. per request of a
    server; the noise schedule and DDIM scheduler settings stay the checkpoint's (`from_pretrained`)."""
    s = self.config.sampler
    ddim = scheduler_config.Scheduler(s.schedule, s.ddim).sampler_ddim(config.sampler.ddim)
    other = copy.copy(self)
    other.config = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, schedule=s.schedule,
                                                                           ddim=ddim))
    if other.config.sampler.shard != s.shard:
      raise ValueError(f'with_config keeps the mesh: shard {other.config.sampler.shard!r} != {s.shard!r}')
    return other

  @property
  def batch_multiple(self) -> int:
    """Videos per call that fill the mesh (batches are padded up to a multiple of this)."""
    if self.config.sampler.shard != 'videos':
      return 1
    return _axis_size(self.mesh, self.config.sampler.mesh_axis)

  def __call__(self, frames: np.ndarray, visible_masks: np.ndarray, captions: str | Sequence[str], *,
               seed: int | Sequence[int] = 0) -> Completion:
    """frames (B, N, H, W, 3) uint8, visible_masks (B, N, H, W) bool, one caption per video -> `Completion`.

    seed: one per video, or one int for all (a video's noise depends on its seed only). A single video without
    the batch axis ((N, H, W, 3), (N, H, W), str) is accepted too.
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
    b = frames.shape[0]
    if len(captions) != b:
      raise ValueError(f'{len(captions)} captions for {b} videos')
    seeds = [seed] * b if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != b:
      raise ValueError(f'{len(seeds)} seeds for {b} videos')
    h, w = frames.shape[2:4]
    if h % self.size_multiple or w % self.size_multiple:
      raise ValueError(f'frame size {h}x{w} is not divisible by {self.size_multiple} (VAE and UNet down-sampling)')
    pad = -b % self.batch_multiple
    take = lambda x: np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x  # noqa: E731
    ids = take(self.tokenize(captions))
    keys = jax.vmap(jax.random.key)(jnp.asarray(take(np.asarray(seeds)), jnp.uint32))
    args = (jnp.asarray(take(frames), jnp.uint8), jnp.asarray(take(visible_masks), bool), jnp.asarray(ids), keys)
    if self.mesh is not None and self.config.sampler.shard == 'videos':
      args = jax.device_put(args, NamedSharding(self.mesh, P(self.config.sampler.mesh_axis)))
    elif self.mesh is not None:
      args = jax.device_put(args, NamedSharding(self.mesh, P()))
    frames_d, visible_d, ids_d, keys_d = args
    report = self.on_step is not None
    if report:
      total = self.config.sampler.ddim.num_inference_steps
      listener = self.on_step
      _LISTEN.acquire()
      _step_listener[0] = lambda i: listener(i + 1, total)
    try:
      rgb, mask = _complete(self._params, frames_d, visible_d, ids_d, jnp.asarray(self.tokenize([''])), keys_d,
                            graphs=self._graphs, config=self.config, mesh=self.mesh, report_steps=report)
      rgb, mask = np.asarray(rgb)[:b], close_masks(np.asarray(mask)[:b], self.config.mask_closing)
    finally:
      if report:
        _step_listener[0] = None
        _LISTEN.release()
    return Completion(rgb[0], mask[0]) if single else Completion(rgb, mask)
