"""What a compiled program costs on its chip: HBM per device and whether it fits, FLOPs, the collectives of its
optimized HLO, and a roofline lower bound on its step time.

Collectives are read from `compiled.as_text()`, each weighted by how often it runs: while loops by their known trip
count (the sampler's 30 steps, `lax.map` over frames) or, without one, by their counter (the windowed einsum loops
in which TPU's partitioner fuses FSDP's weight all-gathers into the products as collective-permutes; other layers'
all-gathers that the scheduler sinks into such a loop are weighted the same, an upper bound: docs/scale.md). XLA's
cost_analysis counts such a loop once, which is why FLOPs come from the jaxpr (`flops.py`) and its HBM bytes are a
lower bound. TPU's XLA writes a reduce-scatter as an all-reduce inside a fusion named `all-reduce-scatter*` (the
scatter is its dynamic slice); it is counted as the reduce-scatter it is.
Bytes are what one device sends over ICI, for ring algorithms over n devices: all-gather (n-1)/n of its result,
reduce-scatter and all-to-all (n-1)/n of their input, all-reduce twice that.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

from tgvac_jax.compile.chips import Topology

GIB = 2 ** 30
KINDS = ('all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all', 'collective-permute')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's4': 0.5, 'u4': 0.5, 'f8e4m3fn': 1, 'f8e5m2': 1, 'bf16': 2, 'f16': 2, 's16': 2,
          'u16': 2, 'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8, 'c64': 8, 'c128': 16}
_ARRAY = re.compile(r'\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]')
_HEADER = re.compile(r'^(ENTRY )?%?([\w.\-]+) .*\{\s*$')
_INSTR = re.compile(r'^\s*(ROOT )?%?[\w.\-]+ = (.*?) ([a-z][\w\-]*)\((.*)$')
_CALLS = re.compile(r'(?:calls|body|to_apply|branch_computations|true_computation|false_computation)='
                    r'\{?([^}\s,]+(?:, %[\w.\-]+)*)')
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_COND = re.compile(r'condition=%?([\w.\-]+)')
# the CPU kernels' FFI targets (models/cpu_conv.py, cpu_attention.py register them for the CPU platform only)
CPU_CALL = re.compile(r'custom_call_target="(tgvac_\w*)"')


def array_bytes(type_text: str) -> float:
  """Bytes of an HLO type ('bf16[3,3,32,64]{...}' or a tuple of them)."""
  return sum(_BYTES.get(dt, 0) * math.prod(int(d) for d in dims.split(',') if d)
             for dt, dims in _ARRAY.findall(type_text))


def _group_size(line: str, devices: int) -> int:
  """Devices per replica group: the `mesh[...] {'axes'}` form of TPU HLO, `[g,n]<=[...]` iota groups, or
  `{{0,1,...},...}` lists."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
  if m:
    sizes = dict((k.strip(" '"), int(v)) for k, v in (p.split('=') for p in m.group(1).split(',')))
    return math.prod(sizes[a.strip(" '")] for a in m.group(2).split(',') if a.strip(" '"))
  m = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', line)
  if m:
    return int(m.group(2))
  m = re.search(r'replica_groups=\{\{([^}]*)\}', line)
  if m:
    return len(m.group(1).split(','))
  return devices


def _kind(opcode: str, computation: str) -> str | None:
  op = opcode.removesuffix('-start')
  if op == 'all-reduce' and computation.startswith('all-reduce-scatter'):
    return 'reduce-scatter'
  return op if op in KINDS else None


def _defs(lines: list[str]) -> dict[str, str]:
  """Instruction name -> its line, of one computation."""
  return {m.group(1): line for line in lines if (m := re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = ', line))}


def _operands(line: str, opcode: str) -> list[str]:
  m = re.search(opcode + r'\(([^)]*)\)', line)
  return [re.sub(r'/\*.*?\*/', '', o).strip().lstrip('%') for o in m.group(1).split(',')] if m else []


def _const(name: str, defs: dict[str, str]) -> int | None:
  """The integer constant `name` holds, through copies."""
  line = defs.get(name, '')
  m = re.search(r' constant\((-?\d+)\)', line)
  if m:
    return int(m.group(1))
  copied = _operands(line, 'copy')
  return _const(copied[0], defs) if len(copied) == 1 else None


def _index(line: str | None) -> int | None:
  m = re.search(r'get-tuple-element\(.*index=(\d+)', line or '')
  return int(m.group(1)) if m else None


def _counted_trips(while_line: str, caller: list[str], comps: dict[str, list[str]]) -> int:
  """Trips of a while loop without a known_trip_count (XLA's windowed einsum loops: an all-gather or
  reduce-scatter fused into a loop of collective-permutes and partial products) from its counter: `i < limit` in
  the condition, `i + step` in the body, i's start in the loop's initial tuple. 1 when it is not of that form."""
  cond, body = _COND.search(while_line), re.search(r'body=%?([\w.\-]+)', while_line)
  if not cond or not body:
    return 1
  cdefs, bdefs = _defs(comps.get(cond.group(1), [])), _defs(comps.get(body.group(1), []))
  root = next((line for line in comps.get(cond.group(1), []) if line.lstrip().startswith('ROOT')), '')
  ops = _operands(root, 'compare')
  if 'direction=LT' not in root or len(ops) != 2:
    return 1
  i, limit = _index(cdefs.get(ops[0])), _const(ops[1], cdefs)
  body_root = next((line for line in comps.get(body.group(1), []) if line.lstrip().startswith('ROOT')), '')
  outs = _operands(body_root, 'tuple')
  if i is None or limit is None or i >= len(outs):
    return 1
  step = next((c for o in _operands(bdefs.get(outs[i], ''), 'add') if (c := _const(o, bdefs))), None)
  defs = _defs(caller)
  init = _operands(defs.get(_operands(while_line, 'while')[0], ''), 'tuple')
  start = _const(init[i], defs) if i < len(init) else None
  if not step or start is None:
    return 1
  return max(0, -(-(limit - start) // step))


def collectives(hlo: str, devices: int) -> dict[str, dict[str, float]]:
  """{kind: {'count', 'bytes'}} per execution of the program, per device (see the module docstring)."""
  body: dict[str, list[str]] = defaultdict(list)
  entry, current = None, None
  for line in hlo.splitlines():
    h = _HEADER.match(line)
    if h and '=' not in line.split('(')[0]:
      current = h.group(2)
      if h.group(1):
        entry = current
      continue
    if current is not None and line.strip() not in ('', '}'):
      body[current].append(line)
  # how many times each computation runs per program execution
  edges: dict[str, list[tuple[str, int]]] = defaultdict(list)
  for comp, lines in body.items():
    for line in lines:
      trip = _TRIP.search(line)
      trips = int(trip.group(1)) if trip else _counted_trips(line, lines, body) if ' while(' in line else 1
      for group in _CALLS.findall(line):
        for callee in re.findall(r'%?([\w.\-]+)', group):
          is_body = f'body=%{callee}' in line or f'body={callee}' in line
          edges[comp].append((callee, trips if is_body else 1))
  runs: dict[str, float] = defaultdict(float)
  order, seen = [], set()

  def visit(c):  # callees after callers: a topological order of the call graph
    if c in seen:
      return
    seen.add(c)
    for callee, _ in edges.get(c, ()):
      visit(callee)
    order.append(c)
  visit(entry)
  runs[entry] = 1
  for comp in reversed(order):
    for callee, times in edges.get(comp, ()):
      runs[callee] += runs[comp] * times
  out = {k: {'count': 0.0, 'bytes': 0.0} for k in KINDS}
  for comp, lines in body.items():
    for line in lines:
      m = _INSTR.match(line)
      if not m or runs[comp] == 0:
        continue
      kind = _kind(m.group(3), comp)
      if kind is None:
        continue
      n = _group_size(line, devices)
      size = array_bytes(m.group(2))
      if m.group(3).endswith('-start') and m.group(2).startswith('('):  # (operand, result[, context]) tuples
        parts = _ARRAY.findall(m.group(2))
        size = array_bytes('%s[%s]' % parts[1 if kind == 'all-gather' else 0])
      sent = {'all-gather': size * (n - 1) / n, 'reduce-scatter': size * (n - 1) / n,
              'all-reduce': 2 * size * (n - 1) / n, 'all-to-all': size * (n - 1) / n,
              'collective-permute': size}[kind]
      out[kind]['count'] += runs[comp]
      out[kind]['bytes'] += runs[comp] * sent
  return out


def cpu_custom_calls(hlo: str) -> list[str]:
  """CPU-only custom-call targets in an HLO text (must be none in a TPU program)."""
  return sorted(set(CPU_CALL.findall(hlo)))


@dataclasses.dataclass
class Report:
  program: str
  topology: str
  devices: int
  examples: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  hbm_bytes: int                 # per device: arguments + outputs - donated aliases + temporaries + code
  hbm_capacity: int
  flops: float                   # per step, all devices: the jaxpr's products, remat's recomputation included
  model_flops: float             # per step, all devices: the same without recomputation (flops.py)
  compiled_flops: float          # XLA's cost_analysis of one device's program x devices (see docs/scale.md)
  bytes_accessed: float          # per device
  collectives: dict
  compute_s: float
  memory_s: float
  ici_s: float
  compile_s: dict                # seconds: trace (and FLOP count), lower, compile
  peak_flops: float              # per device (chip), dense bf16
  attention: str = 'xla'         # 'pallas flash' where some attention took the Pallas TPU kernel (models/attention.py)

  @property
  def fits(self) -> bool:
    return self.hbm_bytes <= self.hbm_capacity

  @property
  def step_s(self) -> float:
    """Roofline lower bound: the slowest of compute, HBM traffic and ICI traffic, each at its peak."""
    return max(self.compute_s, self.memory_s, self.ici_s)

  @property
  def mfu_ceiling(self) -> float:
    """Model FLOPs / (step_s x peak): the most MFU this program can reach on this chip."""
    return self.model_flops / self.devices / self.step_s / self.peak_flops if self.step_s else 0.0

  def line(self) -> str:
    c = self.collectives
    coll = sum(v['bytes'] for v in c.values())
    fit = 'fits' if self.fits else f'DOES NOT FIT (over by {(self.hbm_bytes - self.hbm_capacity) / GIB:.2f} GiB)'
    return (f'{self.program} on {self.topology}: {self.hbm_bytes / GIB:.2f} of {self.hbm_capacity / GIB:.0f} GiB HBM '
            f'per device ({fit}; args {self.argument_bytes / GIB:.2f}, temp {self.temp_bytes / GIB:.2f}), '
            f'{self.model_flops / 1e12:.2f} model TFLOP/step (XLA: {self.compiled_flops / 1e12:.2f}), '
            f'collectives {coll / GIB:.3f} GiB/device '
            f'(AG {c["all-gather"]["count"]:.0f}, RS {c["reduce-scatter"]["count"]:.0f}, '
            f'AR {c["all-reduce"]["count"]:.0f}, A2A {c["all-to-all"]["count"]:.0f}, '
            f'CP {c["collective-permute"]["count"]:.0f}), roofline '
            f'{self.step_s * 1e3:.1f} ms ({self._bound()}-bound), MFU ceiling {100 * self.mfu_ceiling:.0f}%, '
            f'traced {self.compile_s["trace"]:.0f} s, lowered {self.compile_s["lower"]:.0f} s, '
            f'compiled {self.compile_s["compile"]:.0f} s')

  def _bound(self) -> str:
    return max((self.compute_s, 'compute'), (self.memory_s, 'HBM'), (self.ici_s, 'ICI'))[1]

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), 'fits': self.fits, 'step_s': self.step_s, 'mfu_ceiling': self.mfu_ceiling}


def cost(compiled) -> dict:
  """XLA's cost analysis of a compiled program (per device)."""
  c = compiled.cost_analysis()
  return (c[0] if isinstance(c, (list, tuple)) else c) or {}


def flops(compiled) -> float:
  """FLOPs of one device's program."""
  return float(cost(compiled).get('flops', 0.0))


def report(program: str, topology: Topology, compiled, model_flops: float, traced_flops: float, compile_s: dict,
           examples: int, peak: float, devices: int, attention: str = 'xla') -> Report:
  """The Report of one compiled program; FLOPs from its jaxpr (`flops.count_traced`), shared evenly by the devices
  in the roofline."""
  mem = compiled.memory_analysis()
  accessed = float(cost(compiled).get('bytes accessed', 0.0))
  hbm = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
         + mem.generated_code_size_in_bytes)
  coll = collectives(compiled.as_text(), devices)
  chip = topology.chip
  name = topology.name + (f' x{topology.num_slices}' if topology.num_slices > 1 else '')
  return Report(program=program, topology=name,
             devices=devices, examples=examples, argument_bytes=mem.argument_size_in_bytes,
             output_bytes=mem.output_size_in_bytes, alias_bytes=mem.alias_size_in_bytes,
             temp_bytes=mem.temp_size_in_bytes, code_bytes=mem.generated_code_size_in_bytes, hbm_bytes=hbm,
             hbm_capacity=int(chip.hbm_gib * GIB), flops=traced_flops,
             model_flops=model_flops, compiled_flops=flops(compiled) * devices, bytes_accessed=accessed,
             collectives=coll,
             compute_s=traced_flops / devices / peak, memory_s=accessed / (chip.hbm_gb_s * 1e9),
             ici_s=sum(v['bytes'] for v in coll.values()) / (chip.ici_gb_s * 1e9), compile_s=compile_s,
             peak_flops=peak, attention=attention)
