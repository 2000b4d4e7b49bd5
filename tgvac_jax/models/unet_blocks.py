"""Down, mid and up blocks of the SD UNet (diffusers `CrossAttnDownBlock2D`, `DownBlock2D`,
`UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`), with optional motion modules.

Spatial layers see (N, H, W, C) with N = batch * frames. When a `MotionConfig` is given, every block also holds
`motion_modules`, placed exactly where diffusers' `UNetMotionModel` places them:
  down / up blocks: resnet -> (attention) -> motion module, per layer;
  mid block:        resnets[0], then per layer attention -> motion module -> resnet.
A motion module is called as `module(x, num_frames)` on (B*F, H, W, C) and returns the same shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from tgvac_jax.models.transformer import Transformer2DModel


def motion_modules(motion: Any, channels: int, count: int, **kw) -> nnx.List | None:
  """`count` motion modules of width `channels`, or None without a motion config (imported lazily)."""
  if motion is None:
    return None
  from tgvac_jax.models.motion import MotionModule  # pylint: disable=import-outside-toplevel
  return nnx.List([MotionModule(channels, motion, **kw) for _ in range(count)])


def _per_layer(value, n: int) -> tuple:
  return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class _Block(nnx.Module):
  """Shared constructor pieces: keyword args for leaves, optional motion modules."""

  def _motion(self, x: jax.Array, i: int, num_frames: int) -> jax.Array:
    if self.motion_modules is None:
      return x
    return self.motion_modules[i](x, num_frames)


class DownBlock2D(_Block):
  """resnets (+ motion_modules), then an optional stride-2 `downsamplers[0]`."""

  def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, num_layers: int = 1,
               resnet_eps: float = 1e-6, resnet_groups: int = 32, add_downsample: bool = True,
               downsample_padding: int = 1, motion=None, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List([
        ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=temb_channels,
                      groups=resnet_groups, eps=resnet_eps, **kw) for i in range(num_layers)])
    self.motion_modules = motion_modules(motion, out_channels, num_layers, **kw)
    self.downsamplers = nnx.List([Downsample2D(out_channels, out_channels, padding=downsample_padding, **kw)]
                                 ) if add_downsample else None

  def __call__(self, x, temb, context=None, num_frames: int = 1):
    del context
    outputs = []
    for i, resnet in enumerate(self.resnets):
      x = self._motion(resnet(x, temb), i, num_frames)
      outputs.append(x)
    if self.downsamplers is not None:
      x = self.downsamplers[0](x)
      outputs.append(x)
    return x, tuple(outputs)


class CrossAttnDownBlock2D(_Block):
  """(resnet -> Transformer2DModel (+ motion module)) per layer, then an optional downsampler."""

  def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, num_layers: int = 1,
               transformer_layers_per_block: int | tuple[int, ...] = 1, resnet_eps: float = 1e-6,
               resnet_groups: int = 32, num_attention_heads: int = 1, cross_attention_dim: int = 1280,
               add_downsample: bool = True, downsample_padding: int = 1, use_linear_projection: bool = False,
               attention_impl: str | None = None, motion=None, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    layers = _per_layer(transformer_layers_per_block, num_layers)
    self.resnets = nnx.List([
        ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=temb_channels,
                      groups=resnet_groups, eps=resnet_eps, **kw) for i in range(num_layers)])
    self.attentions = nnx.List([
        Transformer2DModel(num_attention_heads, out_channels // num_attention_heads, out_channels,
                           num_layers=layers[i], cross_attention_dim=cross_attention_dim,
                           norm_num_groups=resnet_groups, use_linear_projection=use_linear_projection,
                           implementation=attention_impl, **kw) for i in range(num_layers)])
    self.motion_modules = motion_modules(motion, out_channels, num_layers, **kw)
    self.downsamplers = nnx.List([Downsample2D(out_channels, out_channels, padding=downsample_padding, **kw)]
                                 ) if add_downsample else None

  def __call__(self, x, temb, context=None, num_frames: int = 1):
    outputs = []
    for i, (resnet, attn) in enumerate(zip(self.resnets, self.attentions)):
      x = self._motion(attn(resnet(x, temb), context), i, num_frames)
      outputs.append(x)
    if self.downsamplers is not None:
      x = self.downsamplers[0](x)
      outputs.append(x)
    return x, tuple(outputs)


class UNetMidBlock2DCrossAttn(_Block):
  """resnets[0], then per layer: attention -> (motion module) -> resnet."""

  def __init__(self, in_channels: int, temb_channels: int, *, num_layers: int = 1,
               transformer_layers_per_block: int | tuple[int, ...] = 1, resnet_eps: float = 1e-6,
               resnet_groups: int | None = 32, num_attention_heads: int = 1, output_scale_factor: float = 1.0,
               cross_attention_dim: int = 1280, use_linear_projection: bool = False,
               attention_impl: str | None = None, motion=None, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    resnet_groups = resnet_groups if resnet_groups is not None else min(in_channels // 4, 32)
    layers = _per_layer(transformer_layers_per_block, num_layers)
    rkw = dict(temb_channels=temb_channels, groups=resnet_groups, eps=resnet_eps,
               output_scale_factor=output_scale_factor, **kw)
    self.resnets = nnx.List([ResnetBlock2D(in_channels, in_channels, **rkw) for _ in range(num_layers + 1)])
    self.attentions = nnx.List([
        Transformer2DModel(num_attention_heads, in_channels // num_attention_heads, in_channels,
                           num_layers=layers[i], cross_attention_dim=cross_attention_dim,
                           norm_num_groups=resnet_groups, use_linear_projection=use_linear_projection,
                           implementation=attention_impl, **kw) for i in range(num_layers)])
    self.motion_modules = motion_modules(motion, in_channels, num_layers, **kw)

  def __call__(self, x, temb, context=None, num_frames: int = 1):
    x = self.resnets[0](x, temb)
    for i, (attn, resnet) in enumerate(zip(self.attentions, self.resnets[1:])):
      x = resnet(self._motion(attn(x, context), i, num_frames), temb)
    return x


class UpBlock2D(_Block):
  """resnets over concat(x, skip) (+ motion_modules), then an optional nearest-2x `upsamplers[0]`."""

  def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int, *,
               num_layers: int = 1, resnet_eps: float = 1e-6, resnet_groups: int = 32, add_upsample: bool = True,
               motion=None, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List([
        ResnetBlock2D((prev_output_channel if i == 0 else out_channels)
                      + (in_channels if i == num_layers - 1 else out_channels), out_channels,
                      temb_channels=temb_channels, groups=resnet_groups, eps=resnet_eps, **kw)
        for i in range(num_layers)])
    self.motion_modules = motion_modules(motion, out_channels, num_layers, **kw)
    self.upsamplers = nnx.List([Upsample2D(out_channels, out_channels, **kw)]) if add_upsample else None

  def __call__(self, x, skips, temb, context=None, num_frames: int = 1):
    del context
    for i, resnet in enumerate(self.resnets):
      x = jnp.concatenate([x, skips[-1 - i].astype(x.dtype)], axis=-1)
      x = self._motion(resnet(x, temb), i, num_frames)
    if self.upsamplers is not None:
      x = self.upsamplers[0](x)
    return x


class CrossAttnUpBlock2D(_Block):
  """(concat skip -> resnet -> Transformer2DModel (+ motion module)) per layer, then an optional upsampler."""

  def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int, *,
               num_layers: int = 1, transformer_layers_per_block: int | tuple[int, ...] = 1,
               resnet_eps: float = 1e-6, resnet_groups: int = 32, num_attention_heads: int = 1,
               cross_attention_dim: int = 1280, add_upsample: bool = True, use_linear_projection: bool = False,
               attention_impl: str | None = None, motion=None, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    layers = _per_layer(transformer_layers_per_block, num_layers)
    self.resnets = nnx.List([
        ResnetBlock2D((prev_output_channel if i == 0 else out_channels)
                      + (in_channels if i == num_layers - 1 else out_channels), out_channels,
                      temb_channels=temb_channels, groups=resnet_groups, eps=resnet_eps, **kw)
        for i in range(num_layers)])
    self.attentions = nnx.List([
        Transformer2DModel(num_attention_heads, out_channels // num_attention_heads, out_channels,
                           num_layers=layers[i], cross_attention_dim=cross_attention_dim,
                           norm_num_groups=resnet_groups, use_linear_projection=use_linear_projection,
                           implementation=attention_impl, **kw) for i in range(num_layers)])
    self.motion_modules = motion_modules(motion, out_channels, num_layers, **kw)
    self.upsamplers = nnx.List([Upsample2D(out_channels, out_channels, **kw)]) if add_upsample else None

  def __call__(self, x, skips, temb, context=None, num_frames: int = 1):
    for i, (resnet, attn) in enumerate(zip(self.resnets, self.attentions)):
      x = jnp.concatenate([x, skips[-1 - i].astype(x.dtype)], axis=-1)
      x = self._motion(attn(resnet(x, temb), context), i, num_frames)
    if self.upsamplers is not None:
      x = self.upsamplers[0](x)
    return x


DOWN_BLOCKS = {'DownBlock2D': DownBlock2D, 'CrossAttnDownBlock2D': CrossAttnDownBlock2D}
UP_BLOCKS = {'UpBlock2D': UpBlock2D, 'CrossAttnUpBlock2D': CrossAttnUpBlock2D}
MID_BLOCKS = {'UNetMidBlock2DCrossAttn': UNetMidBlock2DCrossAttn}
