"""Training from cached latents (`encode_batch` once) equals training from pixels, for the same noise."""

import jax
import numpy as np

from tests.train import tiny
from tgvac_jax.train import sharding
from tgvac_jax.train.latents import LATENT_KEYS


def test_cached_latents_step_equals_pixel_step():
  trainee = tiny.trainee('frame')
  pixels = sharding.global_batch(tiny.pixel_batch(3), trainee.mesh)
  latents = tiny.encode(trainee, pixels)
  assert set(latents) == set(LATENT_KEYS)
  b = tiny.BATCH
  assert latents['target_mean'].shape == latents['target_std'].shape == latents['occluded'].shape == (b, 8, 8, 4)
  assert float(latents['target_std'].min()) > 0
  from_pixels, mp = trainee.train_step(tiny.copy_state(trainee.state), pixels)
  from_latents, ml = trainee.train_step(tiny.copy_state(trainee.state), latents)
  print(f"loss from pixels {float(mp['loss']):.8f}, from cached latents {float(ml['loss']):.8f}")
  np.testing.assert_allclose(float(ml['loss']), float(mp['loss']), atol=1e-5, rtol=0)
  for a, c in zip(jax.tree.leaves(from_latents.params), jax.tree.leaves(from_pixels.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5, rtol=0)
