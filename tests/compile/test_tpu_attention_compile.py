"""The TPU attention path compiled for a v5e-8 on this CPU (libtpu, no TPU): under an fsdp=8 mesh, SD-1.5's
1024-token self-attention (8 heads of 40) becomes one Pallas flash kernel per device with no batch gathered, a
64-token one stays XLA's; and the FLOP counter counts the kernel as the products of XLA's attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tgvac_jax import target
from tgvac_jax.compile import chips
from tgvac_jax.compile.flops import PALLAS_ATTENTION_KERNELS, count_traced
from tgvac_jax.compile.report import collectives, cpu_custom_calls
from tgvac_jax.models import attention
from tgvac_jax.train.sharding import BATCH_AXES, make_mesh

pytest.importorskip('libtpu', reason='compiling for TPU needs libtpu (the tpu extra)')

BATCH, HEADS, WIDTH = 16, 8, 40  # 2 images per device; SD-1.5's first level


def _compile(tokens, implementation=None):
  """(traced, compiled HLO text) of attention fwd+bwd (the value too: with the gradients alone, XLA's attention
  would not compute its output), bf16, the batch split over the mesh's batch axes."""
  mesh = make_mesh({'data': 1, 'fsdp': 8, 'tensor': 1}, chips.devices(chips.parse('v5e-8')))
  x = jax.ShapeDtypeStruct((BATCH, tokens, HEADS * WIDTH), jnp.bfloat16, sharding=NamedSharding(mesh, P(BATCH_AXES)))
  grad = jax.jit(jax.value_and_grad(lambda q, k, v: attention.attend(q, k, v, HEADS, implementation=implementation)
                          .astype(jnp.float32).sum(), argnums=(0, 1, 2)))
  with target.compiling_for(mesh):
    traced = grad.trace(x, x, x)
  return traced, traced.lower().compile().as_text()


def test_long_self_attention_is_one_pallas_kernel_per_device_and_short_stays_xla():
  traced, hlo = _compile(1024)
  assert 'tpu_custom_call' in hlo and cpu_custom_calls(hlo) == []
  assert collectives(hlo, 8)['all-gather']['count'] == 0  # each device attends its own 2 images
  flash = count_traced(traced)
  assert not flash.opaque and sorted(flash.kernels.items()) == [(k, 1) for k in sorted(PALLAS_ATTENTION_KERNELS)]
  # forward QK^T, PV; backward dV, dP, dQ, dK: 6 products of 2 B H T^2 D
  assert flash.total == 6 * 2 * BATCH * HEADS * 1024 ** 2 * WIDTH == count_traced(_compile(1024, 'xla')[0]).total
  _, hlo = _compile(64)
  assert 'tpu_custom_call' not in hlo
