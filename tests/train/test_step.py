"""The train step: FSDP on 8 devices equals one device; non-finite steps are skipped; a tiny model overfits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

STEPS = 200

from tests.train import tiny
from tgvac_jax.train import sharding


@pytest.fixture(scope='module')
def trainee():
  return tiny.trainee('frame')


@pytest.fixture(scope='module')
def batch(trainee):
  """Cached latents: the step without the VAE encoder compiles faster (test_latents checks the two agree)."""
  return tiny.encode(trainee, sharding.global_batch(tiny.pixel_batch(0), trainee.mesh))


def _leaves(tree):
  return jax.tree_util.tree_leaves_with_path(tree)


def test_fsdp_step_equals_single_device(trainee, batch):
  s0 = tiny.copy_state(trainee.state)
  host = jax.device_get((s0, trainee.frozen, batch))
  new8, m8 = trainee.train_step(s0, batch)

  dev = jax.devices()[0]
  new1, m1 = jax.jit(trainee.step_fn)(*jax.device_put(host, dev))
  print(f"loss 8 devices {float(m8['loss']):.9f}, 1 device {float(m1['loss']):.9f}")
  np.testing.assert_allclose(float(m8['loss']), float(m1['loss']), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(float(m8['grad_norm']), float(m1['grad_norm']), rtol=1e-5)
  moved, worst = 0, 0.0
  for (path, a), (_, b), (_, before) in zip(_leaves(new8.params), _leaves(new1.params), _leaves(host[0].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))
    moved += not np.array_equal(np.asarray(b), before)
    worst = max(worst, float(np.abs(np.asarray(a) - np.asarray(b)).max()))
  print(f'updated weights, 8 devices vs 1: max |difference| {worst:.2e}')
  assert moved == len(_leaves(new1.params))  # every weight took a step

  # each device holds 1/8 of every large weight and of its Adam moments
  adam = [s for s in jax.tree.leaves(new8.opt_state, is_leaf=lambda x: hasattr(x, 'mu')) if hasattr(s, 'mu')]
  assert len(adam) == 1
  total = sharded = large = 0
  for tree in (new8.params, adam[0].mu, adam[0].nu, new8.ema):
    for path, x in _leaves(tree):
      total += x.size
      if x.size >= trainee.config.mesh.min_shard_size:  # each has a dimension divisible by 8 in this model
        large += 1
        shards = x.addressable_shards
        assert len(shards) == 8 and len({str(s.index) for s in shards}) == 8, jax.tree_util.keystr(path)
        assert all(s.data.size * 8 == x.size for s in shards), jax.tree_util.keystr(path)
        sharded += x.size
  print(f'{large} large tensors (>= {trainee.config.mesh.min_shard_size} elements) sharded 8 ways: {sharded / total:.1%} of the '
        'weight, moment and EMA elements (the rest: small tensors, replicated)')
  assert large >= 4 * 20 and sharded / total > 0.9


def test_non_finite_step_is_skipped(trainee):
  lat = tiny.encode(trainee, sharding.global_batch(tiny.pixel_batch(1), trainee.mesh))
  bad = dict(lat, target_mean=lat['target_mean'].at[0, 0, 0, 0].set(jnp.nan))
  s0 = tiny.copy_state(trainee.state)
  before = jax.device_get(s0)
  after, m = trainee.train_step(s0, bad)
  assert not np.isfinite(float(m['loss'])) and int(m['skipped']) == 1 and int(after.skipped) == 1
  assert int(after.step) == 1
  for name in ('params', 'opt_state', 'ema'):
    for a, b in zip(jax.tree.leaves(getattr(after, name)), jax.tree.leaves(getattr(before, name))):
      np.testing.assert_array_equal(np.asarray(a), b)
  after, m = trainee.train_step(after, lat)  # a finite step after it applies
  assert np.isfinite(float(m['loss'])) and int(after.skipped) == 1 and int(after.step) == 2


def test_tiny_model_overfits_a_handful_of_frames(trainee):
  """8 fixed frames (cached latents), fresh noise and timestep every step: the loss must fall >= 10x.

  The target is the posterior mean: a trained VAE's posterior is nearly a point, while this random one has a std
  as large as its mean, which would make z_0 itself fresh noise every step (a floor no model can fit)."""
  lat = tiny.encode(trainee, sharding.global_batch(tiny.pixel_batch(2), trainee.mesh))
  lat['target_std'] = jnp.zeros_like(lat['target_std'])
  state = tiny.copy_state(trainee.state)
  losses = []
  for _ in range(STEPS):
    state, m = trainee.train_step(state, lat)
    losses.append(float(m['loss']))
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  print(f'overfit: mean loss of the first 10 steps {first:.4f}, of the last 10 {last:.4f}: {first / last:.1f}x lower '
        f'after {STEPS} steps')
  assert first / last >= 10


def test_vae_stage_loss_and_training():
  """The autoencoder stage: loss = mean |x - D(z)| + kl_weight * mean KL, z ~ q(z|x) drawn with the step's key, on
  target and occluded frames; only the VAE is trained and exported."""
  vae_trainee = tiny.trainee('vae', devices=1, **{'vae_loss.kl_weight': 0.01})
  assert set(vae_trainee.graphdefs) == {'vae'}
  pixels = tiny.pixel_batch(5)
  batch = sharding.global_batch({k: pixels[k] for k in ('occluded', 'visible_mask', 'amodal')}, vae_trainee.mesh)
  state = tiny.copy_state(vae_trainee.state)
  vae = vae_trainee.export_modules(state, ema=False)['vae']
  key = jax.random.split(jax.random.wrap_key_data(state.rng))[1]
  x = np.concatenate([pixels['amodal'], pixels['occluded']]).astype(np.float32) / 127.5 - 1
  posterior = vae.encode(x)
  rec = np.asarray(vae.decode(posterior.sample(key)))
  mean, logvar = np.asarray(posterior.mean, np.float64), np.asarray(posterior.logvar, np.float64)
  kl = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3)).mean()
  want = np.abs(rec - x).mean() + 0.01 * kl
  losses = []
  for _ in range(5):
    state, m = vae_trainee.train_step(state, batch)
    losses.append(float(m['loss']))
  print(f'vae stage: loss {losses[0]:.5f} (reference {want:.5f}) -> {losses[-1]:.5f} after 5 steps')
  np.testing.assert_allclose(losses[0], want, rtol=1e-4)
  assert losses[-1] < losses[0]


def test_zero_terminal_snr_schedule_is_diffusers():
  """config.diffusion.rescale_betas_zero_snr: the trainer's noise process is diffusers' rescaled one (terminal
  alpha-bar 0), and it is refused without v-prediction, before anything is built."""
  import diffusers  # pylint: disable=import-outside-toplevel

  from tgvac_jax.train import state, step  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.config import base_config  # pylint: disable=import-outside-toplevel
  c = base_config()
  c.diffusion.rescale_betas_zero_snr = True
  c.diffusion.prediction_type = 'v_prediction'
  theirs = diffusers.DDPMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                                   rescale_betas_zero_snr=True, prediction_type='v_prediction').alphas_cumprod
  ours = step.alphas_cumprod(c)
  np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-7)
  assert ours[-1] < 1e-7 and step.schedule_config(c).rescale_betas_zero_snr
  c.diffusion.prediction_type = 'epsilon'
  mesh = sharding.make_mesh(c.mesh)
  with pytest.raises(ValueError, match='rescale_betas_zero_snr needs diffusion.prediction_type=v_prediction'):
    state.check_config(c, mesh)


@pytest.mark.parametrize('conditional', [True, False])
def test_only_if_applies_or_keeps(conditional):
  """Both forms (conditional: the CPU default; select: GPU/TPU) give fn's result where ok and the old values
  bitwise where not."""
  from tgvac_jax.train.step import only_if
  old = ({'w': jnp.arange(6.0).reshape(2, 3)}, jnp.float32(2.0))
  fn = lambda tree, s: ({'w': tree['w'] * s + 1.0}, s * 3.0)  # noqa: E731
  f = jax.jit(lambda ok, old: only_if(ok, fn, old, conditional=conditional))
  new = f(jnp.asarray(True), old)
  np.testing.assert_array_equal(np.asarray(new[0]['w']), np.arange(6.0).reshape(2, 3) * 2.0 + 1.0)
  assert float(new[1]) == 6.0
  kept = f(jnp.asarray(False), old)
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(old)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
