"""§3.4 temporal diffusion: DDIM over a long video by overlapping training-length windows, as ONE jit program.

At every timestep each window (L frames, stride s, see `windows.py`) gets its guided model output, the outputs
are averaged where windows overlap (weighted scatter-add divided by the summed weights), and one DDIM update is
applied to the whole latent. With DDIM eta = 0 averaging the outputs equals averaging each window's x_{t-1}.

Program shape (compile time is independent of the number of steps and of the number of windows):
  lax.scan over timesteps
    gather: z (B, N, ...) -> (chunks, chunk, B, L, ...) with static indices (cond frames gathered once)
    lax.map over chunks: the chunk's windows (x B videos, x 2 guidance branches) folded into the batch of ONE
      denoiser call -- what vmapping the denoiser over windows amounts to, without relying on batching rules
    scatter-add of weighted outputs into (B, N, ...), divide by the static per-frame weight sums
    ddim_step on the whole latent
Windows (or videos) can be sharded over a mesh axis; the result equals the unsharded one. When L >= N there is a
single window and the sampler is exactly plain DDIM over the clip.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tgvac_jax.diffusion import ddim as ddim_lib
from tgvac_jax.diffusion import guidance as guidance_lib
from tgvac_jax.diffusion import schedule as sch
from tgvac_jax.diffusion import windows as win
from tgvac_jax.diffusion.guidance import Cond, Denoiser

SHARD_MODES = (None, 'windows', 'videos')


@dataclasses.dataclass(frozen=True)
class TemporalSamplerConfig:
  """Paper defaults (§4.1): L = 14, stride 4, DDIM 30 steps, guidance 7.5, flat averaging.

  chunk_size: windows per denoiser call (per video; x2 with guidance) -- the memory knob.
  shard: None, 'windows' (each device denoises its share of a chunk; chunk_size must be a multiple of the mesh
    axis size) or 'videos' (the batch is split; B must be a multiple). mesh_axis names the mesh axis (or axes).
  """
  window_length: int = 14
  stride: int = 4
  weighting: str = 'flat'
  chunk_size: int = 1
  guidance_scale: float = 7.5
  guidance_mode: str = 'full'
  schedule: sch.ScheduleConfig = sch.ScheduleConfig()
  ddim: ddim_lib.DDIMConfig = ddim_lib.DDIMConfig()
  shard: str | None = None
  mesh_axis: str | tuple[str, ...] = 'data'

  def __post_init__(self):
    win.validate(self.window_length, self.stride)
    win.window_weights(1, self.weighting)
    guidance_lib.validate(self.guidance_scale, self.guidance_mode)
    if self.chunk_size < 1:
      raise ValueError(f'chunk_size must be >= 1, got {self.chunk_size}')
    if self.shard not in SHARD_MODES:
      raise ValueError(f'shard {self.shard!r} is not one of {SHARD_MODES}')
    ddim_lib.timesteps(self.schedule, self.ddim)  # raises if more inference than training steps


class _Plan(NamedTuple):
  """Static layout of one video's windows (numpy, fixed at trace time)."""
  num_windows: int
  chunk: int
  num_chunks: int
  idx: np.ndarray       # (num_chunks * chunk, L) frame indices; padding windows repeat window 0
  weight: np.ndarray    # (num_chunks * chunk, L); zero for padding windows
  coverage: np.ndarray  # (N,) summed weights


def _axis_size(mesh: Mesh | None, axis) -> int:
  if mesh is None:
    return 1
  axes = (axis,) if isinstance(axis, str) else tuple(axis)
  return math.prod(mesh.shape[a] for a in axes)


def _plan(num_frames: int, cfg: TemporalSamplerConfig, shards: int) -> _Plan:
  ws = win.window_schedule(num_frames, cfg.window_length, cfg.stride)
  w = ws.num_windows
  if cfg.shard == 'windows':
    if cfg.chunk_size % shards:
      raise ValueError(f'shard="windows" needs chunk_size ({cfg.chunk_size}) to be a multiple of the mesh axis '
                       f'size ({shards})')
    chunk = min(cfg.chunk_size, -(-w // shards) * shards)
  else:
    chunk = min(cfg.chunk_size, w)
  n = -(-w // chunk)
  pad = n * chunk - w
  idx = np.concatenate([ws.indices(), np.repeat(ws.indices()[:1], pad, 0)])
  weight = np.concatenate([ws.weights(cfg.weighting), np.zeros((pad, ws.length), np.float32)])
  return _Plan(w, chunk, n, idx, weight, ws.coverage(cfg.weighting))


def _constrain(x: jax.Array, mesh: Mesh | None, spec: P) -> jax.Array:
  return x if mesh is None else jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _gather(x: jax.Array, plan: _Plan) -> jax.Array:
  """(B, N, ...) -> (num_chunks, chunk, B, L, ...)."""
  b, rest = x.shape[0], x.shape[2:]
  g = jnp.take(x, jnp.asarray(plan.idx.reshape(-1)), axis=1)
  g = g.reshape((b, plan.num_chunks, plan.chunk, plan.idx.shape[1]) + rest)
  return jnp.moveaxis(g, 0, 2)


def _fold(x: jax.Array, videos_major: bool) -> jax.Array:
  """(chunk, B, ...) -> (chunk*B, ...) in the order that keeps the sharded axis contiguous."""
  if videos_major:
    x = jnp.swapaxes(x, 0, 1)
  return x.reshape((-1,) + x.shape[2:])


def _unfold(x: jax.Array, chunk: int, videos_major: bool) -> jax.Array:
  if videos_major:
    return jnp.swapaxes(x.reshape((-1, chunk) + x.shape[1:]), 0, 1)
  return x.reshape((chunk, -1) + x.shape[1:])


def _windowed(eps_fn: Denoiser, params: Any, z: jax.Array, t: jax.Array, frames_g: Any, context: Any,
              plan: _Plan, cfg: TemporalSamplerConfig, uncond_context: Any, mesh: Mesh | None) -> jax.Array:
  """Averaged guided model output for the whole latent (B, N, ...), float32 or wider."""
  guide = functools.partial(guidance_lib.guided_output, eps_fn, params, scale=cfg.guidance_scale,
                            mode=cfg.guidance_mode)
  if plan.num_windows == 1:  # L >= N: the clip itself, no averaging -> exactly plain DDIM
    return guide(z, t, Cond(frames_g, context), uncond_context=uncond_context)

  videos_major = cfg.shard == 'videos'
  spec = None if cfg.shard is None else P(cfg.mesh_axis)
  b = z.shape[0]
  fold_ctx = lambda c: _fold(jnp.broadcast_to(c, (plan.chunk,) + c.shape), videos_major)
  ctx = jax.tree.map(fold_ctx, context)
  if uncond_context is not None:  # per-video (B, ...) or shared (1, ...) -> folded like the context
    uncond_context = jax.tree.map(lambda u, c: fold_ctx(jnp.broadcast_to(jnp.asarray(u, c.dtype), c.shape)),
                                  uncond_context, context)
  guide = functools.partial(guide, uncond_context=uncond_context)

  def one_chunk(xs):
    zc, fc = xs
    zc = _fold(zc, videos_major)
    fc = jax.tree.map(lambda f: _fold(f, videos_major), fc)
    if spec is not None:
      zc = _constrain(zc, mesh, spec)
    out = guide(zc, t, Cond(fc, ctx))
    if spec is not None:
      out = _constrain(out, mesh, spec)
    return _unfold(out, plan.chunk, videos_major)

  out = jax.lax.map(one_chunk, (_gather(z, plan), frames_g))       # (num_chunks, chunk, B, L, ...)
  dt = jnp.promote_types(out.dtype, jnp.float32)
  rest = out.shape[4:]
  out = jnp.moveaxis(out.reshape((-1, b, plan.idx.shape[1]) + rest), 1, 0)   # (B, W_pad, L, ...)
  out = out.reshape((b, -1) + rest).astype(dt)
  w = jnp.asarray(plan.weight.reshape(-1), dt).reshape((1, -1) + (1,) * len(rest))
  acc = jnp.zeros((b, z.shape[1]) + rest, dt).at[:, jnp.asarray(plan.idx.reshape(-1))].add(out * w)
  return acc / jnp.asarray(plan.coverage, dt).reshape((1, -1) + (1,) * len(rest))


def _check_video(z: jax.Array) -> None:
  if z.ndim < 2 or z.shape[1] < 1:
    raise ValueError(f'expected a latent video (B, N >= 1, ...), got shape {z.shape}: the video must have at '
                     'least 1 frame')


def _gather_frames(cond: Cond, plan: _Plan) -> Any:
  if plan.num_windows == 1:
    return cond.frames
  return jax.tree.map(lambda f: _gather(f, plan), cond.frames)


def windowed_model_output(eps_fn: Denoiser, params: Any, z: jax.Array, t: jax.Array, cond: Cond,
                          config: TemporalSamplerConfig, *, uncond_context: Any = None,
                          mesh: Mesh | None = None) -> jax.Array:
  """One step's window-averaged, guided model output for latent videos z (B, N, ...) at timestep t."""
  _check_video(z)
  plan = _plan(z.shape[1], config, _axis_size(mesh, config.mesh_axis))
  return _windowed(eps_fn, params, z, t, _gather_frames(cond, plan), cond.context, plan, config, uncond_context,
                   mesh)


def temporal_sample(eps_fn: Denoiser, params: Any, z_T: jax.Array, cond: Cond, key: jax.Array | None,
                    config: TemporalSamplerConfig, *, uncond_context: Any = None,
                    mesh: Mesh | None = None, on_step: Callable[[jax.Array], None] | None = None) -> jax.Array:
  """Sample latent videos from noise z_T (B, N, h, w, c); pure and traceable (see `make_temporal_sampler`).

  eps_fn(params, z, t, cond) is the denoiser on windows: z (b, L, h, w, c), t (b,) int32, cond a `Cond` whose
  frames leaves are (b, L, ...) and context leaves (b, ...); it returns the model output (per
  `config.schedule.prediction_type`) shaped like z. uncond_context: the empty-prompt context for guidance
  (leading dim 1 or B). key: PRNG key, needed only for eta > 0; the result is a function of the key alone.
  on_step: called on the host with the finished step's index (0-based) after every DDIM step, for progress bars
  (a `jax.debug.callback` that reads the step counter only, so the samples are the same with and without it).
  """
  _check_video(z_T)
  cfg = config
  if cfg.ddim.eta > 0 and key is None:
    raise ValueError('eta > 0 needs a PRNG key')
  shards = _axis_size(mesh, cfg.mesh_axis)
  if cfg.shard == 'videos' and z_T.shape[0] % shards:
    raise ValueError(f'shard="videos" needs the batch ({z_T.shape[0]}) to be a multiple of the mesh axis size '
                     f'({shards})')
  plan = _plan(z_T.shape[1], cfg, shards)
  frames_g = _gather_frames(cond, plan)
  ts = jnp.asarray(ddim_lib.timesteps(cfg.schedule, cfg.ddim), jnp.int32)
  zspec = P(cfg.mesh_axis) if cfg.shard == 'videos' else P()

  def body(z, xs):
    i, t = xs
    out = _windowed(eps_fn, params, z, t, frames_g, cond.context, plan, cfg, uncond_context, mesh)
    noise = ddim_lib.step_noise(key, i, z.shape, z.dtype) if cfg.ddim.eta > 0 else None
    z = ddim_lib.ddim_step(cfg.schedule, cfg.ddim, out, t, z, noise)[0]
    if on_step is not None:
      jax.debug.callback(on_step, i)
    return (_constrain(z, mesh, zspec) if cfg.shard else z), None

  z0, _ = jax.lax.scan(body, z_T, (jnp.arange(ts.shape[0]), ts))
  return z0


def make_temporal_sampler(eps_fn: Denoiser, config: TemporalSamplerConfig, *, mesh: Mesh | None = None):
  """jit-compiled `sample(params, z_T, cond, key, uncond_context=None) -> z_0`. Create it once per denoiser and
  config (a new eps_fn object means a new compilation); shapes are the only other compile key."""

  @jax.jit
  def sample(params, z_T, cond, key, uncond_context=None):
    return temporal_sample(eps_fn, params, z_T, cond, key, config, uncond_context=uncond_context, mesh=mesh)

  return sample
