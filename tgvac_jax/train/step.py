"""One optimizer step as a pure function: loss, gradients of the trainable weights, AdamW, EMA, skip-if-not-finite.

Diffusion stages (eqs. 2 and 3): z_0 = a posterior sample of the amodal target's latent; z_t = q(z_t | z_0, t);
the UNet sees z_t ⊕ E(occluded) ⊕ E(visible mask) and the caption, and regresses the noise (or v / x0). For
classifier-free guidance some samples lose the text (empty-caption embedding), the concat (zeros), or both,
exactly what the sampler's unconditional branch feeds (`infer/complete.py`). The VAE stage: L1/MSE reconstruction
of target and occluded frames + kl_weight * KL(q(z|x) || N(0, I)).

The step takes trainable params, frozen weights and a global batch (pixels, or cached latents from
`latents.encode_batch`), and is jitted by `state.Trainee` with shardings and donation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tgvac_jax import target
from tgvac_jax.diffusion import losses, schedule as sch
from tgvac_jax.train import latents as lat
from tgvac_jax.train.optimizer import update_weights
from tgvac_jax.train.sharding import split_rows

LossFn = Callable[..., tuple[jax.Array, dict]]


def schedule_config(config) -> sch.ScheduleConfig:
  """The noise process of `config.diffusion`: the loss, the validation sampler and the exported scheduler/ use
  this one, so inference samples what was trained."""
  d = config.diffusion
  return sch.ScheduleConfig(num_train_timesteps=d.num_train_timesteps, beta_start=d.beta_start, beta_end=d.beta_end,
                            beta_schedule=d.beta_schedule, prediction_type=d.prediction_type,
                            rescale_betas_zero_snr=bool(d.rescale_betas_zero_snr))


def alphas_cumprod(config) -> np.ndarray:
  return sch.alphas_cumprod(schedule_config(config))


def condition_dropout(key: jax.Array, batch_size: int, dropout) -> tuple[jax.Array, jax.Array]:
  """(drop_text, drop_concat) per sample: text alone with p=dropout.text, concat alone with p=dropout.concat,
  both with p=dropout.both (disjoint events of one uniform draw)."""
  pt, pc, pb = float(dropout.text), float(dropout.concat), float(dropout.both)
  if pt + pc + pb > 1:
    raise ValueError(f'condition dropout probabilities sum to {pt + pc + pb} > 1')
  u = jax.random.uniform(key, (batch_size,))
  both = (u >= pt + pc) & (u < pt + pc + pb)
  return (u < pt) | both, ((u >= pt) & (u < pt + pc)) | both


def _per_sample(flag: jax.Array, like: jax.Array) -> jax.Array:
  return flag.reshape(flag.shape + (1,) * (like.ndim - 1))


def diffusion_loss_fn(config, graphdefs: dict, empty_ids: np.ndarray, mesh=None) -> LossFn:
  """loss(params, frozen, batch, key) -> (loss, aux) for the frame/motion stages; `frozen` = {name: state} with
  the UNet's non-trainable rest under 'unet'. On a `mesh` with a 'tensor' axis, the images the VAE encodes and the
  UNet's input have their rows split over it (`sharding.split_rows`)."""
  abar = jnp.asarray(alphas_cumprod(config), jnp.float32)
  d = config.diffusion
  snr_gamma = float(d.snr_gamma) or None
  empty_ids = np.asarray(empty_ids, np.int32)

  def loss(params, frozen, batch, key):
    text_encoder = nnx.merge(graphdefs['text_encoder'], frozen['text_encoder'])
    if lat.is_latent_batch(batch):
      z = batch
    else:
      x = lat.model_range(batch)
      x = {k: v if k == 'input_ids' else split_rows(v, mesh) for k, v in x.items()}
      z = lat.encode_batch(nnx.merge(graphdefs['vae'], frozen['vae']), text_encoder, x)
    z = jax.tree.map(jax.lax.stop_gradient, z)
    k_target, k_noise, k_drop = jax.random.split(key, 3)
    x0 = lat.sample_target(z, k_target)
    z_t, noise, t = losses.noisy_input(abar, x0, k_noise)
    drop_text, drop_concat = condition_dropout(k_drop, x0.shape[0], config.dropout)
    empty = text_encoder(jnp.asarray(empty_ids)).last_hidden_state.astype(jnp.float32)
    context = jnp.where(_per_sample(drop_text, z['context']), empty, z['context'])
    cond = jnp.concatenate([z['occluded'], z['mask']], axis=-1)
    cond = jnp.where(_per_sample(drop_concat, cond), 0.0, cond)
    unet = nnx.merge(graphdefs['unet'], params, frozen['unet'])
    out = unet(split_rows(jnp.concatenate([z_t, cond], axis=-1), mesh), t, context)
    value = losses.diffusion_loss(out, x0, noise, t, abar, prediction_type=d.prediction_type, snr_gamma=snr_gamma)
    return value, {}

  return _split_over(loss, mesh)


def vae_loss_fn(config, graphdefs: dict, mesh=None) -> LossFn:
  """loss(params, frozen, batch, key) -> (loss, {'reconstruction', 'kl'}) for the autoencoder stage."""
  kind, kl_weight = config.vae_loss.reconstruction, float(config.vae_loss.kl_weight)
  if kind not in ('l1', 'mse'):
    raise ValueError(f"vae_loss.reconstruction must be 'l1' or 'mse', got {kind!r}")

  def loss(params, frozen, batch, key):
    vae = nnx.merge(graphdefs['vae'], params, frozen['vae'])
    x = lat.model_range(batch)
    images = jnp.concatenate([x['amodal'], x['occluded']], axis=0)
    images = split_rows(images.reshape((-1,) + images.shape[-3:]).astype(jnp.float32), mesh)
    posterior = vae.encode(images)
    err = vae.decode(posterior.sample(key)).astype(jnp.float32) - images
    rec = jnp.mean(jnp.abs(err)) if kind == 'l1' else jnp.mean(jnp.square(err))
    kl = jnp.mean(posterior.kl())
    return rec + kl_weight * kl, {'reconstruction': rec, 'kl': kl}

  return _split_over(loss, mesh)


def _split_over(loss: LossFn, mesh) -> LossFn:
  """`loss` traced knowing its mesh (`target.split_over`), so that the trace-time choices that need it (the Pallas
  TPU attention, one kernel per device under `shard_map`) are the same on a pod as in the compile job."""
  def traced(*args):
    with target.split_over(mesh):
      return loss(*args)
  return traced


def only_if(ok: jax.Array, fn: Callable, old: tuple, conditional: bool | None = None) -> tuple:
  """fn(*old) where `ok`, else `old` unchanged. `conditional` (default: on CPU) computes it as a conditional:
  as a select, XLA:CPU writes the new weights and Adam moments and reads them back to choose (bench/optimizer_step.py:
  the medium frame stage's update on a 2-core AMD EPYC, 199 ms as a select, 134 ms as a conditional). Elsewhere
  the select: a GPU conditional may wait on the host for its predicate (not measured there)."""
  if conditional is None:
    conditional = target.on_cpu()
  if conditional:
    return jax.lax.cond(ok, lambda args: fn(*args), lambda args: args, old)
  return jax.tree.map(lambda new, prev: jnp.where(ok, new, prev), fn(*old), old)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule, ema_decay: float,
                    grad_accum: int = 1):
  """step(state, frozen, batch) -> (state, metrics). A step whose loss or gradient norm is not finite changes no
  weight, optimizer or EMA value; it still advances `step` and the RNG and adds one to `skipped`."""
  update = update_weights(tx, ema_decay)

  def step(state, frozen, batch):
    rng, key = jax.random.split(jax.random.wrap_key_data(state.rng))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, frozen, batch, key)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state, ema = only_if(ok, lambda p, o, e: update(p, o, e, grads, grad_norm),
                                     (state.params, state.opt_state, state.ema))
    skipped = state.skipped + (~ok).astype(jnp.int32)
    lr = schedule((state.step - state.skipped) // grad_accum)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
                        rng=jax.random.key_data(rng), skipped=skipped)
    metrics = {'loss': loss, 'grad_norm': grad_norm, 'lr': jnp.asarray(lr, jnp.float32), 'skipped': skipped,
               **aux}
    return new, metrics

  return step
