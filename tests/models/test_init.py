"""jit_init gives exactly the parameters of eager construction."""

import numpy as np
from flax import nnx

from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
from tgvac_jax.models.init import jit_init


def test_jit_init_equals_eager():
  cfg = CLIPTextConfig(vocab_size=20, hidden_size=16, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                       num_attention_heads=2)
  fast = nnx.to_flat_state(nnx.state(jit_init(lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(7))), nnx.Param))
  eager = nnx.to_flat_state(nnx.state(CLIPTextModel(cfg, rngs=nnx.Rngs(7)), nnx.Param))
  assert [p for p, _ in fast] == [p for p, _ in eager] and len(fast) > 10
  for (_, a), (_, b) in zip(fast, eager):
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))
