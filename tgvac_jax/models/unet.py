"""The SD UNet (diffusers `UNet2DConditionModel`) in Flax NNX, channels-last, with the video path.

Images: `sample` (B, H, W, C_in), text `encoder_hidden_states` (B, S, D) -> (B, H, W, C_out).
Videos: `sample` (B, F, H, W, C_in) is folded to (B*F, H, W, C_in) for every spatial layer; the text is shared by
the frames (B, S, D) or given per frame (B, F, S, D); timesteps are per video (B,) or per frame (B, F).
With `config.motion` set, motion modules sit where diffusers' `UNetMotionModel` puts them (see `unet_blocks`);
without it a video is exactly its frames run one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax.models.init import jit_init
from tgvac_jax.models.embeddings import TimestepEmbedding, Timesteps
from tgvac_jax.models.resnet import GroupNorm, conv
from tgvac_jax.models.unet_blocks import DOWN_BLOCKS, MID_BLOCKS, UP_BLOCKS

# diffusers' own defaults for the config fields we model (a config.json may omit any of them).
_DIFFUSERS_DEFAULTS = dict(
    sample_size=None, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'),
    mid_block_type='UNetMidBlock2DCrossAttn',
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn='silu', norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1280, transformer_layers_per_block=1,
    attention_head_dim=8, use_linear_projection=False, upcast_attention=False)

# diffusers fields we do not model: accepted only at these (diffusers default) values.
_UNSUPPORTED = dict(
    only_cross_attention=False, dropout=0.0, reverse_transformer_layers_per_block=None, encoder_hid_dim=None,
    encoder_hid_dim_type=None, num_attention_heads=None, dual_cross_attention=False, class_embed_type=None,
    addition_embed_type=None, addition_time_embed_dim=None, num_class_embeds=None,
    resnet_time_scale_shift='default', resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
    time_embedding_type='positional', time_embedding_dim=None, time_embedding_act_fn=None, timestep_post_act=None,
    time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3, projection_class_embeddings_input_dim=None,
    attention_type='default', class_embeddings_concat=False, mid_block_only_cross_attention=None,
    cross_attention_norm=None, addition_embed_type_num_heads=64)

# Our own fields (not in a diffusers config.json).
_OURS = ('remat', 'attention_impl', 'motion')


def _tuple(v):
  return tuple(v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """A diffusers `UNet2DConditionModel` config (same field names), defaults = SD-1.5, plus our run options.

  `attention_head_dim` is, as in diffusers' SD configs, the number of heads per block (int or per-block list).
  Ours: `remat` (checkpoint every down/mid/up block), `attention_impl` (`attention.attend`: None, 'xla',
  'cudnn', 'blocked'), `motion` (a `motion.MotionConfig`: insert motion modules; None = spatial only).
  """
  sample_size: int | None = 64
  in_channels: int = 4
  out_channels: int = 4
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple[str, ...] = _DIFFUSERS_DEFAULTS['down_block_types']
  mid_block_type: str | None = 'UNetMidBlock2DCrossAttn'
  up_block_types: tuple[str, ...] = _DIFFUSERS_DEFAULTS['up_block_types']
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  act_fn: str = 'silu'
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 768
  transformer_layers_per_block: int | tuple[int, ...] = 1
  attention_head_dim: int | tuple[int, ...] = 8
  use_linear_projection: bool = False
  upcast_attention: bool = False  # no effect: attention logits are computed in the compute dtype
  remat: bool = False
  attention_impl: str | None = None
  motion: Any = None

  def __post_init__(self):
    for name in ('down_block_types', 'up_block_types', 'block_out_channels', 'transformer_layers_per_block',
                 'attention_head_dim'):
      object.__setattr__(self, name, _tuple(getattr(self, name)))
    n = len(self.block_out_channels)
    if len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise ValueError(f'UNetConfig: {len(self.down_block_types)} down and {len(self.up_block_types)} up block '
                       f'types for {n} block_out_channels')
    for name, value in (('attention_head_dim', self.attention_head_dim),
                        ('transformer_layers_per_block', self.transformer_layers_per_block)):
      if isinstance(value, tuple) and len(value) != n:
        raise ValueError(f'UNetConfig: {name} has {len(value)} entries for {n} blocks')
    unknown = ([t for t in self.down_block_types if t not in DOWN_BLOCKS]
               + [t for t in self.up_block_types if t not in UP_BLOCKS]
               + ([self.mid_block_type] if self.mid_block_type not in (None, *MID_BLOCKS) else []))
    if unknown:
      raise ValueError(f'UNetConfig: unsupported block types {unknown}; supported: '
                       f'{sorted(DOWN_BLOCKS) + sorted(MID_BLOCKS) + sorted(UP_BLOCKS)}')
    if not isinstance(self.layers_per_block, int):
      raise ValueError('UNetConfig: layers_per_block must be an int')
    if self.act_fn != 'silu':
      raise ValueError(f'UNetConfig: act_fn {self.act_fn!r} is not supported (only silu)')
    for ch in self.block_out_channels:
      if ch % self.norm_num_groups:
        raise ValueError(f'UNetConfig: block channels {ch} not divisible by norm_num_groups {self.norm_num_groups}')

  @classmethod
  def sd15(cls, **overrides) -> UNetConfig:
    """Stable Diffusion 1.5 (`in_channels=12` for TGVAC's concatenated conditioning)."""
    return cls(**overrides)

  @property
  def num_heads(self) -> tuple[int, ...]:
    n = len(self.block_out_channels)
    return self.attention_head_dim if isinstance(self.attention_head_dim, tuple) else (self.attention_head_dim,) * n

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> UNetConfig:
    """From a diffusers config.json dict (keys starting with '_' ignored; missing keys take diffusers' defaults).

    Raises ValueError for unknown keys and for diffusers features we do not model set to non-default values.
    """
    d = {k: v for k, v in d.items() if not k.startswith('_')}
    kwargs = dict(_DIFFUSERS_DEFAULTS)
    bad, unknown = [], []
    for k, v in d.items():
      if k in _UNSUPPORTED:
        if _tuple(v) != _UNSUPPORTED[k] and not (v in (None, False) and _UNSUPPORTED[k] in (None, False)):
          bad.append(f'{k}={v!r}')
      elif k in _DIFFUSERS_DEFAULTS or k in _OURS:
        kwargs[k] = v
      else:
        unknown.append(k)
    if bad or unknown:
      raise ValueError(f'UNetConfig.from_dict: unsupported settings {bad}, unknown keys {unknown}')
    motion = kwargs.get('motion')
    if isinstance(motion, Mapping):
      from tgvac_jax.models.motion import MotionConfig  # pylint: disable=import-outside-toplevel
      kwargs['motion'] = MotionConfig.from_dict(motion) if hasattr(MotionConfig, 'from_dict') else MotionConfig(
          **motion)
    return cls(**kwargs)

  def to_dict(self, *, ours: bool = False) -> dict[str, Any]:
    """The diffusers config dict (`UNet2DConditionModel.from_config` builds the same network).

    `ours=True` adds our run options (remat, attention_impl, motion) for our own checkpoints.
    """
    out: dict[str, Any] = {'_class_name': 'UNet2DConditionModel'}
    for k in _DIFFUSERS_DEFAULTS:
      v = getattr(self, k)
      out[k] = list(v) if isinstance(v, tuple) else v
    if ours:
      out['remat'] = self.remat
      out['attention_impl'] = self.attention_impl
      m = self.motion
      out['motion'] = None if m is None else (m.to_dict() if hasattr(m, 'to_dict') else dataclasses.asdict(m))
    return out


def create_unet(config: UNetConfig, *, seed: int = 0, dtype=None, param_dtype=jnp.float32) -> UNet2DConditionModel:
  """A randomly initialised UNet, initialised inside one `jax.jit` (much faster than op-by-op eager init)."""
  return jit_init(lambda: UNet2DConditionModel(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed)))


class UNet2DConditionModel(nnx.Module):
  """conv_in -> down_blocks -> mid_block -> up_blocks -> conv_norm_out/SiLU/conv_out, time-conditioned by
  time_proj/time_embedding and text-conditioned by cross-attention. See the module docstring for shapes."""

  def __init__(self, config: UNetConfig, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    c = self.config = config
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    boc, n = c.block_out_channels, len(c.block_out_channels)
    heads = c.num_heads
    tl = (c.transformer_layers_per_block if isinstance(c.transformer_layers_per_block, tuple)
          else (c.transformer_layers_per_block,) * n)
    temb_dim = boc[0] * 4
    attn_kw = dict(cross_attention_dim=c.cross_attention_dim, use_linear_projection=c.use_linear_projection,
                   attention_impl=c.attention_impl)

    self.conv_in = conv(c.in_channels, boc[0], 3, padding=1, **kw)
    self.time_proj = Timesteps(boc[0], c.flip_sin_to_cos, c.freq_shift)
    self.time_embedding = TimestepEmbedding(boc[0], temb_dim, **kw)

    down, out_ch = [], boc[0]
    for i, kind in enumerate(c.down_block_types):
      in_ch, out_ch = out_ch, boc[i]
      extra = dict(num_attention_heads=heads[i], transformer_layers_per_block=tl[i], **attn_kw) \
          if kind.startswith('CrossAttn') else {}
      down.append(DOWN_BLOCKS[kind](in_ch, out_ch, temb_dim, num_layers=c.layers_per_block,
                                    resnet_eps=c.norm_eps, resnet_groups=c.norm_num_groups,
                                    add_downsample=i < n - 1, downsample_padding=c.downsample_padding,
                                    motion=c.motion, **extra, **kw))
    self.down_blocks = nnx.List(down)

    if c.mid_block_type is None:
      self.mid_block = None
    else:
      self.mid_block = MID_BLOCKS[c.mid_block_type](
          boc[-1], temb_dim, transformer_layers_per_block=tl[-1], resnet_eps=c.norm_eps,
          resnet_groups=c.norm_num_groups, num_attention_heads=heads[-1],
          output_scale_factor=c.mid_block_scale_factor,
          motion=c.motion if c.motion is not None and c.motion.use_mid_block else None, **attn_kw, **kw)

    rev, rev_heads, rev_tl = boc[::-1], heads[::-1], tl[::-1]
    up, out_ch = [], rev[0]
    for i, kind in enumerate(c.up_block_types):
      prev_ch, out_ch, in_ch = out_ch, rev[i], rev[min(i + 1, n - 1)]
      extra = dict(num_attention_heads=rev_heads[i], transformer_layers_per_block=rev_tl[i], **attn_kw) \
          if kind.startswith('CrossAttn') else {}
      up.append(UP_BLOCKS[kind](in_ch, prev_ch, out_ch, temb_dim, num_layers=c.layers_per_block + 1,
                                resnet_eps=c.norm_eps, resnet_groups=c.norm_num_groups, add_upsample=i < n - 1,
                                motion=c.motion, **extra, **kw))
    self.up_blocks = nnx.List(up)

    self.conv_norm_out = GroupNorm(c.norm_num_groups, boc[0], c.norm_eps, **kw)
    self.conv_out = conv(boc[0], c.out_channels, 3, padding=1, **kw)

  # ---------------------------------------------------------------------------------------------------------------
  def _check(self, sample: jax.Array, context: jax.Array) -> None:
    c = self.config
    if sample.ndim not in (4, 5):
      raise ValueError(f'UNet: sample must be (B, H, W, C) or (B, F, H, W, C), got shape {sample.shape}')
    if sample.shape[-1] != c.in_channels:
      raise ValueError(f'UNet: sample has {sample.shape[-1]} latent channels, the model expects {c.in_channels} '
                       f'(channels-last input (..., H, W, C))')
    h, w = sample.shape[-3:-1]
    f = c.downsample_factor
    if h % f or w % f:
      raise ValueError(f'UNet: spatial size {h}x{w} is not divisible by {f} (2**(number of down blocks - 1))')
    if context.shape[-1] != c.cross_attention_dim:
      raise ValueError(f'UNet: encoder_hidden_states width {context.shape[-1]} != cross_attention_dim '
                       f'{c.cross_attention_dim}')
    want = (3, 4) if sample.ndim == 5 else (3,)
    if context.ndim not in want:
      raise ValueError(f'UNet: encoder_hidden_states must be (B, S, D){" or (B, F, S, D)" if sample.ndim == 5 else ""}'
                       f', got shape {context.shape}')

  def _call(self, block, *args, num_frames: int):
    fn = lambda blk, *a: blk(*a, num_frames=num_frames)  # noqa: E731
    if self.config.remat:
      fn = nnx.remat(fn, graph_updates=False)  # blocks mutate nothing; also lets jax.grad differentiate a
      # subset of the weights (stage 2: MotionParam only) without a TraceContextError
    return fn(block, *args)

  def __call__(self, sample: jax.Array, timesteps: jax.Array | float, encoder_hidden_states: jax.Array
               ) -> jax.Array:
    """ε (or v) prediction with the shape of `sample` and `out_channels` channels."""
    c = self.config
    sample, context = jnp.asarray(sample), jnp.asarray(encoder_hidden_states)
    self._check(sample, context)
    video = sample.ndim == 5
    b = sample.shape[0]
    frames = sample.shape[1] if video else 1
    x = sample.reshape((b * frames,) + sample.shape[-3:])

    t = jnp.asarray(timesteps)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, (b,))
    if t.ndim == 2 and video:
      t = t.reshape(b * frames)
    elif t.shape == (b,):
      t = jnp.repeat(t, frames, axis=0) if frames > 1 else t
    else:
      raise ValueError(f'UNet: timesteps must be a scalar, (B,){" or (B, F)" if video else ""}, got {t.shape}')
    if context.ndim == 4:
      if context.shape[:2] != (b, frames):
        raise ValueError(f'UNet: per-frame encoder_hidden_states {context.shape} do not match (B, F)=({b}, {frames})')
      context = context.reshape((b * frames,) + context.shape[2:])
    elif frames > 1:
      context = jnp.repeat(context, frames, axis=0)

    dtype = self.dtype or x.dtype
    x, context = x.astype(dtype), context.astype(dtype)
    if c.center_input_sample:
      x = 2 * x - 1.0
    temb = self.time_embedding(self.time_proj(t).astype(dtype))

    x = self.conv_in(x)
    skips = [x]
    for block in self.down_blocks:
      x, res = self._call(block, x, temb, context, num_frames=frames)
      skips.extend(res)
    if self.mid_block is not None:
      x = self._call(self.mid_block, x, temb, context, num_frames=frames)
    for block in self.up_blocks:
      k = len(block.resnets)
      res, skips = tuple(skips[-k:]), skips[:-k]
      x = self._call(block, x, res, temb, context, num_frames=frames)
    x = self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
    return x.reshape(sample.shape[:-1] + (c.out_channels,))
