"""CLIP text transformer (SD's text encoder) and CLIP vision tower with projection, as transformers' PyTorch ones.

`CLIPTextModel`: token + position embeddings -> pre-norm transformer layers with a causal mask and quick_gelu MLPs
-> final_layer_norm; `pooler_output` is the hidden state at the EOS token, chosen as transformers does (argmax of
the ids for the legacy `eos_token_id == 2` configs such as SD-1.5's, else the first `eos_token_id`).
`CLIPVisionModelWithProjection`: patch conv + class token + positions -> pre_layrnorm (sic, transformers' name)
-> layers -> post_layernorm on the class token -> visual_projection (`image_embeds`). Images are channels-last
(B, H, W, 3), already normalised with CLIP's mean/std.

Attribute names mirror transformers' module tree (`text_model.embeddings.token_embedding`,
`text_model.encoder.layers[i].self_attn.q_proj`, `vision_model.pre_layrnorm`, `visual_projection`), so weight
conversion is by rule (`convert/clip.py`). Attention goes through `attention.attend`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tgvac_jax.models import dense
from tgvac_jax.models.attention import attend

ACTIVATIONS = {
    'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
}

# Our own fields (not in a transformers config.json).
_OURS = ('remat', 'attention_impl')


def _from_dict(cls, d: Mapping[str, Any]):
  """transformers config dicts carry many generic keys (id2label, architectures, dtype, ...): keep only ours."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in d.items() if k in names})


def _to_dict(cfg, model_type: str, architecture: str, ours: bool) -> dict[str, Any]:
  out = {'architectures': [architecture], 'model_type': model_type}
  for f in dataclasses.fields(cfg):
    if f.name not in _OURS or ours:
      out[f.name] = getattr(cfg, f.name)
  return out


def _check_common(cfg, what: str) -> None:
  if cfg.hidden_act not in ACTIVATIONS:
    raise ValueError(f'{what}: hidden_act {cfg.hidden_act!r} is not supported ({sorted(ACTIVATIONS)})')
  if cfg.hidden_size % cfg.num_attention_heads:
    raise ValueError(f'{what}: hidden_size {cfg.hidden_size} is not divisible by num_attention_heads '
                     f'{cfg.num_attention_heads}')


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """transformers `CLIPTextConfig` fields (same names and defaults) plus our run options `remat` (checkpoint every
  layer) and `attention_impl`. `clip_l()` is SD-1.5's text encoder (OpenAI CLIP ViT-L/14 text tower)."""

  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  projection_dim: int = 512
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  pad_token_id: int | None = 1
  bos_token_id: int | None = 49406
  eos_token_id: int | None = 49407
  remat: bool = False
  attention_impl: str | None = None

  def __post_init__(self):
    _check_common(self, 'CLIPTextConfig')

  @classmethod
  def clip_l(cls, **overrides) -> CLIPTextConfig:
    """SD-1.5's `text_encoder/config.json` (note its legacy bos/eos/pad ids 0/2/1)."""
    kw = dict(hidden_size=768, intermediate_size=3072, projection_dim=768, num_attention_heads=12,
              pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return cls(**{**kw, **overrides})

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> CLIPTextConfig:
    return _from_dict(cls, d)

  def to_dict(self, *, ours: bool = False) -> dict[str, Any]:
    """A transformers config dict (`CLIPTextConfig(**d)` rebuilds it); `ours=True` adds our run options."""
    return _to_dict(self, 'clip_text_model', 'CLIPTextModel', ours)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """transformers `CLIPVisionConfig` fields (same names and defaults) plus `remat` and `attention_impl`."""

  hidden_size: int = 768
  intermediate_size: int = 3072
  projection_dim: int = 512
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  remat: bool = False
  attention_impl: str | None = None

  def __post_init__(self):
    _check_common(self, 'CLIPVisionConfig')
    if self.image_size % self.patch_size:
      raise ValueError(f'CLIPVisionConfig: image_size {self.image_size} is not divisible by patch_size '
                       f'{self.patch_size}')

  @classmethod
  def vit_b32(cls, **overrides) -> CLIPVisionConfig:
    """OpenAI CLIP ViT-B/32 vision tower (the transformers defaults)."""
    return cls(**overrides)

  @classmethod
  def vit_l14(cls, **overrides) -> CLIPVisionConfig:
    """OpenAI CLIP ViT-L/14 vision tower (224 px)."""
    kw = dict(hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
              num_attention_heads=16, patch_size=14)
    return cls(**{**kw, **overrides})

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> CLIPVisionConfig:
    return _from_dict(cls, d)

  def to_dict(self, *, ours: bool = False) -> dict[str, Any]:
    return _to_dict(self, 'clip_vision_model', 'CLIPVisionModelWithProjection', ours)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2


# ---------------------------------------------------------------------------------------------------------------
def _layer_norm(dim: int, eps: float, kw) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, **kw)


class CLIPAttention(nnx.Module):
  """q_proj, k_proj, v_proj, out_proj (all with bias); softmax scale head_dim**-0.5."""

  def __init__(self, dim: int, heads: int, *, implementation: str | None, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.heads = heads
    self.implementation = implementation
    self.k_proj = dense.Linear(dim, dim, **kw)
    self.v_proj = dense.Linear(dim, dim, **kw)
    self.q_proj = dense.Linear(dim, dim, **kw)
    self.out_proj = dense.Linear(dim, dim, **kw)

  def __call__(self, x: jax.Array, *, is_causal: bool = False, mask: jax.Array | None = None) -> jax.Array:
    out = attend(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, is_causal=is_causal, mask=mask,
                 implementation=self.implementation)
    return self.out_proj(out)


class CLIPMLP(nnx.Module):
  def __init__(self, dim: int, hidden: int, act: str, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.act = act
    self.fc1 = dense.Linear(dim, hidden, **kw)
    self.fc2 = dense.Linear(hidden, dim, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
  """x += self_attn(layer_norm1(x)); x += mlp(layer_norm2(x))."""

  def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    d = cfg.hidden_size
    self.self_attn = CLIPAttention(d, cfg.num_attention_heads, implementation=cfg.attention_impl, **kw)
    self.layer_norm1 = _layer_norm(d, cfg.layer_norm_eps, kw)
    self.mlp = CLIPMLP(d, cfg.intermediate_size, cfg.hidden_act, **kw)
    self.layer_norm2 = _layer_norm(d, cfg.layer_norm_eps, kw)

  def __call__(self, x: jax.Array, *, is_causal: bool = False, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.self_attn(self.layer_norm1(x), is_causal=is_causal, mask=mask)
    return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
  def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.remat = cfg.remat
    self.layers = nnx.List([CLIPEncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                            for _ in range(cfg.num_hidden_layers)])

  def __call__(self, x: jax.Array, *, is_causal: bool = False, mask: jax.Array | None = None,
               output_hidden_states: bool = False) -> tuple[jax.Array, tuple[jax.Array, ...] | None]:
    """Returns the last layer's output and, if asked, (input, output of layer 1, ..., output of layer n)."""
    fn = lambda layer, h, m: layer(h, is_causal=is_causal, mask=m)  # noqa: E731
    if self.remat:
      fn = nnx.remat(fn)
    states = [x]
    for layer in self.layers:
      x = fn(layer, x, mask)
      states.append(x)
    return x, (tuple(states) if output_hidden_states else None)


# ---------------------------------------------------------------------------------------------------------------
class CLIPTextEmbeddings(nnx.Module):
  def __init__(self, cfg: CLIPTextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
    self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)

  def __call__(self, input_ids: jax.Array) -> jax.Array:
    positions = jnp.arange(input_ids.shape[-1])
    return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPTextOutput(NamedTuple):
  last_hidden_state: jax.Array                    # (B, T, D), after final_layer_norm
  pooler_output: jax.Array                        # (B, D), last_hidden_state at the EOS token
  hidden_states: tuple[jax.Array, ...] | None     # embeddings and every layer's output (before the final norm)


class CLIPTextTransformer(nnx.Module):
  def __init__(self, cfg: CLIPTextConfig, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.config = cfg
    self.embeddings = CLIPTextEmbeddings(cfg, **kw)
    self.encoder = CLIPEncoder(cfg, **kw)
    self.final_layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, kw)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               output_hidden_states: bool = False) -> CLIPTextOutput:
    cfg = self.config
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f'CLIPTextModel: input_ids must be integer (B, T), got {input_ids.dtype} {input_ids.shape}')
    if input_ids.shape[1] > cfg.max_position_embeddings:
      raise ValueError(f'CLIPTextModel: {input_ids.shape[1]} tokens exceed max_position_embeddings '
                       f'{cfg.max_position_embeddings}')
    mask = None
    if attention_mask is not None:  # padding mask over keys (1 = attend), combined with the causal mask
      mask = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
    x = self.embeddings(input_ids)
    x, states = self.encoder(x, is_causal=True, mask=mask, output_hidden_states=output_hidden_states)
    last = self.final_layer_norm(x)
    if cfg.eos_token_id == 2:  # legacy configs: the EOS id is the largest id in the sequence
      eos = jnp.argmax(input_ids, axis=-1)
    else:
      eos = jnp.argmax((input_ids == cfg.eos_token_id).astype(jnp.int32), axis=-1)
    pooled = jnp.take_along_axis(last, eos[:, None, None], axis=1)[:, 0]
    return CLIPTextOutput(last, pooled, states)


class CLIPTextModel(nnx.Module):
  """transformers `CLIPTextModel`: `model(input_ids)` -> CLIPTextOutput (SD uses `last_hidden_state`)."""

  def __init__(self, config: CLIPTextConfig | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = config or CLIPTextConfig.clip_l()
    self.text_model = CLIPTextTransformer(self.config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               output_hidden_states: bool = False) -> CLIPTextOutput:
    return self.text_model(input_ids, attention_mask, output_hidden_states=output_hidden_states)


# ---------------------------------------------------------------------------------------------------------------
class CLIPVisionEmbeddings(nnx.Module):
  """class_embedding (D,), patch_embedding (conv, stride = kernel = patch, no bias), position_embedding."""

  def __init__(self, cfg: CLIPVisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, p = cfg.hidden_size, cfg.patch_size
    self.dtype = dtype
    self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (d,), param_dtype) * d ** -0.5)
    self.patch_embedding = nnx.Conv(cfg.num_channels, d, (p, p), strides=(p, p), padding='VALID', use_bias=False,
                                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.position_embedding = nnx.Embed(cfg.num_patches + 1, d, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    patches = self.patch_embedding(pixel_values)  # (B, H/p, W/p, D)
    b, d = patches.shape[0], patches.shape[-1]
    patches = patches.reshape(b, -1, d)
    cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (b, 1, d))
    x = jnp.concatenate([cls, patches], axis=1)
    return x + self.position_embedding(jnp.arange(x.shape[1]))[None]


class CLIPVisionOutput(NamedTuple):
  image_embeds: jax.Array                         # (B, projection_dim)
  last_hidden_state: jax.Array                    # (B, 1 + patches, D), before post_layernorm
  pooler_output: jax.Array                        # (B, D), post_layernorm(class token)
  hidden_states: tuple[jax.Array, ...] | None


class CLIPVisionTransformer(nnx.Module):
  def __init__(self, cfg: CLIPVisionConfig, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.config = cfg
    self.embeddings = CLIPVisionEmbeddings(cfg, **kw)
    self.pre_layrnorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, kw)
    self.encoder = CLIPEncoder(cfg, **kw)
    self.post_layernorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, kw)

  def __call__(self, pixel_values: jax.Array, *, output_hidden_states: bool = False):
    cfg = self.config
    if pixel_values.ndim != 4 or pixel_values.shape[1:] != (cfg.image_size, cfg.image_size, cfg.num_channels):
      raise ValueError(f'CLIPVisionModel: pixel_values must be channels-last (B, {cfg.image_size}, '
                       f'{cfg.image_size}, {cfg.num_channels}), got {pixel_values.shape}')
    x = self.pre_layrnorm(self.embeddings(pixel_values))
    last, states = self.encoder(x, output_hidden_states=output_hidden_states)
    return last, self.post_layernorm(last[:, 0]), states


class CLIPVisionModelWithProjection(nnx.Module):
  """transformers `CLIPVisionModelWithProjection`: `model(pixel_values)` -> CLIPVisionOutput (`image_embeds`)."""

  def __init__(self, config: CLIPVisionConfig | None = None, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    cfg = self.config = config or CLIPVisionConfig.vit_l14()
    self.vision_model = CLIPVisionTransformer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.visual_projection = dense.Linear(cfg.hidden_size, cfg.projection_dim, use_bias=False, dtype=dtype,
                                        param_dtype=param_dtype, rngs=rngs)

  def __call__(self, pixel_values: jax.Array, *, output_hidden_states: bool = False) -> CLIPVisionOutput:
    last, pooled, states = self.vision_model(jnp.asarray(pixel_values), output_hidden_states=output_hidden_states)
    return CLIPVisionOutput(self.visual_projection(pooled), last, pooled, states)
