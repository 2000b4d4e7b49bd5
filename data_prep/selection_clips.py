"""A third clip generator, for choosing the demo's settings only (issue 30).

The demo's model is trained on data_prep/sources/procedural.py and reported on data_prep/holdout_clips.py, which no
choice may look at. Settings chosen on the training generator's own clips fit that generator; this one, written
apart from both (its own signed-distance rasterizer, colour names, shape outlines, motions and occluders, and no
code shared), is the set that recipes and sampler settings are chosen on, so the holdout row stays unseen.

One family, `task`: the demo's task as a user would draw it. A flat background, one plain-coloured rigid shape
("a large teal heart") that moves along a spline, bounces off the walls, drifts and pauses, or stays put, and flat
occluders in front of it: shapes passing by, bars and posts, a region sliding in from an edge, a crowd of small
pieces, a shape that enters and stops, a fence. Clips are redrawn until the target is partly hidden over most of the
clip, visible in the first frame and never cut by the frame border.

    python -m data_prep.selection_clips --out DIR --clips 24 --seed 0 --size 128 --frames 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tgvac_jax.eval import amodal_root
from tgvac_jax.files import atomic_folder

FAMILIES = ('task',)
VERSION = 1
MANIFEST = 'selection.json'
SHAPES = ('circle', 'square', 'triangle', 'star', 'heart', 'cross')
SIZES = ('medium', 'large')
# What each colour name means here: a centre that each clip jitters by up to COLOUR_JITTER per channel.
COLOURS = {'red': (205, 35, 40), 'orange': (240, 130, 25), 'yellow': (240, 205, 45), 'green': (55, 155, 65),
           'teal': (25, 145, 140), 'blue': (40, 75, 205), 'purple': (125, 55, 170), 'pink': (240, 125, 175),
           'brown': (120, 75, 40), 'gray': (125, 125, 125), 'black': (25, 25, 30)}
COLOUR_JITTER = 14
# The target's radius as a fraction of the frame side; every outline stays within BOUND x radius of its centre.
RADIUS = {'medium': (0.09, 0.13), 'large': (0.15, 0.2)}
BOUND = 1.25
# Minimum RGB distances that keep the target recognisable: from the background and from any occluder.
TARGET_CONTRAST, OCCLUDER_CONTRAST, WHITE_CLEARANCE = 110.0, 110.0, 140.0
OCCLUDERS = {'passers': 0.25, 'bars': 0.18, 'region': 0.15, 'crowd': 0.12, 'enter_stop': 0.13, 'fence': 0.17}
MAX_TRIES = 200


@dataclasses.dataclass
class Clip:
  name: str
  caption: str
  frames: np.ndarray    # (T, H, W, 3) uint8, the rendered video before JPEG
  visible: np.ndarray   # (T, H, W) bool
  amodal: np.ndarray    # (T, H, W) bool
  objects: np.ndarray   # (T, H, W, 3) uint8, the whole target over white


# ---- signed distances (negative inside, in pixels); coverage is a 1-px linear ramp across the outline


def coverage(sd: np.ndarray) -> np.ndarray:
  """Antialiased coverage of a pixel whose centre lies `sd` pixels outside an outline; 0.5 on the outline, so the
  binary mask (coverage >= 0.5) is sd <= 0."""
  return np.clip(0.5 - sd, 0.0, 1.0)


def sd_circle(x, y, r):
  return np.hypot(x, y) - r


def sd_box(x, y, hx, hy):
  dx, dy = np.abs(x) - hx, np.abs(y) - hy
  return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def sd_ellipse(x, y, a, b):
  """Exact sign, near-distance magnitude: enough for a 1-px ramp on occluders."""
  return (np.hypot(x / a, y / b) - 1.0) * min(a, b)


def sd_polygon(x, y, verts: np.ndarray):
  """Distance to the nearest edge, negative where an even-odd ray test finds the point inside."""
  d2 = np.full(np.broadcast(x, y).shape, np.inf, np.float32)
  inside = np.zeros(d2.shape, bool)
  for (ax, ay), (bx, by) in zip(verts, np.roll(verts, 1, axis=0)):
    ex, ey = bx - ax, by - ay
    wx, wy = x - ax, y - ay
    h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    d2 = np.minimum(d2, (wx - ex * h) ** 2 + (wy - ey * h) ** 2)
    if ay != by:
      inside ^= ((ay > y) != (by > y)) & (x < ax + (y - ay) * ex / ey)
  return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


def sd_capsule(x, y, ax, ay, bx, by, hw):
  """A bar of half-width `hw` around the segment a-b, with round ends."""
  ex, ey = bx - ax, by - ay
  wx, wy = x - ax, y - ay
  h = np.clip((wx * ex + wy * ey) / np.maximum(ex * ex + ey * ey, 1e-9), 0.0, 1.0)
  return np.hypot(wx - ex * h, wy - ey * h) - hw


def _regular(points: int, radius: float, inner: float | None = None) -> np.ndarray:
  """Vertices of a regular polygon pointing up (y up); with `inner`, a star alternating outer and inner radii."""
  n = points if inner is None else 2 * points
  a = np.pi / 2 + np.arange(n) * 2 * np.pi / n
  rad = radius if inner is None else np.where(np.arange(n) % 2 == 0, radius, inner)
  return np.stack([rad * np.cos(a), rad * np.sin(a)], -1)


# Outlines in units of the radius r; each stays within BOUND of its centre.
SQUARE_HALF = 0.83
TRIANGLE_OUTER = 1.15
STAR_OUTER, STAR_INNER = 1.2, 0.54
HEART_SIDE = 1.22   # a square on its corner with a disc on each upper side: 1.71 sides wide, 1.56 high
HEART_DROP = 0.0735   # lowers the square so the heart's bounding box is centred
CROSS_ARM, CROSS_HALF_WIDTH = 1.0, 0.34
TRIANGLE = _regular(3, TRIANGLE_OUTER)
STAR = _regular(5, STAR_OUTER, STAR_INNER)


def sd_shape(kind: str, x, y, r, aspect: float = 1.0):
  """Outline `kind` of radius r in local coordinates (y up). ellipse and rect (occluders only) stretch by aspect."""
  if kind == 'circle':
    return sd_circle(x, y, r)
  if kind == 'square':
    return sd_box(x, y, SQUARE_HALF * r, SQUARE_HALF * r)
  if kind == 'triangle':
    return sd_polygon(x / r, y / r, TRIANGLE) * r
  if kind == 'star':
    return sd_polygon(x / r, y / r, STAR) * r
  if kind == 'heart':
    s = HEART_SIDE * r
    cy = -HEART_DROP * s
    u, v = (x + y - cy) / np.sqrt(2), (y - cy - x) / np.sqrt(2)
    lobe = s / (2 * np.sqrt(2))
    lobes = np.minimum(sd_circle(x - lobe, y - cy - lobe, s / 2), sd_circle(x + lobe, y - cy - lobe, s / 2))
    return np.minimum(sd_box(u, v, s / 2, s / 2), lobes)
  if kind == 'cross':
    arm, half = CROSS_ARM * r, CROSS_HALF_WIDTH * r
    return np.minimum(sd_box(x, y, arm, half), sd_box(x, y, half, arm))
  if kind == 'ellipse':
    return sd_ellipse(x, y, r * aspect, r / aspect)
  if kind == 'rect':
    return sd_box(x, y, r * aspect, r / aspect)
  raise ValueError(f'unknown shape {kind!r}')


# ---- layers: a signed distance over pixel centres (ys, xs broadcast to (T, h, w)) and a flat colour


def _col(a) -> np.ndarray:
  return np.asarray(a, np.float32).reshape(-1, 1, 1)


@dataclasses.dataclass
class Sprite:
  """A rigid shape; centre (T, 2) as (x, y) in pixels, angle (T,) in radians."""
  kind: str
  r: float
  centre: np.ndarray
  angle: np.ndarray
  colour: np.ndarray
  aspect: float = 1.0

  def sd(self, ys, xs):
    dx, dy = xs - _col(self.centre[:, 0]), ys - _col(self.centre[:, 1])
    c, s = _col(np.cos(self.angle)), _col(np.sin(self.angle))
    return sd_shape(self.kind, c * dx + s * dy, s * dx - c * dy, self.r, self.aspect)


@dataclasses.dataclass
class Bar:
  """A post or bar: a capsule from a (T, 2) to b (T, 2)."""
  a: np.ndarray
  b: np.ndarray
  hw: float
  colour: np.ndarray

  def sd(self, ys, xs):
    return sd_capsule(xs, ys, _col(self.a[:, 0]), _col(self.a[:, 1]), _col(self.b[:, 0]), _col(self.b[:, 1]),
                      self.hw)


@dataclasses.dataclass
class Region:
  """Everything behind an edge line: depth along `normal` up to front (T,) plus a straight, jagged or curved
  profile along the edge."""
  normal: np.ndarray
  front: np.ndarray
  profile: str
  amplitude: float
  period: float
  phase: float
  colour: np.ndarray

  def sd(self, ys, xs):
    nx, ny = self.normal
    depth, along = xs * nx + ys * ny, xs * -ny + ys * nx
    w = (along / self.period + self.phase) % 1.0
    if self.profile == 'jagged':
      bump, slope = self.amplitude * (2 * np.abs(2 * w - 1) - 1), 4 * self.amplitude / self.period
    elif self.profile == 'curved':
      bump, slope = self.amplitude * np.sin(2 * np.pi * w), 2 * np.pi * self.amplitude / self.period
    else:
      bump, slope = 0.0, 0.0
    return (depth - _col(self.front) - bump) / np.sqrt(1 + slope * slope)


@dataclasses.dataclass
class Fence:
  """Parallel posts of half-width hw every `spacing` pixels across `normal`, shifted by offset (T,)."""
  normal: np.ndarray
  offset: np.ndarray
  spacing: float
  hw: float
  colour: np.ndarray

  def sd(self, ys, xs):
    u = xs * self.normal[0] + ys * self.normal[1] - _col(self.offset)
    return np.abs((u + self.spacing / 2) % self.spacing - self.spacing / 2) - self.hw


# ---- drawing a clip


def _unit(angle) -> np.ndarray:
  return np.array([np.cos(angle), np.sin(angle)])


def _ease(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3 - 2 * x)


def _rgb_far(rng, refs: list, far: list[float], lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
  """A random flat colour at least `far[i]` (RGB distance) from `refs[i]`."""
  for _ in range(1000):
    c = rng.uniform(lo, hi, 3)
    if all(np.linalg.norm(c - np.asarray(ref)) >= d for ref, d in zip(refs, far)):
      return c.astype(np.float32)
  raise RuntimeError('no colour far enough from the others')


def _catmull_rom(points: np.ndarray, n: int) -> np.ndarray:
  """n samples of the Catmull-Rom curve through `points` (k, 2), evenly spaced in curve parameter."""
  p = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
  s = np.linspace(0, len(points) - 1, n)
  i = np.minimum(s.astype(int), len(points) - 2)
  u = (s - i)[:, None]
  p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
  return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2 +
                (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)


def target_track(rng, lo: float, hi: float, frames: int, pace: float) -> np.ndarray:
  """(T, 2) centres inside [lo, hi]^2: a smooth spline, a wall-bouncing glide, drift with pauses, or near still.
  `pace` is pixels per frame at a walking speed for this size and clip length."""
  motion = rng.choice(['spline', 'bounce', 'pauses', 'still'], p=[0.3, 0.3, 0.25, 0.15])
  span = hi - lo
  if span <= 0:
    return np.full((frames, 2), (lo + hi) / 2)
  if motion == 'spline':
    track = _catmull_rom(rng.uniform(lo, hi, (int(rng.integers(3, 6)), 2)), frames)
  elif motion == 'bounce':
    start = rng.uniform(lo, hi, 2)
    path = start - lo + np.arange(frames)[:, None] * _unit(rng.uniform(0, 2 * np.pi)) * pace * rng.uniform(0.6, 2)
    fold = np.mod(path, 2 * span)
    track = lo + span - np.abs(fold - span)
  elif motion == 'pauses':
    track, here = [], rng.uniform(lo, hi, 2)
    while len(track) < frames:
      track += [here] * int(rng.integers(0, max(2, frames // 4)))
      there = np.clip(here + rng.normal(0, 1, 2) * pace * frames / 4, lo, hi)
      steps = int(rng.integers(max(2, frames // 6), max(3, frames // 2)))
      track += [here + (there - here) * _ease((k + 1) / steps) for k in range(steps)]
      here = there
    track = np.array(track[:frames])
  else:
    track = rng.uniform(lo, hi, 2) + np.arange(frames)[:, None] * rng.normal(0, 0.08, 2) * pace
  return np.clip(track, lo, hi)


def _perp(v) -> np.ndarray:
  return np.array([-v[1], v[0]])


def _passers(rng, track, r, size, frames, pace, colour) -> list:
  layers, t = [], np.arange(frames)
  for _ in range(int(rng.integers(1, 3))):
    kind = str(rng.choice(SHAPES + ('ellipse', 'rect')))
    ro = r * rng.uniform(0.7, 1.6)
    heading = _unit(rng.uniform(0, 2 * np.pi))
    when = int(rng.uniform(0.15, 0.85) * (frames - 1))
    through = track[when] + _perp(heading) * rng.uniform(-0.7, 0.7) * (r + ro) * 0.7
    centre = through + (t - when)[:, None] * heading * pace * rng.uniform(1.0, 3.5)
    spin = 0.0 if rng.random() < 0.6 else rng.uniform(-0.08, 0.08)
    layers.append(Sprite(kind, ro, centre, rng.uniform(0, 2 * np.pi) + spin * t, colour(),
                         aspect=rng.uniform(1.2, 2.2) if kind in ('ellipse', 'rect') else 1.0))
  return layers


def _bars(rng, track, r, size, frames, pace, colour) -> list:
  layers, t = [], np.arange(frames)
  far = 3.0 * size
  for _ in range(int(rng.integers(1, 4))):
    angle = np.pi / 2 + rng.uniform(-0.3, 0.3) if rng.random() < 0.5 else rng.uniform(0, np.pi)
    along, across = _unit(angle), _perp(_unit(angle))
    hw = r * (rng.uniform(0.12, 0.3) if rng.random() < 0.5 else rng.uniform(0.4, 0.9))
    when = int(rng.integers(0, frames))
    speed = 0.0 if rng.random() < 0.4 else pace * rng.uniform(0.5, 2.5) * rng.choice([-1, 1])
    base = track[when] + across * (rng.uniform(-1.2, 1.2) * r + speed * (t - when))[:, None]
    top = far if rng.random() < 0.7 else rng.uniform(-0.3, 1.5) * r   # else a post standing up to near the target
    layers.append(Bar(base + far * along, base - top * along, hw, colour()))
  return layers


def _region(rng, track, r, size, frames, pace, colour) -> list:
  normal = _unit(rng.integers(0, 4) * np.pi / 2 + rng.uniform(-0.4, 0.4))
  profile = str(rng.choice(['straight', 'jagged', 'curved']))
  amplitude = 0.0 if profile == 'straight' else r * rng.uniform(0.2, 0.8)
  corners = np.array([[0, 0], [size, 0], [0, size], [size, size]])
  outside = (corners @ normal).max() + amplitude + 2      # depth where the region is still off screen
  arrive = int(rng.uniform(0.1, 0.6) * frames)
  stop = track[arrive] @ normal + rng.uniform(-0.6, 0.8) * r
  start = int(rng.uniform(0, 0.3) * arrive)
  t = np.arange(frames)
  front = outside + (stop - outside) * _ease((t - start) / max(1, arrive - start))
  if rng.random() < 0.4:
    leave = int(rng.uniform(arrive, frames))
    front = front + (outside - stop) * _ease((t - leave) / max(1, (frames - leave) / 1.5))
  # the region is p . normal >= front; Region measures depth the other way
  return [Region(-normal, -front, profile, amplitude, r * rng.uniform(1.0, 3.0), rng.uniform(0, 1), colour())]


def _crowd(rng, track, r, size, frames, pace, colour) -> list:
  layers, t = [], np.arange(frames)
  shared = colour() if rng.random() < 0.6 else None
  for _ in range(int(rng.integers(4, 10))):
    kind = str(rng.choice(['circle', 'square', 'rect', 'ellipse', 'triangle']))
    when = int(rng.integers(0, frames))
    centre = (track[when] + rng.uniform(-1.5, 1.5, 2) * r +
              (t - when)[:, None] * _unit(rng.uniform(0, 2 * np.pi)) * pace * rng.uniform(0.3, 2.0))
    layers.append(Sprite(kind, r * rng.uniform(0.2, 0.45), centre, np.full(frames, rng.uniform(0, 2 * np.pi)),
                         shared if shared is not None else colour(), aspect=rng.uniform(1.0, 1.8)))
  return layers


def _enter_stop(rng, track, r, size, frames, pace, colour) -> list:
  kind = str(rng.choice(SHAPES + ('ellipse', 'rect')))
  ro = r * rng.uniform(1.0, 2.2)
  inward = _unit(rng.integers(0, 4) * np.pi / 2 + rng.uniform(-0.3, 0.3))
  stop_at = int(rng.uniform(0.2, 0.7) * frames)
  stop = track[stop_at] - inward * (ro + r * rng.uniform(-0.6, 0.7))
  # back along -inward from the stop until the whole shape is past the frame edge on some axis
  moving = np.abs(inward) > 1e-6
  need = np.where(inward > 0, stop + BOUND * ro + 2, size - stop + BOUND * ro + 2)
  edge = (need[moving] / np.abs(inward[moving])).min()
  start = stop - inward * edge
  begin = int(rng.uniform(0, 0.5) * stop_at)
  t = np.arange(frames)
  centre = start + (stop - start) * _ease((t - begin) / max(1, stop_at - begin))[:, None]
  return [Sprite(kind, ro, centre, np.full(frames, rng.uniform(0, 2 * np.pi)), colour(),
                 aspect=rng.uniform(1.2, 2.0) if kind in ('ellipse', 'rect') else 1.0)]


def _fence(rng, track, r, size, frames, pace, colour) -> list:
  angle = np.pi / 2 + rng.uniform(-0.25, 0.25) if rng.random() < 0.6 else rng.uniform(0, np.pi)
  normal = _perp(_unit(angle))
  spacing = r * rng.uniform(0.9, 2.2)
  drift = 0.0 if rng.random() < 0.5 else pace * rng.uniform(0.2, 1.2) * rng.choice([-1, 1])
  offset = rng.uniform(0, spacing) + drift * np.arange(frames)
  return [Fence(normal, offset, spacing, spacing * rng.uniform(0.12, 0.35), colour())]


OCCLUDER_MAKERS: dict[str, Callable] = {'passers': _passers, 'bars': _bars, 'region': _region, 'crowd': _crowd,
                                        'enter_stop': _enter_stop, 'fence': _fence}


@dataclasses.dataclass
class Scene:
  caption: str
  background: np.ndarray
  target: Sprite
  occluders: list


def draw_scene(rng, size: int, frames: int) -> Scene:
  """One random scene: the target's look, size and motion, the background, and one or two kinds of occluder."""
  shape, colour_name, size_name = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES)
  colour = np.clip(np.asarray(COLOURS[colour_name]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
  r = size * rng.uniform(*RADIUS[size_name])
  margin = BOUND * r + 1.5
  pace = size / 128 * 30 / frames   # one pixel per frame at 128 x 30 frames
  track = target_track(rng, margin, size - margin, frames, pace)
  tilt = rng.uniform(-0.35, 0.35) if rng.random() < 0.5 else rng.uniform(0, 2 * np.pi)
  target = Sprite(str(shape), r, track, np.full(frames, tilt), colour.astype(np.float32))
  background = _rgb_far(rng, [colour, (255, 255, 255)], [TARGET_CONTRAST, WHITE_CLEARANCE], 0, 230)

  def occluder_colour():
    return _rgb_far(rng, [colour, background], [OCCLUDER_CONTRAST, 50.0])

  kinds = list(OCCLUDERS)
  first = rng.choice(kinds, p=list(OCCLUDERS.values()))
  chosen = [first] + ([rng.choice([k for k in kinds if k != first])] if rng.random() < 0.25 else [])
  occluders = [layer for kind in chosen
               for layer in OCCLUDER_MAKERS[kind](rng, track, r, size, frames, pace, occluder_colour)]
  return Scene(f'a {size_name} {colour_name} {shape}', background, target, occluders)


def _crop_grid(track: np.ndarray, r: float, size: int):
  """Per-frame windows around the target (ys, xs of pixel centres, (T, S, 1) and (T, 1, S)) and their origins:
  everything the acceptance test needs, at a fraction of the frame's cost."""
  side = min(size, int(np.ceil(2 * BOUND * r)) + 4)
  origin = np.clip(np.floor(track).astype(int) - side // 2, 0, size - side)
  k = np.arange(side) + 0.5
  return (origin[:, 1, None, None] + k[None, :, None]).astype(np.float32), \
      (origin[:, 0, None, None] + k[None, None, :]).astype(np.float32), origin, side


def occlusion_rates(amodal: np.ndarray, hidden: np.ndarray) -> np.ndarray:
  """(T,) fraction of the target's pixels that occluders hide in each frame."""
  return (amodal & hidden).sum((1, 2)) / np.maximum(amodal.sum((1, 2)), 1)


def acceptable(amodal: np.ndarray, hidden: np.ndarray) -> bool:
  """The selection set's contract: partly hidden over most of the clip (mean rate 0.15-0.85, some occlusion in at
  least half the frames), visible in the first frame, and fully hidden in at most 40 % of frames."""
  rate = occlusion_rates(amodal, hidden)
  seen = (amodal & ~hidden).sum((1, 2)) >= 3
  return bool(0.15 <= rate.mean() <= 0.85 and (rate > 0.02).mean() >= 0.5 and rate[0] <= 0.9 and seen[0]
              and seen.mean() >= 0.6)


def touches_border(masks: np.ndarray) -> bool:
  """Whether any (T, H, W) mask reaches the frame's outer rows or columns (the object would be cut)."""
  return bool(masks[:, [0, -1]].any() or masks[:, :, [0, -1]].any())


def render(scene: Scene, size: int, frames: int, name: str) -> Clip:
  """Composites background, target and occluders in order at full resolution."""
  k = np.arange(size, dtype=np.float32) + 0.5
  ys, xs = k[None, :, None], k[None, None, :]
  image = np.broadcast_to(scene.background, (frames, size, size, 3)).astype(np.float32)
  target_sd = scene.target.sd(ys, xs)
  target_cov = coverage(target_sd)
  image = image + (scene.target.colour - image) * target_cov[..., None]
  hidden = np.zeros((frames, size, size), bool)
  for layer in scene.occluders:
    sd = layer.sd(ys, xs)
    image = image + (layer.colour - image) * coverage(sd)[..., None]
    hidden |= sd <= 0
  amodal = target_sd <= 0
  # the whole target over white, as evaluation reads it back: alpha is the binary amodal mask
  objects = 255.0 + (scene.target.colour - 255.0) * np.where(amodal, target_cov, 0.0)[..., None]
  return Clip(name, scene.caption, np.round(image).astype(np.uint8), amodal & ~hidden, amodal,
              np.round(objects).astype(np.uint8))


def make_clip(seed: int, index: int, *, size: int = 128, num_frames: int = 30, family: str = 'task') -> Clip:
  """Clip `index`: the first draw of its own random stream that passes `acceptable` (tested on windows around the
  target, then rendered whole)."""
  if family not in FAMILIES:
    raise ValueError(f'family={family!r}: unknown; allowed: one of {FAMILIES}')
  rng = np.random.default_rng((seed, index))
  for _ in range(MAX_TRIES):
    scene = draw_scene(rng, size, num_frames)
    ys, xs, _, _ = _crop_grid(scene.target.centre, scene.target.r, size)
    amodal = scene.target.sd(ys, xs) <= 0
    hidden = np.zeros(amodal.shape, bool)
    for layer in scene.occluders:
      hidden |= layer.sd(ys, xs) <= 0
    if not acceptable(amodal, hidden):
      continue
    clip = render(scene, size, num_frames, f'{family}{index:03d}')
    if not touches_border(clip.amodal):
      return clip
  raise RuntimeError(f'selection clip {index}: no acceptable draw in {MAX_TRIES} tries (size {size}, '
                     f'{num_frames} frames)')


# ---- the DAVIS-style root (tgvac_jax/eval/amodal_root.py's layout)

def write_root(out: str | os.PathLike, family: str, num_clips: int, seed: int = 0, size: int = 128,
               num_frames: int = 30, jpeg_quality: int = 90) -> Path:
  """`num_clips` selection clips as a DAVIS-style amodal root at `out`, all or nothing; a complete root with the
  same settings is reused as it is."""
  if family not in FAMILIES:
    raise ValueError(f'family={family!r}: unknown; allowed: one of {FAMILIES}')
  if num_clips < 1 or size < 24 or num_frames < 4 or not 1 <= jpeg_quality <= 100:
    raise ValueError(f'selection clips: need clips >= 1, size >= 24, frames >= 4, jpeg quality 1-100 (got '
                     f'{num_clips}, {size}, {num_frames}, {jpeg_quality})')
  out = Path(out)
  manifest = {'generator': 'data_prep/selection_clips.py', 'version': VERSION, 'family': family,
              'clips': num_clips, 'seed': seed, 'size': size, 'frames': num_frames, 'jpeg_quality': jpeg_quality}
  if (out / MANIFEST).is_file() and json.loads((out / MANIFEST).read_text()) == manifest:
    return out

  def write(tmp: Path) -> None:
    captions = {}
    for i in tqdm(range(num_clips), desc=f'selection clips ({family})', unit='clip'):
      clip = make_clip(seed, i, size=size, num_frames=num_frames, family=family)
      amodal_root.write_sequence(tmp, clip.name, clip.frames, clip.visible, clip.amodal, clip.objects,
                                 jpeg_quality)
      captions[clip.name] = clip.caption
    (tmp / 'captions.json').write_text(json.dumps(captions, indent=1, sort_keys=True) + '\n')
    (tmp / MANIFEST).write_text(json.dumps(manifest) + '\n')
  return atomic_folder(out, write)


class _OneLineParser(argparse.ArgumentParser):
  """Bad arguments are one `error:` line, like the errors write_root raises."""

  def error(self, message):
    self.exit(2, f'selection_clips: error: {message}\n')


def main(argv=None) -> int:
  p = _OneLineParser(prog='python -m data_prep.selection_clips', description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='the DAVIS-style amodal root (replaced only if its settings differ)')
  p.add_argument('--family', choices=FAMILIES, default=FAMILIES[0])
  for flag, default, meaning in (('clips', 24, 'how many clips'), ('seed', 0, 'the set: clip i draws from (seed, i)'),
                                 ('size', 128, 'frame side in pixels'), ('frames', 30, 'frames per clip'),
                                 ('jpeg_quality', 90, 'quality of the JPEG frames')):
    p.add_argument(f'--{flag}', type=int, default=default, help=f'{meaning} (default {default})')
  a = p.parse_args(argv)
  try:
    root = write_root(a.out, a.family, a.clips, seed=a.seed, size=a.size, num_frames=a.frames,
                      jpeg_quality=a.jpeg_quality)
  except (ValueError, RuntimeError) as e:
    p.error(str(e))
  print(root)
  return 0


if __name__ == '__main__':
  sys.exit(main())
