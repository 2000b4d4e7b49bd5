"""The device mesh, partition rules and global batches of the trainer.

Mesh axes ('data', 'fsdp', 'tensor'): the batch is split over data x fsdp; every large weight (and its Adam moments
and EMA) is split over fsdp along its largest divisible dimension and all-gathered by XLA where it is used; small
tensors (biases, norms) are replicated, where splitting would cost more in collectives than it saves. 'tensor' is
size 1 unless the batch is smaller than the devices: then `make_mesh` gives 'tensor' the factor the batch cannot
take, and the train step splits each image's rows over it (`split_rows`), so those chips share the convolutions
instead of repeating them (XLA's SPMD partitioner exchanges the halo rows and all-reduces the norms' statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tgvac_jax.target import BATCH_AXES

AXES = BATCH_AXES + ('tensor',)
MIN_SHARDED_SIZE = 2 ** 14  # elements: smaller tensors are replicated (config.mesh.min_shard_size)


def make_mesh(mesh_cfg, devices=None, batch: int | None = None) -> Mesh:
  """Mesh over all devices (or `devices`) from `mesh_cfg.{data,fsdp,tensor}`; one of them may be -1 (the rest).

  `batch` (examples per step call, the micro batch): when the -1 is on a batch axis, 'tensor' is 1 and the batch
  is smaller than the devices, the -1 axis takes what makes data x fsdp == batch and 'tensor' the rest
  (`batch_rows_split`). Explicit sizes are taken as they are: the trainer's batch check names what would divide."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_cfg[a]) for a in AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise ValueError(f'mesh {dict(zip(AXES, sizes))}: at most one axis may be -1')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'mesh {dict(zip(AXES, sizes))}: sizes must be positive or -1')
  split = batch_rows_split(dict(zip(AXES, sizes)), len(devices), batch)
  if split is not None:
    logging.info('mesh: batch %d on %d devices -> %s: each image\'s rows are split over \'tensor\'', batch,
                 len(devices), ' '.join(f'{a}={s}' for a, s in split.items()))
    sizes = [split[a] for a in AXES]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'mesh {dict(zip(AXES, sizes))}: {len(devices)} devices are not divisible by {known}')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f'mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, there are {len(devices)}')
  return jax.make_mesh(tuple(sizes), AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)


def batch_rows_split(sizes: Mapping[str, int], devices: int, batch: int | None) -> dict[str, int] | None:
  """The mesh for a batch smaller than the devices, or None where the rule does not apply: `sizes` has its -1 on
  'data' or 'fsdp' and 'tensor' 1, `batch` is below the devices the -1 would give the batch axes, and the other
  batch axis times some size m is `batch` with `batch` dividing the devices. Then the -1 axis is m and 'tensor'
  devices / batch: the paper's batch of 16 on a v5e-32 is data=1 fsdp=16 tensor=2."""
  if batch is None or sizes['tensor'] != 1 or all(sizes[a] != -1 for a in BATCH_AXES):
    return None
  fill = next(a for a in BATCH_AXES if sizes[a] == -1)
  other = sizes[BATCH_AXES[1 - BATCH_AXES.index(fill)]]
  if not 0 < batch < devices or batch % other or devices % batch:
    return None
  return {**sizes, fill: batch // other, 'tensor': devices // batch}


def check_rows(rows: int, mesh: Mesh) -> None:
  """`split_rows`' condition, for a check before anything is built: `rows` divisible by the 'tensor' axis."""
  t = mesh.shape['tensor']
  if rows % t:
    raise ValueError(f'images of {rows} rows cannot be split over the mesh\'s tensor axis of {t}: a batch of '
                     f'{mesh.size // math.gcd(rows, t)} per step call would leave a tensor axis of '
                     f'{math.gcd(rows, t)}, which divides them')


def split_rows(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  """Inside the train step: images (..., H, W, C) with the batch leading, their rows H split over 'tensor' (the
  batch stays on ('data', 'fsdp')); unchanged when 'tensor' is 1."""
  if mesh is None or mesh.shape['tensor'] == 1:
    return x
  check_rows(x.shape[-3], mesh)
  spec = P(BATCH_AXES, *([None] * (x.ndim - 4)), 'tensor', None, None)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways the batch is split."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'), the rest whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def weight_spec(shape: tuple[int, ...], fsdp: int, min_size: int = MIN_SHARDED_SIZE) -> P:
  """The rule: the largest dimension divisible by `fsdp` goes on 'fsdp' (the last such on ties); small or
  indivisible tensors are replicated."""
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  dims = [i for i, d in enumerate(shape) if d % fsdp == 0]
  if not dims:
    return P()
  best = max(dims, key=lambda i: (shape[i], i))
  return P(*([None] * best + ['fsdp']))


def param_shardings(abstract_tree, mesh: Mesh, min_size: int = MIN_SHARDED_SIZE):
  """NamedSharding per leaf of a tree of arrays / ShapeDtypeStructs (params, optimizer state, EMA alike: the rule
  depends on the shape only, so a weight and its Adam moments are split the same way)."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda x: NamedSharding(mesh, weight_spec(tuple(np.shape(x)), fsdp, min_size)),
                      abstract_tree)


def barrier(name: str, timeout_s: int = 3600) -> None:
  """All processes meet here, through the coordination service rather than a device collective: a process that
  finished compiling first must not sit in a gloo/NCCL collective while others still compile (CPU gloo gives up
  after 30 s). A no-op on one process."""
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=import-outside-toplevel  (no public barrier without devices)
    distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the batch (numeric entries) -> global arrays sharded along the batch axis; strings
  (captions) stay on the host. Every process passes batch_size // process_count examples, in process order."""
  sharding = batch_sharding(mesh)
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    if v.dtype.kind in 'fiub':
      out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out
