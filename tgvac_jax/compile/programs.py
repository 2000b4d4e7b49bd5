"""The programs `run.py` runs, built on abstract weights for any mesh and lowered ahead of time.

Nothing here is a copy: the train step is `train/state.step_program` on `train/stages.build_models(...,
abstract=True)` with the shardings of `train/sharding.py`; the latent encoder is `train/cache_latents`' program;
the sampler is `infer/complete`'s jitted `_complete`. Only the inputs are made up: ShapeDtypeStructs of the
shapes the data pipeline and the inference job feed, sharded as they shard them. Tracing happens inside
`target.compiling_for(mesh)`, so the models take the paths of the mesh's devices (no CPU kernel in a TPU program).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tgvac_jax import target, text
from tgvac_jax.infer.complete import COMPONENTS, CompletionConfig, _complete  # pylint: disable=protected-access
from tgvac_jax.models import checkpoint
from tgvac_jax.models.clip import CLIPTextConfig
from tgvac_jax.models.motion import MotionConfig
from tgvac_jax.models.unet import UNetConfig
from tgvac_jax.models.vae import AutoencoderKLConfig
from tgvac_jax.train import stages
from tgvac_jax.train.cache_latents import encode_program
from tgvac_jax.train.sharding import AXES, batch_rows_split, batch_sharding, data_parallel_size
from tgvac_jax.train.state import check_config, micro_batch_size, step_program

LATENT_FACTOR = 8  # SD's VAE: 256 px -> 32x32 latents


@dataclasses.dataclass
class Program:
  """One jitted function and the abstract arguments it is lowered with."""
  name: str
  jitted: Any
  args: tuple
  kwargs: dict = dataclasses.field(default_factory=dict)
  examples: int = 0          # images or clips per call (for the report)

  def trace(self, mesh: Mesh):
    """The traced program (its jaxpr for the FLOP count; `.lower()` for XLA)."""
    with target.compiling_for(mesh):
      return self.jitted.trace(*self.args, **self.kwargs)


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def sd15_configs(config) -> dict[str, dict]:
  """The components' config dicts of a TGVAC SD-1.5 pipeline at `config.data.size` (what
  `convert.from_diffusers --in-channels 12` writes): the weights the paper-scale configs start from, when no
  checkpoint folder is at hand."""
  unet = UNetConfig.sd15(in_channels=12, out_channels=4, sample_size=config.data.size // LATENT_FACTOR)
  return {'unet': {'_class': 'UNet2DConditionModel', **unet.to_dict(ours=True)},
          'vae': {'_class': 'AutoencoderKL', **AutoencoderKLConfig.sd15().to_dict(ours=True)},
          'text_encoder': {'_class': 'CLIPTextModel', **CLIPTextConfig.clip_l().to_dict(ours=True)}}


def _models(config, mesh: Mesh) -> tuple[dict[str, nnx.Module], np.ndarray]:
  """The stage's abstract models and the empty caption's ids: from `init.checkpoint` when it is a folder, tiny
  random models for `init.from_scratch` (their character tokenizer written to a temporary folder, not the
  workdir), SD-1.5's shapes otherwise."""
  stage = stages.get_stage(config)
  if config.init.from_scratch:
    with tempfile.TemporaryDirectory() as tmp:
      vocab = text.write_char_tokenizer(tmp)
      empty = text.Tokenize(tmp)([''])
    return stages.build_models(config, mesh, {}, vocab, abstract=True), empty
  if config.init.checkpoint and os.path.isdir(config.init.checkpoint):
    configs = stages.check_init(config)
    empty = text.Tokenize(os.path.join(config.init.checkpoint, 'tokenizer'))([''])
  else:
    configs = sd15_configs(config)
    empty = np.asarray([[49406] + [49407] * (text.MAX_LENGTH - 1)], np.int32)  # CLIP's <|startoftext|> <|endoftext|>
  return stages.build_models(config, mesh, {k: configs[k] for k in stage.components}, 0, abstract=True), empty


def pixel_batch(config, batch: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """What the trainer's loader feeds (`train/inputs.make_dataset`, output='uint8'): frames, or clips for video
  stages, split over the batch axes."""
  stage = stages.get_stage(config)
  s = config.data.size
  lead = (batch, config.data.clip_len) if stage.video else (batch,)
  sharding = batch_sharding(mesh)
  out = {'occluded': ((*lead, s, s, 3), jnp.uint8), 'visible_mask': ((*lead, s, s), jnp.uint8),
         'amodal': ((*lead, s, s, 3), jnp.uint8)}
  if stage.name != 'vae':
    out['input_ids'] = ((batch, text.MAX_LENGTH), jnp.int32)
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in out.items()}


def latent_batch(config, batch: int, mesh: Mesh, unet_config, width: int) -> dict[str, jax.ShapeDtypeStruct]:
  """What the cached-latent reader feeds (`train/cache_latents.latent_dataset`)."""
  stage = stages.get_stage(config)
  h = unet_config.sample_size
  lat = unet_config.out_channels
  lead = (batch, config.data.clip_len) if stage.video else (batch,)
  sharding = batch_sharding(mesh)
  frame = jax.ShapeDtypeStruct((*lead, h, h, lat), jnp.float32, sharding=sharding)
  return {'target_mean': frame, 'target_std': frame, 'occluded': frame, 'mask': frame,
          'context': jax.ShapeDtypeStruct((batch, text.MAX_LENGTH, width), jnp.float32, sharding=sharding),
          'input_ids': jax.ShapeDtypeStruct((batch, text.MAX_LENGTH), jnp.int32, sharding=sharding)}


def check_batch(config, mesh: Mesh) -> None:
  """The trainer's own checks (`state.check_config`), with the valid batch sizes named on failure."""
  dp = data_parallel_size(mesh)
  micro = micro_batch_size(config)
  if micro % dp:
    accum = int(config.optim.grad_accum)
    lower, upper = (micro // dp) * dp * accum, -(-micro // dp) * dp * accum
    sizes = {a: int(config.mesh[a]) for a in AXES}
    # below the devices, a batch that divides them is valid too ('tensor' takes the rest)
    lower = max([lower] + [b * accum for b in range(1, micro) if batch_rows_split(sizes, mesh.size, b)])
    raise ValueError(f'batch size {micro} (batch_size {config.batch_size} / optim.grad_accum {accum}) is not '
                     f'divisible by the data-parallel size {dp} (mesh data x fsdp = {mesh.shape["data"]} x '
                     f'{mesh.shape["fsdp"]}); closest valid batch_size: '
                     + ', '.join(str(b) for b in dict.fromkeys((lower, upper)) if b > 0))
  check_config(config, mesh)


def train_step(config, mesh: Mesh) -> Program:
  """The trainer's jitted step (state donated), as `state.setup` builds it, on abstract weights."""
  check_batch(config, mesh)
  models, empty = _models(config, mesh)
  p = step_program(config, mesh, models, empty)
  state = _abstract(jax.eval_shape(p.init, p.params), p.state_shardings)
  frozen = _abstract(p.frozen, p.frozen_shardings)
  batch = micro_batch_size(config)
  if config.data.cached_latents:
    unet = models['unet'].config
    data = latent_batch(config, batch, mesh, unet, unet.cross_attention_dim)
  else:
    data = pixel_batch(config, batch, mesh)
  return Program('train_step', p.jitted, (state, frozen, data), examples=batch)


def encode(config, mesh: Mesh) -> Program:
  """`train/cache_latents`' program (VAE + text encoder, replicated) on one training batch of pixels, split over
  every device as the cache job splits its batches (padded to a multiple of the devices, as `Encoder` pads)."""
  check_batch(config, mesh)
  models, _ = _models(config, mesh)
  (vae_def, vae), (te_def, te) = nnx.split(models['vae']), nnx.split(models['text_encoder'])
  flat = Mesh(np.asarray(mesh.devices).reshape(-1), ('data',))
  weights = _abstract((vae, te), jax.tree.map(lambda _: NamedSharding(flat, P()), (vae, te)))
  batch = -(-micro_batch_size(config) // flat.size) * flat.size
  data = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(flat, P('data')))
          for k, v in pixel_batch(config, batch, mesh).items()}
  return Program('encode', encode_program(vae_def, te_def), (weights, data), examples=batch)


def sampler_models(checkpoint_dir: str, resolution: int, dtype) -> tuple[tuple, tuple]:
  """(graph definitions, abstract weights) of the sampler's UNet, VAE and text encoder: the checkpoint's
  architecture when `checkpoint_dir` is a folder, else SD-1.5 with AnimateDiff-v2-shaped motion modules (what
  the motion stage trains) at `resolution`."""
  if checkpoint_dir and os.path.isdir(checkpoint_dir):
    configs = {c: checkpoint.read_config(os.path.join(checkpoint_dir, c)) for c in COMPONENTS}
  else:
    cfg = ml_collections.ConfigDict({'data': {'size': resolution}})
    configs = sd15_configs(cfg)
    configs['unet']['motion'] = MotionConfig().to_dict()
  graphs, params = zip(*(nnx.split(checkpoint.build(configs[c]['_class'], configs[c], dtype=dtype, abstract=True)[0])
                         for c in COMPONENTS))
  return tuple(graphs), tuple(params)


def sampler(completion: CompletionConfig, models: tuple[tuple, tuple], mesh: Mesh, *, frames: int,
            resolution: int) -> Program:
  """`infer/complete`'s program on `sampler_models` (graphs, abstract weights): one `frames`-frame video per
  device (shard 'videos', as the inference job splits a batch over its devices), weights replicated."""
  graphs, params = models
  completion = dataclasses.replace(completion, sampler=dataclasses.replace(completion.sampler, shard='videos',
                                                                           mesh_axis='data'))
  replicated = NamedSharding(mesh, P())
  videos = NamedSharding(mesh, P('data'))
  b, s = mesh.size, resolution
  key = jax.eval_shape(lambda: jax.random.key(0))
  args = (_abstract(params, jax.tree.map(lambda _: replicated, params)),
          jax.ShapeDtypeStruct((b, frames, s, s, 3), jnp.uint8, sharding=videos),
          jax.ShapeDtypeStruct((b, frames, s, s), jnp.bool_, sharding=videos),
          jax.ShapeDtypeStruct((b, text.MAX_LENGTH), jnp.int32, sharding=videos),
          jax.ShapeDtypeStruct((1, text.MAX_LENGTH), jnp.int32, sharding=replicated),
          jax.ShapeDtypeStruct((b,), key.dtype, sharding=videos))
  return Program('sampler', _complete, args, {'graphs': graphs, 'config': completion, 'mesh': mesh}, examples=b)
