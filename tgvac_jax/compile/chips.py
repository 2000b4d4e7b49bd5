"""TPU chips and slice names: the one table the fit check and the roofline read, and abstract devices for a name.

Per chip, from the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e; figures as
those pages gave them, not measured here): HBM v4 32 GiB at 1200 GB/s, v5e 16 GiB at 819 GB/s, v5p 95 GiB at
2765 GB/s, v6e 32 GiB at 1640 GB/s; inter-chip interconnect v5e 1600 Gbps, v5p 4800 Gbps, v6e 3584 Gbps per chip
(v4's page gives no per-chip figure: 6 links x 45 GB/s one way, the figure of Google's "How to Scale Your Model",
TPU chapter). Peak dense bf16 FLOP/s are `train/metrics.PEAK_FLOPS` (v4 275, v5e 197, v5p 459, v6e 918 TFLOP/s).

Names are Cloud TPU's accelerator types, as MaxText takes them: the number counts TensorCores, so v4-8 and v5p-8
are 4 chips (two cores each, one JAX device per chip: 'megacore'), v5e-8 and v6e-8 are 8 chips of one core.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str          # 'v5e'
  hbm_gib: float           # HBM per chip (= per JAX device)
  hbm_gb_s: float          # HBM bandwidth, GB/s
  ici_gb_s: float          # inter-chip interconnect per chip, GB/s one way (all links)
  cores_per_chip: int      # TensorCores per chip: what the accelerator type's number counts
  chip_config: str         # libtpu's chip_config_name
  slices: tuple[tuple[int, ...], ...]  # the slice shapes of the accelerator types (chips per axis)


_TORUS_3D = ((2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8), (8, 8, 16),
             (8, 16, 16), (16, 16, 16))
_TORUS_2D = ((1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16))

CHIPS = {
    'v4': Chip('v4', 32, 1200, 6 * 45, 2, 'megacore', _TORUS_3D),
    'v5e': Chip('v5e', 16, 819, 1600 / 8, 1, 'default', _TORUS_2D),
    'v5p': Chip('v5p', 95, 2765, 4800 / 8, 2, 'megacore', _TORUS_3D),
    'v6e': Chip('v6e', 32, 1640, 3584 / 8, 1, 'default', _TORUS_2D),
}
ALIASES = {'v5litepod': 'v5e'}  # Cloud TPU's other name for v5e slices


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str                # 'v5e-32'
  chip: Chip
  shape: tuple[int, ...]   # chips per axis of one slice
  num_slices: int = 1

  @property
  def chips(self) -> int:
    return math.prod(self.shape) * self.num_slices


def topology_names() -> list[str]:
  return [f'{g}-{_count(c, s)}' for g, c in CHIPS.items() for s in c.slices]


def _count(chip: Chip, shape: tuple[int, ...]) -> int:
  return chip.cores_per_chip * math.prod(shape)


def parse(name: str, num_slices: int = 1) -> Topology:
  """'v5e-32' (or 'v5litepod-32') -> Topology; ValueError naming the closest valid names."""
  m = re.fullmatch(r'([a-z0-9]+)-(\d+)', name.strip().lower())
  generation = ALIASES.get(m.group(1), m.group(1)) if m else ''
  chip = CHIPS.get(generation)
  shape = next((s for s in chip.slices if _count(chip, s) == int(m.group(2))), None) if chip else None
  if shape is None:
    names = topology_names()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.3)
    if chip:
      close = [n for n in names if n.startswith(chip.generation + '-')]
    raise ValueError(f'unknown TPU topology {name!r}; closest: {", ".join(close) or ", ".join(names[:8])} '
                     f'(generations {", ".join(CHIPS)}; the number counts TensorCores, as Cloud TPU names them)')
  if num_slices < 1:
    raise ValueError(f'num_slices must be >= 1, got {num_slices}')
  return Topology(f'{chip.generation}-{int(m.group(2))}', chip, shape, num_slices)


def devices(topology: Topology) -> list:
  """Abstract TPU devices of the topology (libtpu, no TPU needed): what a mesh for ahead-of-time compiles is made
  of. JAX itself stays on the CPU backend."""
  # No TPU here: libtpu must not ask GCE's metadata server for one, nor take the one-process lock a CPU run.py of
  # this host may hold (it loads libtpu too, finds no chip and goes on).
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  if jax.config.jax_platforms != 'cpu':
    jax.config.update('jax_platforms', 'cpu')  # before any device query: JAX itself stays on the CPU
  chip = topology.chip
  shape = tuple(topology.shape) + (1,) * (3 - len(topology.shape))
  host = tuple(min(a, b) for a, b in zip(shape, (2, 2, 1)))  # 4 chips per host, as on v4/v5p/v5e/v6e pod hosts
  name = f'{chip.generation}:{"x".join(map(str, topology.shape))}'
  topo = topologies.get_topology_desc(platform='tpu', topology_name=name, chip_config_name=chip.chip_config,
                                      chips_per_host_bounds=host, num_slices=topology.num_slices)
  return list(topo.devices)
