"""The devices a program is traced for: what every trace-time choice of a CPU-only path reads.

The CPU paths (the FFI conv and attention kernels, the written linear backward, the blocked attention, the
sub-pixel upsampling, the conditional weight update) are chosen while a program is traced. Normally the program runs
where JAX's default backend is, and that is what `platform()` and `device_count()` return. A program compiled ahead
of time for other devices (`tgvac_jax/compile/`: TPU executables built on a CPU host, where the default backend stays
'cpu') is traced inside `compiling_for(mesh)`, so it gets the choices of the devices it will run on and no CPU custom
call lands in a TPU program.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

# The mesh axes that split the batch (train/sharding.py builds meshes of these and 'tensor'; the infer job's is
# 'data' alone): a trace-time choice that runs one kernel per device (models/attention.py) may split over these.
BATCH_AXES = ('data', 'fsdp')

_TARGET: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar('tgvac_target', default=None)
_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar('tgvac_mesh', default=None)


@contextlib.contextmanager
def compiling_for(devices) -> Iterator[None]:
  """Traces inside take the platform and device count of `devices` (a Mesh or a sequence of devices), and are
  `split_over` it when it is a Mesh."""
  mesh = devices if isinstance(devices, Mesh) else None
  devices = list(np.asarray(getattr(devices, 'devices', devices)).flat)
  token = _TARGET.set((devices[0].platform, len(devices)))
  try:
    with split_over(mesh):
      yield
  finally:
    _TARGET.reset(token)


@contextlib.contextmanager
def split_over(mesh: Mesh | None) -> Iterator[None]:
  """Traces inside know the mesh their program is split over (`mesh()`); a no-op for None, so a trainer's step
  traced inside `compiling_for` keeps that mesh."""
  token = None if mesh is None else _MESH.set(mesh)
  try:
    yield
  finally:
    if token is not None:
      _MESH.reset(token)


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform the program being traced is for."""
  target = _TARGET.get()
  return jax.default_backend() if target is None else target[0]


def device_count() -> int:
  """How many devices the program being traced spans (the custom-call kernels run on one device only)."""
  target = _TARGET.get()
  return jax.device_count() if target is None else target[1]


def mesh() -> Mesh | jax.sharding.AbstractMesh | None:
  """The mesh the program being traced is split over, where a trace-time choice must know it (a Pallas kernel,
  which XLA's partitioner does not split, runs under `shard_map` over it): the innermost `split_over` (or
  `compiling_for` a Mesh), else JAX's current mesh (`jax.set_mesh`), else None."""
  if (inner := _MESH.get()) is not None:
    return inner
  current = jax.sharding.get_abstract_mesh()
  return None if current.empty else current


def on_cpu() -> bool:
  return platform() == 'cpu'
