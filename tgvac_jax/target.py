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

_TARGET: contextvars.ContextVar[tuple[str, int, Mesh | None] | None] = contextvars.ContextVar('tgvac_target',
                                                                                              default=None)


@contextlib.contextmanager
def compiling_for(devices) -> Iterator[None]:
  """Traces inside take the platform and device count of `devices` (a Mesh or a sequence of devices), and the mesh
when it is one."""
  mesh = devices if isinstance(devices, Mesh) else None
  devices = list(np.asarray(getattr(devices, 'devices', devices)).flat)
  token = _TARGET.set((devices[0].platform, len(devices), mesh))
  try:
    yield
  finally:
    _TARGET.reset(token)


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
  which XLA's partitioner does not split, runs under `shard_map` over it): the one `compiling_for` was given, else
  JAX's current mesh (`jax.set_mesh`), else None."""
  target = _TARGET.get()
  if target is not None:
    return target[2]
  current = jax.sharding.get_abstract_mesh()
  return None if current.empty else current


def on_cpu() -> bool:
  return platform() == 'cpu'
