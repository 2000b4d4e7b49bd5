"""Builds the synthetic amodal-completion dataset from one source into TFDS array_record files.

  python -m data_prep.build --source procedural --out data/ --num_videos 200
  python -m data_prep.build --source davis --root DAVIS/ --out data/ [--clip_len 14 --resolution 256]
  python -m data_prep.build --source youtube_vos --root ytvos/train --out data/
  python -m data_prep.build --source lasot --root LaSOT/ --masks lasot_masks/ --out data/ --frame_step 3
  python -m data_prep.build --source pix2gestalt --root pix2gestalt/ --out data/ --clip_len 1

Videos are staged in --workers processes (default: every core). Interrupt (even kill -9) and rerun the same
command to resume. The Table-1 statistics are printed at the end and saved next to the records (stats.md,
stats.json), with the skip report (report.json).

Beyond one machine, --beam_pipeline_options runs the build as an Apache Beam pipeline (pip install
'tgvac-jax[beam]'); the options are TFDS's `tfds build` ones, comma-separated Beam flags without the dashes:
  python -m data_prep.build ... --beam_pipeline_options runner=DirectRunner,direct_num_workers=8,\
      direct_running_mode=multi_processing
  python -m data_prep.build ... --beam_pipeline_options runner=FlinkRunner,flink_master=host:8081,\
      environment_type=DOCKER,environment_config=<an image with tgvac-jax installed>
Every Beam worker must see --root and --out at the same path (a shared filesystem). The records are the same in
every mode. With BLIP-2 captions or SAM-2 masks every worker loads its own model: fewer --workers if memory is
short.
"""

from __future__ import annotations

import argparse
import ast
import sys

from data_prep import stats as stats_lib
from data_prep.builder import BuildConfig, build
from data_prep.captions import make_captioner
from data_prep.occlusion import SynthConfig
from data_prep.pool import default_workers
from data_prep.sources import SOURCES, SourceError, get_source


def _value(s: str):
  try:
    return ast.literal_eval(s)
  except (ValueError, SyntaxError):
    return s


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog='python -m data_prep.build', description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('--source', required=True, choices=sorted(SOURCES))
  p.add_argument('--root', default=None, help='dataset folder (not needed for procedural)')
  p.add_argument('--out', required=True, help='output folder (TFDS data_dir)')
  p.add_argument('--clip_len', type=int, default=14)
  p.add_argument('--frame_step', type=int, default=1, help='use every k-th annotated frame inside a clip')
  p.add_argument('--resolution', type=int, nargs='+', default=[256], help='H [W]')
  p.add_argument('--clips_per_track', type=int, default=5)
  p.add_argument('--hard_fraction', type=float, default=0.5)
  p.add_argument('--occluders', default='object=1', metavar='KIND=WEIGHT,...',
                 help="occluder kinds drawn per clip by weight, of object, entering, bar, region "
                      "(e.g. 'object=0.4,entering=0.2,bar=0.2,region=0.2'; data_prep/occlusion.py)")
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--val_fraction', type=float, default=0.2)
  p.add_argument('--image_format', choices=('png', 'jpeg'), default='png', help='occluded frames')
  p.add_argument('--target_format', choices=('png', 'jpeg'), default='png', help='amodal target frames')
  p.add_argument('--jpeg_quality', type=int, default=95)
  p.add_argument('--max_videos', type=int, default=0)
  p.add_argument('--captions', default='source', help="'source', 'file:<json>' or 'blip2:<local folder>'")
  # source options
  p.add_argument('--num_videos', type=int, default=None, help='procedural: number of videos')
  p.add_argument('--masks', default=None, help="lasot: mask folder, or 'box'")
  p.add_argument('--sam2', default=None, help='lasot: local SAM-2 folder; masks are cached under --masks or '
                                              '<out>/lasot_masks')
  p.add_argument('--source_arg', action='append', default=[], metavar='KEY=VALUE',
                 help='extra keyword for the source reader, e.g. splits=train or size=128 (repeatable)')
  p.add_argument('--overwrite', action='store_true', help='discard earlier output of another configuration')
  p.add_argument('--keep_work', action='store_true', help='keep the staged chunks after writing')
  p.add_argument('--workers', type=int, default=default_workers(),
                 help='staging processes on this machine (default: its cores)')
  p.add_argument('--beam_pipeline_options', default=None, metavar='K=V,K=V',
                 help='build as an Apache Beam pipeline with these options, e.g. runner=DirectRunner')
  p.add_argument('--quiet', action='store_true')
  return p.parse_args(argv)


def _occluders(text: str) -> tuple[tuple[str, float], ...]:
  """'object=0.4,bar=0.6' -> (('object', 0.4), ('bar', 0.6)); SynthConfig checks the kinds and weights."""
  try:
    return tuple((k.strip(), float(w)) for k, w in (item.split('=') for item in text.split(',')))
  except ValueError:
    raise ValueError(f'--occluders {text!r}: expected KIND=WEIGHT pairs separated by commas, '
                     "e.g. 'object=0.4,entering=0.2,bar=0.2,region=0.2'") from None


def main(argv=None) -> int:
  a = parse_args(argv)
  kw = {}
  for item in a.source_arg:
    k, _, v = item.partition('=')
    kw[k] = _value(v)
  res = tuple(a.resolution) if len(a.resolution) == 2 else a.resolution[0]
  if a.source == 'procedural':
    if a.num_videos is not None:
      kw.setdefault('num_videos', a.num_videos)
    kw.setdefault('size', res)
  if a.source == 'lasot':
    if a.sam2:
      import os
      from data_prep.masker import Sam2BoxMasker
      kw['masks'] = Sam2BoxMasker(a.sam2, a.masks or os.path.join(a.out, 'lasot_masks'))
    elif a.masks:
      kw['masks'] = a.masks
  if a.workers < 1:
    print(f'error: --workers must be at least 1, got {a.workers}', file=sys.stderr)
    return 2
  if a.root is None and a.source != 'procedural':
    print(f'error: --source {a.source} needs --root', file=sys.stderr)
    return 2
  try:
    synth = SynthConfig(clip_len=a.clip_len, frame_step=a.frame_step, resolution=res,
                        clips_per_track=a.clips_per_track, hard_fraction=a.hard_fraction,
                        occluders=_occluders(a.occluders))
    source = get_source(a.source, a.root, **kw)
    captioner = make_captioner(a.captions)
  except (SourceError, FileNotFoundError, ImportError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  cfg = BuildConfig(
      synth=synth,
      seed=a.seed, val_fraction=a.val_fraction, image_format=a.image_format, target_format=a.target_format,
      jpeg_quality=a.jpeg_quality, max_videos=a.max_videos)
  beam = None if a.beam_pipeline_options is None else [
      f'--{o.strip()}' for o in a.beam_pipeline_options.split(',') if o.strip()]
  try:
    result = build(source, cfg, a.out, captioner, progress=not a.quiet, overwrite=a.overwrite,
                   keep_work=a.keep_work, workers=a.workers, beam_options=beam)
  except ImportError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except RuntimeError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'\nwrote {result.dataset_dir}: {result.num_examples}')
  print(result.report.summary())
  print()
  print(stats_lib.format_table(result.stats))
  return 0


if __name__ == '__main__':
  sys.exit(main())
