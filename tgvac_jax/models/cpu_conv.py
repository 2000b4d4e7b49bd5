"""The direct CPU convolution kernel (`cpu_conv.cc`), built on first use (`cpu_kernels.py`) and called through the
XLA FFI for stride-1 float32 convs; `resnet.conv2d` takes it on CPU.

XLA:CPU's convolution (and our matmul forms of it in `resnet.py`) builds shifted copies of the input or runs a
generic loop nest; the kernel reads the padded image in place as a strided matrix and keeps a 6-pixel x 64-channel
tile of outputs in registers over all taps (bench/conv.py: about twice as fast as XLA's conv at 32x32; slower than
it on small maps with wide channels, which `resnet.conv2d` keeps from it). Its backward for the input is the same
kernel on the padded output gradient with the kernel flipped and transposed; the weight gradient is XLA's (the
motion stage, whose convs are frozen, never computes it).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp

from tgvac_jax.models import cpu_kernels

SOURCE = pathlib.Path(__file__).with_suffix('.cc')
_TARGET = 'tgvac_conv'

Padding = tuple[tuple[int, int], tuple[int, int]]


@functools.cache
def available() -> bool:
  """Builds (once per machine) and registers the kernel; False, with one warning saying why, where it cannot."""
  return cpu_kernels.load(SOURCE, {_TARGET: 'TgvacConv'},
                          "the CPU conv kernel is unavailable, convolutions take XLA's lowering")


def supported(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> bool:
  """What the kernel takes: float32 NHWC x HWIO, stride 1, channels in and out multiples of 16 (the backward's
  output is the input's channels), padding at most the kernel size - 1 on each side."""
  kh, kw, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = padding
  return (x.ndim == 4 and x.dtype == kernel.dtype == jnp.float32 and tuple(strides) == (1, 1)
          and cin % 16 == 0 and cout % 16 == 0 and x.shape[-1] == cin
          and 0 <= min(pt, pb) and max(pt, pb) < kh and 0 <= min(pl, pr) and max(pl, pr) < kw)


def _call(xp: jax.Array, kernel: jax.Array) -> jax.Array:
  """The valid correlation of an already padded input."""
  if not available():
    raise RuntimeError('the CPU conv kernel could not be built (see the warning above)')
  n, hp, wp, _ = xp.shape
  kh, kw, _, cout = kernel.shape
  shape = jax.ShapeDtypeStruct((n, hp - kh + 1, wp - kw + 1, cout), jnp.float32)
  return jax.ffi.ffi_call(_TARGET, shape, vmap_method='sequential')(xp, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1, 1), padding)` in NHWC/HWIO; see `supported`."""
  return _call(jnp.pad(x, ((0, 0), *padding, (0, 0))), kernel)


def _forward(x, kernel, padding):
  return conv(x, kernel, padding), (x, kernel)


def _backward(padding, res, dy):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  (pt, pb), (pl, pr) = padding
  # d/dx of a stride-1 correlation is the correlation of the output gradient, padded by kernel - 1 - padding,
  # with the kernel flipped in space and its channel axes swapped.
  dx = _call(jnp.pad(dy, ((0, 0), (kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr), (0, 0))),
             jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  _, weight_vjp = jax.vjp(lambda k: jax.lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')), kernel)
  return dx, weight_vjp(dy)[0]


conv.defvjp(_forward, _backward)
