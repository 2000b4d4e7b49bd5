"""Our checkpoint format: exact save/load, atomic writes, clear errors."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'convert'))

import tiny_sd  # noqa: E402
from convert import clip as convert_clip  # noqa: E402
from convert import unet as convert_unet  # noqa: E402
from convert import vae as convert_vae  # noqa: E402
from tgvac_jax.models import checkpoint  # noqa: E402
from tgvac_jax.models.clip import CLIPTextModel, CLIPVisionModelWithProjection  # noqa: E402
from tgvac_jax.models.params import ConversionError, flat_params  # noqa: E402
from tgvac_jax.models.vae import AutoencoderKL  # noqa: E402


def _flat(module):
  return {'.'.join(map(str, p)): np.asarray(v.get_value())
          for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def _assert_same(a, b):
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    assert fa[k].dtype == fb[k].dtype, k
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.fixture(scope='module')
def models():
  vae_ref = tiny_sd.vae_model()
  vae, _ = convert_vae.from_torch(vae_ref.state_dict(), dict(vae_ref.config))
  text_ref = tiny_sd.text_model()
  text, _ = convert_clip.from_torch(text_ref.state_dict(), text_ref.config.to_dict())
  vis_ref = tiny_sd.vision_model()
  vision, _ = convert_clip.from_torch(vis_ref.state_dict(), vis_ref.config.to_dict())
  unet_ref = tiny_sd.unet_model()
  unet, _ = convert_unet.from_torch(unet_ref.state_dict(), dict(unet_ref.config), 12)
  return {'vae': vae, 'text_encoder': text, 'image_encoder': vision, 'unet': unet}


def test_component_round_trip_exact(models, tmp_path):
  for name, module in models.items():
    out = checkpoint.save_component(module, tmp_path / name)
    d = json.loads((out / 'config.json').read_text())
    assert d['_class'] == type(module).__name__
    keys = set(safetensors.numpy.load_file(str(out / 'model.safetensors')))
    assert keys == set(_flat(module))
    loaded, config = checkpoint.load_component(out)
    assert type(loaded) is type(module) and config == module.config
    _assert_same(loaded, module)
  assert json.loads((tmp_path / 'unet' / 'config.json').read_text())['in_channels'] == 12
  assert not list(tmp_path.glob('.*'))  # no temporary folders left


def test_load_overrides_and_dtypes(models, tmp_path):
  out = checkpoint.save_component(models['text_encoder'], tmp_path / 'te')
  m, cfg = checkpoint.load_component(out, remat=True, dtype=jnp.bfloat16)
  assert cfg.remat and isinstance(m, CLIPTextModel)
  ids = jnp.zeros((1, 8), jnp.int32)
  assert m(ids).last_hidden_state.dtype == jnp.bfloat16
  m16, _ = checkpoint.load_component(out, param_dtype=jnp.bfloat16)
  assert m16.text_model.final_layer_norm.scale.get_value().dtype == jnp.bfloat16
  back = checkpoint.save_component(m16, tmp_path / 'te16')  # bf16 tensors round trip
  m16b, _ = checkpoint.load_component(back, param_dtype=jnp.bfloat16)
  _assert_same(m16, m16b)


def test_pipeline_save_load(models, tmp_path):
  tok = tmp_path / 'src_tok'
  tok.mkdir()
  (tok / 'vocab.json').write_text('{}')
  out = checkpoint.save_pipeline(tmp_path / 'ckpt', {'vae': models['vae'], 'text_encoder': models['text_encoder']},
                                 {'tokenizer': tok})
  assert sorted(p.name for p in out.iterdir()) == ['text_encoder', 'tokenizer', 'vae']
  loaded = checkpoint.load_pipeline(out)
  assert sorted(loaded) == ['text_encoder', 'vae']
  assert isinstance(loaded['vae'][0], AutoencoderKL)
  _assert_same(loaded['vae'][0], models['vae'])


def test_atomic_write_and_overwrite(models, tmp_path, monkeypatch):
  target = tmp_path / 'ckpt'
  checkpoint.save_component(models['vae'], target)
  before = (target / 'model.safetensors').read_bytes()
  umask = os.umask(0o022)
  os.umask(umask)
  assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # readable like any folder, not mkdtemp's 0700

  def broken(module, folder, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'model.safetensors').write_bytes(b'partial')
    raise OSError('disk full')

  monkeypatch.setattr(checkpoint, '_write_component', broken)
  with pytest.raises(OSError, match='disk full'):
    checkpoint.save_component(models['vae'], target)
  with pytest.raises(OSError):
    checkpoint.save_component(models['vae'], tmp_path / 'fresh')
  monkeypatch.undo()
  assert (target / 'model.safetensors').read_bytes() == before  # old checkpoint intact
  assert not (tmp_path / 'fresh').exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt']  # no temporary folders left
  checkpoint.save_component(models['image_encoder'], target)  # overwrite replaces the whole folder
  m, _ = checkpoint.load_component(target)
  assert isinstance(m, CLIPVisionModelWithProjection)


def test_errors(models, tmp_path):
  out = checkpoint.save_component(models['vae'], tmp_path / 'vae')
  tensors = safetensors.numpy.load_file(str(out / 'model.safetensors'))

  def rewrite(t):
    safetensors.numpy.save_file(t, str(out / 'model.safetensors'))

  rewrite({k: v for k, v in tensors.items() if k != 'decoder.conv_out.bias'})
  with pytest.raises(ConversionError, match=r'missing in checkpoint \(1\): decoder.conv_out.bias'):
    checkpoint.load_component(out)
  rewrite({**tensors, 'decoder.extra': np.zeros(2, np.float32)})
  with pytest.raises(ConversionError, match=r'not in model \(1\): decoder.extra'):
    checkpoint.load_component(out)
  rewrite({**tensors, 'quant_conv.bias': np.zeros(3, np.float32)})
  with pytest.raises(ConversionError, match='wrong shape.*quant_conv.bias'):
    checkpoint.load_component(out)
  (out / 'model.safetensors').unlink()
  with pytest.raises(checkpoint.CheckpointError, match='no model.safetensors'):
    checkpoint.load_component(out)
  with pytest.raises(checkpoint.CheckpointError, match='no config.json'):
    checkpoint.load_component(tmp_path / 'nothing')
  (out / 'config.json').write_text(json.dumps({'_class': 'Nope'}))
  rewrite(tensors)
  with pytest.raises(checkpoint.CheckpointError, match="unknown model class 'Nope'"):
    checkpoint.load_component(out)
  with pytest.raises(checkpoint.CheckpointError, match='not a registered model class'):
    checkpoint.save_component(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), tmp_path / 'lin')


def test_non_contiguous_and_motion_params(models, tmp_path):
  """Parameters held as transposed numpy views (as left by a torch-layout load) are saved in logical order;
  a UNet with motion modules keeps its MotionParam variables through save/load."""
  from tgvac_jax.models.motion import MotionConfig, MotionParam
  config = dataclasses.replace(models['unet'].config, motion=MotionConfig(num_attention_heads=2, norm_num_groups=8))
  unet, _ = checkpoint.build('UNet2DConditionModel', config.to_dict(ours=True), abstract=True)  # no eager init
  rng = np.random.default_rng(0)
  checkpoint.fill_params(unet, {k: rng.standard_normal(v.get_value().shape).astype(np.float32)
                                for k, v in flat_params(unet).items()})
  kernel = unet.conv_in.kernel
  value = np.asarray(kernel.get_value())
  kernel.set_value(np.ascontiguousarray(value.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0))
  assert not kernel.get_value().flags['C_CONTIGUOUS']
  out = checkpoint.save_component(unet, tmp_path / 'unet')
  loaded, config = checkpoint.load_component(out)
  assert config.motion == unet.config.motion
  np.testing.assert_array_equal(loaded.conv_in.kernel.get_value(), value)
  _assert_same(loaded, unet)
  n_motion = len(nnx.to_flat_state(nnx.state(unet, MotionParam)))
  assert n_motion > 0 and len(nnx.to_flat_state(nnx.state(loaded, MotionParam))) == n_motion
