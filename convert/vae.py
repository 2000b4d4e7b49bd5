"""diffusers `AutoencoderKL` state dict + config.json <-> our `AutoencoderKL`.

Our module tree mirrors diffusers', so the generic rules of `convert.rules` do the work. Checkpoints saved by
diffusers < 0.14 name the mid-block attention `query/key/value/proj_attn` (sometimes as 1x1 conv weights); they
are renamed to today's `to_q/to_k/to_v/to_out.0` first, as diffusers itself does on load.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convert.rules import load_torch_state, torch_state
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig

_LEGACY_ATTENTION = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}
_LEGACY_RE = re.compile(r'^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$')
_ATTN_WEIGHT_RE = re.compile(r'\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$')


def _numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value)


def normalize_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """numpy values; legacy attention names renamed; 1x1-conv attention weights (C, C, 1, 1) made linear (C, C)."""
  out = {}
  for key, value in state_dict.items():
    value = _numpy(value)
    m = _LEGACY_RE.match(key)
    if m:
      key = f'{m.group(1)}{_LEGACY_ATTENTION[m.group(2)]}.{m.group(3)}'
    if _ATTN_WEIGHT_RE.search(key) and value.ndim == 4 and value.shape[2:] == (1, 1):
      value = value[:, :, 0, 0]
    out[key] = value
  return out


def from_torch(state_dict: Mapping[str, Any], config_dict: Mapping[str, Any], *, dtype=None,
               param_dtype=jnp.float32, **overrides) -> tuple[AutoencoderKL, AutoencoderKLConfig]:
  """Builds our VAE from a diffusers state dict (torch tensors or numpy) and config dict.

  `overrides`: AutoencoderKLConfig fields to set (remat, attention_impl). Raises ConversionError naming any
  missing, extra or mis-shaped key; nothing is loaded then.
  """
  config = dataclasses.replace(AutoencoderKLConfig.from_dict(config_dict), **overrides)
  sd = normalize_state_dict(state_dict)
  # Every parameter is overwritten: build abstractly (no random init), then fill.
  module = nnx.eval_shape(lambda: AutoencoderKL(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
  load_torch_state(module, sd, what='VAE')
  nnx.update(module, jax.tree.map(jnp.asarray, nnx.state(module)))
  return module, config


def to_torch(module: AutoencoderKL, config: AutoencoderKLConfig | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(diffusers state dict as float32 numpy, diffusers config dict) of our VAE.

  `diffusers.AutoencoderKL.from_config(config_dict)` builds the same network and `load_state_dict` (strict) takes
  the state dict (after `torch.from_numpy`).
  """
  config = config or module.config
  return torch_state(module), config.to_dict()
