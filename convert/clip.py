"""transformers `CLIPTextModel` / `CLIPVisionModelWithProjection` state dict + config.json <-> ours.

Our module tree mirrors transformers' (`text_model.encoder.layers.0.self_attn.q_proj`, `vision_model.pre_layrnorm`,
`visual_projection`), so the generic rules of `convert.rules` do the work. Two details:
- transformers 5 saves `CLIPTextModel` without the `text_model.` prefix, older versions (and SD-1.5's
  `text_encoder/`) with it; both are accepted. We export with the prefix: the layout of SD folders, which
  transformers 4 and 5 both load.
- `position_ids` is a non-persistent buffer that older checkpoints still carry: ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convert.rules import ConversionError, load_torch_state, torch_state
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

IGNORE = (r'(^|\.)position_ids$',)
TEXT_PREFIX = 'text_model.'

TEXT_ARCHITECTURES = ('CLIPTextModel',)
VISION_ARCHITECTURES = ('CLIPVisionModelWithProjection',)


def _numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value)


def kind_of(config_dict: Mapping[str, Any]) -> str:
  """'text' or 'vision' from a transformers config dict (architectures, else model_type)."""
  arch = list(config_dict.get('architectures') or [])
  if any(a in TEXT_ARCHITECTURES for a in arch):
    return 'text'
  if any(a in VISION_ARCHITECTURES for a in arch):
    return 'vision'
  model_type = config_dict.get('model_type')
  if model_type == 'clip_text_model' and not arch:
    return 'text'
  if model_type == 'clip_vision_model' and not arch:
    return 'vision'
  raise ConversionError(f'CLIP: unsupported model (architectures={arch}, model_type={model_type!r}); supported: '
                        f'{TEXT_ARCHITECTURES + VISION_ARCHITECTURES}')


def _build(cls, config, dtype, param_dtype):
  return nnx.eval_shape(lambda: cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


def text_from_torch(state_dict: Mapping[str, Any], config_dict: Mapping[str, Any], *, dtype=None,
                    param_dtype=jnp.float32, **overrides) -> tuple[CLIPTextModel, CLIPTextConfig]:
  config = dataclasses.replace(CLIPTextConfig.from_dict(config_dict), **overrides)
  sd = {k: _numpy(v) for k, v in state_dict.items()}
  if not any(k.startswith(TEXT_PREFIX) for k in sd):  # transformers >= 5 layout
    sd = {TEXT_PREFIX + k: v for k, v in sd.items()}
  module = _build(CLIPTextModel, config, dtype, param_dtype)
  load_torch_state(module, sd, ignore=IGNORE, what='CLIP text encoder')
  nnx.update(module, jax.tree.map(jnp.asarray, nnx.state(module)))
  return module, config


def vision_from_torch(state_dict: Mapping[str, Any], config_dict: Mapping[str, Any], *, dtype=None,
                      param_dtype=jnp.float32, **overrides
                      ) -> tuple[CLIPVisionModelWithProjection, CLIPVisionConfig]:
  config = dataclasses.replace(CLIPVisionConfig.from_dict(config_dict), **overrides)
  sd = {k: _numpy(v) for k, v in state_dict.items()}
  module = _build(CLIPVisionModelWithProjection, config, dtype, param_dtype)
  load_torch_state(module, sd, ignore=IGNORE, what='CLIP vision tower')
  nnx.update(module, jax.tree.map(jnp.asarray, nnx.state(module)))
  return module, config


def from_torch(state_dict: Mapping[str, Any], config_dict: Mapping[str, Any], *, dtype=None,
               param_dtype=jnp.float32, **overrides):
  """Builds our CLIPTextModel or CLIPVisionModelWithProjection (chosen by the config) from a transformers state
  dict (torch tensors or numpy) and config dict; returns (module, config).

  `overrides`: config fields to set (remat, attention_impl). Raises ConversionError naming any missing, extra or
  mis-shaped key; nothing is loaded then.
  """
  fn = text_from_torch if kind_of(config_dict) == 'text' else vision_from_torch
  return fn(state_dict, config_dict, dtype=dtype, param_dtype=param_dtype, **overrides)


def to_torch(module: CLIPTextModel | CLIPVisionModelWithProjection, config=None, *, text_model_prefix: bool = True
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(transformers state dict as float32 numpy, transformers config dict) of our CLIP model.

  `from_pretrained` on a folder with these (safetensors + config.json) rebuilds it. Text keys carry the
  `text_model.` prefix unless `text_model_prefix=False` (the transformers >= 5 module layout, for a direct strict
  `load_state_dict`).
  """
  config = config or module.config
  sd = torch_state(module)
  if isinstance(module, CLIPTextModel) and not text_model_prefix:
    sd = {k.removeprefix(TEXT_PREFIX): v for k, v in sd.items()}
  return sd, config.to_dict()
