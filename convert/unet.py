"""diffusers `UNet2DConditionModel` state dict + config.json <-> our `UNet2DConditionModel`.

Our module tree mirrors diffusers' attribute names, so the generic rules of `convert.rules` do all the work
(no renames). `in_channels` grows `conv_in` for TGVAC's concatenated conditioning: the first input channels keep
the pretrained weights, the new ones start at zero, so the expanded UNet initially ignores them.
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
from tgvac_jax.models.init import jit_init
from tgvac_jax.models.motion import MotionParam
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig

CONV_IN = 'conv_in.weight'


def _numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value)


def expand_conv_in(weight: np.ndarray, in_channels: int) -> np.ndarray:
  """(out, in, kh, kw) torch conv weight -> (out, in_channels, kh, kw): old channels kept, new ones zero."""
  out_ch, old, kh, kw = weight.shape
  if in_channels < old:
    raise ConversionError(f'{CONV_IN}: cannot shrink conv_in from {old} to {in_channels} input channels')
  grown = np.zeros((out_ch, in_channels, kh, kw), weight.dtype)
  grown[:, :old] = weight
  return grown


# The weights a diffusers `UNet2DConditionModel` has: everything but the motion modules (those travel as a
# diffusers `MotionAdapter`, see convert/animatediff.py).
SPATIAL = nnx.All(nnx.Param, nnx.Not(MotionParam))


def from_torch(state_dict: Mapping[str, Any], config_dict: Mapping[str, Any], in_channels: int | None = None, *,
               dtype=None, param_dtype=jnp.float32, **overrides) -> tuple[UNet2DConditionModel, UNetConfig]:
  """Builds our UNet from a diffusers state dict (torch tensors or numpy) and config dict.

  `in_channels`: expand conv_in to this many input channels (e.g. 12). `overrides`: UNetConfig fields to set
  (remat, attention_impl, motion, ...). With a motion config the spatial weights load from `state_dict` and the
  motion modules keep their (identity) initialisation. Raises ConversionError naming any missing, extra or
  mis-shaped key; nothing is loaded then.
  """
  config = UNetConfig.from_dict(config_dict)
  sd = {k: _numpy(v) for k, v in state_dict.items()}
  if in_channels is not None and in_channels != config.in_channels:
    if CONV_IN not in sd:
      raise ConversionError(f'UNet: checkpoint does not match the model.\n  missing in checkpoint (1): {CONV_IN}')
    if sd[CONV_IN].shape[1] != config.in_channels:
      raise ConversionError(f'UNet: wrong shape {CONV_IN} {sd[CONV_IN].shape} for in_channels '
                            f'{config.in_channels}')
    sd[CONV_IN] = expand_conv_in(sd[CONV_IN], in_channels)
    overrides = dict(overrides, in_channels=in_channels)
  config = dataclasses.replace(config, **overrides)

  if config.motion is None:
    # Parameters are all overwritten: build abstractly (no 860M-parameter random init), then fill.
    module = nnx.eval_shape(lambda: UNet2DConditionModel(config, dtype=dtype, param_dtype=param_dtype,
                                                         rngs=nnx.Rngs(0)))
    load_torch_state(module, sd, what='UNet')
    state = nnx.state(module)
    nnx.update(module, jax.tree.map(jnp.asarray, state))
  else:
    module = jit_init(lambda: UNet2DConditionModel(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    load_torch_state(module, sd, what='UNet', filter=SPATIAL)
    nnx.update(module, jax.tree.map(jnp.asarray, nnx.state(module, SPATIAL)))
  return module, config


def to_torch(module: UNet2DConditionModel, config: UNetConfig | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(diffusers state dict as float32 numpy, diffusers config dict) of our UNet.

  `diffusers.UNet2DConditionModel.from_config(config_dict)` builds the same network and `load_state_dict` (strict)
  takes the state dict (after `torch.from_numpy`). Motion weights are left out: export them as a diffusers
  `MotionAdapter` with `convert.animatediff.save_motion_adapter`.
  """
  config = config or module.config
  return torch_state(module, filter=SPATIAL), config.to_dict()
