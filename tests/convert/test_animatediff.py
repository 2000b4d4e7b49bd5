"""Motion weights in and out: original AnimateDiff checkpoints and diffusers MotionAdapter folders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

from convert.animatediff import (ANIMATEDIFF_RENAMES, is_animatediff_format, load_motion,  # noqa: E402
                                 load_motion_state, motion_state_dict, save_motion_adapter)
from convert.rules import ConversionError, flat_params  # noqa: E402
from tgvac_jax.models.motion import MotionConfig, MotionParam  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

# the same small UNet as tests/models/test_motion.py (so eager init compiles are shared in one session)
UNET_CFG = dict(block_out_channels=(32, 64), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, cross_attention_dim=24,
                attention_head_dim=(2, 4), norm_num_groups=8, in_channels=12)
ADAPTER_CFG = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                   motion_norm_num_groups=8, motion_max_seq_length=32)
MOTION = MotionConfig(num_attention_heads=4, norm_num_groups=8)


def adapter(seed: int = 0, **overrides):
  torch.manual_seed(seed)
  a = diffusers.MotionAdapter(**{**ADAPTER_CFG, **overrides}).eval()
  with torch.no_grad():
    for p in a.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return a


@pytest.fixture(scope='module')
def video_unet():
  config = dataclasses.replace(UNetConfig.from_dict(UNET_CFG), motion=MOTION)
  return UNet2DConditionModel(config, rngs=nnx.Rngs(0))


def motion_values(model) -> dict[str, np.ndarray]:
  return {k: np.asarray(v.get_value()) for k, v in flat_params(model, MotionParam).items()}


def to_animatediff(state_dict) -> dict:
  """diffusers MotionAdapter keys -> original AnimateDiff keys (inverting diffusers' converter), with the
  `pos_encoder.pe` tables the original checkpoints carry."""
  out = {}
  for key, value in state_dict.items():
    if key.endswith('pos_embed.pe'):
      key = key.replace('pos_embed.pe', 'pos_encoder.pe')
    for orig, new in ANIMATEDIFF_RENAMES[1:]:
      key = key.replace(new, orig)
    head, tail = key.split('.motion_modules.', 1)
    index, rest = tail.split('.', 1)
    out[f'{head}.motion_modules.{index}.temporal_transformer.{rest}'] = value
  # original checkpoints keep one position table per attention block
  for key in [k for k in out if k.endswith('transformer_blocks.0.pos_encoder.pe')]:
    stem = key[:-len('pos_encoder.pe')]
    pe = out.pop(key)
    for j in (0, 1):
      out[f'{stem}attention_blocks.{j}.pos_encoder.pe'] = pe
  return out


def test_animatediff_checkpoint_equals_diffusers_import(video_unet, tmp_path):
  a = adapter()
  sd = a.state_dict()
  a.save_pretrained(tmp_path / 'adapter')
  orig = to_animatediff(sd)
  assert is_animatediff_format(orig) and not is_animatediff_format(sd)
  assert any('.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight' in k for k in orig)
  assert any(k.endswith('.norms.0.weight') for k in orig) and any(k.endswith('.ff_norm.bias') for k in orig)
  torch.save({'state_dict': orig}, tmp_path / 'mm.ckpt')

  spatial_before = {k: np.asarray(v.get_value()) for k, v in
                    flat_params(video_unet, nnx.All(nnx.Param, nnx.Not(MotionParam))).items()}
  load_motion(video_unet, str(tmp_path / 'adapter'))
  from_folder = motion_values(video_unet)
  load_motion(video_unet, str(tmp_path / 'mm.ckpt'))
  from_ckpt = motion_values(video_unet)
  assert from_folder.keys() == from_ckpt.keys()
  for k in from_folder:
    assert np.array_equal(from_folder[k], from_ckpt[k]), k
  # the values are the adapter's (linear weights transposed)
  np.testing.assert_array_equal(from_ckpt['down_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_k.kernel'],
                                sd['down_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_k.weight'].numpy().T)
  for k, v in spatial_before.items():  # spatial weights untouched
    assert np.array_equal(flat_params(video_unet)[k].get_value(), v), k


def test_safetensors_checkpoint(video_unet, tmp_path):
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  sd = adapter(seed=3).state_dict()
  save_file({k: v.clone().contiguous() for k, v in to_animatediff(sd).items()}, str(tmp_path / 'mm.safetensors'))
  load_motion(video_unet, str(tmp_path / 'mm.safetensors'))
  got = motion_values(video_unet)
  np.testing.assert_array_equal(got['mid_block.motion_modules.0.proj_in.bias'],
                                sd['mid_block.motion_modules.0.proj_in.bias'].numpy())


def test_export_loads_in_diffusers(video_unet, tmp_path):
  load_motion_state(video_unet, adapter(seed=5).state_dict())
  save_motion_adapter(video_unet, str(tmp_path / 'out'))
  back = diffusers.MotionAdapter.from_pretrained(str(tmp_path / 'out'))
  theirs = {k: v.numpy() for k, v in back.state_dict().items()}
  ours = motion_state_dict(video_unet)
  assert theirs.keys() == ours.keys()
  for k in ours:
    np.testing.assert_array_equal(theirs[k], ours[k], err_msg=k)
  # and back into a UNet
  before = motion_values(video_unet)
  load_motion_state(video_unet, adapter(seed=6).state_dict())
  load_motion(video_unet, str(tmp_path / 'out'))
  for k, v in motion_values(video_unet).items():
    assert np.array_equal(v, before[k]), k


def test_channel_mismatch_names_the_module(video_unet, tmp_path):
  wrong = adapter(block_out_channels=(32, 96))
  with pytest.raises(ConversionError, match=r'down_blocks\.1\.motion_modules\.0: checkpoint has 96 channels, '
                                            r'the UNet 64'):
    load_motion_state(video_unet, wrong.state_dict())
  wrong.save_pretrained(tmp_path / 'wrong')
  with pytest.raises(ConversionError, match=r'block_out_channels: adapter \[32, 96\], UNet \[32, 64\]'):
    load_motion(video_unet, str(tmp_path / 'wrong'))


def test_incomplete_or_foreign_checkpoints_are_refused(video_unet):
  sd = {k: v.numpy() for k, v in adapter().state_dict().items()}
  before = motion_values(video_unet)
  missing = {k: v for k, v in sd.items() if not k.startswith('mid_block.')}  # a v1 checkpoint: no mid block
  with pytest.raises(ConversionError, match=r'missing in checkpoint .*mid_block\.motion_modules\.0'):
    load_motion_state(video_unet, missing)
  with pytest.raises(ConversionError, match=r'not in model .*conv_in\.weight'):
    load_motion_state(video_unet, {**sd, 'conv_in.weight': np.zeros((32, 12, 3, 3), np.float32)})
  for k, v in motion_values(video_unet).items():  # nothing was loaded
    assert np.array_equal(v, before[k])
  frame = nnx.eval_shape(lambda: UNet2DConditionModel(UNetConfig.from_dict(UNET_CFG), rngs=nnx.Rngs(0)))
  with pytest.raises(ConversionError, match='no motion modules'):
    load_motion_state(frame, sd)
