"""Timestep embeddings of the SD UNet (diffusers `Timesteps` + `TimestepEmbedding`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax.models import dense


def timestep_embedding(timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool = False,
                       freq_shift: float = 1.0, scale: float = 1.0, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of a 1-D array of (possibly fractional) timesteps -> (N, dim) float32.

  Same formula as diffusers' `get_timestep_embedding`: frequency i is exp(-ln(max_period) * i / (half - shift)),
  output [sin, cos] (or [cos, sin] when `flip_sin_to_cos`), zero-padded to an odd `dim`.
  """
  timesteps = jnp.asarray(timesteps)
  if timesteps.ndim != 1:
    raise ValueError(f'timesteps must be 1-D, got shape {timesteps.shape}')
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  emb = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = scale * emb
  sin, cos = jnp.sin(emb), jnp.cos(emb)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class Timesteps(nnx.Module):
  """Parameter-free sinusoidal projection (diffusers `Timesteps`)."""

  def __init__(self, num_channels: int, flip_sin_to_cos: bool, freq_shift: float, scale: float = 1.0):
    self.num_channels = num_channels
    self.flip_sin_to_cos = flip_sin_to_cos
    self.freq_shift = freq_shift
    self.scale = scale

  def __call__(self, timesteps: jax.Array) -> jax.Array:
    return timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=self.flip_sin_to_cos,
                              freq_shift=self.freq_shift, scale=self.scale)


class TimestepEmbedding(nnx.Module):
  """linear_1 -> SiLU -> linear_2 (diffusers `TimestepEmbedding` with act_fn='silu')."""

  def __init__(self, in_channels: int, time_embed_dim: int, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.linear_1 = dense.Linear(in_channels, time_embed_dim, **kw)
    self.linear_2 = dense.Linear(time_embed_dim, time_embed_dim, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(jax.nn.silu(self.linear_1(x)))
