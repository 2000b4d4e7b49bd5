"""AmodalCompleter against a hand-composed reference: VAE posterior means of the occluded frames and of the mask
image, plain DDIM over z ⊕ E(x) ⊕ E(m) with guidance written out (empty text + zero concat), VAE decode; and
from_pretrained sampling with the checkpoint's scheduler."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))

from fakes import random_model, tiny_unet_config  # noqa: E402
from tgvac_jax import text  # noqa: E402
from tgvac_jax.diffusion import ddim  # noqa: E402
from tgvac_jax.diffusion.schedule import ScheduleConfig  # noqa: E402
from tgvac_jax.diffusion.scheduler_config import Scheduler  # noqa: E402
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig  # noqa: E402
from tgvac_jax.infer.complete import AmodalCompleter, CompletionConfig, amodal_mask  # noqa: E402
from tgvac_jax.models.checkpoint import save_pipeline  # noqa: E402
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel  # noqa: E402
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig  # noqa: E402

STEPS, SCALE = 3, 3.0


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
  folder = tmp_path_factory.mktemp('tok')
  vocab = text.write_char_tokenizer(folder)
  vae = random_model(lambda: AutoencoderKL(AutoencoderKLConfig(
      block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1, down_block_types=('DownEncoderBlock2D',) * 2,
      up_block_types=('UpDecoderBlock2D',) * 2), rngs=nnx.Rngs(0)), 0)
  clip = random_model(lambda: CLIPTextModel(CLIPTextConfig(
      vocab_size=vocab, hidden_size=16, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
      num_attention_heads=2, bos_token_id=0, eos_token_id=1), rngs=nnx.Rngs(0)), 1)
  unet = random_model(lambda: UNet2DConditionModel(tiny_unet_config(), rngs=nnx.Rngs(0)), 2)
  return unet, vae, clip, text.Tokenize(folder)


def _video(seed, n=4, size=16):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  visible = rng.random((n, size, size)) > 0.5
  return frames, visible


def _reference(parts, frames, visible, caption, seed):
  unet, vae, clip, tokenize = parts
  x = jnp.asarray(frames, jnp.float32) / 127.5 - 1
  m = jnp.where(jnp.asarray(visible)[..., None], 1.0, -1.0) * jnp.ones(3)
  cond = jnp.concatenate([vae.encode(x).mean, vae.encode(m).mean], -1) * vae.config.scaling_factor
  ctx = clip(jnp.asarray(tokenize([caption]))).last_hidden_state
  empty = clip(jnp.asarray(tokenize(['']))).last_hidden_state
  z_T = jax.random.normal(jax.random.key(seed), (1, *cond.shape[:-1], 4))

  def model(z, t):
    tt = jnp.full((1,), t)
    c = unet(jnp.concatenate([z, cond[None]], -1), tt, ctx)
    u = unet(jnp.concatenate([z, jnp.zeros_like(cond)[None]], -1), tt, empty)
    return u + SCALE * (c - u)

  cfg = TemporalSamplerConfig(window_length=8)
  z0 = ddim.ddim_sample(model, z_T, None, cfg.schedule, ddim.DDIMConfig(num_inference_steps=STEPS))[0]
  rgb = vae.decode(z0 / vae.config.scaling_factor)
  return np.asarray(jnp.clip(jnp.round((rgb + 1) * 127.5), 0, 255).astype(jnp.uint8))


def test_single_window_equals_hand_composed_pipeline(parts):
  frames, visible = _video(0)
  cfg = CompletionConfig(sampler=TemporalSamplerConfig(window_length=8, guidance_scale=SCALE,
                                                       ddim=ddim.DDIMConfig(num_inference_steps=STEPS)),
                         vae_chunk=3)  # 4 frames in chunks of 3: exercises the padded tail
  out = AmodalCompleter(*parts, cfg)(frames, visible, 'a red star', seed=5)
  ref = _reference(parts, frames, visible, 'a red star', seed=5)
  assert out.rgb.shape == frames.shape and out.mask.shape == visible.shape
  assert np.abs(out.rgb.astype(int) - ref.astype(int)).max() <= 1  # rounding of a float32 difference
  np.testing.assert_array_equal(out.mask, (255 - out.rgb.astype(np.float32)).max(-1) / 255 > 0.15)


def test_from_pretrained_samples_with_the_checkpoint_schedule(parts, tmp_path):
  """A v_prediction checkpoint is sampled as v_prediction: scheduler/ replaces the config's schedule and DDIM
  scheduler settings (steps and eta stay the config's), and the completion is the one of a completer given them."""
  unet, vae, clip, tokenize = parts
  sched = Scheduler(ScheduleConfig(prediction_type='v_prediction'),
                    ddim.DDIMConfig(timestep_spacing='trailing', steps_offset=0))
  save_pipeline(tmp_path / 'model', {'unet': unet, 'vae': vae, 'text_encoder': clip},
                {'tokenizer': tokenize.folder}, scheduler=sched)
  cfg = CompletionConfig(sampler=TemporalSamplerConfig(window_length=8, ddim=ddim.DDIMConfig(num_inference_steps=2)))
  loaded = AmodalCompleter.from_pretrained(tmp_path / 'model', cfg)
  want = TemporalSamplerConfig(window_length=8, schedule=ScheduleConfig(prediction_type='v_prediction'),
                               ddim=ddim.DDIMConfig(num_inference_steps=2, timestep_spacing='trailing', steps_offset=0))
  assert loaded.config == CompletionConfig(sampler=want)
  frames, visible = _video(3)
  np.testing.assert_array_equal(loaded(frames, visible, 'a cat', seed=1).rgb,
                                AmodalCompleter(*parts, CompletionConfig(sampler=want))(frames, visible, 'a cat',
                                                                                        seed=1).rgb)


def test_long_video_batch_is_deterministic_and_per_video(parts):
  cfg = CompletionConfig(sampler=TemporalSamplerConfig(window_length=4, stride=2, chunk_size=2,
                                                       ddim=ddim.DDIMConfig(num_inference_steps=2)))
  completer = AmodalCompleter(*parts, cfg)
  (f0, v0), (f1, v1) = _video(1, n=7), _video(2, n=7)
  both = completer(np.stack([f0, f1]), np.stack([v0, v1]), ['a cat', 'a dog'], seed=3)
  again = completer(np.stack([f0, f1]), np.stack([v0, v1]), ['a cat', 'a dog'], seed=3)
  np.testing.assert_array_equal(both.rgb, again.rgb)
  assert both.rgb.shape == (2, 7, 16, 16, 3)
  assert not np.array_equal(both.rgb[0], both.rgb[1])


def test_amodal_mask_threshold():
  rgb = np.full((1, 2, 2, 3), 255, np.uint8)
  rgb[0, 0, 0] = (255, 200, 255)  # 55/255 = 0.216 below white
  rgb[0, 1, 1] = (250, 250, 250)  # 0.02
  np.testing.assert_array_equal(amodal_mask(rgb, 0.15), [[[True, False], [False, False]]])


def test_bad_inputs(parts):
  unet, vae, clip, tokenize = parts
  completer = AmodalCompleter(*parts)
  frames, visible = _video(0)
  with pytest.raises(ValueError, match='do not match'):
    completer(frames, visible[:3], 'x')
  with pytest.raises(ValueError, match='captions'):
    completer(frames[None], visible[None], ['a', 'b'])
  with pytest.raises(ValueError, match='not divisible'):
    completer(frames[:, :15, :15], visible[:, :15, :15], 'x')
  four = random_model(lambda: UNet2DConditionModel(tiny_unet_config(in_channels=4), rngs=nnx.Rngs(0)), 3)
  with pytest.raises(ValueError, match='12|3 x 4'):
    AmodalCompleter(four, vae, clip, tokenize)


def test_sampler_is_traced_knowing_its_mesh(parts, monkeypatch):
  """A sharded completer traces its program `split_over` its mesh, as the compile job does: every attention call
  sees the mesh (on TPU that picks the Pallas kernel under shard_map, the program the compile job measured)."""
  from tgvac_jax import target  # pylint: disable=import-outside-toplevel
  from tgvac_jax.infer import complete  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import attention  # pylint: disable=import-outside-toplevel
  seen, path = [], attention.path

  def spy(*args, **kwargs):
    seen.append(target.mesh())
    return path(*args, **kwargs)

  monkeypatch.setattr(attention, 'path', spy)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ('data',))   # as the infer job builds it
  cfg = CompletionConfig(sampler=TemporalSamplerConfig(window_length=4, stride=2, chunk_size=2, shard='videos',
                                                       ddim=ddim.DDIMConfig(num_inference_steps=1)))
  complete._complete.clear_cache()
  f, v = _video(5, n=4)
  AmodalCompleter(*parts, cfg, mesh=mesh)(np.stack([f, f]), np.stack([v, v]), ['a cat', 'a dog'], seed=0)
  assert seen and all(m is mesh for m in seen)
  assert target.mesh() is None
