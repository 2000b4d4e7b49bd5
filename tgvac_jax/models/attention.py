"""Multi-head attention core shared by the UNet, the motion modules, the VAE and CLIP.

On GPU/TPU everything goes through `jax.nn.dot_product_attention` (cuDNN flash attention on GPU with
`implementation='cudnn'` where shapes allow, a plain XLA softmax(QK^T)V elsewhere), except long self-attention on
TPU, which takes JAX's Pallas TPU flash attention (`TPU_FLASH_MIN_TOKENS`; under a mesh, one kernel per device under
`shard_map` over the batch axes, since XLA's partitioner does not split a Pallas call). On CPU, attention over long
query sequences (the UNet's and the VAE mid-block's 1024 tokens at a 32x32 latent, 4096 at 64x64; CLIP vision's
257), their cross-attention to 77 text tokens and a motion module's attention over frames where its heads are
narrow, goes through our fused C++ kernel (`cpu_attention.py`: float32, no mask, one device) or else is computed
block by block of queries by XLA, both with a FlashAttention-style backward. Forward+backward on a 2-core Intel Xeon
(`bench/attention.py`), one-shot / blocked / kernel / PyTorch ms: the demo UNet's 256-token self-attention, 8 heads
of 4, 82 / 27 / 11 / 14; SD-1.5's 1024 tokens, 8 heads of 40, 373 / 96 / 81 / 47; a motion module's 14 frames at
1024 pixels, 8 heads of 8, 33 / 31 / 13 / 27. `path()` is the one place that decides.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash
from jax.sharding import PartitionSpec as P

from tgvac_jax import target
from tgvac_jax.models import cpu_attention

# Queries per block on the CPU path (read at trace time), and the fewest queries that take it (shorter ones, such as
# a motion module's frames, are faster in the one-shot form: `bench/attention.py`).
CPU_QUERY_BLOCK = 128
CPU_MIN_QUERIES = 64
# ... except for the kernel, which also beats the one-shot form on short sequences with heads up to this wide (a
# motion module's 14 frames at every pixel, forward+backward on a 2-core Intel Xeon: 8 heads of 8 over 1024 pixels
# 25 -> 13 ms, of 40 (SD-1.5's first level) 84 -> 67 ms; heads of 80 over 256 pixels 24 -> 31 ms).
CPU_KERNEL_SHORT_MAX_WIDTH = 64
# The kernel holds a (batch, head) pair's keys, values and their gradients, 4 x head width x keys floats; beyond
# this many (1 MiB, about a core's L2) it streams them from memory for every tile of queries and loses to the
# blocked path (forward+backward, 1024 tokens, 4 heads of 128: 101 -> 172 ms; SD-1.5's VAE mid-block, one head of
# 512, is far past it).
CPU_KERNEL_MAX_PAIR_FLOATS = 2**18
# The blocked path also splits the batch into up to `CPU_MAX_GROUPS` independent groups whose float32 score blocks
# hold about `CPU_GROUP_BYTES` each: smaller blocks stay nearer the cores, and XLA:CPU runs independent groups on
# different cores at once (a 14-frame UNet's 1024-token self-attention, 8 heads of 8: forward+backward 396 -> 231 ms
# on a 2-core Intel Xeon; SD-1.5's 2 x 1024 tokens, 8 heads of 40: one group, unchanged).
CPU_GROUP_BYTES = 8 * 2**20
CPU_MAX_GROUPS = 4
# TPU: the Pallas flash kernel takes query and key lengths in whole blocks of its default 128, and from this many
# tokens on it is chosen over XLA's attention. Attention fwd+bwd compiled for one v5e chip (bench/tpu_attention.py,
# docs/scale.md): SD-1.5's 1024-token levels save 2.4x temporary memory in the motion stage (28 x 1024, 8 heads of
# 40: 1344 -> 560 MiB) and 4.4x less HBM traffic; at 256 tokens (28 x 256, 8 heads of 80) XLA's attention needs no
# temporaries where the kernel takes 56 MiB, for 1.2x less traffic (568 -> 458 MiB); under 128 it does not compile.
TPU_FLASH_BLOCK = 128
TPU_FLASH_MIN_TOKENS = 512
IMPLEMENTATIONS = (None, 'xla', 'cudnn', 'blocked', 'kernel', 'pallas')


def split_heads(x: jax.Array, heads: int) -> jax.Array:
  """(B, T, H*D) -> (B, T, H, D)."""
  b, t, c = x.shape
  if c % heads:
    raise ValueError(f'attention width {c} is not divisible by {heads} heads')
  return x.reshape(b, t, heads, c // heads)


def merge_heads(x: jax.Array) -> jax.Array:
  """(B, T, H, D) -> (B, T, H*D)."""
  b, t, h, d = x.shape
  return x.reshape(b, t, h * d)


def _pallas_batch_axes(q: jax.Array) -> tuple[str, ...] | None:
  """The mesh axes the Pallas kernel's `shard_map` splits the batch over (() on one device), or None where it
  cannot run as one kernel per device: a mesh that also splits other dimensions (a 'tensor' axis splits the
  tokens), a batch that its axes do not divide, or several devices and no mesh known at trace time."""
  mesh = target.mesh()
  if mesh is None:
    return () if target.device_count() == 1 else None
  split = {a: n for a, n in mesh.shape.items() if n > 1}
  if not set(split) <= set(target.BATCH_AXES) or q.shape[0] % math.prod(split.values()):
    return None
  return tuple(a for a in target.BATCH_AXES if a in split)


def _pallas_takes(q: jax.Array, k: jax.Array, mask, is_causal: bool) -> bool:
  """The Pallas TPU flash kernel's limits as called here: no mask or causality, whole 128-token blocks."""
  return (mask is None and not is_causal and q.shape[1] % TPU_FLASH_BLOCK == 0
          and k.shape[1] % TPU_FLASH_BLOCK == 0)


def path(implementation: str | None, q: jax.Array, k: jax.Array, v: jax.Array, heads: int, *,
         mask: jax.Array | None = None, is_causal: bool = False) -> str | None:
  """Which attention `attend` computes: 'kernel' (`cpu_attention`), 'blocked' (XLA, block by block of queries),
  'pallas' (JAX's Pallas TPU flash attention) or None (`jax.nn.dot_product_attention` with `implementation`).

  On TPU by default: 'pallas' for at least `TPU_FLASH_MIN_TOKENS` queries and keys within its limits, where the
  batch axes of the mesh known at trace time (`target.mesh`) are its only split axes and divide the batch; else
  None. On GPU: None.

  'blocked' and 'kernel' are taken when asked for. By default (None) only on the CPU backend: the kernel for float32
  without mask on a single device (XLA's partitioner cannot split a custom call over a mesh, it would gather its
  operands), for at least `CPU_MIN_QUERIES` queries or heads at most `CPU_KERNEL_SHORT_MAX_WIDTH` wide, and keys x
  head width within `CPU_KERNEL_MAX_PAIR_FLOATS` / 4; otherwise the blocked path for at least `CPU_MIN_QUERIES`
  queries, whatever the keys (cross-attention to 77 text tokens included); shorter ones are as fast in the one-shot
  form."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}')
  if implementation == 'kernel' and (mask is not None or is_causal or not cpu_attention.supported(q, k, v)):
    raise ValueError('the CPU attention kernel takes float32 (B, T, C) projections without mask or causality; '
                     f'got q {q.dtype}{q.shape}, k {k.dtype}{k.shape}, v {v.dtype}{v.shape}, '
                     f'mask={mask is not None}, is_causal={is_causal}')
  if implementation == 'pallas' and not _pallas_takes(q, k, mask, is_causal):
    raise ValueError(f'the Pallas TPU flash attention takes query and key lengths in multiples of {TPU_FLASH_BLOCK} '
                     f'without mask or causality; got q {q.shape}, k {k.shape}, mask={mask is not None}, '
                     f'is_causal={is_causal}')
  if implementation in ('blocked', 'kernel', 'pallas'):
    return implementation
  if implementation is None and target.platform() == 'tpu':
    return ('pallas' if min(q.shape[1], k.shape[1]) >= TPU_FLASH_MIN_TOKENS and _pallas_takes(q, k, mask, is_causal)
            and _pallas_batch_axes(q) is not None else None)
  if implementation is not None or not target.on_cpu():
    return None
  long, width = q.shape[1] >= CPU_MIN_QUERIES, q.shape[2] // heads
  if (mask is None and not is_causal and target.device_count() == 1 and cpu_attention.supported(q, k, v)
      and (long or width <= CPU_KERNEL_SHORT_MAX_WIDTH) and 4 * width * k.shape[1] <= CPU_KERNEL_MAX_PAIR_FLOATS
      and cpu_attention.available()):
    return 'kernel'
  return 'blocked' if long else None


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, *, is_causal: bool = False,
           mask: jax.Array | None = None, implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention on (B, T, H*D) projections; returns (B, Tq, H*D) in q's dtype.

  `mask`: boolean, broadcastable to (B, H, Tq, Tk), True where attention is allowed.
  `implementation`: None (see `path`), 'xla', 'cudnn' (GPU flash attention, bf16/fp16 only), 'blocked' (XLA's
  CPU path, on any backend), 'kernel' (the fused CPU kernel) or 'pallas' (TPU flash attention; elsewhere only in
  Pallas' TPU interpret mode, `jax.experimental.pallas.tpu.force_tpu_interpret_mode`).
  """
  chosen = path(implementation, q, k, v, heads, mask=mask, is_causal=is_causal)
  if chosen == 'kernel':
    return cpu_attention.attention(q, k, v, heads)
  if chosen == 'pallas':
    return _pallas_attention(q, k, v, heads)
  if chosen == 'blocked':
    return _blocked_attention(q, k, v, heads, is_causal=is_causal, mask=mask)
  out = jax.nn.dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                                     mask=mask, is_causal=is_causal, implementation=implementation)
  return merge_heads(out)


def _pallas_attention(q, k, v, heads):
  """JAX's Pallas TPU flash attention (its own FlashAttention backward), on the kernel's (B, H, T, D) layout; under
  a mesh, one call per device on its part of the batch."""
  d = q.shape[-1] // heads

  def flash(q, k, v):
    q, k, v = (split_heads(x, heads).transpose(0, 2, 1, 3) for x in (q, k, v))
    return merge_heads(tpu_flash.flash_attention(q, k, v, sm_scale=d ** -0.5).transpose(0, 2, 1, 3))

  axes = _pallas_batch_axes(q)
  if not axes:
    return flash(q, k, v)
  spec = P(axes)
  return jax.shard_map(flash, mesh=target.mesh(), in_specs=(spec,) * 3, out_specs=spec, check_vma=False)(q, k, v)


def _blocked_attention(q, k, v, heads, *, is_causal, mask):
  """`_blocked_group` over groups of the batch (`CPU_GROUP_BYTES`)."""
  b, t, _ = q.shape
  per_item = 4 * heads * min(t, CPU_QUERY_BLOCK) * k.shape[1]
  groups = min(CPU_MAX_GROUPS, b, -(-b // max(1, CPU_GROUP_BYTES // per_item)))
  if groups == 1:
    return _blocked_group(q, k, v, heads, is_causal=is_causal, mask=mask)
  size = -(-b // groups)
  per_batch_mask = mask is not None and mask.ndim == 4 and mask.shape[0] > 1
  return jnp.concatenate([
      _blocked_group(q[i:i + size], k[i:i + size], v[i:i + size], heads, is_causal=is_causal,
                     mask=mask[i:i + size] if per_batch_mask else mask)
      for i in range(0, b, size)])


def _blocked_group(q, k, v, heads, *, is_causal, mask):
  """softmax(q k^T / sqrt(D)) v with the softmax in float32, block by block of queries under `lax.map`, heads-major,
  the scale folded into q and the normalisation deferred past the value product (one pass less over the scores).
  Queries are padded up to whole blocks of near-equal size; masked scores are set as `dot_product_attention`
  does (a large negative number), so a fully masked row averages all values there too. The backward pass is
  FlashAttention's (`_flash`): it keeps only the output and each row's max and log-sum, recomputes a block's
  probabilities and accumulates dK, dV over blocks, instead of differentiating through the forward's max/exp."""
  b, t, c = q.shape
  s = k.shape[1]
  d = split_heads(q, heads).shape[-1]
  n = -(-t // CPU_QUERY_BLOCK)
  blk = -(-t // n)
  blk += -blk % 8 if blk > 8 else 0
  pad = n * blk - t
  qh = jnp.pad(q * jnp.asarray(d ** -0.5, q.dtype), ((0, 0), (0, pad), (0, 0)))
  qh = qh.reshape(b, n, blk, heads, d).transpose(1, 0, 3, 2, 4)  # (n, B, H, blk, D)
  kh, vh = (x.reshape(b, s, heads, d).transpose(0, 2, 1, 3) for x in (k, v))  # (B, H, S, D)
  masks = None
  if mask is not None:
    m = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, (1, 1, t, s)))
    m = jnp.pad(m, ((0, 0), (0, 0), (0, pad), (0, 0)), constant_values=True)
    masks = m.reshape(m.shape[0], m.shape[1], n, blk, s).transpose(2, 0, 1, 3, 4)  # (n, B|1, H|1, blk, S)
  out = _flash(qh, kh, vh, masks, is_causal)  # (n, B, H, blk, D)
  return out.transpose(1, 0, 3, 2, 4).reshape(b, n * blk, c)[:, :t]


_LARGE_NEGATIVE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _scores(i, qb, k, mb, is_causal):
  """Block i's float32 scores (B, H, blk, S), masked, and the mask (None: all allowed)."""
  scores = jnp.einsum('bhqd,bhkd->bhqk', qb, k, preferred_element_type=jnp.float32)
  allowed = mb
  if is_causal:
    blk, s = qb.shape[-2], k.shape[-2]
    causal = (i * blk + jnp.arange(blk))[:, None] >= jnp.arange(s)[None, :]
    allowed = causal if allowed is None else allowed & causal
  return (scores, None) if allowed is None else (jnp.where(allowed, scores, _LARGE_NEGATIVE), allowed)


def _flash_forward(q, k, v, masks, is_causal):
  def block(args):
    i, qb, mb = args
    scores, _ = _scores(i, qb, k, mb, is_causal)
    top = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - top)
    total = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum('bhqk,bhkd->bhqd', p.astype(v.dtype), v, preferred_element_type=jnp.float32) / total
    return out.astype(q.dtype), (top[..., 0], jnp.log(total)[..., 0])

  out, stats = jax.lax.map(block, (jnp.arange(q.shape[0]), q, masks))
  return out, (q, k, v, masks, out, stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, masks, is_causal):
  return _flash_forward(q, k, v, masks, is_causal)[0]


def _flash_backward(is_causal, res, dout):
  q, k, v, masks, out, (top, log_total) = res
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # rowsum(dO * O): (n, B, H, blk)
  f32 = dict(preferred_element_type=jnp.float32)

  # dK and dV accumulate transposed, (B, H, D, S): XLA:CPU contracts a (blk, S) block over its rows 10-20x faster
  # as (D, blk) x (blk, S) than as (S, blk) x (blk, D).
  def block(carry, args):
    dk_t, dv_t = carry
    i, qb, mb, dob, top_b, log_total_b, delta_b = args
    scores, allowed = _scores(i, qb, k, mb, is_causal)
    p = jnp.exp(scores - top_b[..., None] - log_total_b[..., None])  # in this order: top may be -3e38
    dv_t = dv_t + jnp.einsum('bhqd,bhqk->bhdk', dob, p.astype(dob.dtype), **f32)
    ds = p * (jnp.einsum('bhqd,bhkd->bhqk', dob, v, **f32) - delta_b[..., None])
    if allowed is not None:  # masked scores are constants (p > 0 there only in a fully masked row)
      ds = jnp.where(allowed, ds, 0.0)
    dq = jnp.einsum('bhqk,bhkd->bhqd', ds.astype(k.dtype), k, **f32)
    dk_t = dk_t + jnp.einsum('bhqd,bhqk->bhdk', qb, ds.astype(qb.dtype), **f32)
    return (dk_t, dv_t), dq.astype(q.dtype)

  b, h, s, d = k.shape
  zeros = (jnp.zeros((b, h, d, s), jnp.float32),) * 2
  (dk_t, dv_t), dq = jax.lax.scan(block, zeros, (jnp.arange(q.shape[0]), q, masks, dout, top, log_total, delta))
  return dq, jnp.swapaxes(dk_t, -1, -2).astype(k.dtype), jnp.swapaxes(dv_t, -1, -2).astype(v.dtype), None


_flash.defvjp(_flash_forward, _flash_backward)
