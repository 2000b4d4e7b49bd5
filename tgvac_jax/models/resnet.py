"""Convolutional building blocks of the SD UNet and VAE (diffusers `ResnetBlock2D`, `Downsample2D`, `Upsample2D`).

Channels-last: images are (N, H, W, C). Parameter names follow diffusers (`norm1`, `conv1`, `time_emb_proj`, ...),
so weight conversion is by rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax import target
from tgvac_jax.models import cpu_conv, dense


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
    xf = x.astype(jnp.float32).reshape(n, -1, c)
    count = xf.shape[1] * (c // g)
    # Two passes, both reducing over the pixel axis per channel (contiguous, vectorised on CPU), then summing the
    # tiny (n, c) results per group: mean first, then the mean squared deviation from the group mean.
    mean = jnp.sum(xf, axis=1).reshape(n, g, c // g).sum(-1) / count  # (n, g)
    mean_c = jnp.repeat(mean, c // g, axis=1)  # (n, c)
    var = jnp.sum(jnp.square(xf - mean_c[:, None, :]), axis=1).reshape(n, g, c // g).sum(-1) / count
    a = jnp.repeat(jax.lax.rsqrt(var + self.eps), c // g, axis=1) * self.scale[...].astype(jnp.float32)
    b = self.bias[...].astype(jnp.float32) - mean_c * a
    bshape = (n,) + (1,) * (x.ndim - 2) + (c,)
    y = x.astype(jnp.float32) * a.reshape(bshape) + b.reshape(bshape)
    return y.astype(self.dtype or x.dtype)


# On CPU, XLA's generic convolution is slow for wide, spatially small maps (SD's 8x8 and 4x4 levels at a 32x32
# latent: 1.7-2x): there a 3x3 conv runs faster as one matmul over its 9 shifted copies (im2col). A conv whose output
# has at most this many pixels per image takes the matmul path on CPU; 0 disables it. Read at trace time.
MATMUL_CONV_MAX_PIXELS = 64


# Our conv kernel (`cpu_conv`) runs a 3x3 conv at 32x32 about twice as fast as XLA:CPU and our matmul forms, but is
# slower on smaller maps with wide channels, where it streams its weights from L3 for every few output pixels
# (bench/conv.py, 2-core AMD EPYC). It takes convs whose output has at least this many pixels per image.
CPU_CONV_KERNEL_MIN_PIXELS = 1024


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int] = (1, 1),
           padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)), precision=None) -> jax.Array:
  """NHWC x HWIO convolution without bias: 1x1 as a dot; on CPU with one device, stride 1 in float32 on maps of at
  least `CPU_CONV_KERNEL_MIN_PIXELS` by our kernel (`cpu_conv`); otherwise <= 64 output channels from >= 64 input
  channels as row-shifted dots, outputs of at most `MATMUL_CONV_MAX_PIXELS` pixels as an im2col dot; otherwise
  `lax.conv_general_dilated`."""
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  (pt, pb), (pl, pr) = padding
  _, h, w, _ = x.shape
  ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
  if kh == kw == 1 and sh == sw == 1 and not (pt or pb or pl or pr):
    return jnp.dot(x, kernel[0, 0], precision=precision)
  cpu = target.on_cpu()
  # One device only: XLA's partitioner cannot split a custom call over a mesh, it would gather its operands.
  if (cpu and ho * wo >= CPU_CONV_KERNEL_MIN_PIXELS and target.device_count() == 1
      and cpu_conv.supported(x, kernel, strides, padding) and cpu_conv.available()):
    return cpu_conv.conv(x, kernel, padding)
  if cpu and sh == sw == 1 and kh > 1 and cout <= 64 <= cin:
    # XLA:CPU's conv does not use a second thread for so few output channels; kh row-shifted dots over
    # column-unfolded input do (1.5x on 2 cores at 32x32x64).
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = jnp.concatenate([xp[:, :, j:j + wo, :] for j in range(kw)], axis=-1)  # (N, H+pt+pb, Wo, kw*Cin)
    wk = kernel.reshape(kh, kw * cin, cout)
    return sum(jnp.dot(cols[:, i:i + ho], wk[i], precision=precision) for i in range(kh))
  if ho * wo <= MATMUL_CONV_MAX_PIXELS and cpu:
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
    return jnp.dot(jnp.concatenate(cols, axis=-1), kernel.reshape(kh * kw * cin, cout), precision=precision)
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision=precision)


class Conv2d(nnx.Conv):
  """`nnx.Conv` (kernel HWIO, same parameters) computed by `conv2d` for plain 2-D convs (integer padding, no
  dilation or groups); anything else falls back to `nnx.Conv`."""

  def _plain(self, x: jax.Array) -> bool:
    pad = self.padding
    return (x.ndim == 4 and self.feature_group_count == 1 and self.mask is None and isinstance(pad, (tuple, list))
            and all(isinstance(p, (tuple, list)) for p in pad)
            and self.kernel_dilation in (1, (1, 1), None) and self.input_dilation in (1, (1, 1), None))

  def __call__(self, x: jax.Array) -> jax.Array:
    if not self._plain(x):
      return super().__call__(x)
    strides = tuple(self.strides) if isinstance(self.strides, (tuple, list)) else (self.strides,) * 2
    bias = self.bias[...] if self.bias is not None else None
    x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
    y = conv2d(x, kernel, strides, tuple(tuple(p) for p in self.padding), self.precision)
    return y if bias is None else y + bias


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
    self.time_emb_proj = dense.Linear(temb_channels, out_channels, **kw) if temb_channels is not None else None
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


def _fold_taps(w: jax.Array, phase: int, axis: int) -> jax.Array:
  """3 kernel taps along `axis` -> the 2 taps that act on the low-resolution input for output phase 0 or 1."""
  a, b, c = jnp.split(w, 3, axis=axis)
  return jnp.concatenate([a, b + c] if phase == 0 else [a + b, c], axis=axis)


def upsample_conv(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
  """conv3x3(pad 1)(nearest2x(x)) computed on the low-resolution grid ("sub-pixel"): each of the 4 output phases
  is a 2x2 conv of x with summed taps, 4/9 of the FLOPs and no upsampled copy. Same result up to rounding."""
  n, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = []
  for py in (0, 1):
    ky = _fold_taps(kernel, py, 0)
    rows.append(jnp.stack([conv2d(xp[:, py:py + h + 1, px:px + w + 1], _fold_taps(ky, px, 1), precision=precision)
                           for px in (0, 1)], axis=3))  # (N, H, W, 2, C)
  y = jnp.stack(rows, axis=2)  # (N, H, 2, W, 2, C)
  return y.reshape(n, 2 * h, 2 * w, y.shape[-1])


# Use the sub-pixel form of Upsample2D on CPU (on GPU cuDNN's direct conv is used). Read at trace time.
SUBPIXEL_UPSAMPLE = True


class Upsample2D(nnx.Module):
  """Nearest 2x upsampling followed by a 3x3 conv (`conv`); on CPU computed in sub-pixel form (`upsample_conv`)."""

  def __init__(self, channels: int, out_channels: int | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.conv = conv(channels, out_channels or channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.conv
    if SUBPIXEL_UPSAMPLE and target.on_cpu() and x.ndim == 4 and c._plain(x):  # pylint: disable=protected-access
      bias = c.bias[...] if c.bias is not None else None
      x, kernel, bias = c.promote_dtype((x, c.kernel[...], bias), dtype=c.dtype)
      y = upsample_conv(x, kernel, c.precision)
      return y if bias is None else y + bias
    return c(upsample_nearest2x(x))
