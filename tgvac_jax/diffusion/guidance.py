"""Classifier-free guidance (Ho & Salimans 2022) over TGVAC's two conditions.

The UNet sees z_t ⊕ E(x) ⊕ E(m) (per-frame concat conditioning) and the CLIP text through cross-attention.
`Cond.frames` is the per-frame part (leaves shaped (B, F, ...)), `Cond.context` the per-video part (leaves (B, ...)).
The unconditional branch is empty text + zero concat (`mode='full'`, pix2gestalt's choice) or empty text with the
real concat (`mode='text'`, guiding on the text only). Both branches run in ONE batched denoiser call.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

GUIDANCE_MODES = ('full', 'text')


class Cond(NamedTuple):
  """Denoiser conditioning: `frames` is windowed with the latent, `context` is shared by all frames."""
  frames: Any = None
  context: Any = None


# eps_fn(params, z, t, cond) -> model output shaped like z. z: (b, F, h, w, c); t: (b,) int32; cond: Cond.
Denoiser = Callable[[Any, jax.Array, jax.Array, Cond], jax.Array]


def validate(scale: float, mode: str) -> None:
  if scale < 0:
    raise ValueError(f'guidance_scale must be >= 0, got {scale}')
  if mode not in GUIDANCE_MODES:
    raise ValueError(f'guidance mode {mode!r} is not one of {GUIDANCE_MODES}')


def unconditional(cond: Cond, uncond_context: Any, mode: str = 'full') -> Cond:
  """The null condition: `uncond_context` (e.g. the empty-prompt embedding, leading dim 1 or b) for the text,
  zeros (`full`) or the real frames (`text`) for the concat."""
  b = jax.tree.leaves(cond.frames if cond.frames is not None else cond.context)[0].shape[0]
  ctx = jax.tree.map(lambda u, c: jnp.broadcast_to(jnp.asarray(u, c.dtype), (b,) + c.shape[1:]),
                     uncond_context, cond.context)
  frames = jax.tree.map(jnp.zeros_like, cond.frames) if mode == 'full' else cond.frames
  return Cond(frames, ctx)


def _pair(u, c):
  """Interleave along the batch: (b, ...) x 2 -> (b*2, ...) with [u0, c0, u1, c1, ...]; keeps each batch row's
  two branches adjacent, so a batch sharded on its leading axis stays sharded the same way."""
  return jnp.stack([u, c], axis=1).reshape((-1,) + u.shape[1:])


def guided_output(eps_fn: Denoiser, params: Any, z: jax.Array, t: jax.Array, cond: Cond, *, scale: float,
                  uncond_context: Any = None, mode: str = 'full') -> jax.Array:
  """uncond + scale * (cond - uncond), both branches from one call on a doubled batch.

  scale == 1 (or uncond_context None) runs the conditional branch only; scale == 0 is unconditional; unlike
  diffusers (which ignores guidance for scale <= 1), 0 < scale < 1 interpolates. `scale` is a static float.
  """
  validate(scale, mode)
  t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (z.shape[0],))
  if scale == 1.0 or uncond_context is None:
    return eps_fn(params, z, t, cond)
  un = unconditional(cond, uncond_context, mode)
  both = jax.tree.map(_pair, Cond(un.frames, un.context), Cond(cond.frames, cond.context))
  out = eps_fn(params, _pair(z, z), _pair(t, t), both)
  out = out.reshape((z.shape[0], 2) + out.shape[1:])
  u, c = out[:, 0], out[:, 1]
  return u + scale * (c - u)
