"""A batch smaller than the devices: the mesh's 'tensor' axis takes the factor the batch cannot, and the train step
splits each image's rows over it (sharding.batch_rows_split, sharding.split_rows). The tiny frame step from pixels
(the VAE encodes in the step) at batch 4 on 8 CPU devices against the same step, same weights, with 'tensor' 1 on
4 devices. Both compiled without LLVM's expensive passes (seconds each); the models are the shared tiny trainee's."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from flax import nnx

from tests.train import tiny
from tgvac_jax import text
from tgvac_jax.train import sharding, stages, state as st

BATCH = 4


def _step(c, mesh, trainee: st.Trainee, batch: dict):
  """(new state, metrics, compiled) of `trainee`'s weights (its initial state) stepped once on `mesh`."""
  g, frozen = trainee.graphdefs, trainee.frozen
  models = {name: nnx.merge(g[name], trainee.state.params, frozen[name]) if name == trainee.stage.trained
            else nnx.merge(g[name], frozen[name]) for name in g}
  p = st.step_program(c, mesh, models, text.Tokenize(trainee.tokenizer_dir)(['']))
  args = (jax.device_put(jax.device_get(trainee.state), p.state_shardings),
          jax.device_put(jax.device_get(frozen), p.frozen_shardings), sharding.global_batch(batch, mesh))
  compiled = p.jitted.lower(*args).compile(stages.INIT_COMPILER_OPTIONS)
  return (*compiled(*args), compiled)


def _split_equals_whole(stage: str, frames: int | None):
  """The `stage` step at batch 4 on 8 devices (fsdp 4 x tensor 2) against the same on 4 (fsdp 4): the same loss,
  gradient norm and new weights. Returns the split step's compiled program."""
  trainee = tiny.trainee(stage)
  batch = tiny.pixel_batch(seed=3, frames=frames, batch=BATCH)
  c = tiny.tiny_config(stage, batch_size=BATCH)
  c.mesh.fsdp = -1
  mesh = sharding.make_mesh(c.mesh, jax.devices(), batch=BATCH)
  assert len(jax.devices()) == 8 and dict(mesh.shape) == {'data': 1, 'fsdp': 4, 'tensor': 2}
  new_split, m_split, compiled = _step(c, mesh, trainee, batch)
  c.mesh.fsdp = 4
  new_whole, m_whole, _ = _step(c, sharding.make_mesh(c.mesh, jax.devices()[:4], batch=BATCH), trainee, batch)
  for k in ('loss', 'grad_norm'):
    np.testing.assert_allclose(float(m_split[k]), float(m_whole[k]), rtol=2e-5)
  assert float(m_whole['loss']) > 0 and float(m_whole['grad_norm']) > 0 and int(m_split['skipped']) == 0
  moved = 0
  for a, b, old in zip(jax.tree.leaves(new_split.params), jax.tree.leaves(new_whole.params),
                       jax.tree.leaves(trainee.state.params)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    moved += not np.array_equal(b, np.asarray(old))
  assert moved > 10  # the step changed the weights it compared
  return compiled


def test_rows_split_step_equals_the_unsplit_step():
  compiled = _split_equals_whole('frame', None)
  # the rows really are split: each device's UNet input (12 channels: z_t, occluded, mask latents) holds one image
  # and half of its 8 latent rows (without the constraint XLA keeps whole images there: f32[1,8,8,12])
  hlo = compiled.as_text()
  latent = tiny.SIZE // 2
  assert re.search(rf'f32\[1,{latent // 2},{latent},12\]', hlo), 'no per-device UNet input of half the rows'
  assert not re.search(rf'f32\[1,{latent},{latent},12\]', hlo)


@pytest.mark.slow  # ~25 s quiet; the frame step's twin above stays in the default tier
def test_rows_split_motion_step_equals_the_unsplit_step():
  """The motion stage (configs/motion.py's paper batch 16 on a v5e-32 is fsdp 16 x tensor 2): clips (B, F, H, W, C)
  whose rows are split, through motion modules that attend over each pixel's frames."""
  compiled = _split_equals_whole('motion', tiny.FRAMES)
  hlo = compiled.as_text()
  latent, f = tiny.SIZE // 2, tiny.FRAMES
  # each device's UNet input: one clip's frames, half of each frame's latent rows
  assert re.search(rf'f32\[1,{f},{latent // 2},{latent},12\]', hlo), 'no per-device clip input of half the rows'
  assert not re.search(rf'f32\[1,{f},{latent},{latent},12\]', hlo)
