"""Mesh construction, the FSDP partition rule and global batches (no compiles: runs in seconds)."""

import math

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.train import tiny
from tgvac_jax.train import sharding
from tgvac_jax.train.state import check_config


def _mesh_cfg(data=1, fsdp=-1, tensor=1):
  return ml_collections.ConfigDict({'data': data, 'fsdp': fsdp, 'tensor': tensor})


def test_make_mesh_fills_the_rest():
  assert dict(sharding.make_mesh(_mesh_cfg()).shape) == {'data': 1, 'fsdp': 8, 'tensor': 1}
  assert dict(sharding.make_mesh(_mesh_cfg(data=2)).shape) == {'data': 2, 'fsdp': 4, 'tensor': 1}
  assert dict(sharding.make_mesh(_mesh_cfg(data=-1, fsdp=2)).shape) == {'data': 4, 'fsdp': 2, 'tensor': 1}
  assert sharding.data_parallel_size(sharding.make_mesh(_mesh_cfg(data=2, fsdp=2, tensor=2))) == 4


@pytest.mark.parametrize('cfg, msg', [(_mesh_cfg(data=3), 'not divisible'),
                                      (_mesh_cfg(data=-1, fsdp=-1), 'at most one'),
                                      (_mesh_cfg(data=2, fsdp=2), 'needs 4 devices')])
def test_make_mesh_errors(cfg, msg):
  with pytest.raises(ValueError, match=msg):
    sharding.make_mesh(cfg)


def test_weight_spec_rule():
  spec = lambda shape, fsdp=8: sharding.weight_spec(shape, fsdp, min_size=1024)  # noqa: E731
  assert spec((3, 3, 320, 640)) == P(None, None, None, 'fsdp')   # largest divisible dimension
  assert spec((640, 320)) == P('fsdp')
  assert spec((3, 3, 12, 320)) == P(None, None, None, 'fsdp')
  assert spec((768, 77)) == P('fsdp')                            # 77 is not divisible
  assert spec((77, 77)) == P()                                   # nothing divisible: replicated
  assert spec((320,)) == P()                                     # small: replicated
  assert spec((640, 640), fsdp=1) == P()                         # no fsdp axis
  assert spec((64, 64)) == P(None, 'fsdp')                       # ties: the last


def test_param_shardings_follow_shapes():
  mesh = sharding.make_mesh(_mesh_cfg())
  tree = {'w': jax.ShapeDtypeStruct((256, 128), np.float32), 'b': np.zeros((128,), np.float32),
          'mu': {'w': jax.ShapeDtypeStruct((256, 128), np.float32)}}
  out = sharding.param_shardings(tree, mesh)
  assert out['w'].spec == out['mu']['w'].spec == P('fsdp') and out['b'].spec == P()


def test_global_batch_shards_the_batch_axis_and_keeps_strings_on_host():
  mesh = sharding.make_mesh(_mesh_cfg(data=2))
  local = {'x': np.arange(8 * 3, dtype=np.float32).reshape(8, 3), 'caption': np.array(['a'] * 8)}
  out = sharding.global_batch(local, mesh)
  assert set(out) == {'x'}
  np.testing.assert_array_equal(np.asarray(out['x']), local['x'])
  assert out['x'].sharding.spec == P(('data', 'fsdp'))
  assert sorted(s.data.shape for s in out['x'].addressable_shards) == [(1, 3)] * 8


def test_batch_not_divisible_by_data_parallel_size():
  mesh = sharding.make_mesh(_mesh_cfg())
  c = tiny.tiny_config(batch_size=12)
  with pytest.raises(ValueError, match='not divisible by the data-parallel size 8'):
    check_config(c, mesh)
  check_config(tiny.tiny_config(batch_size=16), mesh)
  with pytest.raises(ValueError, match='grad_accum'):
    check_config(tiny.tiny_config(batch_size=16, **{'optim.grad_accum': 3}), mesh)


@pytest.mark.parametrize('sizes, devices, batch, want', [
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 32, 16, {'data': 1, 'fsdp': 16, 'tensor': 2}),   # the paper's on v5e-32
    ({'data': 2, 'fsdp': -1, 'tensor': 1}, 32, 8, {'data': 2, 'fsdp': 4, 'tensor': 4}),
    ({'data': -1, 'fsdp': 2, 'tensor': 1}, 8, 4, {'data': 2, 'fsdp': 2, 'tensor': 2}),
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 8, 1, {'data': 1, 'fsdp': 1, 'tensor': 8}),
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 8, 8, None),     # not smaller than the devices
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 8, 16, None),
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 8, 6, None),     # 6 does not divide 8: the strict error follows
    ({'data': 4, 'fsdp': -1, 'tensor': 1}, 32, 2, None),    # the other batch axis does not divide the batch
    ({'data': 1, 'fsdp': 8, 'tensor': 1}, 8, 4, None),      # explicit sizes are kept
    ({'data': 1, 'fsdp': -1, 'tensor': 2}, 8, 2, None),     # 'tensor' set by hand
    ({'data': 1, 'fsdp': 4, 'tensor': -1}, 8, 2, None),     # the -1 not on a batch axis
    ({'data': 1, 'fsdp': -1, 'tensor': 1}, 8, None, None),  # no batch given
])
def test_batch_rows_split_rule(sizes, devices, batch, want):
  got = sharding.batch_rows_split(sizes, devices, batch)
  assert got == want
  if want is not None:  # the formula: the batch axes hold exactly the batch, 'tensor' the rest of the devices
    assert got['data'] * got['fsdp'] == batch and math.prod(got.values()) == devices
    assert all(got[a] == s for a, s in sizes.items() if s != -1 and a != 'tensor')


def test_make_mesh_gives_a_small_batch_a_tensor_axis_and_keeps_the_strict_errors():
  mesh = sharding.make_mesh(_mesh_cfg(), batch=4)
  assert dict(mesh.shape) == {'data': 1, 'fsdp': 4, 'tensor': 2}
  check_config(tiny.tiny_config(batch_size=4), mesh)
  for cfg, batch in ((_mesh_cfg(), 6), (_mesh_cfg(fsdp=8), 4)):
    mesh = sharding.make_mesh(cfg, batch=batch)
    assert dict(mesh.shape) == {'data': 1, 'fsdp': 8, 'tensor': 1}
    with pytest.raises(ValueError, match=f'batch size {batch} .* not divisible by the data-parallel size 8'):
      check_config(tiny.tiny_config(batch_size=batch), mesh)


def test_split_rows_refuses_rows_the_tensor_axis_does_not_divide():
  mesh = sharding.make_mesh(_mesh_cfg(), batch=1)  # tensor 8
  with pytest.raises(ValueError, match="images of 12 rows .* tensor axis of 8: a batch of 2 per step call would "
                                       'leave a tensor axis of 4'):
    sharding.split_rows(np.zeros((1, 12, 12, 4), np.float32), mesh)
  assert sharding.split_rows(np.zeros((1, 8, 8, 4)), sharding.make_mesh(_mesh_cfg())).shape == (1, 8, 8, 4)


@pytest.mark.parametrize('shape', [(4, 8, 8, 3), (4, 2, 8, 8, 3)])  # frames (B, H, W, C) and clips (B, F, H, W, C)
def test_split_rows_puts_the_height_on_tensor(shape):
  mesh = sharding.make_mesh(_mesh_cfg(), batch=4)  # fsdp 4 x tensor 2
  out = jax.jit(lambda x: sharding.split_rows(x, mesh))(np.arange(math.prod(shape), dtype=np.float32).reshape(shape))
  np.testing.assert_array_equal(np.asarray(out), np.arange(math.prod(shape)).reshape(shape))
  rows = [s.index[-3] for s in out.addressable_shards]
  assert out.sharding.shard_shape(shape) == (1,) + shape[1:-3] + (4,) + shape[-2:]
  assert sorted({(r.start, r.stop) for r in rows}) == [(0, 4), (4, 8)]
