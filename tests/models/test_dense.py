"""`dense.Linear` and `dense.geglu_dense`: the written backward against torch's autograd (float64) and against
JAX's autodiff of `nnx.Linear`, on (N, T, C) activations as the transformers feed them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tgvac_jax.models import dense
from tgvac_jax.models.transformer import GEGLU

torch = pytest.importorskip('torch')


def _value_and_grads(module, x, cotangent):
  graphdef, params = nnx.split(module)

  def f(params, x):
    return nnx.merge(graphdef, params)(x)

  out, vjp = jax.vjp(f, params, x)
  dparams, dx = vjp(cotangent)
  return out, dparams, dx


def _torch_grads(fn, x, kernel, bias, cotangent):
  """fn's output and the gradients of (x, kernel, bias) by torch autograd in float64."""
  tx, tk = (torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True) for a in (x, kernel))
  tb = torch.tensor(np.asarray(bias), dtype=torch.float64, requires_grad=True) if bias is not None else None
  y = fn(tx, tk, tb)
  y.backward(torch.tensor(np.asarray(cotangent), dtype=torch.float64))
  return y.detach().numpy(), tx.grad.numpy(), tk.grad.numpy(), None if tb is None else tb.grad.numpy()


@pytest.mark.parametrize('use_bias', [True, False])
def test_linear_equals_torch_and_nnx_autodiff(use_bias):
  lin = dense.Linear(24, 40, use_bias=use_bias, rngs=nnx.Rngs(0))
  assert lin.written()  # tests run on the CPU backend, where the written backward is taken
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 17, 24)), jnp.float32)
  ct = jnp.asarray(rng.normal(size=(3, 17, 40)), jnp.float32)
  out, dparams, dx = _value_and_grads(lin, x, ct)
  # torch: y = x W (+ b), W stored (in, out) as ours
  want = _torch_grads(lambda x, k, b: x @ k + (b if b is not None else 0), x, lin.kernel[...],
                      lin.bias[...] if use_bias else None, ct)
  np.testing.assert_allclose(out, want[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, want[1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dparams['kernel'][...], want[2], rtol=1e-5, atol=1e-4)
  if use_bias:
    np.testing.assert_allclose(dparams['bias'][...], want[3], rtol=1e-5, atol=1e-4)

  # the same weights in a plain nnx.Linear (autodiff): the same numbers
  plain = nnx.Linear(24, 40, use_bias=use_bias, rngs=nnx.Rngs(0))
  p_out, p_dparams, p_dx = _value_and_grads(plain, x, ct)
  np.testing.assert_allclose(out, p_out, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dx, p_dx, rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(dparams), jax.tree.leaves(p_dparams)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_linear_takes_the_written_backward_on_cpu_only_without_custom_dot_settings():
  x = jnp.ones((2, 5, 8))
  lin = dense.Linear(8, 4, rngs=nnx.Rngs(0))
  assert 'custom_vjp_call' in str(jax.make_jaxpr(lin)(x))
  precise = dense.Linear(8, 4, precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(0))
  assert not precise.written()
  assert 'custom_vjp_call' not in str(jax.make_jaxpr(precise)(x))
  np.testing.assert_allclose(precise(x), lin(x), rtol=1e-6)


def test_linear_keeps_bfloat16_compute():
  lin = dense.Linear(16, 8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 6, 16)), jnp.float32)
  ct = jnp.asarray(rng.normal(size=(4, 6, 8)), jnp.bfloat16)
  out, dparams, dx = _value_and_grads(lin, x, ct)
  assert out.dtype == jnp.bfloat16 and dparams['kernel'][...].dtype == jnp.float32  # fp32 master weights
  f32 = dense.Linear(16, 8, rngs=nnx.Rngs(0))
  _, want, _ = _value_and_grads(f32, x, ct.astype(jnp.float32))
  np.testing.assert_allclose(dparams['kernel'][...], want['kernel'][...], rtol=0.05, atol=0.1)


def test_geglu_equals_torch_geglu():
  """diffusers' GEGLU: proj(x).chunk(2) -> hidden * gelu(gate), exact erf GELU."""
  module = GEGLU(12, 20, rngs=nnx.Rngs(2))
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(0.0, 2.0, size=(2, 9, 12)), jnp.float32)  # gates spread over both erf tails
  ct = jnp.asarray(rng.normal(size=(2, 9, 20)), jnp.float32)
  out, dparams, dx = _value_and_grads(module, x, ct)

  def torch_geglu(x, k, b):
    h, gate = (x @ k + b).chunk(2, dim=-1)
    return h * torch.nn.functional.gelu(gate)

  want = _torch_grads(torch_geglu, x, module.proj.kernel[...], module.proj.bias[...], ct)
  np.testing.assert_allclose(out, want[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, want[1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dparams['proj']['kernel'][...], want[2], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dparams['proj']['bias'][...], want[3], rtol=1e-5, atol=1e-4)
