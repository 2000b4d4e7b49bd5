"""bench/step_profile.py's tracing of compiled ops back to the Python that emitted them."""

import inspect
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'bench'))

import step_profile  # noqa: E402

from tgvac_jax.models.attention import attend  # noqa: E402


def _inner(x, w):
  return jnp.dot(x, w)


def _outer(x, w):
  return jnp.tanh(_inner(x, w))


def test_stack_of_a_dot_is_the_python_call_chain():
  x = jnp.ones((8, 16))
  hlo = jax.jit(_outer).lower(x, x.T).compile().as_text()
  op_frames, stack = step_profile.stack_frames(hlo)
  dots = [name for name in op_frames if 'dot' in name]
  assert dots, 'no dot op carries a stack frame'
  frames = stack(op_frames[dots[0]])
  here = os.path.abspath(__file__)
  inner_line = inspect.getsourcelines(_inner)[1] + 1  # the `return jnp.dot(...)` line
  assert frames[0] == (here, '_inner', inner_line)
  assert frames[1][:2] == (here, '_outer')


@pytest.mark.parametrize('implementation', ['blocked', 'kernel'])
def test_attention_ops_are_counted_as_the_attention_core(implementation):
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 80, 32), np.float32)) for _ in range(3))
  step = jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, 4, implementation=implementation)), (0, 1, 2))
  op_frames, stack = step_profile.stack_frames(jax.jit(step).lower(q, k, v).compile().as_text())
  labels = {name: step_profile.component(stack(frame)) for name, frame in op_frames.items()}
  assert 'attention core' in labels.values()
  if implementation == 'kernel':  # its forward and backward calls (and the tuples they return)
    calls = [labels[name] for name in labels if 'ffi_call' in name]
    assert len(calls) >= 2 and set(calls) == {'attention core'}
  assert not any(label.startswith('temporal') for label in labels.values())
