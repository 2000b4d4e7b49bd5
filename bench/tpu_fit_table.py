"""docs/scale.md's "Will it fit?" table in one command: the paper-scale programs compiled for TPU slices on this host
(the compile job, configs/compile.py; no TPU needed), one row per program and topology.

Each row is one `python run.py --config configs/compile.py ...` subprocess, one at a time, so every compile's host
memory (5-11 GB at --effort=-1, 11-21 GB at the default effort for an SD-1.5 step) is freed before the next starts.
A row whose `<out>/<row>/compile.json` was written by the same command is reused, so an interrupted sweep resumes.

  nice -n 19 python bench/tpu_fit_table.py --effort=-1                       # every row (hours on 2 cores)
  nice -n 19 python bench/tpu_fit_table.py --effort=-1 'motion-*-v4-8' 'frame-b64-*'   # these rows, in this order
  python bench/tpu_fit_table.py --effort=-1 --table                          # no compile: the table of what is there
  python bench/tpu_fit_table.py --list                                       # the rows and their commands
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tgvac_jax.compile import chips  # noqa: E402  (pure Python: no JAX until a compile)

GIB = 2 ** 30
TOPOLOGIES = ('v4-8', 'v5e-8', 'v5e-32', 'v5p-8')
FRAME_BATCHES = (16, 64, 256)
REMATS = ('none', 'motion', 'full')
MOTION_BATCH = 16   # the paper's clips per step


@dataclasses.dataclass(frozen=True)
class Row:
  name: str            # the row's folder under --out, and what the positional patterns match
  label: str           # the table's program column
  topology: str
  config: tuple[tuple[str, str], ...]   # configs/compile.py fields (topology and effort aside)
  skip: str = ''       # why this cell is not compiled (a batch that does not divide the slice)


def _train(config: str, overrides: str, programs: str = 'train_step') -> tuple[tuple[str, str], ...]:
  return ((('train', config),) + ((('programs', programs),) if programs else ())
          + ((('overrides', overrides),) if overrides else ()))


def matrix() -> list[Row]:
  """The issue's cells: frame stage at global batch 16 / 64 / 256, motion stage (16 clips x 14 frames) with each
  remat, the bf16 sampler, per topology; configs/frame_v5e_32.py as shipped, and from cached latents
  with fsdp over all 32 chips and with a data axis. A batch must divide the slice's chips (the trainer splits it
  over data x fsdp = all chips), or be a divisor of them (then 'tensor' splits each image's rows:
  `sharding.batch_rows_split`)."""
  rows = []
  for topo in TOPOLOGIES + ('v6e-8',):
    n = chips.parse(topo).chips
    if topo != 'v6e-8':
      for b in FRAME_BATCHES:
        # a batch below the chips that divides them: fsdp takes the batch, 'tensor' splits each image's rows
        mesh = f'fsdp {b} x tensor {n // b}' if b < n else f'fsdp {n}'
        skip = f'batch {b} does not divide {n} chips (use {n} or more)' if b % n and n % b else ''
        rows.append(Row(f'frame-b{b}-{topo}', f'frame step, `configs/frame.py`, batch {b}, {mesh}', topo,
                        _train('configs/frame.py', f'batch_size={b}'), skip))
      # the paper's 16 clips everywhere: on a v5e-32, fsdp 16 x tensor 2 (each clip's rows split over 2 chips)
      b = MOTION_BATCH
      mesh = f'fsdp {b} x tensor {n // b}' if b < n else f'fsdp {n}'
      for remat in REMATS:
        rows.append(Row(f'motion-{remat}-{topo}', f'motion step, `configs/motion.py`, {b} x 14 frames, remat {remat}, '
                        f'{mesh}', topo, _train('configs/motion.py', f'remat={remat}')))
    rows.append(Row(f'sampler-{topo}', 'sampler, `configs/infer.py` bf16, one 14 x 256² window per chip, 30 steps',
                    topo, (('infer', 'configs/infer.py'), ('overrides', 'dtype=bfloat16'))))
  # the change that would fit the frame step at batch 256 on a v5e-8 if the default effort needs ~30% more
  # temporaries than effort -1 (docs/scale.md): half the activations
  rows.append(Row('frame-b256-accum2-v5e-8', 'frame step, `configs/frame.py`, batch 256 as 2 calls '
                  'of 128 (`optim.grad_accum=2`; FLOPs and step per call), fsdp 8', 'v5e-8',
                  _train('configs/frame.py', 'batch_size=256,optim.grad_accum=2')))
  rows.append(Row('frame_v5e_32-v5e-32', 'frame step + encoder, `configs/frame_v5e_32.py` as shipped', 'v5e-32',
                  _train('configs/frame_v5e_32.py', '', programs='')))
  rows.append(Row('frame_v5e_32-cached-v5e-32', '`configs/frame_v5e_32.py`, cached latents (fsdp 32)', 'v5e-32',
                  _train('configs/frame_v5e_32.py', 'data.cached_latents=latents/')))
  rows.append(Row('frame_v5e_32-cached-data4-v5e-32', '`configs/frame_v5e_32.py`, cached latents, mesh data 4 x fsdp 8',
                  'v5e-32', _train('configs/frame_v5e_32.py', 'data.cached_latents=latents/,mesh.data=4,mesh.fsdp=8')))
  return rows


def select(rows: list[Row], patterns: list[str]) -> list[Row]:
  """Rows matching the patterns (fnmatch on the name), in the patterns' order; all rows without patterns."""
  if not patterns:
    return rows
  chosen = []
  for p in patterns:
    hits = [r for r in rows if fnmatch.fnmatchcase(r.name, p)]
    if not hits:
      raise SystemExit(f'tpu_fit_table.py: error: no row matches {p!r}; rows: {", ".join(r.name for r in rows)}')
    chosen += [r for r in hits if r not in chosen]
  return chosen


def command(row: Row, effort: float, out: Path) -> list[str]:
  cmd = [sys.executable, 'run.py', '--config', 'configs/compile.py', f'--config.topology={row.topology}']
  cmd += [f'--config.{k}={v}' for k, v in row.config]
  if effort:
    cmd.append(f'--config.effort={effort:g}')
  return cmd + [f'--config.out={out / row.name}']


def shell(cmd: list[str]) -> str:
  """The command as a user types it: `python`, paths under the repository relative to it."""
  return shlex.join(['python'] + cmd[1:]).replace(f'{ROOT}/', '')


def reusable(record: dict | None, cmd: list[str], out_dir: Path) -> bool:
  """A row is done when its record names the same command (interpreter aside), it exited 0 and its compile.json is
  there."""
  return (record is not None and record.get('command') == cmd[1:] and record.get('rc') == 0
          and (out_dir / 'compile.json').is_file())


def read_record(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def run_row(cmd: list[str], log: Path) -> dict:
  """Runs one compile; its wall and CPU seconds and peak RSS are its own (os.wait4 on that child)."""
  load = os.getloadavg()[0]
  t0 = time.time()
  with open(log, 'w') as f:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  return {'command': cmd[1:], 'rc': proc.returncode, 'wall_s': time.time() - t0,
          'cpu_s': usage.ru_utime + usage.ru_stime, 'peak_rss_gb': usage.ru_maxrss * 1024 / 1e9,
          'load_start': load, 'load_end': os.getloadavg()[0], 'nice': os.nice(0),
          'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}


def error_line(log: Path) -> str:
  """The job's `run.py: error: ...` line, else the log's last line (a crash, a kill)."""
  lines = [ln for ln in log.read_text(errors='replace').splitlines() if ln.strip()] if log.is_file() else []
  errors = [ln for ln in lines if 'run.py: error:' in ln]
  return (errors or lines or ['no output'])[-1].strip()


def cells(report: dict, record: dict | None) -> list[str]:
  """One table row's cells (after program and topology) from one program of compile.json."""
  r = report
  over = (r['hbm_bytes'] - r['hbm_capacity']) / GIB
  fits = 'yes' if r['fits'] else f'**no**, over by {over:.2f} GiB'
  hbm = (f"{r['hbm_bytes'] / GIB:.2f} of {r['hbm_capacity'] / GIB:.0f} (args {r['argument_bytes'] / GIB:.2f}, "
         f"temp {r['temp_bytes'] / GIB:.2f})")
  tflop = f"{r['model_flops'] / 1e12:.1f} (XLA: {r['compiled_flops'] / 1e12:.1f})"
  coll = f"{sum(v['bytes'] for v in r['collectives'].values()) / GIB:.1f}"
  bound = max((r['compute_s'], 'compute'), (r['memory_s'], 'HBM'), (r['ici_s'], 'ICI'))[1]
  step = r['step_s']
  step_text = f'{step:.2f} s' if step >= 1 else f'{step * 1e3:.0f} ms'
  compile_text = f"{sum(r['compile_s'].values()) / 60:.1f} min"
  if record:
    compile_text = (f"{record['wall_s'] / 60:.1f} min wall, {record['cpu_s'] / 60:.1f} CPU-min, "
                    f"{record['peak_rss_gb']:.1f} GB RSS (job: {compile_text} compiling this program)")
  return [fits, hbm, tflop, coll, f'{step_text}, {bound}-bound', f"{100 * r['mfu_ceiling']:.0f}%", compile_text]


HEADER = ('program', 'topology', 'fits?', 'GiB / device', 'TFLOP / step', 'collective GiB', 'roofline step',
          'MFU ceiling', 'compile (whole row)')


def table(rows: list[Row], out: Path, effort: float) -> tuple[str, list[str]]:
  """Markdown table of the rows with results (each named by its row, for `--list ROW` and a rerun), then each row's
  command with when and under what load it compiled; and the rows still missing."""
  lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + ' --- |' * len(HEADER)]
  empty = ' |' * (len(HEADER) - 3)
  notes, missing = [], []
  for row in rows:
    cmd = command(row, effort, out)
    if row.skip:
      lines.append(f'| {row.label} (`{row.name}`) | {row.topology} | not compiled: {row.skip} |' + empty)
      continue
    record = read_record(out / f'{row.name}.run.json')
    if record and record.get('command') == cmd[1:] and record.get('rc') != 0:
      lines.append(f'| {row.label} (`{row.name}`) | {row.topology} | failed: `{record.get("error", "")}` |' + empty)
      notes.append(f'- `{row.name}`: `{shell(cmd)}`')
      continue
    if not reusable(record, cmd, out / row.name):
      missing.append(row.name)
      continue
    result = json.loads((out / row.name / 'compile.json').read_text())
    for p in result['programs']:
      label = row.label if len(result['programs']) == 1 else f"{row.label}: {p['program']}"
      lines.append(f'| {label} (`{row.name}`) | {row.topology} | ' + ' | '.join(cells(p, record)) + ' |')
    job_lines = [ln.strip() for ln in result['lines'] if ln.strip().startswith('->') or 'NOT FIT' in ln]
    load = f"load average {record['load_start']:.1f} -> {record['load_end']:.1f}, nice {record['nice']}"
    notes.append(f'- `{row.name}`: `{shell(cmd)}` ({record["date"]}, {load})'
                 + ''.join(f'; the job: `{ln}`' for ln in job_lines))
  return '\n'.join(lines + [''] + notes) + '\n', missing


def sweep(rows: list[Row], effort: float, out: Path) -> None:
  """Compiles the rows not done yet, one subprocess at a time; each leaves `<row>.run.json` and `<row>.log`."""
  out.mkdir(parents=True, exist_ok=True)
  todo = [r for r in rows if not r.skip]
  for i, row in enumerate(todo, 1):
    cmd = command(row, effort, out)
    record_path = out / f'{row.name}.run.json'
    if reusable(read_record(record_path), cmd, out / row.name):
      print(f'[{i}/{len(todo)}] {row.name}: done before, reused', flush=True)
      continue
    print(f'[{i}/{len(todo)}] {row.name}: {shell(cmd)}', flush=True)
    record = run_row(cmd, out / f'{row.name}.log')
    if record['rc'] != 0:
      record['error'] = error_line(out / f'{row.name}.log')
    record_path.write_text(json.dumps(record, indent=1) + '\n')
    print(f'[{i}/{len(todo)}] {row.name}: ' + (f"failed (rc {record['rc']}): {record['error']}" if record['rc'] else
          f"{record['wall_s'] / 60:.1f} min, peak RSS {record['peak_rss_gb']:.1f} GB"), flush=True)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('rows', nargs='*', help="row names or patterns ('motion-*-v4-8'); run in this order")
  parser.add_argument('--effort', type=float, default=0.0,
                      help="XLA's exec_time_optimization_effort, -1..1; -1: a first look (see docs/scale.md)")
  parser.add_argument('--out', type=Path, help='one folder per row goes here (default: out/tpu_fit, or '
                      'out/tpu_fit_effort-1 for --effort=-1: a sweep at another effort does not replace its rows)')
  parser.add_argument('--table', action='store_true', help='compile nothing: print the table of the rows done')
  parser.add_argument('--list', action='store_true', help='print each row and its command, compile nothing')
  args = parser.parse_args(argv)
  out = (args.out or ROOT / 'out' / ('tpu_fit' + (f'_effort{args.effort:g}' if args.effort else ''))).absolute()
  rows = select(matrix(), args.rows)
  if args.list:
    for row in rows:
      print(f'{row.name}: ' + (f'skipped: {row.skip}' if row.skip else shell(command(row, args.effort, out))))
    return
  if not args.table:
    sweep(rows, args.effort, out)
  text, missing = table(rows, out, args.effort)
  print(text)
  if missing:
    print(f'\nnot compiled yet ({len(missing)}): {", ".join(missing)}')


if __name__ == '__main__':
  main()
