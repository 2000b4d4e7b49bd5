"""Multi-head attention core shared by the UNet, the motion modules, the VAE and CLIP.

Everything goes through `jax.nn.dot_product_attention`, which lowers to cuDNN flash attention on GPU when
`implementation='cudnn'` and shapes allow, and to a plain XLA softmax(QK^T)V elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def split_heads(x: jax.Array, heads: int) -> jax.Array:
  """(B, T, H*D) -> (B, T, H, D)."""
  b, t, c = x.shape
  if c % heads:
    raise ValueError(f'attention width {c} is not divisible by {heads} heads')
  return x.reshape(b, t, heads, c // heads)


def merge_heads(x: jax.Array) -> jax.Array:
  """(B, T, H, D) -> (B, T, H*D)."""
  b, t, h, d = x.shape
  return x.reshape(b, t, h * d)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, *, is_causal: bool = False,
           mask: jax.Array | None = None, implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention on (B, T, H*D) projections; returns (B, Tq, H*D) in q's dtype.

  `mask`: boolean, broadcastable to (B, H, Tq, Tk), True where attention is allowed.
  `implementation`: None (XLA picks), 'xla' or 'cudnn' (GPU flash attention, bf16/fp16 only).
  """
  out = jax.nn.dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                                     mask=mask, is_causal=is_causal, implementation=implementation)
  return merge_heads(out)
