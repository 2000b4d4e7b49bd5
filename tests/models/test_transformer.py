"""The GEGLU's own backward against torch's autograd of `h * F.gelu(g)` (exact erf GELU) and against JAX's
autodiff of the same formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgvac_jax.models.transformer import geglu

torch = pytest.importorskip('torch')


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  # Gates over [-9, 9]: both tails of the erf and the region where gelu' is far from 0 or 1.
  p = rng.normal(0.0, 3.0, shape).astype(np.float32)
  grad = rng.normal(0.0, 1.0, shape[:-1] + (shape[-1] // 2,)).astype(np.float32)
  return p, grad


@pytest.mark.parametrize('shape', [(7, 32), (2, 5, 48)])
def test_geglu_value_and_gradient_equal_torch(shape):
  p, grad = _inputs(shape)
  out, vjp = jax.vjp(geglu, jnp.asarray(p))
  (dp,) = vjp(jnp.asarray(grad))

  tp = torch.tensor(p, dtype=torch.float64, requires_grad=True)
  h, gate = tp.chunk(2, dim=-1)
  want = h * torch.nn.functional.gelu(gate)
  want.backward(torch.tensor(grad, dtype=torch.float64))
  np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dp, tp.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_geglu_gradient_equals_autodiff_of_the_formula():
  p, grad = _inputs((64, 256), seed=1)

  def formula(p):
    h, gate = jnp.split(p, 2, axis=-1)
    return h * jax.nn.gelu(gate, approximate=False)

  (want,) = jax.vjp(formula, jnp.asarray(p))[1](jnp.asarray(grad))
  (got,) = jax.vjp(geglu, jnp.asarray(p))[1](jnp.asarray(grad))
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_geglu_keeps_bfloat16():
  p, grad = _inputs((4, 16))
  out, vjp = jax.vjp(geglu, jnp.asarray(p, jnp.bfloat16))
  (dp,) = vjp(jnp.asarray(grad, jnp.bfloat16))
  assert out.dtype == dp.dtype == jnp.bfloat16
  (want,) = jax.vjp(geglu, jnp.asarray(p))[1](jnp.asarray(grad))
  np.testing.assert_allclose(np.asarray(dp, np.float32), want, rtol=0.05, atol=0.05)
