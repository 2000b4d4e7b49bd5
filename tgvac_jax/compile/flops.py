"""Model FLOPs from a program's jaxpr: 2 x the multiply-adds of every matrix product and convolution, counted on
the traced program, before XLA sees it.

Why not XLA's `cost_analysis`: it counts a while loop's body once, and on TPU the partitioner turns FSDP's weight
all-gathers into such loops (windowed einsum), so it counted 24.9 of the 84.8 TFLOP of `configs/frame_v5e_32.py`'s
step (docs/scale.md); it also counts one device's program after XLA rewrote it, which moves with the backend and the
partitioner. The jaxpr holds the global shapes (all devices together) and exactly the products the model asked for.
Elementwise work (norms, activations, softmax, the optimizer) is left out, as in the usual MFU convention: a few
percent of SD-1.5's step, and bound by memory, not by the matrix units.

A convolution counts the kernel taps that meet data: taps on zero padding or on the holes of a dilated input (a
strided convolution's input gradient) multiply nothing, and XLA's count leaves them out too. A `remat2` that
was differentiated (jax.checkpoint under grad) holds the recomputed forward beside the backward: that is counted,
because it runs; model FLOPs without recomputation come from the same program traced without remat.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
from jax.extend import core

# primitives whose FLOPs hide in a kernel the jaxpr cannot see into
OPAQUE = ('pallas_call', 'ffi_call', 'custom_call', 'cudnn_dot_product_attention')
# ... except the Pallas kernels counted here, by kernel name: JAX's TPU flash attention (models/attention.py) takes
# q, k first as (B, H, T, D) and each of its three kernels does two of the attention's products that count as model
# FLOPs, 2 x 2BHTqTkD: the forward QK^T and PV, the backward's dK, dV (`dkv`) and dP, dQ (`dq`). Their recomputed
# scores are left out, as remat's recomputation is, so this equals the count of XLA's attention.
PALLAS_ATTENTION_KERNELS = ('_flash_attention_kernel', '_flash_attention_dkv_kernel', '_flash_attention_dq_kernel')


def _pallas_attention(eqn) -> tuple[str, float] | None:
  """(kernel name, model FLOPs) of a Pallas call that is one of `PALLAS_ATTENTION_KERNELS`, else None."""
  info = eqn.params['jaxpr'].debug_info
  if info is None or info.func_name not in PALLAS_ATTENTION_KERNELS:
    return None
  (b, h, tq, d), tk = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape[2]
  return info.func_name, 4.0 * b * h * tq * tk * d


@dataclasses.dataclass
class FlopCount:
  """FLOPs of one call of a program, all devices together (global shapes)."""
  dot: float = 0.0
  conv: float = 0.0
  opaque: Counter = dataclasses.field(default_factory=Counter)   # primitive name -> calls not counted
  kernels: Counter = dataclasses.field(default_factory=Counter)  # Pallas kernel name -> calls counted
  unknown_trips: int = 0                                         # while loops counted once

  @property
  def total(self) -> float:
    return self.dot + self.conv

  def add(self, other: FlopCount, times: float = 1.0) -> None:
    self.dot += times * other.dot
    self.conv += times * other.conv
    for k, v in other.opaque.items():
      self.opaque[k] += v
    for k, v in other.kernels.items():
      self.kernels[k] += v
    self.unknown_trips += other.unknown_trips


def dot_general_flops(lhs_shape, rhs_shape, dimension_numbers) -> float:
  """2 x (output elements) x (contracted size)."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  batch = math.prod(lhs_shape[d] for d in lhs_batch)
  contract = math.prod(lhs_shape[d] for d in lhs_contract)
  lhs_free = math.prod(s for d, s in enumerate(lhs_shape) if d not in (*lhs_contract, *lhs_batch))
  rhs_free = math.prod(s for d, s in enumerate(rhs_shape) if d not in (*rhs_contract, *rhs_batch))
  return 2.0 * batch * lhs_free * rhs_free * contract


def _valid_taps(size: int, kernel: int, out: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int) -> int:
  """(output position, kernel tap) pairs of one spatial dimension whose input position holds data: inside the
  input (not padding) and not a hole of the dilated input."""
  o = np.arange(out)[:, None]
  k = np.arange(kernel)[None, :]
  p = o * stride + k * rhs_dil - pad_lo
  return int(np.count_nonzero((p >= 0) & (p <= (size - 1) * lhs_dil) & (p % lhs_dil == 0)))


def conv_flops(lhs_shape, rhs_shape, out_shape, params, padding_taps: bool = False) -> float:
  """2 x (output batch x output features) x (kernel input features) x (valid taps over the spatial dims), or
  x (every tap at every output position) with `padding_taps`, the convention of PyTorch's FlopCounterMode and
  most analytic counts.

  The kernel's input-feature dimension is already the input features of one group (feature_group_count), and with
  batch_group_count the output batch is the input batch over the groups, so this holds for every group form."""
  dn = params['dimension_numbers']
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  n = len(lhs_spec) - 2
  lhs_dil = params.get('lhs_dilation') or (1,) * n
  rhs_dil = params.get('rhs_dilation') or (1,) * n
  taps = 1
  for i in range(n):
    if padding_taps:
      taps *= out_shape[out_spec[2 + i]] * rhs_shape[rhs_spec[2 + i]]
      continue
    taps *= _valid_taps(lhs_shape[lhs_spec[2 + i]], rhs_shape[rhs_spec[2 + i]], out_shape[out_spec[2 + i]],
                        params['window_strides'][i], params['padding'][i][0], lhs_dil[i], rhs_dil[i])
  return 2.0 * out_shape[out_spec[0]] * out_shape[out_spec[1]] * rhs_shape[rhs_spec[1]] * taps


def _sub_jaxprs(value):
  if isinstance(value, core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


# primitives whose outputs are their sub-jaxpr's outputs, one for one: unused outputs are dead inside too
_ONE_TO_ONE = ('jit', 'pjit', 'closed_call', 'core_call', 'remat2', 'checkpoint', 'custom_jvp_call',
               'custom_vjp_call', 'shard_map', 'cond')


def _used(var, live: set) -> bool:
  return not isinstance(var, core.Literal) and var in live


def count_jaxpr(jaxpr, used_outputs: list[bool] | None = None, padding_taps: bool = False) -> FlopCount:
  """FLOPs of the live part of a Jaxpr or ClosedJaxpr (what feeds `used_outputs`, default all, or has effects, as
  XLA's dead-code elimination would keep), recursing into every sub-jaxpr: jit, custom_jvp/vjp, remat, scan x its
  length, while once (flagged: its trip count is not in the jaxpr), cond's costliest branch, shard_map x its
  manual devices. `padding_taps`: see `conv_flops`."""
  if isinstance(jaxpr, core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  used_outputs = used_outputs or [True] * len(jaxpr.outvars)
  live = {v for v, u in zip(jaxpr.outvars, used_outputs) if u and not isinstance(v, core.Literal)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    outs = [not isinstance(v, core.DropVar) and v in live for v in eqn.outvars]
    if any(outs) or eqn.effects:
      kept.append((eqn, outs))
      live.update(v for v in eqn.invars if not isinstance(v, core.Literal))
  out = FlopCount()
  for eqn, outs in reversed(kept):
    name = eqn.primitive.name
    shapes = [v.aval.shape for v in eqn.invars]
    inner = outs if name in _ONE_TO_ONE else None
    if name == 'dot_general':
      out.dot += dot_general_flops(shapes[0], shapes[1], eqn.params['dimension_numbers'])
    elif name == 'conv_general_dilated':
      out.conv += conv_flops(shapes[0], shapes[1], eqn.outvars[0].aval.shape, eqn.params, padding_taps)
    elif name == 'pallas_call' and (known := _pallas_attention(eqn)) is not None:
      out.kernels[known[0]] += 1
      out.dot += known[1]
    elif name in OPAQUE:
      out.opaque[name] += 1
    elif name == 'scan':
      out.add(count_jaxpr(eqn.params['jaxpr'], None, padding_taps), eqn.params['length'])
    elif name == 'while':
      out.unknown_trips += 1
      out.add(count_jaxpr(eqn.params['body_jaxpr'], None, padding_taps))
    elif name == 'cond':
      out.add(max((count_jaxpr(b, inner, padding_taps) for b in eqn.params['branches']), key=lambda c: c.total))
    elif name == 'shard_map':
      devices = math.prod(eqn.params['mesh'].shape[a] for a in eqn.params['newly_manual_axes'])
      out.add(count_jaxpr(eqn.params['jaxpr'], inner, padding_taps), devices)
    else:
      for sub in _sub_jaxprs(list(eqn.params.values())):
        out.add(count_jaxpr(sub, inner if len(sub.outvars) == len(outs) else None, padding_taps))
  return out


def count_traced(traced, padding_taps: bool = False) -> FlopCount:
  """FLOPs of a `jax.jit(f).trace(*args)` (one call, all devices)."""
  return count_jaxpr(traced.jaxpr, padding_taps=padding_taps)
