"""Our CLIP text and vision towers against transformers' PyTorch ones (random small models, fp32)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'convert'))

import tiny_sd  # noqa: E402
from convert import clip as convert_clip  # noqa: E402
from convert.rules import ConversionError  # noqa: E402
from tgvac_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,  # noqa: E402
                                   CLIPVisionModelWithProjection)

TOL = 1e-5


def rel(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)


def _ids(eos: int, n: int = 77, batch: int = 2, vocab: int = 64):
  ids = np.random.default_rng(0).integers(2, vocab - 1, (batch, n))
  ids[:, 0] = 0
  for b in range(batch):
    ids[b, 5 + 7 * b:] = eos  # EOS then EOS-padding, as CLIPTokenizer pads SD prompts
  return ids


def _flat(module):
  return {'.'.join(map(str, p)): np.asarray(v.get_value())
          for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def _text(eos_token_id: int):
  ref = tiny_sd.text_model(seed=2, eos_token_id=eos_token_id)
  tiny_sd._perturb(ref)  # pylint: disable=protected-access
  return ref


@pytest.mark.parametrize('eos_token_id', [2, 63])  # 2: legacy pooling (argmax of ids, SD-1.5), else first EOS
def test_text_matches_transformers(eos_token_id):
  ref = _text(eos_token_id)
  ours, config = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  assert isinstance(ours, CLIPTextModel) and config.eos_token_id == eos_token_id
  ids = _ids(eos_token_id)
  mask = np.ones_like(ids)
  mask[1, 30:] = 0
  with torch.no_grad():
    a = ref(torch.from_numpy(ids), output_hidden_states=True)
    b = ref(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
  o = jax.jit(lambda m, i: m(i, output_hidden_states=True))(ours, jnp.asarray(ids))
  assert rel(o.last_hidden_state, a.last_hidden_state.numpy()) <= TOL
  assert rel(o.pooler_output, a.pooler_output.numpy()) <= TOL
  assert len(o.hidden_states) == len(a.hidden_states) == 3
  for x, y in zip(o.hidden_states, a.hidden_states):
    assert rel(x, y.numpy()) <= TOL
  om = ours(jnp.asarray(ids), jnp.asarray(mask))
  assert rel(om.last_hidden_state, b.last_hidden_state.numpy()) <= TOL
  assert rel(om.pooler_output, b.pooler_output.numpy()) <= TOL


def test_text_key_layouts_and_round_trip():
  """transformers 5 (no `text_model.` prefix), older/SD layout (prefix + position_ids buffer): same model."""
  ref = _text(2)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  legacy = {'text_model.' + k: v for k, v in sd.items()}
  legacy['text_model.embeddings.position_ids'] = np.arange(77)[None]
  a, _ = convert_clip.from_torch(sd, ref.config.to_dict())
  b, _ = convert_clip.from_torch(legacy, ref.config.to_dict())
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys() and 'text_model.embeddings.token_embedding.embedding' in fa
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k])
  out, config = convert_clip.to_torch(a)
  assert sorted(out) == sorted(k for k in legacy if not k.endswith('position_ids'))
  bare, _ = convert_clip.to_torch(a, text_model_prefix=False)
  assert sorted(bare) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(bare[k], sd[k], err_msg=k)
  from transformers import CLIPTextConfig as TorchConfig, CLIPTextModel as TorchModel
  rebuilt = TorchModel(TorchConfig(**config))
  rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in bare.items()}, strict=True)
  assert rebuilt.config.eos_token_id == 2 and rebuilt.config.hidden_size == 32


def test_vision_matches_transformers_and_round_trips():
  ref = tiny_sd.vision_model(seed=3)
  tiny_sd._perturb(ref)  # pylint: disable=protected-access
  ours, config = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  assert isinstance(ours, CLIPVisionModelWithProjection) and config.num_patches == 16
  x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    t = ref(torch.from_numpy(x))
  o = ours(jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert o.image_embeds.shape == (2, 16)
  assert rel(o.image_embeds, t.image_embeds.numpy()) <= TOL
  assert rel(o.last_hidden_state, t.last_hidden_state.numpy()) <= TOL
  sd, config_dict = convert_clip.to_torch(ours)
  theirs = {k: v.numpy() for k, v in ref.state_dict().items()}
  assert sorted(sd) == sorted(theirs)
  for k in sd:
    np.testing.assert_array_equal(sd[k], theirs[k], err_msg=k)
  again, _ = convert_clip.from_torch(sd, config_dict)
  assert _flat(again).keys() == _flat(ours).keys()


def test_conversion_errors():
  ref = _text(2)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  cfg = ref.config.to_dict()
  with pytest.raises(ConversionError, match='final_layer_norm.bias'):
    convert_clip.from_torch({k: v for k, v in sd.items() if k != 'final_layer_norm.bias'}, cfg)
  with pytest.raises(ConversionError, match='text_projection.weight'):  # a CLIPTextModelWithProjection
    convert_clip.from_torch({**sd, 'text_projection.weight': np.zeros((16, 32))}, cfg)
  with pytest.raises(ConversionError, match='unsupported model'):
    convert_clip.from_torch(sd, {**cfg, 'architectures': ['CLIPModel']})


def test_config_presets_and_dicts():
  cfg = CLIPTextConfig.clip_l()
  assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.eos_token_id) == (768, 12, 12, 2)
  assert CLIPTextConfig.from_dict(cfg.to_dict()) == cfg
  assert CLIPTextConfig.from_dict(cfg.to_dict(ours=True) | {'remat': True}).remat
  v = CLIPVisionConfig.vit_l14()
  assert CLIPVisionConfig.from_dict(v.to_dict()) == v and v.num_patches == 256
  assert v.to_dict()['architectures'] == ['CLIPVisionModelWithProjection']
  m = nnx.eval_shape(lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(m, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert sum(int(np.prod(v.get_value().shape)) for v in leaves) == 123_060_480  # transformers' CLIP-L text
  with pytest.raises(ValueError, match='hidden_act'):
    CLIPTextConfig(hidden_act='relu6')
  with pytest.raises(ValueError, match='not divisible by patch_size'):
    CLIPVisionConfig(image_size=30, patch_size=8)


def test_bad_inputs():
  text = nnx.eval_shape(lambda: CLIPTextModel(CLIPTextConfig(
      vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
      max_position_embeddings=6), rngs=nnx.Rngs(0)))  # checks come before any computation
  with pytest.raises(ValueError, match='exceed max_position_embeddings 6'):
    text(jnp.zeros((1, 7), jnp.int32))
  with pytest.raises(ValueError, match='integer'):
    text(jnp.zeros((1, 5), jnp.float32))
  vision = nnx.eval_shape(lambda: CLIPVisionModelWithProjection(
      CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                       patch_size=8), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r'channels-last \(B, 16, 16, 3\)'):
    vision(jnp.zeros((1, 3, 16, 16)))


def test_bf16_and_remat():
  ref = _text(63)
  ids = jnp.asarray(_ids(63))
  fp32, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  bf16, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict(), dtype=jnp.bfloat16)
  remat, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict(), remat=True)
  a = fp32(ids).last_hidden_state
  b = bf16(ids).last_hidden_state
  assert b.dtype == jnp.bfloat16 and rel(b.astype(jnp.float32), a) < 3e-2
  np.testing.assert_allclose(remat(ids).last_hidden_state, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_clip_l_text_matches_transformers():
  """Real CLIP-L text size (hidden 768, 12 layers), random init, 77 tokens."""
  from transformers import CLIPTextConfig as TorchConfig, CLIPTextModel as TorchModel
  torch.manual_seed(0)
  cfg = CLIPTextConfig.clip_l()
  ref = TorchModel(TorchConfig(**cfg.to_dict())).eval()
  tiny_sd._perturb(ref)  # pylint: disable=protected-access
  ours, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  ids = np.random.default_rng(0).integers(3, 49000, (2, 77))
  ids[:, 0] = 49406
  ids[0, 12:] = 49407
  ids[1, 40:] = 49407
  with torch.no_grad():
    t = ref(torch.from_numpy(ids))
  o = jax.jit(lambda m, i: m(i))(ours, jnp.asarray(ids))
  for name, a, b in (('last_hidden_state', o.last_hidden_state, t.last_hidden_state),
                     ('pooler_output', o.pooler_output, t.pooler_output)):
    a, b = np.asarray(a), b.numpy()
    print(f'clip-l text {name}: max_abs={np.abs(a - b).max():.3g} rel={rel(a, b):.3g}')
    assert rel(a, b) <= TOL
