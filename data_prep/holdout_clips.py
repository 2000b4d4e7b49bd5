"""A second clip generator, written apart from data_prep/sources/procedural.py and sharing no code with it: the
demo's "unseen generator" clips, DAVIS-style with amodal ground truth.

  python -m data_prep.holdout_clips --out out/holdout_task --family task --clips 24 --seed 0
  python -m data_prep.holdout_clips --out out/holdout_full --family full --clips 24 --seed 0

It exists to measure whether the demo's model learned amodal completion or only its own generator's clips, so it
must never be a training source nor the basis of any choice of recipe or sampler setting (choose those on a
separately seeded build of the procedural source). Everything here is drawn differently from the procedural
source: shapes are polygons rasterized by an even-odd scanline on a 4x supersampled grid (antialiased edges, not
analytic inside-tests), colours are this module's own shades of the vocabulary's colour names, motions, backgrounds and
occluders are its own. Captions use only words of the demo's vocabulary ("a large red star"), as a user would.

Families:
  task  the demo's task: flat background, plain colours, its six shapes, medium or large, rigid (a fixed angle)
  full  textured backgrounds, striped/dotted/checkered objects lit from one side, eight shapes of every size that
        turn and change size over time
Occluders (one per clip, sometimes two): another object crossing (often entering from the frame's edge), a bar or
post sweeping across, or a large region (flat, or textured in the full family) sliding in from one side. The target
itself may enter from the frame's edge. A clip is kept only when it is a real amodal test: the object is visible in
frame 1 (inference needs that), hidden in part on many frames, and never leaves the frame.

Layout (what tgvac_jax/eval/amodal_root.py reads and configs/infer.py takes as a DAVIS-style root):
  ROOT/JPEGImages/<seq>/<00000>.jpg  ROOT/Annotations/<seq>/*.png (palette, 1 = the object's visible part)
  ROOT/AmodalAnnotations/<seq>/*.png  ROOT/AmodalObjects/<seq>/*.png (RGBA)  ROOT/captions.json  ROOT/holdout.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from tgvac_jax.eval import amodal_root
from tgvac_jax.files import atomic_folder

VERSION = 1
FAMILIES = ('task', 'full')
SUPERSAMPLE = 4
# The vocabulary's colour names in this generator's own shades (a user's "red" is not the training set's red).
PAINTS = {
    'red': (205, 35, 50), 'orange': (235, 125, 25), 'yellow': (232, 205, 35), 'green': (45, 150, 75),
    'teal': (25, 135, 140), 'blue': (35, 65, 205), 'purple': (115, 50, 175), 'pink': (232, 105, 165),
    'brown': (120, 72, 38), 'gray': (118, 120, 125), 'black': (22, 22, 30),
}
TASK_SHAPES = ('circle', 'square', 'triangle', 'star', 'heart', 'cross')
FULL_SHAPES = TASK_SHAPES + ('hexagon', 'diamond')
FULL_PATTERNS = ('plain', 'striped', 'dotted', 'checkered')
MOTIONS = ('drift', 'enter', 'bob', 'arc', 'pause')
OCCLUDERS = ('object', 'bar', 'region')
SIZE_WORDS = ((0.135, 'small'), (0.19, 'medium'), (1.0, 'large'))  # circumradius / frame side, upper bounds
RADIUS = {'task': (0.14, 0.26), 'full': (0.10, 0.25)}


# ----------------------------------------------------------------------------------------------- geometry

def outline(shape: str) -> np.ndarray:
  """(K, 2) polygon (x right, y down) of a shape whose farthest point is 1 from its centre."""
  def ring(radii, start=-np.pi / 2):
    a = start + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return np.stack([radii * np.cos(a), radii * np.sin(a)], 1)
  if shape == 'circle':
    return ring(np.ones(96))
  if shape == 'square':
    h = 0.72
    return np.array([(-h, -h), (h, -h), (h, h), (-h, h)], np.float64)
  if shape == 'triangle':
    return ring(np.ones(3))
  if shape == 'hexagon':
    return ring(np.ones(6), 0.0)
  if shape == 'diamond':
    return np.array([(0, -1), (0.68, 0), (0, 1), (-0.68, 0)], np.float64)
  if shape == 'star':
    return ring(np.tile([1.0, 0.42], 5))
  if shape == 'cross':
    a = 0.3
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                     (-1, -a), (-a, -a)], np.float64)
  if shape == 'heart':  # the classic parametric heart, lobes up
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    p = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
    p -= (p.max(0) + p.min(0)) / 2
    return p / np.hypot(p[:, 0], p[:, 1]).max()
  raise ValueError(f'unknown shape {shape!r}')


def polygon_area(poly: np.ndarray) -> float:
  """Shoelace area of a simple polygon (any orientation)."""
  x, y = poly[:, 0], poly[:, 1]
  return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def place(poly: np.ndarray, centre, radius: float, angle: float = 0.0, aspect: float = 1.0) -> np.ndarray:
  """A unit outline stretched by `aspect` (x wider when > 1), turned by `angle` and scaled to `radius` pixels at
  `centre` (x, y)."""
  p = poly * np.array([aspect, 1 / aspect])
  c, s = np.cos(angle), np.sin(angle)
  return p @ np.array([[c, s], [-s, c]]) * radius + np.asarray(centre, np.float64)


def coverage(polygons, h: int, w: int, ss: int = SUPERSAMPLE) -> np.ndarray:
  """(h, w) float32 in [0, 1]: the fraction of each pixel inside the union of `polygons` (pixel units, pixel
  (i, j) spans [j, j+1] x [i, i+1]), from ss x ss samples per pixel, each tested by the even-odd scanline rule:
  antialiased edges from another rasterizer than the procedural source's analytic inside-tests."""
  ys = (np.arange(h * ss) + 0.5) / ss
  xs = (np.arange(w * ss) + 0.5) / ss
  span = w + 4.0   # rows laid end to end on one line, so one searchsorted counts every row's crossings
  rows = np.arange(h * ss)[:, None]
  inside = np.zeros((h * ss, w * ss), bool)
  for poly in polygons:
    a = np.asarray(poly, np.float64)
    b = np.roll(a, -1, axis=0)
    # an edge crosses sample row y when exactly one of its ends is at or below y (each vertex counts once)
    crosses = (a[:, 1] <= ys[:, None]) != (b[:, 1] <= ys[:, None])
    with np.errstate(divide='ignore', invalid='ignore'):
      x = a[:, 0] + (ys[:, None] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    x = np.where(crosses, np.clip(x, -1.0, w + 1.0), w + 2.0)   # not crossing: right of every sample
    keys = (np.sort(x, axis=1) + rows * span).ravel()
    left = np.searchsorted(keys, (xs[None] + rows * span).ravel()).reshape(h * ss, w * ss) - rows * a.shape[0]
    inside |= left % 2 == 1
  return inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)


def local_coords(h: int, w: int, centre, radius: float, angle: float, aspect: float) -> tuple[np.ndarray, ...]:
  """Each pixel centre in the object's own unit frame (turns and stretches with it), the inverse of `place`."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
  dx, dy = (xx - centre[0]) / radius, (yy - centre[1]) / radius
  c, s = np.cos(angle), np.sin(angle)
  u, v = c * dx - s * dy, s * dx + c * dy
  return u / aspect, v * aspect


# ----------------------------------------------------------------------------------------------- appearance

def surface(pattern: str, paint: np.ndarray, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
  """(h, w, 3) colour of an object's surface at its own coordinates (the pattern moves and turns with it)."""
  if pattern == 'plain':
    return np.broadcast_to(paint, u.shape + (3,)).astype(np.float64)
  if pattern == 'striped':
    on = np.cos(2 * np.pi * (u - 0.6 * v) / period) > 0
    other = paint * 0.5
  elif pattern == 'dotted':
    gu, gv = u / period - np.round(u / period), v / period - np.round(v / period)
    on = np.hypot(gu, gv) < 0.3
    other = paint * 0.35 + 160
  elif pattern == 'checkered':
    on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    other = paint * 0.55 + 90
  else:
    raise ValueError(f'unknown pattern {pattern!r}')
  return np.where(on[..., None], other, paint)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """(h, w, 3) float: a few random gratings mixed into a two-colour palette, with soft blotches of a third."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) / max(h, w)
  field = np.zeros((h, w))
  for _ in range(4):
    ang, freq, ph = rng.uniform(0, np.pi), rng.uniform(2, 11), rng.uniform(0, 2 * np.pi)
    field += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * (np.cos(ang) * xx + np.sin(ang) * yy) + ph)
  field = (field - field.min()) / max(np.ptp(field), 1e-6)
  c0, c1, c2 = rng.uniform(25, 230, (3, 3))
  img = c0 * (1 - field[..., None]) + c1 * field[..., None]
  blot = Image.new('L', (w, h), 0)
  draw = ImageDraw.Draw(blot)
  for _ in range(int(rng.integers(4, 10))):
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    rx, ry = rng.uniform(0.04, 0.15) * w, rng.uniform(0.04, 0.15) * h
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=int(rng.integers(120, 256)))
  b = np.asarray(blot.filter(ImageFilter.GaussianBlur(radius=0.02 * max(h, w))), np.float64)[..., None] / 255
  return img * (1 - b) + c2 * b


def lighting(h: int, w: int, direction: float, strength: float) -> np.ndarray:
  """(h, w, 1) multiplicative light ramp across the frame, 1 at the centre."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  ramp = (np.cos(direction) * (xx / w - 0.5) + np.sin(direction) * (yy / h - 0.5))
  return (1 + strength * 2 * ramp)[..., None]


def distinct_colour(rng: np.random.Generator, avoid, min_dist: float, lo: float = 20, hi: float = 235) -> np.ndarray:
  """A random colour at least `min_dist` (RGB) from every colour in `avoid` (the farthest of 32 draws else)."""
  cand = rng.uniform(lo, hi, (32, 3))
  dist = np.min([np.linalg.norm(cand - np.asarray(a, np.float64), axis=1) for a in avoid], axis=0)
  ok = np.flatnonzero(dist >= min_dist)
  return cand[ok[0]] if len(ok) else cand[np.argmax(dist)]


# ----------------------------------------------------------------------------------------------- motion

def path(rng: np.random.Generator, motion: str, n: int, side: int, radius: float) -> np.ndarray:
  """(n, 2) centres (x, y) in pixels; the object stays (mostly) in the frame."""
  lo, hi = radius + 2, side - radius - 2
  if lo >= hi:
    lo = hi = side / 2
  p0, p1 = rng.uniform(lo, hi, 2), rng.uniform(lo, hi, 2)
  s = np.linspace(0, 1, n)[:, None]
  if motion == 'enter':  # from one edge, half outside in frame 1, inwards
    axis, far = int(rng.integers(2)), bool(rng.integers(2))
    p0[axis] = side if far else 0.0
    p1[axis] = rng.uniform(side / 2 - radius, side / 2 + radius) if lo < hi else side / 2
    return p0 + (p1 - p0) * np.sqrt(s)  # decelerating as it comes in
  line = p0 + (p1 - p0) * s
  if motion == 'drift':
    return line
  if motion == 'bob':
    normal = np.array([-(p1 - p0)[1], (p1 - p0)[0]]) / max(np.linalg.norm(p1 - p0), 1e-6)
    amp, cycles = rng.uniform(0.05, 0.12) * side, rng.uniform(1, 2.2)
    return line + normal * amp * np.sin(2 * np.pi * cycles * s)
  if motion == 'arc':
    return line - np.array([0, 1]) * rng.uniform(0.1, 0.25) * side * 4 * s * (1 - s)
  if motion == 'pause':  # go, stop around the middle, go on
    q = 0.5 * np.clip(s / 0.4, 0, 1) + 0.5 * np.clip((s - 0.6) / 0.4, 0, 1)
    return p0 + (p1 - p0) * q
  raise ValueError(f'unknown motion {motion!r}')


# ----------------------------------------------------------------------------------------------- clips

@dataclasses.dataclass
class Clip:
  name: str
  caption: str
  frames: np.ndarray     # (N, H, W, 3) uint8, the occluded video (before JPEG)
  visible: np.ndarray    # (N, H, W) bool
  amodal: np.ndarray     # (N, H, W) bool
  objects: np.ndarray    # (N, H, W, 3) uint8, the whole object over white
  occluder: np.ndarray   # (N, H, W) bool, the union of the occluders in front of it
  spec: dict


def _layers(rng: np.random.Generator, family: str, n: int, side: int) -> dict:
  """Draws one clip: the target (shape, paint, pattern, path, turn, size over time) and its occluders."""
  full = family == 'full'
  colour = str(rng.choice(list(PAINTS)))
  paint = np.clip(np.asarray(PAINTS[colour], np.float64) + rng.uniform(-10, 10, 3), 0, 255)
  r0 = rng.uniform(*RADIUS[family]) * side
  target = dict(shape=str(rng.choice(FULL_SHAPES if full else TASK_SHAPES)), colour=colour, paint=paint,
                pattern=str(rng.choice(FULL_PATTERNS)) if full else 'plain', radius0=r0,
                aspect=rng.uniform(0.85, 1.15), angle0=rng.uniform(0, 2 * np.pi), motion=str(rng.choice(MOTIONS)),
                spin=rng.uniform(0.02, 0.09) * rng.choice([-1, 1]) if full else 0.0,
                growth=rng.uniform(-0.45, 0.45) if full else 0.0, period=rng.uniform(0.3, 0.5))
  t = np.arange(n)
  target['radius'] = r0 * (1 + target['growth'] * (t / max(n - 1, 1) - 0.5))
  target['angle'] = target['angle0'] + target['spin'] * t
  target['centre'] = path(rng, target['motion'], n, side, float(target['radius'].max()))
  bg = distinct_colour(rng, [paint], 90)
  occluders = []
  kinds = [str(rng.choice(OCCLUDERS))]
  if rng.random() < 0.3:
    kinds.append(str(rng.choice([k for k in OCCLUDERS if k != kinds[0]])))
  for kind in kinds:
    tc = int(rng.integers(int(0.3 * n), int(0.75 * n)))   # when it crosses the target
    where = target['centre'][tc] + rng.normal(0, 0.3 * r0, 2)
    occ = dict(kind=kind, paint=distinct_colour(rng, [paint, bg], 70), textured=full and rng.random() < 0.6,
               tex_seed=int(rng.integers(2**31)))
    if kind == 'object':
      direction = rng.uniform(0, 2 * np.pi)
      speed = rng.uniform(1.5, 4.5)
      vel = speed * np.array([np.cos(direction), np.sin(direction)])
      occ.update(shape=str(rng.choice(FULL_SHAPES if full else TASK_SHAPES)), radius=rng.uniform(0.5, 1.1) * r0,
                 angle=rng.uniform(0, 2 * np.pi) + (rng.uniform(-0.08, 0.08) if full else 0) * t,
                 centre=where + vel * (t - tc)[:, None], aspect=rng.uniform(0.8, 1.25))
    elif kind == 'bar':  # a post or a bar, spanning the frame, moving across its own axis (or standing still)
      tilt = rng.uniform(-0.45, 0.45) + (np.pi / 2 if rng.random() < 0.35 else 0.0)
      normal = np.array([np.cos(tilt), np.sin(tilt)])
      speed = rng.choice([0.0, rng.uniform(1.0, 3.5)]) * rng.choice([-1, 1])
      occ.update(width=rng.uniform(0.35, 0.9) * r0, tilt=tilt,
                 offset=float(np.dot(where - side / 2, normal)) + speed * (t - tc))
    else:  # region: a large area with a wavy edge sliding in from one side and holding
      inward = rng.uniform(0, 2 * np.pi)
      normal = np.array([np.cos(inward), np.sin(inward)])
      reach = float(np.dot(where - side / 2, normal)) + rng.uniform(-0.2, 0.5) * r0
      start = -0.75 * side
      occ.update(inward=inward, wave=(rng.uniform(0.02, 0.06) * side, rng.uniform(1, 3), rng.uniform(0, 6.3)),
                 offset=start + (reach - start) * np.clip(t / max(tc, 1), 0, 1) ** 0.7)
    occluders.append(occ)
  return dict(family=family, target=target, background=bg, bg_seed=int(rng.integers(2**31)),
              light=(rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3) if full else 0.0),
              pan=rng.uniform(-0.6, 0.6, 2) if full else np.zeros(2), occluders=occluders)


def _occluder_polygon(occ: dict, f: int, side: int) -> np.ndarray:
  """Frame f's outline of an occluder in pixels (the bar and the region reach far past the frame)."""
  if occ['kind'] == 'object':
    angle = occ['angle'][f] if np.ndim(occ['angle']) else occ['angle']
    return place(outline(occ['shape']), occ['centre'][f], occ['radius'], angle, occ['aspect'])
  big = 2.0 * side
  if occ['kind'] == 'bar':
    normal = np.array([np.cos(occ['tilt']), np.sin(occ['tilt'])])
    along = np.array([-normal[1], normal[0]])
    mid = side / 2 + normal * occ['offset'][f]
    hw = occ['width'] / 2
    return np.array([mid + normal * a * hw + along * b * big for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
  normal = np.array([np.cos(occ['inward']), np.sin(occ['inward'])])   # region: the side where dot(p, normal) is low
  along = np.array([-normal[1], normal[0]])
  amp, cycles, phase = occ['wave']
  b = np.linspace(-big, big, 160)
  edge = side / 2 + np.outer(occ['offset'][f] + amp * np.sin(2 * np.pi * cycles * b / side + phase), normal) \
      + np.outer(b, along)
  back = side / 2 + np.array([along * big - normal * 2 * big, -along * big - normal * 2 * big])
  return np.concatenate([edge, back])


def _occluder_colour(occ: dict, h: int, w: int) -> np.ndarray:
  if not occ['textured']:
    return np.broadcast_to(occ['paint'], (h, w, 3)).astype(np.float64)
  return texture(np.random.default_rng(occ['tex_seed']), h, w)


def render(spec: dict, n: int, side: int, name: str = 'clip') -> Clip:
  """The clip a spec describes: every layer antialiased, composited back to front."""
  h = w = side
  tg = spec['target']
  light = lighting(h, w, *spec['light'])
  pad = int(np.ceil(np.abs(spec['pan']).max() * n)) + 1
  if spec['family'] == 'full':
    backdrop = texture(np.random.default_rng(spec['bg_seed']), h + 2 * pad, w + 2 * pad)
  else:
    backdrop = np.broadcast_to(spec['background'], (h + 2 * pad, w + 2 * pad, 3))
  occ_colours = [_occluder_colour(o, h, w) for o in spec['occluders']]
  unit = outline(tg['shape'])
  frames = np.empty((n, h, w, 3), np.uint8)
  objects = np.empty((n, h, w, 3), np.uint8)
  visible, amodal, occluder = (np.zeros((n, h, w), bool) for _ in range(3))
  for f in range(n):
    oy, ox = (pad + np.round(spec['pan'] * f)).astype(int)
    img = backdrop[oy:oy + h, ox:ox + w] * light
    centre, radius, angle = tg['centre'][f], float(tg['radius'][f]), float(tg['angle'][f])
    cov = coverage([place(unit, centre, radius, angle, tg['aspect'])], h, w)
    u, v = local_coords(h, w, centre, radius, angle, tg['aspect'])
    colour = surface(tg['pattern'], tg['paint'], u, v, tg['period']) * light
    img = img * (1 - cov[..., None]) + colour * cov[..., None]
    amodal[f] = cov >= 0.5
    objects[f] = np.where(amodal[f][..., None], np.clip(np.round(colour), 0, 255), 255).astype(np.uint8)
    for occ, occ_colour in zip(spec['occluders'], occ_colours):
      oc = coverage([_occluder_polygon(occ, f, side)], h, w)
      img = img * (1 - oc[..., None]) + occ_colour * oc[..., None]
      occluder[f] |= oc >= 0.5
    frames[f] = np.clip(np.round(img), 0, 255).astype(np.uint8)
  visible = amodal & ~occluder
  return Clip(name, caption(spec, side), frames, visible, amodal, objects, occluder, spec)


def caption(spec: dict, side: int) -> str:
  """The whole target in the demo's words: size class (from its radius mid-clip), colour, pattern, shape."""
  tg = spec['target']
  size = next(word for bound, word in SIZE_WORDS if tg['radius0'] / side < bound)
  pattern = '' if tg['pattern'] == 'plain' else tg['pattern'] + ' '
  return f"a {size} {tg['colour']} {pattern}{tg['shape']}"


def acceptable(clip: Clip) -> bool:
  """A real amodal test: visible in frame 1 (a quarter of it at least), partly hidden on at least 40% of the
  frames with 15-85% hidden on average there, hidden entirely on at most 20%, and in the frame throughout."""
  area = clip.amodal.sum(axis=(1, 2)).astype(np.float64)
  in_frame = 0.1 * np.pi * clip.spec['target']['radius0'] ** 2   # a tenth of its circle: it never leaves the frame
  if area.min() < in_frame or clip.visible[0].sum() < 0.25 * area[0]:
    return False
  hidden = 1 - clip.visible.sum(axis=(1, 2)) / np.maximum(area, 1)
  occluded = hidden >= 0.05
  if occluded.mean() < 0.4 or (hidden >= 0.999).mean() > 0.2:
    return False
  return 0.15 <= hidden[occluded].mean() <= 0.85


def make_clip(family: str, seed: int, index: int, *, size: int = 128, num_frames: int = 30,
              max_tries: int = 400) -> Clip:
  """Clip `index` of a family: the first acceptable draw of its own random stream (deterministic by seed)."""
  if family not in FAMILIES:
    raise ValueError(f'family={family!r}: unknown; allowed: one of {FAMILIES}')
  rng = np.random.default_rng([seed, FAMILIES.index(family), index, VERSION])
  for _ in range(max_tries):
    clip = render(_layers(rng, family, num_frames, size), num_frames, size, f'{family}{index:03d}')
    if acceptable(clip):
      return clip
  raise RuntimeError(f'{family} clip {index}: no acceptable draw in {max_tries} tries (size {size}, '
                     f'{num_frames} frames)')


def write_root(out: str | os.PathLike, family: str, num_clips: int, seed: int = 0, size: int = 128,
               num_frames: int = 30, jpeg_quality: int = 90) -> Path:
  """`num_clips` clips of a family as a DAVIS-style amodal root at `out`, written atomically; an existing root
  with the same settings is reused."""
  if num_clips < 1 or size < 16 or num_frames < 2:
    raise ValueError(f'holdout clips: need clips >= 1, size >= 16, frames >= 2 (got {num_clips}, {size}, '
                     f'{num_frames})')
  out = Path(out)
  info = {'generator': 'data_prep/holdout_clips.py', 'version': VERSION, 'family': family, 'clips': num_clips,
          'seed': seed, 'size': size, 'frames': num_frames, 'jpeg_quality': jpeg_quality}
  if (out / 'holdout.json').is_file() and json.loads((out / 'holdout.json').read_text()) == info:
    return out
  if family not in FAMILIES:
    raise ValueError(f'family={family!r}: unknown; allowed: one of {FAMILIES}')

  def write(tmp: Path) -> None:
    captions = {}
    for i in tqdm(range(num_clips), desc=f'holdout clips ({family})', unit='clip'):
      clip = make_clip(family, seed, i, size=size, num_frames=num_frames)
      amodal_root.write_sequence(tmp, clip.name, clip.frames, clip.visible, clip.amodal, clip.objects,
                                 jpeg_quality)
      captions[clip.name] = clip.caption
    (tmp / 'captions.json').write_text(json.dumps(captions, indent=1, sort_keys=True) + '\n')
    (tmp / 'holdout.json').write_text(json.dumps(info) + '\n')
  return atomic_folder(out, write)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--out', required=True, help='the DAVIS-style root to write')
  p.add_argument('--family', choices=FAMILIES, default='task')
  p.add_argument('--clips', type=int, default=24)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--size', type=int, default=128)
  p.add_argument('--frames', type=int, default=30)
  p.add_argument('--jpeg_quality', type=int, default=90)
  a = p.parse_args(argv)
  try:
    root = write_root(a.out, a.family, a.clips, a.seed, a.size, a.frames, a.jpeg_quality)
  except (ValueError, RuntimeError) as e:
    print(f'holdout_clips: error: {e}', file=sys.stderr)
    return 2
  print(root)
  return 0


if __name__ == '__main__':
  sys.exit(main())
