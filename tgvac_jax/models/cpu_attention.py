"""The fused CPU attention kernel (`cpu_attention.cc`), built on first use (`cpu_kernels.py`) and called through the
XLA FFI.

XLA:CPU cannot keep a block of attention scores in cache from the dot that makes them through the softmax to the
value product: each is a separate op over the whole block in memory. The kernel makes a tile of 8 query rows'
scores, probabilities and output (and in the backward dP and dS) while they are in the core's cache. Where it
cannot be built, `available()` says False, names the reason once in a warning, and `attention.py` keeps XLA's
blocked path.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from tgvac_jax.models import cpu_kernels

SOURCE = pathlib.Path(__file__).with_suffix('.cc')
_TARGETS = {'forward': 'tgvac_attention_forward', 'backward': 'tgvac_attention_backward'}
_SYMBOLS = {'forward': 'TgvacAttentionForward', 'backward': 'TgvacAttentionBackward'}


@functools.cache
def available() -> bool:
  """Builds (once per machine) and registers the kernel; False, with one warning saying why, where it cannot."""
  return cpu_kernels.load(SOURCE, {_TARGETS[k]: _SYMBOLS[k] for k in _TARGETS},
                          "the fused CPU attention kernel is unavailable, attention takes XLA's blocked path")


def supported(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
  """What the kernel takes: float32 (B, T, C) projections, keys and values alike."""
  return all(x.dtype == jnp.float32 and x.ndim == 3 for x in (q, k, v)) and k.shape == v.shape and \
      q.shape[0] == k.shape[0] and q.shape[2] == k.shape[2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
  """softmax(q k^T / sqrt(D)) v on (B, T, H*D) float32 projections, without mask; see `supported`."""
  return _forward(q, k, v, heads)[0]


def _scale(q, heads):
  return np.float32((q.shape[-1] // heads) ** -0.5)


def _call(name, outputs, *args, heads):
  if not available():
    raise RuntimeError('the fused CPU attention kernel could not be built (see the warning above)')
  # Under vmap the kernel gets the vmapped axes as leading batch dimensions.
  return jax.ffi.ffi_call(_TARGETS[name], outputs, vmap_method='broadcast_all')(
      *args, heads=np.int64(heads), scale=_scale(args[0], heads))


def _forward(q, k, v, heads):
  b, t, c = q.shape
  if c % heads:
    raise ValueError(f'attention width {c} is not divisible by {heads} heads')
  out, lse = _call('forward', (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                               jax.ShapeDtypeStruct((b, heads, t), jnp.float32)), q, k, v, heads=heads)
  return out, (q, k, v, out, lse)


def _backward(heads, res, dout):
  q, k, v, out, lse = res
  return _call('backward', tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v)),
               q, k, v, out, lse, dout.astype(jnp.float32), heads=heads)


attention.defvjp(_forward, _backward)
