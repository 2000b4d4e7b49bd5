"""Motion weights in and out of our video UNet: original AnimateDiff checkpoints and diffusers `MotionAdapter`s.

Our motion modules mirror diffusers' `MotionAdapter` tree (`down_blocks.i.motion_modules.j.…`,
`mid_block.motion_modules.0.…`, `up_blocks.i.motion_modules.j.…`), so a MotionAdapter state dict loads by the
generic rules of `convert.rules`. An original AnimateDiff checkpoint (`mm_sd_v15_v2.ckpt`: keys
`….motion_modules.j.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight`, possibly wrapped in
`state_dict`) is first renamed to that layout the way diffusers' converter does:
`.temporal_transformer` dropped, `.norms.0/1` -> `.norm1/2`, `.ff_norm` -> `.norm3`, `.attention_blocks.0/1` ->
`.attn1/2`. Position tables (`pos_encoder.pe`, `pos_embed.pe`) are constants here and are skipped.

Loading touches only `MotionParam`s (the spatial weights stay as they are) and is all or nothing: every motion
weight of the UNet must be in the checkpoint and nothing else may be; a module whose width differs from the
UNet's is named in the error.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from convert.rules import ConversionError, flat_params, load_torch_state, torch_state
from tgvac_jax.models.motion import MotionParam, sinusoidal_table

# original AnimateDiff -> diffusers MotionAdapter (applied in order, as substrings)
ANIMATEDIFF_RENAMES = (
    ('.temporal_transformer.', '.'),
    ('.norms.0.', '.norm1.'),
    ('.norms.1.', '.norm2.'),
    ('.ff_norm.', '.norm3.'),
    ('.attention_blocks.0.', '.attn1.'),
    ('.attention_blocks.1.', '.attn2.'),
)
POSITION_TABLES = (r'\.pos_encoder\.pe$', r'\.pos_embed\.pe$')
WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors'
_MODULE = re.compile(r'^((?:down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+)\.')


def _numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value)


def is_animatediff_format(state_dict: Mapping[str, Any]) -> bool:
  """Whether keys follow the original AnimateDiff layout (vs diffusers MotionAdapter's)."""
  return any('.temporal_transformer.' in k or '.attention_blocks.' in k for k in state_dict)


def animatediff_to_diffusers(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Original AnimateDiff motion state dict (optionally under 'state_dict') -> MotionAdapter keys, numpy values.

  Position tables are dropped; diffusers-format keys pass through unchanged.
  """
  if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], Mapping):
    state_dict = state_dict['state_dict']
  out = {}
  for key, value in state_dict.items():
    if any(re.search(p, key) for p in POSITION_TABLES):
      continue
    for a, b in ANIMATEDIFF_RENAMES:
      key = key.replace(a, b)
    out[key] = _numpy(value)
  return out


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A checkpoint file (.safetensors, or .ckpt/.pt/.pth/.bin through `torch.load(weights_only=True)`) or a
  diffusers folder (its `diffusion_pytorch_model.safetensors`/`.bin`) as a numpy state dict."""
  if os.path.isdir(path):
    for name in (WEIGHTS_NAME, 'diffusion_pytorch_model.bin'):
      if os.path.exists(os.path.join(path, name)):
        return read_state_dict(os.path.join(path, name))
    raise FileNotFoundError(f'{path}: no {WEIGHTS_NAME} (or .bin) in this folder')
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
      return dict(load_file(path))
    except (TypeError, ValueError):  # bf16 has no numpy dtype: go through torch
      from safetensors.torch import load_file as load_torch  # pylint: disable=import-outside-toplevel
      return {k: _numpy(v) for k, v in load_torch(path).items()}
  import torch  # pylint: disable=import-outside-toplevel
  sd = torch.load(path, map_location='cpu', weights_only=True)
  if 'state_dict' in sd and isinstance(sd['state_dict'], Mapping):
    sd = sd['state_dict']
  return {k: _numpy(v) for k, v in sd.items() if hasattr(v, 'shape')}


def _check_widths(unet, state_dict: Mapping[str, np.ndarray], what: str) -> None:
  """One line per motion module whose width (proj_in) differs between checkpoint and UNet."""
  ours = flat_params(unet, MotionParam)
  bad = []
  for key, value in state_dict.items():
    m = _MODULE.match(key)
    if not m or not key.endswith('.proj_in.weight'):
      continue
    path = f'{m.group(1)}.proj_in.kernel'
    if path in ours:
      theirs, mine = np.shape(value)[-1], ours[path].get_value().shape[0]  # input width: (out, in) vs (in, out)
      if theirs != mine:
        bad.append(f'  {m.group(1)}: checkpoint has {theirs} channels, the UNet {mine}')
  if bad:
    raise ConversionError(f'{what}: motion module widths do not match the UNet (wrong base model or '
                          f'block_out_channels?)\n' + '\n'.join(bad))


def load_motion_state(unet, state_dict: Mapping[str, Any], *, what: str = 'motion checkpoint') -> None:
  """Copies motion weights (AnimateDiff or MotionAdapter layout) into `unet`'s MotionParams; spatial weights
  untouched. Raises ConversionError (nothing loaded) on a missing, extra or mis-shaped key."""
  if not flat_params(unet, MotionParam):
    raise ConversionError(f'{what}: the UNet has no motion modules (UNetConfig.motion is None)')
  sd = animatediff_to_diffusers(state_dict)
  _check_widths(unet, sd, what)
  load_torch_state(unet, sd, filter=MotionParam, what=what)


def _adapter_config_check(unet, cfg: Mapping[str, Any], what: str) -> None:
  ucfg, mcfg = unet.config, unet.config.motion
  n = len(ucfg.block_out_channels)
  per_block = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
  per_mid = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * cfg.get('motion_mid_block_layers_per_block', 1)  # noqa: E731,E501
  wants = {
      'block_out_channels': (list(cfg.get('block_out_channels', ())), list(ucfg.block_out_channels)),
      'motion_layers_per_block': (per_block(cfg.get('motion_layers_per_block', 2)), [ucfg.layers_per_block] * n),
      'motion_num_attention_heads': (per_block(cfg.get('motion_num_attention_heads', 8)),
                                     [mcfg.num_attention_heads] * n),
      'motion_transformer_layers_per_block': (per_block(cfg.get('motion_transformer_layers_per_block', 1)),
                                              [mcfg.num_transformer_layers] * n),
      'motion_transformer_layers_per_mid_block': (
          per_mid(cfg.get('motion_transformer_layers_per_mid_block', 1)) if mcfg.use_mid_block else None,
          [mcfg.num_transformer_layers] if mcfg.use_mid_block else None),
      'motion_norm_num_groups': (cfg.get('motion_norm_num_groups', 32), mcfg.norm_num_groups),
      'use_motion_mid_block': (cfg.get('use_motion_mid_block', True), mcfg.use_mid_block),
  }
  bad = [f'  {k}: adapter {a}, UNet {b}' for k, (a, b) in wants.items() if a != b]
  if cfg.get('conv_in_channels'):
    bad.append(f"  conv_in_channels: adapter carries its own conv_in ({cfg['conv_in_channels']}); not supported")
  if bad:
    raise ConversionError(f'{what}: MotionAdapter config does not match the UNet\n' + '\n'.join(bad))


def load_motion(unet, path: str) -> None:
  """Loads motion weights into `unet` from a MotionAdapter folder (config checked), an original AnimateDiff
  checkpoint (`mm_sd_v15_v2.ckpt` / `.safetensors`) or a MotionAdapter weights file."""
  what = os.path.basename(os.path.normpath(path)) or path
  if os.path.isdir(path) and os.path.exists(os.path.join(path, 'config.json')):
    with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
      _adapter_config_check(unet, json.load(f), what)
  load_motion_state(unet, read_state_dict(path), what=what)


def motion_adapter_config(unet) -> dict[str, Any]:
  """The `MotionAdapter` config dict matching `unet`'s motion modules."""
  ucfg, mcfg = unet.config, unet.config.motion
  if mcfg is None:
    raise ValueError('motion_adapter_config: the UNet has no motion modules')
  return {
      '_class_name': 'MotionAdapter',
      'block_out_channels': list(ucfg.block_out_channels),
      'motion_layers_per_block': ucfg.layers_per_block,
      'motion_transformer_layers_per_block': mcfg.num_transformer_layers,
      'motion_mid_block_layers_per_block': 1,
      'motion_transformer_layers_per_mid_block': mcfg.num_transformer_layers,
      'motion_num_attention_heads': mcfg.num_attention_heads,
      'motion_norm_num_groups': mcfg.norm_num_groups,
      'motion_max_seq_length': mcfg.max_seq_length,
      'use_motion_mid_block': bool(mcfg.use_mid_block),
      'conv_in_channels': None,
  }


def motion_state_dict(unet, *, with_position_tables: bool = True) -> dict[str, np.ndarray]:
  """Our motion weights as a MotionAdapter state dict (float32 numpy), with the `pos_embed.pe` buffers that
  diffusers stores unless `with_position_tables=False`."""
  sd = torch_state(unet, filter=MotionParam)
  if with_position_tables:
    length = unet.config.motion.max_seq_length
    for key, value in list(sd.items()):
      m = re.match(r'^(.*\.transformer_blocks\.\d+)\.norm1\.weight$', key)
      if m:
        sd[f'{m.group(1)}.pos_embed.pe'] = sinusoidal_table(length, value.shape[0])[None].copy()
  return sd


def save_motion_adapter(unet, folder: str) -> None:
  """Writes `folder/config.json` + `folder/diffusion_pytorch_model.safetensors`, loadable by
  `diffusers.MotionAdapter.from_pretrained(folder)`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(motion_adapter_config(unet), f, indent=2)
  save_file(motion_state_dict(unet), os.path.join(folder, WEIGHTS_NAME), metadata={'format': 'pt'})


__all__ = ['ANIMATEDIFF_RENAMES', 'animatediff_to_diffusers', 'is_animatediff_format',
           'load_motion', 'load_motion_state', 'motion_adapter_config', 'motion_state_dict', 'read_state_dict',
           'save_motion_adapter']
