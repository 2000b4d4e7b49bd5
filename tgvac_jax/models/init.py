"""Random initialisation of NNX modules inside one `jax.jit`: op-by-op eager init of a UNet/VAE/CLIP is slow on
CPU (thousands of tiny dispatches); compiled, it is one program."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
from flax import nnx

M = TypeVar('M', bound=nnx.Module)


def jit_init(make: Callable[[], M]) -> M:
  """`make()` (a module constructor call with its own `nnx.Rngs`) evaluated under jit; same values as eager."""
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  state = jax.jit(lambda: nnx.split(make())[1])()
  return nnx.merge(graphdef, state)
