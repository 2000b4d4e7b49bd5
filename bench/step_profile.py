"""Where our train step's time goes, by model component: the trainer's jitted step (bench/train_step.py's, same
configs and batch) run under the JAX profiler; every executed XLA op is traced back through the compiled module's
stack frames to the Python code that emitted it, and op time is summed per component.

  python bench/step_profile.py                               # small config, motion stage (14 frames)
  python bench/step_profile.py --config medium --stage frame

A component is the innermost frame in our package (`models/...`, `train/...`) or optax that emitted the op, with
every attention-core function counted as one `attention core` and every conv lowering as `conv`; `temporal` marks
ops under a motion module (the rest are the spatial UNet's, the loss's and the optimizer's). `op ms` sums the ops'
own times per step, so on several cores the column may add up to more than the step's wall time. The wall time is
the median of steps run outside the profiler, after `train_step.WARMUP` untimed ones.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgvac_jax import host  # noqa: E402

import interleave  # noqa: E402  (bench/, the script's own folder)
import train_step  # noqa: E402

_SECTIONS = ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames')


def stack_frames(hlo_text: str):
  """(instruction name -> stack frame id, frame id -> [(file, function, line), ...] innermost first) from the
  tables at the top of a compiled module's text."""
  files, funcs, locs, parents = {}, {}, {}, {}
  section = None
  for line in hlo_text.splitlines():
    if line in _SECTIONS:
      section = line
      continue
    m = re.match(r'^(\d+) (.*)$', line)
    if section is None or not m:
      section = None
      continue
    i, rest = int(m.group(1)), m.group(2)
    fields = {k: int(v) for k, v in re.findall(r'(\w+)=(\d+)', rest)}
    if section == 'FileNames':
      files[i] = rest.strip('"')
    elif section == 'FunctionNames':
      funcs[i] = rest.strip('"')
    elif section == 'FileLocations':
      locs[i] = (files.get(fields['file_name_id'], '?'), funcs.get(fields['function_name_id'], '?'), fields['line'])
    else:  # the printed parent is the parent's id + 1 (1: none)
      parents[i] = (fields['file_location_id'], fields.get('parent_frame_id', 1) - 1)
  op_frames = {m.group(1): int(m.group(2))
               for m in re.finditer(r'^\s+(?:ROOT )?%?([\w.\-]+) = .*stack_frame_id=(\d+)', hlo_text, re.M)}

  def stack(frame: int) -> list[tuple[str, str, int]]:
    out = []
    while frame in parents and len(out) < 200:
      loc, frame = parents[frame]
      out.append(locs.get(loc, ('?', '?', 0)))
    return out
  return op_frames, stack


def component(stack: list[tuple[str, str, int]]) -> str:
  """'[temporal ]<file>:<function>' of the innermost frame in our package or optax ('attention core', 'conv' for
  those lowerings)."""
  temporal = 'temporal ' if any(f.endswith('models/motion.py') for f, _, _ in stack) else ''
  for f, fn, _ in stack:
    fn = fn.split('.<locals>')[0]
    if f.endswith(('models/attention.py', 'models/cpu_attention.py')) and fn not in ('split_heads', 'merge_heads'):
      return temporal + 'attention core'
    if (f.endswith('models/resnet.py') and fn in ('conv2d', '_fold_taps', 'upsample_conv', 'Conv2d.__call__')
        or f.endswith('models/cpu_conv.py')):
      return temporal + 'conv'
    for root in ('tgvac_jax/', 'optax/'):
      if root in f:
        return temporal + f.split(root, 1)[1].removesuffix('.py') + ':' + fn
  return 'other'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='small', choices=sorted(train_step.CONFIGS))
  p.add_argument('--stage', default='motion', choices=('frame', 'motion'))
  p.add_argument('--size', type=int, default=32, help='latent height = width')
  p.add_argument('--batch', type=int, default=0, help='images (frame) or clips (motion) per step; 0: 2 / 1')
  p.add_argument('--frames', type=int, default=14)
  p.add_argument('--steps', type=int, default=3, help='profiled steps (and 2x as many timed ones)')
  p.add_argument('--top', type=int, default=20, help='rows printed')
  args = p.parse_args()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax  # pylint: disable=import-outside-toplevel

  batch = args.batch or (2 if args.stage == 'frame' else 1)
  _, _, unet, te, z = train_step.build(args.config, args.stage, args.frames, batch, args.size)
  run, compile_s, _, compiled = train_step.ours_step(args.stage, unet, te, z)
  op_frames, stack = stack_frames(compiled.as_text())
  for _ in range(train_step.WARMUP):
    run()
  walls = []
  for _ in range(2 * args.steps):
    t0 = time.perf_counter()
    run()
    walls.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.steps):
      run()
    jax.profiler.stop_trace()
    trace = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
    with gzip.open(trace) as f:
      events = json.load(f)['traceEvents']

  ms, ops = collections.Counter(), collections.Counter()
  for e in events:
    op = (e.get('args') or {}).get('hlo_op', e.get('name'))
    if e.get('ph') == 'X' and op in op_frames:
      key = component(stack(op_frames[op]))
      ms[key] += e['dur'] / 1e3 / args.steps
      ops[key] += 1
  total = sum(ms.values())
  cpu = interleave.cpu_name()
  shape = f'{batch}x{args.frames}' if args.stage == 'motion' else f'{batch}'
  print(f'{args.config} {args.stage} stage, batch {shape}, {args.size}x{args.size} latent, fp32, {cpu}, '
        f'{os.cpu_count()} cores, jax {jax.__version__} ({jax.devices()[0].platform}); compile {compile_s:.1f} s')
  print(f'step wall {statistics.median(walls) * 1e3:.0f} ms (median of {len(walls)}), op time {total:.0f} ms/step\n')
  print('| component | op ms/step | share | ops/step |')
  print('|---|---|---|---|')
  for key, v in ms.most_common(args.top):
    print(f'| {key} | {v:.1f} | {v / total:.0%} | {ops[key] // args.steps} |')
  rest = total - sum(v for _, v in ms.most_common(args.top))
  if rest > 0:
    print(f'| (the other {len(ms) - args.top} components) | {rest:.1f} | {rest / total:.0%} | |')


if __name__ == '__main__':
  host.tune_allocator()  # as run.py does
  main()
