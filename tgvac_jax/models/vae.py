"""The SD variational autoencoder (diffusers `AutoencoderKL`): encoder, decoder, diagonal-Gaussian posterior.

Channels-last: images (N, H, W, 3) in [-1, 1], latents (N, H/8, W/8, 4) for SD-1.5. Attribute names mirror
diffusers' module tree (`encoder.down_blocks[i].resnets[j].conv1`, `encoder.mid_block.attentions[0].to_q`,
`quant_conv`, ...), so weight conversion is by rule (`convert/vae.py`). The resnet, down/up-sampling and
attention blocks are the UNet's (`resnet.py`, `transformer.py`) with the VAE's settings: no time embedding,
GroupNorm eps 1e-6, asymmetric (0, 1) padding before the stride-2 conv, one-head mid-block self-attention with
its own GroupNorm and a residual connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax.models.resnet import Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D, conv
from tgvac_jax.models.transformer import Attention

_ENCODER_BLOCKS = ('DownEncoderBlock2D',)
_DECODER_BLOCKS = ('UpDecoderBlock2D',)


# diffusers' own defaults for the config fields we model (a config.json may omit any of them).
_DIFFUSERS_DEFAULTS = dict(
    in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',), up_block_types=('UpDecoderBlock2D',),
    block_out_channels=(64,), layers_per_block=1, act_fn='silu', latent_channels=4, norm_num_groups=32,
    sample_size=32, scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None,
    force_upcast=True, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True)

# Our own fields (not in a diffusers config.json).
_OURS = ('remat', 'attention_impl')


def _tuple(v):
  return tuple(v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
  """A diffusers `AutoencoderKL` config (same field names and defaults; `sd15()` is SD-1.5's VAE) plus our run
  options: `remat` (checkpoint every down/mid/up block), `attention_impl` (`attention.attend`'s `implementation`).
  `force_upcast` has no effect here: GroupNorm statistics are always float32, the rest runs in `dtype`.
  """

  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ('DownEncoderBlock2D',)
  up_block_types: tuple[str, ...] = ('UpDecoderBlock2D',)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = 'silu'
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None
  force_upcast: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  remat: bool = False
  attention_impl: str | None = None

  def __post_init__(self):
    for name in ('down_block_types', 'up_block_types', 'block_out_channels', 'latents_mean', 'latents_std'):
      object.__setattr__(self, name, _tuple(getattr(self, name)))
    n = len(self.block_out_channels)
    if len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise ValueError(f'AutoencoderKLConfig: {len(self.down_block_types)} down and {len(self.up_block_types)} up '
                       f'block types for {n} block_out_channels')
    bad = [t for t in self.down_block_types if t not in _ENCODER_BLOCKS]
    bad += [t for t in self.up_block_types if t not in _DECODER_BLOCKS]
    if bad:
      raise ValueError(f'AutoencoderKLConfig: unsupported block types {bad}; supported: '
                       f'{_ENCODER_BLOCKS + _DECODER_BLOCKS}')
    if self.act_fn != 'silu':
      raise ValueError(f'AutoencoderKLConfig: act_fn {self.act_fn!r} is not supported (only silu)')
    bad_groups = [c for c in self.block_out_channels if c % self.norm_num_groups]
    if bad_groups:
      raise ValueError(f'AutoencoderKLConfig: block channels {bad_groups} not divisible by norm_num_groups '
                       f'{self.norm_num_groups}')

  @classmethod
  def sd15(cls, **overrides) -> AutoencoderKLConfig:
    """Stable Diffusion 1.5's VAE (`vae/config.json` of stable-diffusion-v1-5)."""
    kw = dict(down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
              block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512)
    return cls(**{**kw, **overrides})

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> AutoencoderKLConfig:
    """From a diffusers config.json dict ('_'-prefixed keys ignored, missing keys take diffusers' defaults).

    Raises ValueError naming unknown keys.
    """
    d = {k: v for k, v in d.items() if not k.startswith('_')}
    unknown = [k for k in d if k not in _DIFFUSERS_DEFAULTS and k not in _OURS]
    if unknown:
      raise ValueError(f'AutoencoderKLConfig.from_dict: unknown keys {unknown}')
    return cls(**{**_DIFFUSERS_DEFAULTS, **d})

  def to_dict(self, *, ours: bool = False) -> dict[str, Any]:
    """The diffusers config dict (`AutoencoderKL.from_config` builds the same network); `ours=True` adds our
    run options (remat, attention_impl) for our own checkpoints."""
    out: dict[str, Any] = {'_class_name': 'AutoencoderKL'}
    for k in _DIFFUSERS_DEFAULTS:
      v = getattr(self, k)
      out[k] = list(v) if isinstance(v, tuple) else v
    if ours:
      out.update(remat=self.remat, attention_impl=self.attention_impl)
    return out

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)


class AttentionBlock(Attention):
  """The VAE mid-block self-attention: x + to_out(attend(group_norm(x))) over all H*W positions, one head."""

  def __init__(self, channels: int, *, groups: int, eps: float = 1e-6, implementation: str | None = None,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(channels, heads=1, dim_head=channels, bias=True, implementation=implementation, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.group_norm = GroupNorm(groups, channels, eps, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    y = super().__call__(self.group_norm(x).reshape(n, h * w, c))
    return x + y.reshape(n, h, w, c).astype(x.dtype)


class UNetMidBlock2D(nnx.Module):
  """resnets[0] -> (attentions[0] -> resnets[1]) ... (diffusers `UNetMidBlock2D` without time embedding)."""

  def __init__(self, channels: int, *, groups: int, add_attention: bool = True, eps: float = 1e-6,
               implementation: str | None = None, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.add_attention = add_attention
    self.resnets = nnx.List([ResnetBlock2D(channels, channels, temb_channels=None, groups=groups, eps=eps, **kw)
                             for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(channels, groups=groups, eps=eps, implementation=implementation, **kw)]
                               if add_attention else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.resnets[0](x)
    for i, resnet in enumerate(self.resnets[1:]):
      if self.add_attention:
        x = self.attentions[i](x)
      x = resnet(x)
    return x


class DownEncoderBlock2D(nnx.Module):
  def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int, add_downsample: bool,
               eps: float = 1e-6, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=None,
                                           groups=groups, eps=eps, **kw) for i in range(num_layers)])
    self.downsamplers = nnx.List([Downsample2D(out_channels, padding=0, **kw)] if add_downsample else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x = resnet(x)
    for down in self.downsamplers:
      x = down(x)
    return x


class UpDecoderBlock2D(nnx.Module):
  def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int, add_upsample: bool,
               eps: float = 1e-6, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=None,
                                           groups=groups, eps=eps, **kw) for i in range(num_layers)])
    self.upsamplers = nnx.List([Upsample2D(out_channels, **kw)] if add_upsample else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x = resnet(x)
    for up in self.upsamplers:
      x = up(x)
    return x


def _call(block: nnx.Module, x: jax.Array, remat: bool) -> jax.Array:
  if remat:
    return nnx.remat(lambda b, y: b(y), graph_updates=False)(block, x)  # blocks mutate nothing; lets jax.grad
    # differentiate weights merged in from outside (the trainer) without a TraceContextError, as in the UNet
  return block(x)


class Encoder(nnx.Module):
  """conv_in -> down_blocks -> mid_block -> conv_norm_out -> SiLU -> conv_out (2 * latent channels: mean, logvar)."""

  def __init__(self, cfg: AutoencoderKLConfig, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    ch, g = cfg.block_out_channels, cfg.norm_num_groups
    self.remat = cfg.remat
    self.conv_in = conv(cfg.in_channels, ch[0], 3, padding=1, **kw)
    self.down_blocks = nnx.List([
        DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], num_layers=cfg.layers_per_block, groups=g,
                           add_downsample=i < len(ch) - 1, **kw) for i in range(len(ch))])
    self.mid_block = UNetMidBlock2D(ch[-1], groups=g, add_attention=cfg.mid_block_add_attention,
                                    implementation=cfg.attention_impl, **kw)
    self.conv_norm_out = GroupNorm(g, ch[-1], 1e-6, dtype=dtype, param_dtype=param_dtype)
    self.conv_out = conv(ch[-1], 2 * cfg.latent_channels, 3, padding=1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = _call(block, x, self.remat)
    x = _call(self.mid_block, x, self.remat)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
  """conv_in -> mid_block -> up_blocks (layers_per_block + 1 resnets each) -> conv_norm_out -> SiLU -> conv_out."""

  def __init__(self, cfg: AutoencoderKLConfig, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    ch, g = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups
    self.remat = cfg.remat
    self.conv_in = conv(cfg.latent_channels, ch[0], 3, padding=1, **kw)
    self.mid_block = UNetMidBlock2D(ch[0], groups=g, add_attention=cfg.mid_block_add_attention,
                                    implementation=cfg.attention_impl, **kw)
    self.up_blocks = nnx.List([
        UpDecoderBlock2D(ch[max(i - 1, 0)], ch[i], num_layers=cfg.layers_per_block + 1, groups=g,
                         add_upsample=i < len(ch) - 1, **kw) for i in range(len(ch))])
    self.conv_norm_out = GroupNorm(g, ch[-1], 1e-6, dtype=dtype, param_dtype=param_dtype)
    self.conv_out = conv(ch[-1], cfg.out_channels, 3, padding=1, **kw)

  def __call__(self, z: jax.Array) -> jax.Array:
    x = self.conv_in(z)
    x = _call(self.mid_block, x, self.remat)
    for block in self.up_blocks:
      x = _call(block, x, self.remat)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class DiagonalGaussian(NamedTuple):
  """The encoder's posterior q(z|x): mean and log-variance (clipped to [-30, 20] as diffusers), channels-last."""

  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> DiagonalGaussian:
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean, jnp.clip(logvar, -30.0, 20.0))

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  @property
  def var(self) -> jax.Array:
    return jnp.exp(self.logvar)

  def mode(self) -> jax.Array:
    return self.mean

  def sample(self, key: jax.Array) -> jax.Array:
    eps = jax.random.normal(key, self.mean.shape, jnp.float32).astype(self.mean.dtype)
    return self.mean + self.std * eps

  def kl(self) -> jax.Array:
    """KL(q || N(0, I)) per example, summed over latent positions and channels (diffusers' `kl()`)."""
    m, lv = self.mean.astype(jnp.float32), self.logvar.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.square(m) + jnp.exp(lv) - 1.0 - lv, axis=tuple(range(1, m.ndim)))


class AutoencoderKL(nnx.Module):
  """diffusers `AutoencoderKL`. `encode(x)` -> posterior, `decode(z)` -> image; `encode_latents`/`decode_latents`
  apply the scaling (and optional shift) factor, i.e. map between images and the diffusion model's latents.
  """

  def __init__(self, config: AutoencoderKLConfig | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    cfg = config or AutoencoderKLConfig.sd15()
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.config = cfg
    self.dtype = dtype
    self.encoder = Encoder(cfg, **kw)
    self.decoder = Decoder(cfg, **kw)
    lat = cfg.latent_channels
    self.quant_conv = conv(2 * lat, 2 * lat, 1, padding=0, **kw) if cfg.use_quant_conv else None
    self.post_quant_conv = conv(lat, lat, 1, padding=0, **kw) if cfg.use_post_quant_conv else None

  def _check(self, x: jax.Array, channels: int, what: str, factor: int) -> None:
    noun = 'images' if what == 'encode' else 'latents'
    if x.ndim != 4 or x.shape[-1] != channels:
      raise ValueError(f'AutoencoderKL.{what}: expected channels-last {noun} (N, H, W, {channels}), got shape '
                       f'{x.shape}')
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f'AutoencoderKL.{what}: spatial size {x.shape[1:3]} is not divisible by {factor}')

  def encode(self, x: jax.Array) -> DiagonalGaussian:
    """(N, H, W, in_channels) images in [-1, 1] -> posterior over (N, H/f, W/f, latent_channels)."""
    x = jnp.asarray(x)
    self._check(x, self.config.in_channels, 'encode', self.config.downsample_factor)
    moments = self.encoder(x)
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    return DiagonalGaussian.from_moments(moments.astype(jnp.float32))

  def decode(self, z: jax.Array) -> jax.Array:
    """(N, h, w, latent_channels) unscaled latents -> (N, h*f, w*f, out_channels) images."""
    z = jnp.asarray(z)
    self._check(z, self.config.latent_channels, 'decode', 1)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Reconstruction: decode(posterior sample) with `key`, decode(posterior mean) without (diffusers forward)."""
    posterior = self.encode(x)
    return self.decode(posterior.mode() if key is None else posterior.sample(key))

  def scale_latents(self, z: jax.Array) -> jax.Array:
    shift = self.config.shift_factor or 0.0
    return (z - shift) * self.config.scaling_factor

  def unscale_latents(self, z: jax.Array) -> jax.Array:
    shift = self.config.shift_factor or 0.0
    return z / self.config.scaling_factor + shift

  def encode_latents(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Images -> diffusion latents: a posterior sample with `key` (training), else its mean, times scaling_factor."""
    posterior = self.encode(x)
    return self.scale_latents(posterior.mode() if key is None else posterior.sample(key))

  def decode_latents(self, latents: jax.Array) -> jax.Array:
    """Diffusion latents -> images in about [-1, 1] (not clipped)."""
    return self.decode(self.unscale_latents(latents))
