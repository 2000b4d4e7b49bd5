"""The train state and `setup`: everything a training run holds on its devices, created already sharded.

NNX split by variable type: the stage's trainable filter (`stages.STAGES`) picks the weights that get gradients,
an AdamW state and an fp32 EMA; the rest (VAE, text encoder, the spatial UNet in the motion stage) is `frozen`,
sharded by the same rules and passed to the step as an argument (never baked into the program as constants).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.experimental import multihost_utils

from tgvac_jax import text
from tgvac_jax.train import stages
from tgvac_jax.train.optimizer import make_optimizer
from tgvac_jax.train.sharding import barrier, batch_sharding, data_parallel_size, param_shardings, replicated
from tgvac_jax.train.step import diffusion_loss_fn, make_train_step, vae_loss_fn

COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')


class TrainState(struct.PyTreeNode):
  """What Orbax saves besides the data iterator and the config."""
  step: jax.Array        # int32 scalar: train_step calls so far (skipped ones included)
  params: nnx.State      # trainable weights, float32 master copy
  opt_state: Any         # optax state (AdamW [+ MultiSteps])
  ema: nnx.State         # EMA of params, float32
  rng: jax.Array         # uint32 key data (jax.random.key_data), so Orbax can save it
  skipped: jax.Array     # int32: non-finite steps skipped so far


def _to_host(x):
  """A (possibly multi-host) array -> numpy on every process; a collective when not fully addressable."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


@dataclasses.dataclass
class Trainee:
  """A stage ready to train on `mesh`. `frozen` is {component: nnx.State} (under the trained component: its
  non-trainable rest, empty in the frame stage)."""
  config: Any
  mesh: jax.sharding.Mesh
  stage: stages.Stage
  state: TrainState
  frozen: dict[str, nnx.State]
  state_shardings: Any
  graphdefs: dict[str, nnx.GraphDef]
  tokenizer_dir: str
  step_fn: Any                       # the pure step(state, frozen, batch) -> (state, metrics), unjitted
  flops_per_step: float | None = None
  _jit: Any = None
  _compiled: dict = dataclasses.field(default_factory=dict)
  _measure: Any = None

  def abstract_state(self) -> Any:
    """ShapeDtypeStructs with this mesh's shardings: the Orbax restore target."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.state,
                        self.state_shardings)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step on a global batch (`sharding.global_batch`); `state` is donated. Compiled on first use per batch
    shape; `flops_per_step` (XLA's count for the whole step, all devices) is set then."""
    batch = jax.device_put(batch, batch_sharding(self.mesh))  # no-op for `global_batch` output
    key = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch.items()))
    if key not in self._compiled:
      compiled = self._jit.lower(state, self.frozen, batch).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      if cost and cost.get('flops'):
        self.flops_per_step = float(cost['flops']) * self.mesh.size
      self._compiled[key] = compiled
      barrier(f'train_step compiled {len(self._compiled)}')
    return self._compiled[key](state, self.frozen, batch)

  def latent_scale(self, state: TrainState, frames: np.ndarray) -> float:
    """The vae stage's scaling_factor: 1 / std of the EMA VAE's posterior means of `frames` (uint8 (N, H, W, 3), N
    divisible by the data-parallel size), so diffusion latents have unit scale (as SD's 0.18215 was measured).
    One jit, compiled once; the frames split over the batch axes, the weights as in training."""
    if self._measure is None:
      graphdef = self.graphdefs['vae']

      def measure(ema, frozen, x):
        z = nnx.merge(graphdef, ema, frozen).encode(x.astype(jnp.float32) * (2 / 255) - 1).mean
        return 1 / jnp.std(z.astype(jnp.float32))
      self._measure = jax.jit(measure, out_shardings=replicated(self.mesh))
    x = jax.make_array_from_callback(frames.shape, batch_sharding(self.mesh), lambda idx: frames[idx])
    return float(self._measure(state.ema, self.frozen['vae'], x).addressable_data(0))

  def export_modules(self, state: TrainState, ema: bool = True) -> dict[str, nnx.Module]:
    """Full modules with the EMA (or current) trainable weights, as numpy on every process (a collective on
    multi-host meshes: call it from all processes). What `checkpoint.save_pipeline` writes."""
    weights = state.ema if ema else state.params
    out = {}
    for name, graphdef in self.graphdefs.items():
      parts = (weights, self.frozen[name]) if name == self.stage.trained else (self.frozen[name],)
      out[name] = nnx.merge(graphdef, *(jax.tree.map(_to_host, p) for p in parts))
    return out


def micro_batch_size(config) -> int:
  """Examples per train_step call (the global batch is per optimizer step, split over grad_accum calls)."""
  accum = int(config.optim.grad_accum)
  if accum < 1 or config.batch_size % accum:
    raise ValueError(f'batch_size {config.batch_size} is not divisible by optim.grad_accum {accum}')
  return config.batch_size // accum


def check_config(config, mesh) -> None:
  """Bad settings, caught before anything is built or compiled."""
  stages.get_stage(config)
  dp = data_parallel_size(mesh)
  micro = micro_batch_size(config)
  if micro % dp:
    raise ValueError(f'batch size {micro} (batch_size {config.batch_size} / grad_accum {config.optim.grad_accum}) '
                     f'is not divisible by the data-parallel size {dp} (mesh data x fsdp = '
                     f'{mesh.shape["data"]} x {mesh.shape["fsdp"]})')
  if micro % jax.process_count():
    raise ValueError(f'batch size {micro} is not divisible by the {jax.process_count()} processes')
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype must be one of {COMPUTE_DTYPES}, got {config.compute_dtype!r}')
  if config.remat not in ('none', 'full', 'motion'):
    raise ValueError(f"remat must be 'none', 'full' or 'motion', got {config.remat!r}")
  p = config.dropout
  if min(p.text, p.concat, p.both) < 0 or p.text + p.concat + p.both > 1:
    raise ValueError(f'dropout probabilities text={p.text}, concat={p.concat}, both={p.both} must be >= 0 and sum '
                     'to at most 1')
  if config.vae_loss.reconstruction not in ('l1', 'mse'):
    raise ValueError(f"vae_loss.reconstruction must be 'l1' or 'mse', got {config.vae_loss.reconstruction!r}")
  if config.diffusion.rescale_betas_zero_snr and config.diffusion.prediction_type != 'v_prediction':
    raise ValueError('diffusion.rescale_betas_zero_snr needs diffusion.prediction_type=v_prediction (at zero '
                     f'terminal SNR the noise says nothing about the image), got {config.diffusion.prediction_type!r}')
  if not 0 <= config.ema_decay < 1:
    raise ValueError(f'ema_decay must be in [0, 1), got {config.ema_decay}')
  if config.optim.schedule not in ('constant', 'cosine'):
    raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {config.optim.schedule!r}")


def setup(config, mesh: jax.sharding.Mesh, motion_init=None) -> Trainee:
  """Checks everything, builds the stage's models sharded on `mesh` and the initial TrainState.

  `motion_init(unet)`: fills the motion weights of the motion stage's UNet in place (e.g. from AnimateDiff via
  `convert.animatediff.load_motion`; the library does not import convert/, so the job entry passes it). Needed
  when `config.init.motion_adapter` is set."""
  stage = stages.get_stage(config)
  check_config(config, mesh)
  configs = stages.check_init(config)
  if config.init.motion_adapter and (stage.name != 'motion' or motion_init is None):
    raise ValueError('init.motion_adapter is set: it needs stage=motion and the trainer job to pass a motion loader '
                     '(`setup(..., motion_init=...)`)')
  tok_dir, vocab = stages.ensure_tokenizer(config) if stage.name != 'vae' else ('', 0)

  models = stages.build_models(config, mesh, configs, vocab, motion_init)
  empty_ids = text.Tokenize(tok_dir)(['']) if stage.name != 'vae' else None
  p = step_program(config, mesh, models, empty_ids)
  del models
  state = jax.jit(p.init, out_shardings=p.state_shardings)(p.params)
  return Trainee(config=config, mesh=mesh, stage=stage, state=state, frozen=p.frozen,
                 state_shardings=p.state_shardings, graphdefs=p.graphdefs, tokenizer_dir=tok_dir, step_fn=p.step_fn,
                 _jit=p.jitted)


@dataclasses.dataclass
class StepProgram:
  """The stage's models split into trained params and frozen rest, the pure step, the TrainState `init` and the
  step jitted with its shardings: what `setup` runs, and what `tgvac_jax/compile/` compiles for other devices on
  abstract models (then `params` and `frozen` hold ShapeDtypeStructs)."""
  graphdefs: dict[str, nnx.GraphDef]
  params: nnx.State
  frozen: dict[str, nnx.State]
  init: Any                          # params -> TrainState
  step_fn: Any                       # step(state, frozen, batch) -> (state, metrics), unjitted
  state_shardings: Any
  frozen_shardings: Any
  jitted: Any


def step_program(config, mesh: jax.sharding.Mesh, models: dict[str, nnx.Module],
                 empty_ids: np.ndarray | None) -> StepProgram:
  """The train step of `stages.build_models`' models (`empty_ids`: the empty caption's token ids, the
  unconditional text of classifier-free guidance; None for the vae stage)."""
  stage = stages.get_stage(config)
  graphdefs, frozen = {}, {}
  params = None
  for name, module in models.items():
    if name == stage.trained:
      graphdefs[name], params, frozen[name] = nnx.split(module, stage.trainable, ...)
    else:
      graphdefs[name], frozen[name] = nnx.split(module)

  tx, schedule = make_optimizer(config.optim, config.num_steps)
  if stage.name == 'vae':
    loss = vae_loss_fn(config, graphdefs, mesh)
  else:
    loss = diffusion_loss_fn(config, graphdefs, empty_ids, mesh)
  step = make_train_step(loss, tx, schedule, float(config.ema_decay), int(config.optim.grad_accum))

  def init(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      ema=jax.tree.map(jnp.copy, p), rng=jax.random.key_data(jax.random.key(config.seed)),
                      skipped=jnp.zeros((), jnp.int32))

  state_shardings = param_shardings(jax.eval_shape(init, params), mesh, config.mesh.min_shard_size)
  # the rule `build_models` placed the frozen weights by (the same for abstract models, which carry no sharding)
  frozen_shardings = param_shardings(frozen, mesh, config.mesh.min_shard_size)
  jitted = jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)
  return StepProgram(graphdefs=graphdefs, params=params, frozen=frozen, init=init, step_fn=step,
                     state_shardings=state_shardings, frozen_shardings=frozen_shardings, jitted=jitted)
