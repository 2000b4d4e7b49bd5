"""The 'compile' job (configs/compile.py): a training or inference config's programs compiled for a named TPU slice
on this host, one report line per program and `<out>/compile.json`.

Everything the user can get wrong (topology name, config overrides, a mesh that does not divide the slice, a batch
that does not divide the data axes) is checked before anything is compiled, and the report is written only when
every program compiled: a ValueError is run.py's one `run.py: error:` line, and nothing is on disk.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import time

from tgvac_jax import config_keys
from tgvac_jax.compile import chips
from tgvac_jax.compile.flops import count_traced
from tgvac_jax.compile.report import GIB, Report, cpu_custom_calls, report
from tgvac_jax.files import atomic_folder

TRAIN_PROGRAMS = ('train_step', 'encode')
INFER_PROGRAMS = ('sampler',)


def _split(overrides: str) -> list[str]:
  """'a=1,b=(2,3),c=x' -> ['a=1', 'b=(2,3)', 'c=x']: commas inside brackets stay."""
  parts, depth, cur = [], 0, ''
  for ch in overrides:
    depth += ch in '([{'
    depth -= ch in ')]}'
    if ch == ',' and depth == 0:
      parts.append(cur)
      cur = ''
    else:
      cur += ch
  return [p.strip() for p in parts + [cur] if p.strip()]


def apply_overrides(config, overrides: str, what: str) -> None:
  """`--config.overrides='mesh.fsdp=8,optim.grad_accum=2,model.unet_channels=(128,256)'` onto the loaded config,
  each value converted to its field's type; an unknown key names the closest ones."""
  keys = config_keys.flat_keys(config)
  for item in _split(overrides):
    key, eq, text = item.partition('=')
    key = key.strip()
    if not eq or key not in keys:
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
      raise ValueError(f'overrides: {item!r} is not KEY=VALUE of a field of {what}'
                       + (f'; closest: {", ".join(close)}' if close else ''))
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    old = node[leaf]
    text = text.strip()
    try:
      if isinstance(old, bool):
        if text.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(text)
        value = text.lower() in ('true', '1')
      elif isinstance(old, (int, float)):
        value = type(old)(ast.literal_eval(text))
      elif isinstance(old, (tuple, list)):
        value = tuple(ast.literal_eval(text))
      else:
        value = text
    except (ValueError, SyntaxError, TypeError) as e:
      raise ValueError(f'overrides: {key}={text!r} is not a {type(old).__name__} like its default {old!r}') from e
    node[leaf] = value


def check_mesh(mesh_cfg, topology: chips.Topology) -> None:
  """The trainer's mesh must cover the slice's devices exactly; the error names the sizes that would."""
  n = topology.chips
  sizes = {a: int(mesh_cfg[a]) for a in ('data', 'fsdp', 'tensor')}
  known = math.prod(s for s in sizes.values() if s != -1)
  ok = known > 0 and (n % known == 0 if -1 in sizes.values() else known == n)
  if not ok:
    others = {a: s for a, s in sizes.items() if a != 'fsdp'}
    rest = math.prod(s for s in others.values() if s != -1)
    choices = [d for d in range(1, n + 1) if n % (d * rest) == 0] if rest > 0 and n % rest == 0 else []
    mesh = ' x '.join(f'{a}={s}' for a, s in sizes.items())
    hint = (f'valid mesh.fsdp with {", ".join(f"{a}={s}" for a, s in others.items())}: '
            f'{", ".join(map(str, choices))} or -1 (all the rest)' if choices else
            f'choose sizes whose product is {n} (mesh.fsdp=-1 takes the rest)')
    raise ValueError(f'mesh {mesh} does not divide the {n} devices of {topology.name}'
                     + (f' x {topology.num_slices} slices' if topology.num_slices > 1 else '') + f'; {hint}')


def advice(r: Report, config) -> str:
  """What would fit, for a program over the HBM: estimates from its own numbers (activations scale with the
  micro-batch, sharded state with 1 / fsdp)."""
  if r.fits:
    return ''
  over = (r.hbm_bytes - r.hbm_capacity) / GIB
  tips = []
  if r.program == 'train_step':
    if config.remat == 'none':
      tips.append('remat=motion or remat=full' if config.stage == 'motion' else 'remat=full')
    elif config.remat == 'motion':
      tips.append('remat=full')
    free = r.hbm_capacity - (r.hbm_bytes - r.temp_bytes)
    if free > 0 and r.temp_bytes > 0:
      accum = 2 ** math.ceil(math.log2(max(2.0, r.temp_bytes / free)))
      tips.append(f'optim.grad_accum={accum * int(config.optim.grad_accum)} (about 1/{accum} of the '
                  f'{r.temp_bytes / GIB:.1f} GiB of activations)')
    tips.append('a larger fsdp axis (more chips: the weights, Adam moments and EMA split further)')
  elif r.program == 'encode':
    tips.append('fewer examples per call (the cache encodes cache.batch_size records at a time)')
  else:
    tips.append('fewer frames per video (--config.frames), or dtype=bfloat16')
  return f'  -> over by {over:.2f} GiB per device; might fit with: ' + '; '.join(tips)


def run(config) -> None:
  c = config
  if bool(c.train) == bool(c.infer):
    raise ValueError('set exactly one of --config.train=configs/<stage>.py[:arg] or --config.infer=configs/infer.py')
  topology = chips.parse(c.topology, int(c.num_slices))
  spec = c.train or c.infer
  target_config = config_keys.load(spec)
  apply_overrides(target_config, c.overrides, spec)
  valid = TRAIN_PROGRAMS if c.train else INFER_PROGRAMS
  names = [p.strip() for p in c.programs.split(',') if p.strip()] or list(valid)
  bad = [p for p in names if p not in valid]
  if bad:
    raise ValueError(f'programs {bad} are not programs of a {"training" if c.train else "inference"} config; '
                     f'choose from {", ".join(valid)}')
  if c.train:
    check_mesh(target_config.mesh, topology)
  effort = float(c.effort)
  if not -1.0 <= effort <= 1.0:
    raise ValueError(f'effort {effort} is outside XLA\'s range -1.0 .. 1.0 (0: what a pod compiles)')
  options = {'exec_time_optimization_effort': effort} if effort else None

  devices = chips.devices(topology)
  import jax  # pylint: disable=import-outside-toplevel  (after chips.devices put JAX on the CPU backend)
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from tgvac_jax.compile import programs  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.metrics import peak_flops  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.sharding import make_mesh  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.state import micro_batch_size  # pylint: disable=import-outside-toplevel
  peak = peak_flops(devices[0])
  print(f'compile: {spec} for {topology.name} ({len(devices)} x {devices[0].device_kind}, '
        f'{topology.chip.hbm_gib:g} GiB HBM each), programs {", ".join(names)}', flush=True)

  built = []
  if c.train:
    mesh = make_mesh(target_config.mesh, devices, batch=micro_batch_size(target_config))
    for name in names:
      built.append((getattr(programs, name)(target_config, mesh), mesh, target_config))
  else:
    from tgvac_jax.infer.job import DTYPES, completion_from_config  # pylint: disable=import-outside-toplevel
    if target_config.dtype not in DTYPES:
      raise ValueError(f'dtype {target_config.dtype!r} is not one of {sorted(DTYPES)}')
    completion, _ = completion_from_config(target_config)
    mesh = Mesh(np.asarray(devices), ('data',))
    size = int(target_config.resolution or c.resolution)
    models = programs.sampler_models(target_config.checkpoint, size, DTYPES[target_config.dtype])
    built.append((programs.sampler(completion, models, mesh, frames=int(c.frames), resolution=size), mesh,
                  target_config))

  reports, lines = [], []
  for program, mesh, cfg in built:
    print(f'  {program.name}: tracing, lowering and compiling for {len(devices)} devices ...', flush=True)
    t0 = time.perf_counter()
    traced = program.trace(mesh)
    counted = count_traced(traced)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile(options)
    times = {'trace': t1 - t0, 'lower': t2 - t1, 'compile': time.perf_counter() - t2}
    del lowered
    calls = cpu_custom_calls(compiled.as_text())
    if calls and devices[0].platform != 'cpu':
      raise RuntimeError(f'{program.name}: CPU kernels {calls} in a {devices[0].platform} program')
    model = counted
    if program.name == 'train_step' and cfg.remat != 'none':  # model FLOPs: the same step traced without remat
      twin = cfg.copy_and_resolve_references()
      twin.remat = 'none'
      model = count_traced(programs.train_step(twin, mesh).trace(mesh))
    r = report(program.name, topology, compiled, model.total, counted.total, times, program.examples, peak,
               len(devices), attention='pallas flash' if counted.kernels else 'xla')
    reports.append(r)
    lines.append(r.line())
    print('  ' + r.line(), flush=True)
    if counted.opaque or counted.unknown_trips:
      lines.append(f'  -> FLOPs not counted: {dict(counted.opaque)} kernel calls, {counted.unknown_trips} while loops '
                   'counted once')
      print(lines[-1], flush=True)
    tip = advice(r, cfg)
    if tip:
      print(tip, flush=True)
      lines.append(tip)
    del compiled

  result = {'topology': topology.name, 'num_slices': topology.num_slices, 'devices': len(devices),
            'device_kind': devices[0].device_kind, 'config': spec, 'overrides': c.overrides, 'effort': effort,
            'jax': jax.__version__, 'programs': [r.to_json() for r in reports], 'lines': lines}
  out = atomic_folder(c.out, lambda tmp: (tmp / 'compile.json').write_text(json.dumps(result, indent=1) + '\n'))
  print(f'compile: wrote {out / "compile.json"}', flush=True)
