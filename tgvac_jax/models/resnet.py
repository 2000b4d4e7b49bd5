"""Convolutional building blocks of the SD UNet and VAE (diffusers `ResnetBlock2D`, `Downsample2D`, `Upsample2D`).

Channels-last: images are (N, H, W, C). Parameter names follow diffusers (`norm1`, `conv1`, `time_emb_proj`, ...),
so weight conversion is by rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class GroupNorm(nnx.Module):
  """GroupNorm over all axes but the first and the channel axis, per group of channels (torch semantics).

  Statistics are taken in float32 whatever the compute dtype; the affine is folded into one multiply-add so XLA
  fuses it with the following activation. Parameters `scale`, `bias` (torch `weight`, `bias`).
  """

  def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, *, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs | None = None):
    del rngs
    if num_channels % num_groups:
      raise ValueError(f'GroupNorm: {num_channels} channels are not divisible by {num_groups} groups')
    self.num_groups = num_groups
    self.num_channels = num_channels
    self.eps = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((num_channels,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((num_channels,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    n, c, g = x.shape[0], x.shape[-1], self.num_groups
    xf = x.astype(jnp.float32)
    xg = xf.reshape(n, -1, g, c // g)
    mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=(1, 3), keepdims=True)
    inv = jax.lax.rsqrt(var + self.eps)  # (n, 1, g, 1)
    scale = self.scale[...].astype(jnp.float32).reshape(1, 1, g, c // g)
    a = (inv * scale).reshape(n, c)
    b = self.bias[...].astype(jnp.float32).reshape(1, c) - (mean * inv * scale).reshape(n, c)
    bshape = (n,) + (1,) * (x.ndim - 2) + (c,)
    y = xf * a.reshape(bshape) + b.reshape(bshape)
    return y.astype(self.dtype or x.dtype)


# On CPU, XLA's generic convolution is slow for wide, spatially small maps (SD's 16x16 .. 4x4 levels at a 32x32
# latent): there a 3x3 conv runs faster as one matmul over its 9 shifted copies (im2col). A conv whose output has at
# most this many pixels per image takes the matmul path on CPU; 0 disables it. Read at trace time.
MATMUL_CONV_MAX_PIXELS = 256


class Conv2d(nnx.Conv):
  """`nnx.Conv` (kernel HWIO, same parameters) computing 1x1 convs as matmuls and, on CPU for small feature maps,
  3x3 convs as im2col matmuls (see `MATMUL_CONV_MAX_PIXELS`); everything else goes to `lax.conv`."""

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    bias = self.bias[...] if self.bias is not None else None
    kh, kw, cin, cout = kernel.shape
    sh, sw = self.strides if isinstance(self.strides, (tuple, list)) else (self.strides,) * 2
    pad = self.padding
    simple = (x.ndim == 4 and self.feature_group_count == 1 and self.mask is None and isinstance(pad, (tuple, list))
              and all(isinstance(p, (tuple, list)) for p in pad)
              and (self.kernel_dilation in (1, (1, 1), None)) and (self.input_dilation in (1, (1, 1), None)))
    if not simple:
      return super().__call__(x)
    n, h, w, _ = x.shape
    (pt, pb), (pl, pr) = pad
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    if kh == kw == 1 and sh == sw == 1 and not (pt or pb or pl or pr):
      x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
      y = jnp.dot(x, kernel[0, 0], precision=self.precision)
    elif ho * wo <= MATMUL_CONV_MAX_PIXELS and jax.default_backend() == 'cpu':
      x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
      xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
      cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
      y = jnp.dot(jnp.concatenate(cols, axis=-1), kernel.reshape(kh * kw * cin, cout), precision=self.precision)
    else:
      return super().__call__(x)
    if bias is not None:
      y = y + bias
    return y


def conv(in_channels: int, out_channels: int, kernel: int = 3, *, stride: int = 1, padding: int | str = 'SAME',
         dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Conv:
  """A 2-D conv with torch-style symmetric integer padding (`padding=1` for 3x3, 0 for 1x1)."""
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return Conv2d(in_channels, out_channels, (kernel, kernel), strides=(stride, stride), padding=padding,
                dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class ResnetBlock2D(nnx.Module):
  """norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 -> SiLU -> conv2, plus (shortcut) input.

  `temb_channels=None` drops the time projection (VAE). `conv_shortcut` (1x1) appears when the channel count
  changes, as in diffusers' default `use_in_shortcut`.
  """

  def __init__(self, in_channels: int, out_channels: int | None = None, *, temb_channels: int | None = 512,
               groups: int = 32, groups_out: int | None = None, eps: float = 1e-6,
               output_scale_factor: float = 1.0, use_in_shortcut: bool | None = None, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    out_channels = out_channels or in_channels
    groups_out = groups_out or groups
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_channels, self.out_channels = in_channels, out_channels
    self.output_scale_factor = output_scale_factor
    self.norm1 = GroupNorm(groups, in_channels, eps, **kw)
    self.conv1 = conv(in_channels, out_channels, 3, padding=1, **kw)
    self.time_emb_proj = nnx.Linear(temb_channels, out_channels, **kw) if temb_channels is not None else None
    self.norm2 = GroupNorm(groups_out, out_channels, eps, **kw)
    self.conv2 = conv(out_channels, out_channels, 3, padding=1, **kw)
    if use_in_shortcut is None:
      use_in_shortcut = in_channels != out_channels
    self.conv_shortcut = conv(in_channels, out_channels, 1, padding=0, **kw) if use_in_shortcut else None

  def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    if self.time_emb_proj is not None and temb is not None:
      t = self.time_emb_proj(jax.nn.silu(temb))
      h = h + t.reshape((t.shape[0],) + (1,) * (h.ndim - 2) + (t.shape[-1],)).astype(h.dtype)
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.conv_shortcut is not None:
      x = self.conv_shortcut(x)
    out = x.astype(h.dtype) + h
    if self.output_scale_factor != 1.0:
      out = out / self.output_scale_factor
    return out


class Downsample2D(nnx.Module):
  """3x3 conv with stride 2 (`conv`). `padding=0` pads right/bottom by one first, as the VAE encoder does."""

  def __init__(self, channels: int, out_channels: int | None = None, *, padding: int = 1, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.padding = padding
    self.conv = conv(channels, out_channels or channels, 3, stride=2, padding=padding, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.padding == 0:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return self.conv(x)


def upsample_nearest2x(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, 2H, 2W, C), nearest neighbour (torch `interpolate(scale_factor=2, mode='nearest')`)."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


class Upsample2D(nnx.Module):
  """Nearest 2x upsampling followed by a 3x3 conv (`conv`)."""

  def __init__(self, channels: int, out_channels: int | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.conv = conv(channels, out_channels or channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(upsample_nearest2x(x))
