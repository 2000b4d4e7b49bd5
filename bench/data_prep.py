"""Dataset build throughput (data_prep.build) at 1 and 2 staging workers, peak memory per worker, and projected
hours for the paper's Table-1 sources at 16 workers.

  python bench/data_prep.py [--out runs/bench_data_prep] [--videos 8] [--workers 1 2] [--frames 24 57]

Sources: the procedural one at 256^2, and generated DAVIS-like folders of 854x480 JPEG frames + palette PNG
annotations (so decoding counts), one per --frames length. Output clips are 14 x 256^2 PNG, 5 per object track.
Each (source, workers) build runs in a fresh process: staging (listing + synthesis, in the workers) and writing
(TFDS array_record, in the main process) are timed apart; memory is the peak RSS of the main process (staging
inline at 1 worker, then writing) and of the largest staging process.

Projection: staging CPU seconds per video on the DAVIS-like folders (5 clips per track at both lengths), fitted
as a * tracks + b * frames (b: decoding one frame's annotation, for the video itself and again for every occluder
drawn from it), scaled by the videos, object tracks and mean annotated frames of each source and divided by 16
workers x the 2-worker CPU efficiency; writing (one process) adds its measured CPU seconds per clip. LaSOT frames
are ~1280x720: b is scaled by the pixel ratio. CPU time, not wall time, so that other load on the machine does
not count; on idle dedicated cores wall time follows CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

# (name, videos, mean annotated frames per video, object tracks per video, pixel ratio to 854x480)
SOURCES = (
    ('DAVIS-2017 train+val', 90, 69, 2.0, 1.0),
    ('YouTube-VOS train', 3471, 113 / 5, 1.9, 1.0),   # annotations every 5th frame, Table 1's 113 frames
    ('LaSOT (all frames)', 1400, 2514, 1.0, 1280 * 720 / (854 * 480)),  # 3.52M frames
)


def make_davis_like(root: str, videos: int, frames: int) -> str:
  """DAVIS-2017 layout at 480p from procedural renders (textured background, 1-2 moving sprites)."""
  from PIL import Image

  from data_prep.sources.procedural import ProceduralSource
  done = os.path.join(root, '.done')
  if os.path.exists(done):
    return root
  src = ProceduralSource(num_videos=videos, size=(480, 854), min_frames=frames, max_frames=frames, seed=7)
  pal = [0, 0, 0, 200, 0, 0, 0, 200, 0] + [128] * (256 * 3 - 9)
  for v in src.videos():
    fr, lab = src.render(v)
    idir, adir = (os.path.join(root, k, '480p', v) for k in ('JPEGImages', 'Annotations'))
    os.makedirs(idir, exist_ok=True)
    os.makedirs(adir, exist_ok=True)
    for t in range(frames):
      Image.fromarray(fr[t]).save(os.path.join(idir, f'{t:05d}.jpg'), quality=90)
      im = Image.fromarray(lab[t], mode='P')
      im.putpalette(pal)
      im.save(os.path.join(adir, f'{t:05d}.png'))
  open(done, 'w').close()
  return root


def source_of(spec: str, videos: int):
  from data_prep.sources import get_source
  from data_prep.sources.procedural import ProceduralSource
  if spec == 'procedural':
    return ProceduralSource(num_videos=videos, size=256)
  return get_source('davis', spec)


def _hwm_mb(pid: int | str = 'self') -> float:
  """Peak resident memory of a process since its exec (VmHWM; ru_maxrss would carry the parent's over exec)."""
  with open(f'/proc/{pid}/status') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('VmHWM')) / 1024


class _WorkerPeaks(threading.Thread):
  """Samples the peak memory of this process's children (the staging workers) until stopped."""

  def __init__(self):
    super().__init__(daemon=True)
    self.peak, self.stop = {}, threading.Event()

  def run(self):
    me = os.getpid()
    while not self.stop.wait(0.2):
      try:
        kids = open(f'/proc/{me}/task/{me}/children').read().split()
      except OSError:
        continue
      for k in kids:
        try:
          self.peak[k] = max(self.peak.get(k, 0.0), _hwm_mb(k))
        except (OSError, StopIteration):
          pass


def one(spec: str, videos: int, workers: int, out: str) -> dict:
  """One build in this (fresh) process. -> timings and peak memory."""
  from data_prep import builder as B
  from data_prep import staging
  from data_prep.occlusion import SynthConfig
  src = source_of(spec, videos)
  cfg = B.BuildConfig(SynthConfig(clip_len=14, resolution=256, clips_per_track=5))
  work = os.path.join(out, '.work', B.config_name(src.name, cfg))
  peaks = _WorkerPeaks()
  peaks.start()
  t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
  s0 = resource.getrusage(resource.RUSAGE_SELF)
  staged = staging.stage(src, cfg, work, progress=False, workers=workers)
  t1, s1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
  c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
  peaks.stop.set()
  main_stage = _hwm_mb()
  res = B.build(src, cfg, out, progress=False, workers=workers)  # finds every chunk staged: writes only
  t2, s2 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
  cpu = lambda a, b: (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)
  return dict(videos=len(staged.videos), instances=res.stats[src.name]['instances'],
              clips=sum(res.num_examples.values()), stage_s=t1 - t0, write_s=t2 - t1,
              stage_cpu_s=cpu(s0, s1) + cpu(c0, c1), write_cpu_s=cpu(s1, s2), main_mb=_hwm_mb(),
              worker_mb=max(peaks.peak.values()) if workers > 1 else main_stage)


def cpu_model() -> str:
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        return f"{line.split(':', 1)[1].strip()} ({len(os.sched_getaffinity(0))} cores)"
  except OSError:
    pass
  return 'unknown CPU'


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default='runs/bench_data_prep')
  p.add_argument('--videos', type=int, default=8)
  p.add_argument('--workers', type=int, nargs='+', default=[1, 2])
  p.add_argument('--frames', type=int, nargs='+', default=[24, 57], help='DAVIS-like video lengths')
  p.add_argument('--one', nargs=3, metavar=('SOURCE', 'WORKERS', 'OUT'), help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.one:
    print(json.dumps(one(a.one[0], a.videos, int(a.one[1]), a.one[2])))
    return
  specs = [('procedural 256^2', 'procedural', 0)]
  for f in a.frames:
    t = time.perf_counter()
    root = make_davis_like(os.path.join(a.out, f'davis_like_{a.videos}x{f}'), a.videos, f)
    print(f'DAVIS-like folder {root} ({a.videos} videos x {f} frames at 854x480) in {time.perf_counter() - t:.0f}s',
          flush=True)
    specs.append((f'DAVIS-like 480p, {f} fr', root, f))
  rows = []
  for name, spec, frames in specs:
    for w in a.workers:
      out = os.path.join(a.out, 'builds', f'{name.split()[0]}_{frames}_{w}w_{time.time_ns()}')
      run = subprocess.run([sys.executable, __file__, '--videos', str(a.videos), '--one', spec, str(w), out],
                           capture_output=True, text=True)
      if run.returncode:
        raise SystemExit(f'{name} workers={w} failed:\n{run.stderr[-3000:]}')
      r = json.loads(run.stdout.splitlines()[-1])
      rows.append((name, frames, w, r))
      print(f'{name:24s} workers={w}: {json.dumps({k: round(v, 2) for k, v in r.items()})}', flush=True)
      subprocess.run(['rm', '-rf', out], check=True)

  print(f'\nBuild throughput, 14x256^2 PNG clips, {a.videos} videos per source, on {cpu_model()}, load average '
        f'{os.getloadavg()[0]:.1f}:')
  print(f"{'source':24s} {'workers':>7s} {'videos/s':>9s} {'clips/s':>8s} {'stage v/s':>9s} {'write c/s':>9s} "
        f"{'speedup':>7s} {'main MB':>8s} {'worker MB':>9s}")
  base = {}
  for name, frames, w, r in rows:
    total = r['stage_s'] + r['write_s']
    base.setdefault(name, total)
    print(f"{name:24s} {w:7d} {r['videos'] / total:9.2f} {r['clips'] / total:8.2f} {r['videos'] / r['stage_s']:9.2f} "
          f"{r['clips'] / r['write_s']:9.1f} {base[name] / total:7.2f} {r['main_mb']:8.0f} {r['worker_mb']:9.0f}")

  davis = [(frames, r) for name, frames, w, r in rows if frames and w == 1]
  if len(davis) >= 2:
    fr = np.array([f for f, _ in davis], float)
    per_video = np.array([r['stage_cpu_s'] / r['videos'] for _, r in davis])
    b, a0 = np.polyfit(fr, per_video, 1)
    tracks = np.mean([r['instances'] / r['videos'] for _, r in davis])
    clips_per_track = np.mean([r['clips'] / r['instances'] for _, r in davis])
    write = np.mean([r['write_cpu_s'] / r['clips'] for _, r in davis])
    cpu1 = {f: r['stage_cpu_s'] for f, r in davis}
    wmax = max(a.workers)
    eff = min(1.0, float(np.mean([cpu1[f] / r['stage_cpu_s'] for n, f, w, r in rows if f and w == wmax])))
    print(f'\nStaging CPU s per video = {a0 / tracks:.2f} per object track + {b * 1e3:.1f} ms per annotated frame '
          f'(DAVIS-like, 1 worker, {clips_per_track:.1f} clips per track); writing {write * 1e3:.0f} ms CPU per clip '
          f'(one process); {wmax}-worker efficiency {eff:.2f} (staging CPU at 1 worker / at {wmax}).')
    print(f"{'source (whole)':24s} {'videos':>7s} {'frames':>7s} {'clips':>7s} {'1 worker h':>10s} "
          f"{'16 workers h':>12s}")
    for name, n, frames, src_tracks, px in SOURCES:
      clips = n * src_tracks * clips_per_track
      stage_h = n * (a0 / tracks * src_tracks + b * px * frames) / 3600
      write_h = clips * write / 3600
      print(f'{name:24s} {n:7d} {frames:7.0f} {clips:7.0f} {stage_h + write_h:10.1f} '
            f'{stage_h / (16 * eff) + write_h:12.2f}')

if __name__ == '__main__':
  main()
