"""The models' linear layer: `nnx.Linear` (same weights, names and forward) whose backward, on the CPU backend, is
written out instead of derived.

Autodiff of `x @ W` on (N, T, C) activations asks XLA:CPU for the weight gradient as a dot contracting two axes of
each operand; XLA transposes one operand into a fresh buffer first and then runs Eigen's transposed-operand dot,
which keeps one core busy on a 64 x 64 result. Flattening the rows first (dW = x2^T dy2, one 2-D dot) skips the
copy (a motion module at 32x32 latents, 64 channels, 14 frames, forward+backward on a 2-core AMD EPYC: 149 -> 134
ms with the GEGLU below; `bench/train_step.py` has the whole step). `GEGLU` uses `geglu_dense` for the same reason:
its backward makes the two halves of the projection's gradient separately, never the concatenated (rows, 2 x 4C)
array that autodiff builds and then transposes for the weight gradient.

`written_backward()` is the one switch: GPU and TPU keep autodiff (their compilers place these dots well, and
fewer, wider dots suit them better).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from tgvac_jax import target

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def written_backward() -> bool:
  """Whether linear layers take the backward written here (read at trace time): in programs for the CPU only."""
  return target.on_cpu()


def _rows(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


def _weight_gradient(x: jax.Array, dy: jax.Array) -> jax.Array:
  """x^T dy over all leading axes, as one 2-D dot."""
  return jnp.dot(_rows(x).T, _rows(dy))


def _bias_gradient(dy: jax.Array) -> jax.Array:
  return jnp.sum(_rows(dy), axis=0)


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  """x @ kernel (+ bias), the last axis contracted; operands already in one dtype."""
  y = jnp.dot(x, kernel)
  return y if bias is None else y + bias


def _dense_forward(x, kernel, bias):
  return dense(x, kernel, bias), (x, kernel, bias)


def _dense_backward(res, dy):
  x, kernel, bias = res
  return jnp.dot(dy, kernel.T), _weight_gradient(x, dy), None if bias is None else _bias_gradient(dy)


dense.defvjp(_dense_forward, _dense_backward)


class Linear(nnx.Linear):
  """`nnx.Linear` with `dense`'s backward where `written()`."""

  def written(self) -> bool:
    """`written_backward()`, and no custom dot, precision or output type is set."""
    return (written_backward() and self.preferred_element_type is None and self.precision is None
            and self.dot_general is lax.dot_general)

  def operands(self, inputs: jax.Array):
    """(inputs, kernel, bias) promoted to the compute dtype, as `nnx.Linear` does; bias None without one."""
    bias = self.bias[...] if self.bias is not None else None
    return self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    if out_sharding is not None or not self.written():
      return super().__call__(inputs, out_sharding)
    return dense(*self.operands(inputs))


def _gated(p: jax.Array):
  """(hidden, gate, Phi(gate)) of a GEGLU projection's output p = [hidden, gate]: gelu(gate) = gate * Phi(gate)."""
  h, gate = jnp.split(p, 2, axis=-1)
  return h, gate, 0.5 + 0.5 * lax.erf(gate * _SQRT_HALF)


def gated_product(p: jax.Array) -> jax.Array:
  """hidden * gelu(gate) of p = [hidden, gate] (exact erf GELU)."""
  h, gate, cdf = _gated(p)
  return h * (gate * cdf)


def gated_gradients(p: jax.Array, grad: jax.Array):
  """The gradients of hidden * gelu(gate) with respect to hidden and gate, both in one pass over p, from
  gelu'(g) = Phi(g) + g phi(g)."""
  h, gate, cdf = _gated(p)
  slope = cdf + gate * _INV_SQRT_2PI * jnp.exp(-0.5 * gate * gate)
  return grad * (gate * cdf), grad * h * slope


@jax.custom_vjp
def geglu_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """`gated_product` of x @ kernel + bias; operands in one dtype."""
  return gated_product(dense(x, kernel, bias))


def _geglu_dense_forward(x, kernel, bias):
  p = dense(x, kernel, bias)
  return gated_product(p), (x, kernel, p)


def _geglu_dense_backward(res, grad):
  x, kernel, p = res
  dh, dg = gated_gradients(p, grad)
  kh, kg = jnp.split(kernel, 2, axis=-1)
  dx = jnp.dot(dh, kh.T) + jnp.dot(dg, kg.T)
  dkernel = jnp.concatenate([_weight_gradient(x, dh), _weight_gradient(x, dg)], axis=-1)
  return dx, dkernel, jnp.concatenate([_bias_gradient(dh), _bias_gradient(dg)])


geglu_dense.defvjp(_geglu_dense_forward, _geglu_dense_backward)
