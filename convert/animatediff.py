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

    python -m convert.animatediff in BASE ADAPTER OUT [--norm per-frame|across-frames] [--verify]
    python -m convert.animatediff out CKPT OUT [--strict]

`in` inflates our frame checkpoint BASE (a pipeline folder or its unet/) with the motion modules of ADAPTER (an
original AnimateDiff checkpoint such as `mm_sd_v15_v2.ckpt`, a `.safetensors` of one, or a diffusers
`MotionAdapter` folder) into our video checkpoint OUT (the other components copied as they are). `out` writes the
motion modules of our video checkpoint CKPT as a `MotionAdapter` folder. Errors are one line; nothing is written.

The motion GroupNorm is part of the function the weights were trained for, and no file format states it, so it is
decided here and recorded in OUT's unet config (`motion.norm_across_frames`): an original AnimateDiff checkpoint
normalises per frame (its code does); a MotionAdapter we exported records its norm in the safetensors metadata;
any other MotionAdapter is taken as per frame, because diffusers' published AnimateDiff adapters are conversions
of the original checkpoints (diffusers runs them across frames all the same). `--norm` overrides that for an
adapter trained elsewhere. `--verify` runs diffusers' `UNetMotionModel` (made from BASE's UNet and ADAPTER as
diffusers reads them, with the motion norm chosen: per frame through a per-frame GroupNorm in its place) and ours
on a random clip and prints rel. `out` always runs the export check of `check_export`: diffusers can only
normalise across frames, so a per-frame model exported there is a different model, and it says by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from convert.rules import ConversionError, flat_params, load_torch_state, torch_state
from convert.verify import Jitted, errors, one_line, quiet_libraries, run_cli
from tgvac_jax.models.motion import MotionConfig, MotionParam

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
NORM_KEY = 'tgvac_motion_norm'  # safetensors metadata of our MotionAdapter exports: 'per_frame' or 'across_frames'
NORMS = {'per-frame': False, 'across-frames': True}
EXPORT_TOL = 1e-4     # rel above which a motion export is not the trained model
CHECK_FRAMES = 12     # the clip of the export check (the demo's window)
CHECK_T = 500
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


def weights_file(path: str) -> str:
  """The weights file of `path`: itself, or a diffusers folder's `diffusion_pytorch_model.safetensors`/`.bin`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file or folder')
  if not os.path.isdir(path):
    return path
  for name in (WEIGHTS_NAME, 'diffusion_pytorch_model.bin'):
    if os.path.exists(os.path.join(path, name)):
      return os.path.join(path, name)
  raise FileNotFoundError(f'{path}: no {WEIGHTS_NAME} (or .bin) in this folder')


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A checkpoint file (.safetensors, or .ckpt/.pt/.pth/.bin through `torch.load(weights_only=True)`) or a
  diffusers folder (its `diffusion_pytorch_model.safetensors`/`.bin`) as a numpy state dict. A file that is neither
  is a ConversionError."""
  path = weights_file(path)
  try:
    if path.endswith('.safetensors'):
      try:
        from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
        return dict(load_file(path))
      except (TypeError, ValueError):  # bf16 has no numpy dtype: go through torch
        from safetensors.torch import load_file as load_torch  # pylint: disable=import-outside-toplevel
        return {k: _numpy(v) for k, v in load_torch(path).items()}
    import torch  # pylint: disable=import-outside-toplevel
    sd = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 -- every reader's own error type means the same: not a weights file
    raise ConversionError(f'{path}: not a readable weights file (safetensors, or a torch checkpoint of tensors): '
                          f'{type(e).__name__}: {one_line(e)}') from e
  if not isinstance(sd, Mapping):
    raise ConversionError(f'{path}: holds a {type(sd).__name__}, not a state dict of tensors')
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


class Adapter(NamedTuple):
  """Motion weights as read from a file or folder, with what is known of how they were trained."""
  state: dict[str, np.ndarray]        # MotionAdapter keys (original AnimateDiff keys renamed), no position tables
  config: dict[str, Any] | None       # the MotionAdapter folder's config.json
  norm_across_frames: bool            # the motion GroupNorm the weights were trained with
  why: str                            # how that norm was decided
  max_seq_length: int | None          # length of the position tables the file carries
  original: bool                      # original AnimateDiff layout
  what: str                           # its name in messages


def _recorded_norm(path: str) -> bool | None:
  """The norm our export wrote into the safetensors metadata, None when the file does not say."""
  if not path.endswith('.safetensors'):
    return None
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  with safe_open(path, framework='numpy') as f:
    value = (f.metadata() or {}).get(NORM_KEY)
  return None if value is None else value == 'across_frames'


def norm_name(across_frames: bool) -> str:
  return 'across frames' if across_frames else 'per frame'


def read_adapter(path: str) -> Adapter:
  """Reads motion weights (original AnimateDiff checkpoint, MotionAdapter folder or weights file) and decides the
  norm they were trained with (module docstring). Raises ConversionError for a file without motion modules."""
  what = os.path.basename(os.path.normpath(path)) or path
  file = weights_file(path)
  raw = read_state_dict(path)
  if not any(_MODULE.match(k) for k in raw):
    raise ConversionError(f'{path}: no motion-module weights (keys like down_blocks.0.motion_modules.0....): not '
                          f'an AnimateDiff checkpoint or MotionAdapter; it has {len(raw)} tensors, e.g. '
                          f'{sorted(raw)[:2]}')
  config = None
  if os.path.isdir(path) and os.path.exists(os.path.join(path, 'config.json')):
    with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
      config = json.load(f)
  tables = [v.shape[-2] for k, v in raw.items() if any(re.search(p, k) for p in POSITION_TABLES) and v.ndim >= 2]
  original = is_animatediff_format(raw)
  recorded = _recorded_norm(file)
  if original:
    across, why = False, 'an original AnimateDiff checkpoint: its code normalises per frame'
  elif recorded is not None:
    across, why = recorded, f'recorded in {what} by our export'
  else:
    across, why = False, ('a MotionAdapter that does not record its norm, taken as trained per frame: diffusers\' '
                          'published AnimateDiff adapters are conversions of the original per-frame checkpoints')
  return Adapter(animatediff_to_diffusers(raw), config, across, why, max(tables) if tables else None, original, what)


def adapter_motion_config(adapter: Adapter, *, heads: int | None = None, norm_groups: int | None = None,
                          norm_across_frames: bool | None = None) -> MotionConfig:
  """The MotionConfig of the modules in `adapter`: block count and mid block from its keys, heads and norm groups
  from its config.json (or `heads`/`norm_groups`, AnimateDiff's 8 and 32 by default, for a bare file), the position
  table's length from the file, the norm it was trained with unless `norm_across_frames` says otherwise."""
  cfg = adapter.config or {}
  layers = {int(m.group(1)) for k in adapter.state for m in [re.search(r'\.transformer_blocks\.(\d+)\.', k)] if m}

  def pick(name: str, key: str, given, default):
    value = cfg.get(key, default)
    if isinstance(value, (list, tuple)):
      if len(set(value)) != 1:
        raise ConversionError(f'{adapter.what}: {key} {list(value)} differs between blocks; our motion modules have '
                              f'one {name} for all')
      value = value[0]
    if given is not None and cfg.get(key) is not None and given != value:
      raise ConversionError(f'{adapter.what}: --{name.replace(" ", "-")} {given} contradicts its config.json '
                            f'({key} {value})')
    return value if given is None else given

  return MotionConfig(num_attention_heads=pick('heads', 'motion_num_attention_heads', heads, 8),
                      num_transformer_layers=max(layers) + 1 if layers else 1,
                      norm_num_groups=pick('norm groups', 'motion_norm_num_groups', norm_groups, 32),
                      max_seq_length=adapter.max_seq_length or cfg.get('motion_max_seq_length', 32),
                      use_mid_block=any(k.startswith('mid_block.') for k in adapter.state),
                      norm_across_frames=adapter.norm_across_frames if norm_across_frames is None
                      else norm_across_frames)


def load_adapter(unet, adapter: Adapter) -> None:
  """Copies `adapter`'s weights into `unet`'s MotionParams (its config.json checked against the UNet first)."""
  if adapter.config is not None and unet.config.motion is not None:
    _adapter_config_check(unet, adapter.config, adapter.what)
  load_motion_state(unet, adapter.state, what=adapter.what)


def load_motion(unet, path: str) -> None:
  """Loads motion weights into `unet` from a MotionAdapter folder (config checked), an original AnimateDiff
  checkpoint (`mm_sd_v15_v2.ckpt` / `.safetensors`) or a MotionAdapter weights file."""
  load_adapter(unet, read_adapter(path))


class AdapterInit:
  """The trainer's `init.motion_adapter`: `norm_across_frames` is the norm the weights were trained with, which the
  motion stage builds its UNet with (an imported adapter keeps its norm); called on that UNet, loads the weights."""

  def __init__(self, path: str):
    self.path = path
    self._adapter = read_adapter(path)
    self.norm_across_frames = self._adapter.norm_across_frames
    self.why = self._adapter.why

  def __call__(self, unet) -> None:
    load_adapter(unet, self._adapter)


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
  diffusers stores unless `with_position_tables=False`. The tables are diffusers' own (its
  `SinusoidalPositionalEmbedding`), bit for bit what a MotionAdapter of this shape holds; ours differ from them in
  the last bit of a few entries (numpy's sin/exp, not torch's), which is noise to the model but not to a byte
  comparison of the files."""
  sd = torch_state(unet, filter=MotionParam)
  if with_position_tables:
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding  # pylint: disable=import-outside-toplevel
    length = unet.config.motion.max_seq_length
    for key, value in list(sd.items()):
      m = re.match(r'^(.*\.transformer_blocks\.\d+)\.norm1\.weight$', key)
      if m:
        sd[f'{m.group(1)}.pos_embed.pe'] = SinusoidalPositionalEmbedding(value.shape[0], length).pe.numpy()
  return sd


def save_motion_adapter(unet, folder: str) -> None:
  """Writes `folder/config.json` + `folder/diffusion_pytorch_model.safetensors`, loadable by
  `diffusers.MotionAdapter.from_pretrained(folder)`; the metadata records the motion norm (diffusers ignores it,
  `read_adapter` reads it back)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(motion_adapter_config(unet), f, indent=2)
  norm = 'across_frames' if unet.config.motion.norm_across_frames else 'per_frame'
  save_file(motion_state_dict(unet), os.path.join(folder, WEIGHTS_NAME), metadata={'format': 'pt', NORM_KEY: norm})


# --- diffusers' side -----------------------------------------------------------------------------------------------
def torch_unet2d(unet):
  """diffusers `UNet2DConditionModel` with `unet`'s spatial weights (what `convert.to_diffusers` writes)."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import UNet2DConditionModel  # pylint: disable=import-outside-toplevel

  from convert import unet as convert_unet  # pylint: disable=import-outside-toplevel
  state, config = convert_unet.to_torch(unet)
  model = UNet2DConditionModel.from_config(config)
  model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=True)
  return model.eval()


def torch_adapter(adapter: Adapter, path: str, motion: MotionConfig, unet_config):
  """diffusers `MotionAdapter` of the weights at `path`, as diffusers reads them: `from_pretrained` for a folder,
  diffusers' own AnimateDiff key converter for a bare file."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import MotionAdapter  # pylint: disable=import-outside-toplevel
  from diffusers.loaders.single_file_utils import \
      convert_animatediff_checkpoint_to_diffusers  # pylint: disable=import-outside-toplevel
  if adapter.config is not None:
    return MotionAdapter.from_pretrained(path).eval()
  model = MotionAdapter(block_out_channels=list(unet_config.block_out_channels),
                        motion_layers_per_block=unet_config.layers_per_block,
                        motion_transformer_layers_per_block=motion.num_transformer_layers,
                        motion_transformer_layers_per_mid_block=motion.num_transformer_layers,
                        motion_num_attention_heads=motion.num_attention_heads,
                        motion_norm_num_groups=motion.norm_num_groups, motion_max_seq_length=motion.max_seq_length,
                        use_motion_mid_block=motion.use_mid_block)
  state = convert_animatediff_checkpoint_to_diffusers(read_state_dict(path))
  result = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=False)
  loose = [k for k in result.missing_keys if not k.endswith('pos_embed.pe')] + list(result.unexpected_keys)
  if loose:
    raise ConversionError(f'verify: diffusers does not read {adapter.what} as this MotionAdapter: {loose[:4]}')
  return model.eval()


def _per_frame_norms(model) -> None:
  """Replaces the GroupNorm of every motion module of a diffusers UNetMotionModel by the same norm applied to each
  frame alone, as original AnimateDiff computes it (`b c f h w -> (b f) c h w`, then GroupNorm)."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers.models.unets.unet_motion_model import \
      AnimateDiffTransformer3D  # pylint: disable=import-outside-toplevel

  class PerFrame(torch.nn.Module):
    def __init__(self, norm):
      super().__init__()
      self.norm = norm

    def forward(self, x):  # (B, C, F, H, W)
      b, c, f, h, w = x.shape
      y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
      return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)

  for module in model.modules():
    if isinstance(module, AnimateDiffTransformer3D):
      module.norm = PerFrame(module.norm)


class ClipCheck(NamedTuple):
  max_abs: float
  rel: float
  frames: int
  size: int


def compare_video_unets(ours, unet2d, adapter, *, per_frame: bool = False, seed: int = 0) -> ClipCheck:
  """Our video UNet and diffusers' `UNetMotionModel.from_unet2d(unet2d, adapter)` (with per-frame motion norms
  when `per_frame`) on one random clip: `CHECK_FRAMES` frames (fewer if the position table is shorter) of
  2 x downsample_factor latents (at least 8), timestep `CHECK_T`, random text context."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import UNetMotionModel  # pylint: disable=import-outside-toplevel
  c = ours.config
  frames, size = min(CHECK_FRAMES, c.motion.max_seq_length), max(8, 2 * c.downsample_factor)
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((1, frames, size, size, c.in_channels)).astype(np.float32)
  ctx = rng.standard_normal((1, 77, c.cross_attention_dim)).astype(np.float32)
  reference = UNetMotionModel.from_unet2d(unet2d, adapter).float().eval()
  if per_frame:
    _per_frame_norms(reference)
  with torch.inference_mode():
    theirs = reference(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy()), CHECK_T,
                       torch.from_numpy(np.repeat(ctx, frames, axis=0))).sample.numpy().transpose(0, 2, 3, 4, 1)
  mine = np.asarray(Jitted(ours)(jnp.asarray(x), jnp.asarray([CHECK_T]), jnp.asarray(ctx)))
  return ClipCheck(*errors(mine, theirs), frames, size)


def _clip(check: ClipCheck) -> str:
  return f'a random {check.frames}-frame {check.size}x{check.size} latent clip at t={CHECK_T}'


def export_warning(ours, check: ClipCheck) -> str:
  """One paragraph: what differs between the exported model in diffusers and ours, by how much, what to do."""
  m, c = ours.config.motion, ours.config
  causes = []
  if not m.norm_across_frames:
    causes.append("our motion modules normalise per frame (original AnimateDiff) and diffusers' "
                  'AnimateDiffTransformer3D normalises across all frames of a clip, with no per-frame option')
  if m.norm_num_groups != c.norm_num_groups:
    causes.append(f"diffusers' UNetMotionModel gives its motion GroupNorms the UNet's {c.norm_num_groups} groups, "
                  f'ours have {m.norm_num_groups}')
  cause = '; '.join(causes) or 'no known cause (the motion norm is already across frames): please report it'
  return (f'warning: the exported motion model is not the trained one: diffusers\' UNetMotionModel and our video '
          f'UNet differ by rel {check.rel:.3g} (max_abs {check.max_abs:.3g}) on {_clip(check)}, above '
          f'{EXPORT_TOL:g}. Cause: {cause}. Diffusers users get a different model (worse videos, not an error). For '
          'a faithful export, train the motion stage across frames: model.motion_norm_across_frames=True for '
          'from-scratch models, init.motion_norm_across_frames=True for new motion modules on a frame checkpoint '
          '(docs/training.md, "Which motion norm"); --strict makes this an error.')


def check_export(ours, unet2d, adapter, *, strict: bool = False, log=print) -> ClipCheck:
  """The check every video export runs: diffusers' `UNetMotionModel` from the exported parts against `ours`; prints
  rel, warns above EXPORT_TOL in one paragraph, raises ConversionError instead when `strict`."""
  check = compare_video_unets(ours, unet2d, adapter)
  log(f'check motion export: rel={check.rel:.3g} max_abs={check.max_abs:.3g} (diffusers UNetMotionModel vs our '
      f'video UNet, motion norm {norm_name(ours.config.motion.norm_across_frames)}, {_clip(check)})')
  if check.rel > EXPORT_TOL:
    message = export_warning(ours, check)
    if strict:
      raise ConversionError(message.replace('warning: ', '--strict: ', 1).replace(' --strict makes this an error.',
                                                                                  ' Nothing was written.'))
    log(message)
  return check


# --- folders -------------------------------------------------------------------------------------------------------
def unet_folder(ckpt: Path) -> tuple[Path, bool]:
  """(our UNet component folder, whether `ckpt` is a pipeline) of a pipeline folder or a UNet folder."""
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  if not ckpt.is_dir():
    raise FileNotFoundError(f'{ckpt}: no such folder')
  pipeline = (ckpt / 'unet' / checkpoint.CONFIG_NAME).is_file()
  folder = ckpt / 'unet' if pipeline else ckpt
  cls = checkpoint.read_config(folder)['_class']
  if cls != 'UNet2DConditionModel':
    raise ConversionError(f'{folder}: a {cls}, not a UNet (give our pipeline folder or its unet/)')
  return folder, pipeline


def inflate(base: str | Path, adapter_path: str, out: str | Path, *, heads: int | None = None,
            norm_groups: int | None = None, norm: str | None = None, verify: bool = False, verify_tol: float = 1e-4,
            log=print) -> ClipCheck | None:
  """Our frame checkpoint `base` + motion weights -> our video checkpoint `out`, all or nothing. `norm`: a key of
  NORMS overriding the norm the weights were trained with. Returns the verification (None without `verify`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from convert.unet import SPATIAL  # pylint: disable=import-outside-toplevel
  from tgvac_jax import files  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  base, out = Path(base), Path(out)
  folder, pipeline = unet_folder(base)
  adapter = read_adapter(adapter_path)
  log(f'read {adapter.what}: {len(adapter.state)} motion tensors, '
      f'{"original AnimateDiff" if adapter.original else "MotionAdapter"} layout')
  across = adapter.norm_across_frames if norm is None else NORMS[norm]
  log(f'motion norm: {norm_name(across)} ('
      + (adapter.why if norm is None else f'--norm {norm}; {adapter.what} itself: '
         f'{norm_name(adapter.norm_across_frames)}, {adapter.why}') + ')')
  motion = adapter_motion_config(adapter, heads=heads, norm_groups=norm_groups, norm_across_frames=across)
  d = checkpoint.read_config(folder)
  unet, config = checkpoint.build(d['_class'], d, abstract=True, motion=motion)
  load_adapter(unet, adapter)  # checked against the UNet's shapes before its weights are read
  nnx.update(unet, jax.tree.map(jnp.asarray, nnx.state(unet, MotionParam)))
  spatial, _ = checkpoint.load_component(folder)
  nnx.update(unet, nnx.state(spatial, SPATIAL))
  log(f'inflated {folder}: {len(flat_params(unet, MotionParam))} motion weights in '
      f'{sum(1 for k in flat_params(unet, MotionParam) if k.endswith(".proj_in.kernel"))} motion modules')
  check = None
  if verify:
    quiet_libraries()
    check = compare_video_unets(unet, torch_unet2d(spatial), torch_adapter(adapter, adapter_path, motion, config),
                                per_frame=not across)
    log(f'verify unet max_abs={check.max_abs:.3g} rel={check.rel:.3g} (diffusers UNetMotionModel with the motion '
        f'norm {norm_name(across)}, {_clip(check)})')
    if not check.rel <= verify_tol:
      raise ConversionError(f'verify unet: relative error {check.rel:.3g} > tolerance {verify_tol:g}')
  if not across:
    log('note: diffusers normalises motion modules across frames; exporting this model to diffusers will warn '
        '(docs/training.md, "Which motion norm")')

  def write(tmp: Path) -> None:
    if not pipeline:
      checkpoint.save_component(unet, tmp)
      return
    for p in sorted(base.iterdir()):
      if p.name == 'unet':
        checkpoint.save_component(unet, tmp / 'unet')
      elif p.is_dir() and not p.name.startswith('.'):
        shutil.copytree(p, tmp / p.name)
      elif p.is_file():
        shutil.copy2(p, tmp / p.name)

  files.atomic_folder(out, write)
  log(f'wrote {out}')
  return check


def extract(ckpt: str | Path, out: str | Path, *, strict: bool = False, log=print) -> ClipCheck:
  """Our video checkpoint -> a diffusers MotionAdapter folder `out`, checked (`check_export`), all or nothing."""
  from diffusers import MotionAdapter  # pylint: disable=import-outside-toplevel

  from tgvac_jax import files  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  folder, _ = unet_folder(Path(ckpt))
  unet, config = checkpoint.load_component(folder)
  if config.motion is None:
    raise ConversionError(f'{folder}: no motion modules (a frame checkpoint; `in` makes a video checkpoint)')
  quiet_libraries()
  result = []

  def write(tmp: Path) -> None:
    save_motion_adapter(unet, str(tmp))
    result.append(check_export(unet, torch_unet2d(unet), MotionAdapter.from_pretrained(str(tmp)), strict=strict,
                               log=log))

  files.atomic_folder(out, write)
  log(f'wrote {out}')
  return result[0]


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m convert.animatediff', description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='direction', required=True)
  a = sub.add_parser('in', help='our frame checkpoint + AnimateDiff/MotionAdapter weights -> our video checkpoint')
  a.add_argument('base', help='our checkpoint (pipeline folder or its unet/) without or with motion modules')
  a.add_argument('adapter', help='mm_sd_v15_v2.ckpt, a .safetensors, or a diffusers MotionAdapter folder')
  a.add_argument('out', help='our video checkpoint to write (atomically)')
  a.add_argument('--norm', choices=sorted(NORMS), default=None,
                 help='motion norm the weights were trained with (default: decided from the file, see above)')
  a.add_argument('--heads', type=int, default=None, help='attention heads of a bare file (AnimateDiff: 8)')
  a.add_argument('--norm-groups', type=int, default=None, help='GroupNorm groups of a bare file (AnimateDiff: 32)')
  a.add_argument('--verify', action='store_true', help="compare diffusers' UNetMotionModel and ours on a random clip")
  a.add_argument('--verify-tol', type=float, default=1e-4, help='largest accepted relative error (fp32)')
  b = sub.add_parser('out', help='our video checkpoint -> diffusers MotionAdapter folder')
  b.add_argument('ckpt', help='our video checkpoint (pipeline folder or its unet/)')
  b.add_argument('out', help='MotionAdapter folder to write (atomically)')
  b.add_argument('--strict', action='store_true', help=f'an export that differs by rel > {EXPORT_TOL:g} is an error')
  args = p.parse_args(argv)
  if args.direction == 'out':
    return run_cli(lambda: extract(args.ckpt, args.out, strict=args.strict))
  return run_cli(lambda: inflate(args.base, args.adapter, args.out, heads=args.heads, norm_groups=args.norm_groups,
                                 norm=args.norm, verify=args.verify, verify_tol=args.verify_tol))


__all__ = ['ANIMATEDIFF_RENAMES', 'Adapter', 'AdapterInit', 'animatediff_to_diffusers', 'check_export', 'extract',
           'inflate', 'is_animatediff_format', 'load_adapter', 'load_motion', 'load_motion_state',
           'motion_adapter_config', 'motion_state_dict', 'read_adapter', 'read_state_dict', 'save_motion_adapter']

if __name__ == '__main__':
  sys.exit(main())
