"""Motion modules (AnimateDiff v2), the temporal layers that stage 2 inserts into the frame UNet (paper eq. 3).

A motion module attends along time at every pixel of a feature map:

  x (B*F, H, W, C) -> GroupNorm -> proj_in -> (B*H*W, F, C)
    -> transformer_blocks: x += attn1(norm1(x) + PE); x += attn2(norm2(x) + PE); x += ff(norm3(x))   [GEGLU ff]
    -> proj_out (zero-initialised) -> back to (B*F, H, W, C) -> + x

so a new module is the identity and stage 2 starts exactly at stage 1. PE is the fixed sinusoidal encoding
(sin on even, cos on odd channels, base 10000) of the frame index, added to the normed input of both attentions.

Attribute names mirror diffusers' `AnimateDiffTransformer3D` inside `MotionAdapter` (`norm`, `proj_in`,
`transformer_blocks[i].{norm1, attn1, norm2, attn2, norm3, ff}`, `proj_out`), so weights convert by rule
(`convert/animatediff.py`). Every weight is a `MotionParam`, so "train motion only" is a type filter:
`nnx.Optimizer(unet, tx, wrt=MotionParam)` or `nnx.split(unet, MotionParam, nnx.Param)`.

GroupNorm is per frame, as in the original AnimateDiff; `MotionConfig.norm_across_frames=True` instead
normalises over all frames of a clip, as diffusers' `AnimateDiffTransformer3D` does (for parity tests).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tgvac_jax.models import dense
from tgvac_jax.models.resnet import GroupNorm
from tgvac_jax.models.transformer import Attention, FeedForward, layer_norm


class MotionParam(nnx.Param):
  """A motion-module weight. Spatial weights are plain `nnx.Param`; filter on this type to train motion alone."""


@dataclasses.dataclass(frozen=True)
class MotionConfig:
  """Shape and behaviour of the motion modules (defaults: AnimateDiff `mm_sd_v15_v2`).

  num_attention_heads: heads of both temporal attentions (head width = channels // heads).
  num_transformer_layers: transformer blocks per module (AnimateDiff: 1).
  norm_num_groups: GroupNorm groups of the input norm.
  max_seq_length: length of the sinusoidal position table; longer clips are refused.
  use_mid_block: a motion module in the UNet's mid block (v2: yes).
  norm_across_frames: GroupNorm statistics over all frames of a clip (diffusers) instead of per frame (AnimateDiff).
  zero_init: proj_out starts at zero, so a new module is the identity.
  remat: recompute the module in the backward pass instead of storing its activations.
  attention_impl: passed to `attention.attend` (None, 'xla', 'cudnn', 'blocked').
  """
  num_attention_heads: int = 8
  num_transformer_layers: int = 1
  norm_num_groups: int = 32
  max_seq_length: int = 32
  use_mid_block: bool = True
  norm_across_frames: bool = False
  zero_init: bool = True
  remat: bool = False
  attention_impl: str | None = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d) -> MotionConfig:
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f'MotionConfig.from_dict: unknown keys {unknown}')
    return cls(**d)


@functools.lru_cache(maxsize=64)
def sinusoidal_table(length: int, dim: int) -> np.ndarray:
  """(length, dim) float32: pe[p, 2i] = sin(p * w_i), pe[p, 2i+1] = cos(p * w_i), w_i = 10000^(-2i/dim)."""
  if dim % 2:
    raise ValueError(f'sinusoidal position encoding needs an even width, got {dim}')
  position = np.arange(length, dtype=np.float32)[:, None]
  div_term = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
  pe = np.zeros((length, dim), np.float32)
  pe[:, 0::2] = np.sin(position * div_term)
  pe[:, 1::2] = np.cos(position * div_term)
  pe.flags.writeable = False  # cached: shared by every caller
  return pe


def as_motion_params(module: nnx.Module) -> nnx.Module:
  """Re-types every plain `nnx.Param` inside `module` as a `MotionParam` (values and metadata kept)."""
  for _, sub in nnx.iter_modules(module):
    for name, value in list(vars(sub).items()):
      if isinstance(value, nnx.Param) and not isinstance(value, MotionParam):
        setattr(sub, name, MotionParam(value.get_value(), **value.get_metadata()))
  return module


class TemporalTransformerBlock(nnx.Module):
  """diffusers `BasicTransformerBlock(double_self_attention=True, positional_embeddings='sinusoidal')`.

  AnimateDiff names: norms.0 = norm1, attention_blocks.0 = attn1, norms.1 = norm2, attention_blocks.1 = attn2,
  ff_norm = norm3. The position table is a constant, not a weight (diffusers' `pos_embed.pe` buffer).
  """

  def __init__(self, dim: int, heads: int, *, max_seq_length: int, attention_impl: str | None = None, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    akw = dict(heads=heads, dim_head=dim // heads, bias=False, implementation=attention_impl, **kw)
    self.dim = dim
    self.max_seq_length = max_seq_length  # the position table is a constant, rebuilt at trace time
    self.norm1 = layer_norm(dim, **kw)
    self.attn1 = Attention(dim, **akw)
    self.norm2 = layer_norm(dim, **kw)
    self.attn2 = Attention(dim, **akw)
    self.norm3 = layer_norm(dim, **kw)
    self.ff = FeedForward(dim, **kw)

  def _pos(self, h: jax.Array) -> jax.Array:
    return h + jnp.asarray(sinusoidal_table(self.max_seq_length, self.dim)[:h.shape[1]], h.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (N, F, C) -> (N, F, C)."""
    x = x + self.attn1(self._pos(self.norm1(x)))
    x = x + self.attn2(self._pos(self.norm2(x)))
    return x + self.ff(self.norm3(x))


class MotionModule(nnx.Module):
  """diffusers `AnimateDiffTransformer3D`: temporal self-attention at every pixel, added to the input.

  Called as `module(x, num_frames)` with x (B*F, H, W, C) (frames of a clip contiguous), returns the same shape.
  """

  def __init__(self, channels: int, config: MotionConfig | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    config = config or MotionConfig()
    heads = config.num_attention_heads
    if channels % heads:
      raise ValueError(f'motion module: {channels} channels are not divisible by {heads} heads')
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.channels = channels
    self.max_seq_length = config.max_seq_length
    self.norm_across_frames = config.norm_across_frames
    self.remat = config.remat
    self.norm = GroupNorm(config.norm_num_groups, channels, 1e-6, **kw)
    self.proj_in = dense.Linear(channels, channels, **kw)
    self.transformer_blocks = nnx.List([
        TemporalTransformerBlock(channels, heads, max_seq_length=config.max_seq_length,
                                 attention_impl=config.attention_impl, **kw)
        for _ in range(config.num_transformer_layers)])
    self.proj_out = dense.Linear(channels, channels, **kw)
    if config.zero_init:
      self.proj_out.kernel.set_value(jnp.zeros_like(self.proj_out.kernel.get_value()))
      self.proj_out.bias.set_value(jnp.zeros_like(self.proj_out.bias.get_value()))
    as_motion_params(self)

  def _forward(self, x: jax.Array, num_frames: int) -> jax.Array:
    bf, h, w, c = x.shape
    b = bf // num_frames
    if self.norm_across_frames:  # statistics over (F, H, W) of each clip, as diffusers' 5-D GroupNorm
      y = self.norm(x.reshape(b, num_frames * h * w, c)).reshape(b, num_frames, h, w, c)
    else:  # per frame, as AnimateDiff
      y = self.norm(x).reshape(b, num_frames, h, w, c)
    y = y.transpose(0, 2, 3, 1, 4).reshape(b * h * w, num_frames, c)
    y = self.proj_in(y)
    for block in self.transformer_blocks:
      y = block(y)
    y = self.proj_out(y)
    y = y.reshape(b, h, w, num_frames, c).transpose(0, 3, 1, 2, 4).reshape(bf, h, w, c)
    return y + x.astype(y.dtype)

  def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f'motion module: expected (B*F, H, W, {self.channels}), got {x.shape}')
    if num_frames < 1 or x.shape[0] % num_frames:
      raise ValueError(f'motion module: leading axis {x.shape[0]} is not a multiple of num_frames={num_frames}')
    if num_frames > self.max_seq_length:
      raise ValueError(f'motion module: clip of {num_frames} frames is longer than the position encoding '
                       f'(max_seq_length={self.max_seq_length}); use shorter windows or a longer table')
    if self.remat:
      return nnx.remat(lambda m, y: m._forward(y, num_frames), graph_updates=False)(  # mutates nothing
          self, x)  # pylint: disable=protected-access
    return self._forward(x, num_frames)
