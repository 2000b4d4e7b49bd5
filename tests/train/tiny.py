"""Tiny trainer setups shared by the train tests (built once per test process: compiles dominate CPU time)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tgvac_jax.models.checkpoint import save_pipeline
from tgvac_jax.train import sharding, state as st
from tgvac_jax.train.config import base_config
from tgvac_jax.train.latents import encode_batch

WORKDIR = tempfile.mkdtemp(prefix='tgvac-train-tests-')
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
BATCH = 8
SIZE = 16
FRAMES = 4


def tiny_config(stage: str = 'frame', workdir: str = WORKDIR, **overrides):
  """From-scratch models small enough to compile fast: 16 px frames, VAE factor 2, a one-level UNet (its mid block
  holds the cross-attention)."""
  c = base_config()
  c.stage = stage
  c.workdir = workdir
  c.init.from_scratch = True
  c.batch_size = BATCH
  c.num_steps = 1000
  c.data.size = SIZE
  c.data.clip_len = FRAMES
  c.model.unet_channels = (32,)
  c.model.vae_channels = (16, 32)
  c.model.text_width = 32
  c.model.text_layers = 1
  c.compute_dtype = 'float32'
  c.mesh.min_shard_size = 1024    # so most of this tiny model's weights are split 8 ways
  c.optim.lr = 2e-3
  # Adam's first update is lr * g / (|g| + eps), whose slope at g = 0 is lr / eps: it amplifies the float32
  # round-off of gradients that cancel to ~0 (which differs between 1 and 8 devices: another summation order)
  # into the weights, ~1e-6 at eps=1e-6 and more at optax's 1e-8. lr / eps = 50 keeps that below 1e-7; this
  # eps is still far below the gradients' typical size (~1e-3), so it changes nothing else.
  c.optim.eps = 4e-5
  c.optim.warmup_steps = 0
  c.ema_decay = 0.9
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


@functools.lru_cache(maxsize=None)
def trainee(stage: str = 'frame', devices: int = 8, **overrides) -> st.Trainee:
  c = tiny_config(stage, **overrides)
  c.mesh.fsdp = devices
  return st.setup(c, sharding.make_mesh(c.mesh, jax.devices()[:devices]))


def pixel_batch(seed: int = 0, frames: int | None = None, batch: int = BATCH) -> dict[str, np.ndarray]:
  """A loader-format uint8 batch: object-ish blobs on white, with masks and caption ids."""
  rs = np.random.RandomState(seed)
  lead = (batch,) if frames is None else (batch, frames)
  amodal = np.full(lead + (SIZE, SIZE, 3), 255, np.uint8)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  visible = np.zeros(lead + (SIZE, SIZE), np.uint8)
  occluded = rs.randint(0, 256, lead + (SIZE, SIZE, 3)).astype(np.uint8)
  for idx in np.ndindex(*lead):
    cy, cx, r = rs.randint(4, SIZE - 4), rs.randint(4, SIZE - 4), rs.randint(3, 6)
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    amodal[idx][blob] = rs.randint(0, 200, 3)
    visible[idx] = blob & (xx < cx + 1)
    occluded[idx][visible[idx] > 0] = amodal[idx][visible[idx] > 0]
  ids = np.ones((batch, 77), np.int32)
  ids[:, 0] = 0
  ids[:, 1:4] = rs.randint(2, 40, (batch, 3))
  return {'occluded': occluded, 'visible_mask': visible, 'amodal': amodal, 'input_ids': ids}


@functools.lru_cache(maxsize=None)
def frame_model() -> str:
  """The frame trainee's initial weights exported as a pipeline folder (EMA = params at step 0): what the motion
  stage starts from, and a checkpoint to load instead of compiling a random init."""
  frame = trainee('frame')
  out = f'{WORKDIR}/frame_model'
  save_pipeline(out, frame.export_modules(frame.state), copies={'tokenizer': frame.tokenizer_dir})
  return out


_ENCODERS = {}


def encode(trainee: st.Trainee, batch: dict) -> dict:
  """`latents.encode_batch` with the trainee's frozen VAE and text encoder, jitted (what the cache command does)."""
  if id(trainee) not in _ENCODERS:
    g = trainee.graphdefs

    def fn(frozen, batch):
      return encode_batch(nnx.merge(g['vae'], frozen['vae']), nnx.merge(g['text_encoder'], frozen['text_encoder']),
                          batch)
    _ENCODERS[id(trainee)] = jax.jit(fn, out_shardings=sharding.batch_sharding(trainee.mesh))
  return _ENCODERS[id(trainee)](trainee.frozen, batch)


def copy_state(state):
  """A fresh copy (train_step donates its input state)."""
  return jax.tree.map(jnp.copy, state)
