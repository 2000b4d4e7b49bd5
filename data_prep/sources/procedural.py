"""Procedural source: textured sprites moving on textured backgrounds, captioned from their attributes.

The embedded default for the demo and the tests (no downloads). Each video has one or two sprites (two: one per half of the frame, never touching); a sprite has a
shape (10 kinds, some non-convex or with a hole), a colour (11), a pattern (6, drawn in the sprite's own frame so
it moves and turns with it) and a size class (3), and follows one of several motions (bouncing, orbit, zigzag,
ease-in-out, figure eight) while spinning and gently pulsing. Backgrounds are multi-scale value noise mixed with
stripes or gradients in random palettes, panned over time. Captions read like "a small blue striped star".

Completion is learnable (shapes are few and regular, patterns are periodic, motion is smooth) but not trivial
(rotation, holes, non-convex shapes, pattern phase and colour must be continued under the occluder).
Rendering is pure numpy and deterministic for (seed, video index).

Difficulty knobs (constructor keywords; the defaults are the full task) narrow the task without making the hidden
part less inferable: attribute subsets (`shapes`, `colours`, `patterns`, `sizes`), no spinning / pulsing, and a
plain background. `spin`, `pulse` and `background` change only what they name (the random draws are the same,
so a video keeps its other attributes, motion and timing); a subset re-draws the rest.

Diversity knobs (off by default, so today's builds stay as they are) make the videos look less like one renderer's
(issue 30: users' frames are JPEGs, lit unevenly, drawn by other rasterizers). They change the pixels only: the
objects, masks, motion and timing stay; their draws come from a stream of their own.
  renderer       'analytic' (inside-tests, hard edges), 'polygon' (outlines traced from the inside-tests, filled by
                 PIL on a 4x canvas: antialiased edges, the mask is coverage >= 1/2) or 'mixed' (one per video)
  shading        a light ramp across the whole frame, strength up to this (x0.5..x1.5 at 0.5), random direction
  colour_jitter  per-video gain per channel in 1 +- this and a brightness offset of +-40 x this
  jpeg_quality   (lo, hi): every frame JPEG-encoded at a per-video quality in [lo, hi] (the source video is a
                 JPEG stream, so the whole object of the amodal target carries the same artefacts); (0, 0): none
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

from data_prep.sources.base import Source, Track

SHAPES = ('circle', 'square', 'triangle', 'star', 'heart', 'hexagon', 'diamond', 'cross', 'crescent', 'ring')
COLOURS = {
    'red': (220, 40, 40), 'orange': (240, 140, 30), 'yellow': (240, 215, 40), 'green': (50, 170, 60),
    'teal': (30, 150, 150), 'blue': (40, 80, 220), 'purple': (130, 60, 190), 'pink': (240, 120, 180),
    'brown': (130, 80, 40), 'gray': (128, 128, 128), 'black': (25, 25, 25),
}
PATTERNS = ('plain', 'striped', 'checkered', 'dotted', 'gradient', 'ringed')
SIZES = {'small': (0.10, 0.13), 'medium': (0.14, 0.18), 'large': (0.19, 0.25)}  # radius / frame side
MOTIONS = ('bounce', 'orbit', 'zigzag', 'ease', 'eight')
BACKGROUNDS = ('texture', 'plain')
RENDERERS = ('analytic', 'polygon', 'mixed')
CANVAS = 4  # the polygon renderer's supersampling
TWO_SPRITE_SIZES = ('small', 'medium')  # two sprites share the frame, one per half


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside test in the sprite's unit frame (u right, v down, radius 1)."""
  r = np.hypot(u, v)
  if shape == 'circle':
    return r <= 1.0
  if shape == 'square':
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8
  if shape == 'diamond':
    return np.abs(u) + np.abs(v) <= 1.0
  if shape == 'triangle':  # apex up
    return (v <= 0.75) & (v >= -1.0 + 1.73 * np.abs(u))
  if shape == 'hexagon':
    a = np.abs(u)
    b = np.abs(v)
    return (b <= 0.87) & (0.5 * b + 0.866 * a <= 0.87)
  if shape == 'star':  # five points, inner radius 0.45
    th = np.arctan2(u, -v)
    k = np.pi / 5
    t = np.abs(np.mod(th, 2 * k) - k) / k  # 0 at a point, 1 between points
    return r <= 1.0 - 0.55 * t
  if shape == 'heart':
    x, y = 1.15 * u, -1.15 * v + 0.25
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
  if shape == 'cross':
    return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
  if shape == 'crescent':
    return (r <= 1.0) & (np.hypot(u - 0.45, v + 0.15) > 0.8)
  if shape == 'ring':
    return (r <= 1.0) & (r >= 0.5)
  raise ValueError(f'unknown shape {shape!r}')


@functools.lru_cache(maxsize=None)
def shape_outlines(shape: str, rays: int = 256) -> tuple[tuple[np.ndarray, int], ...]:
  """The shape as polygons in its unit frame, each with its fill (1 draws, 0 cuts out), for the polygon renderer.
  Star-shaped about the centre: the boundary radius along each of `rays` directions, found by bisection on the
  inside-test; the ring and the crescent (not star-shaped about the centre): a disc with a disc cut out."""
  a = 2 * np.pi * np.arange(rays) / rays
  unit = np.stack([np.cos(a), np.sin(a)], 1)
  if shape == 'ring':
    return (unit, 1), (0.5 * unit, 0)
  if shape == 'crescent':
    return (unit, 1), (0.8 * unit + np.array([0.45, -0.15]), 0)
  lo, hi = np.zeros(rays), np.full(rays, 1.5)
  for _ in range(30):
    mid = (lo + hi) / 2
    inside = shape_mask(shape, mid * unit[:, 0], mid * unit[:, 1])
    lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
  return ((lo[:, None] * unit, 1),)


def polygon_coverage(shape: str, h: int, w: int, to_pixels) -> np.ndarray:
  """(h, w) float32 coverage of the shape, drawn with PIL on a CANVAS x CANVAS supersampled canvas and averaged:
  antialiased edges from another rasterizer than `shape_mask`. `to_pixels(uv)` maps unit-frame points to pixel
  coordinates (pixel j spans [j, j+1])."""
  canvas = Image.new('L', (w * CANVAS, h * CANVAS), 0)
  draw = ImageDraw.Draw(canvas)
  for poly, fill in shape_outlines(shape):
    xy = to_pixels(poly) * CANVAS - 0.5
    draw.polygon([tuple(p) for p in xy], fill=255 * fill)
  return np.asarray(canvas, np.float32).reshape(h, CANVAS, w, CANVAS).mean(axis=(1, 3)) / 255.0


def pattern_colour(pattern: str, base: np.ndarray, u: np.ndarray, v: np.ndarray, freq: float,
                   phase: float) -> np.ndarray:
  """(…,3) float colour of the sprite surface at unit coordinates (u, v)."""
  dark = base * 0.45
  light = base * 0.5 + 127.5
  if pattern == 'plain':
    w = np.zeros_like(u)
  elif pattern == 'striped':
    w = (np.sin(freq * np.pi * (u + v) * 0.7071 + phase) > 0).astype(np.float32)
  elif pattern == 'checkered':
    w = ((np.floor(freq * 0.5 * (u + 2)) + np.floor(freq * 0.5 * (v + 2))) % 2).astype(np.float32)
  elif pattern == 'dotted':
    cu = np.mod(u * freq * 0.5 + 0.5, 1.0) - 0.5
    cv = np.mod(v * freq * 0.5 + 0.5, 1.0) - 0.5
    w = (np.hypot(cu, cv) < 0.25).astype(np.float32)
  elif pattern == 'gradient':
    w = np.clip(0.5 + 0.5 * u, 0, 1)
    return base * (1 - w[..., None]) + light * w[..., None]
  elif pattern == 'ringed':
    w = (np.sin(freq * np.pi * np.hypot(u, v) + phase) > 0).astype(np.float32)
  else:
    raise ValueError(f'unknown pattern {pattern!r}')
  return base * (1 - w[..., None]) + dark * w[..., None]


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
  """Smooth noise in [0,1]: a random grid upsampled bilinearly."""
  g = rng.random((cells + 2, cells + 2)).astype(np.float32)
  ys = np.linspace(0, cells, h, dtype=np.float32)
  xs = np.linspace(0, cells, w, dtype=np.float32)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
  a, b = g[y0][:, x0], g[y0][:, x0 + 1]
  c, d = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
  return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def background_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """(h, w, 3) float texture: noise octaves times a random palette, plus stripes or a gradient."""
  n = sum(_value_noise(rng, h, w, c) * a for c, a in ((3, 0.5), (8, 0.3), (24, 0.2)))
  c0 = rng.uniform(40, 215, 3)
  c1 = rng.uniform(40, 215, 3)
  tex = c0 * (1 - n[..., None]) + c1 * n[..., None]
  kind = rng.integers(3)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  if kind == 0:  # soft stripes
    ang = rng.uniform(0, np.pi)
    per = rng.uniform(8, 40) * h / 128
    s = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(ang) * xx + np.sin(ang) * yy) / per)
    tex = tex * (0.8 + 0.2 * s[..., None])
  elif kind == 1:  # vertical gradient (sky / floor)
    tex = tex * (0.75 + 0.5 * (yy / h)[..., None])
  return np.clip(tex, 0, 255)


def plain_background(rng: np.random.Generator, h: int, w: int, sprite_colours: list[tuple]) -> np.ndarray:
  """(h, w, 3) one flat colour, unlike the sprites and never near white: the amodal target is the object on white,
  and channels <= 180 keep the background 0.29 from white by the completion's object rule (max over RGB).

  Of 16 candidates the first at least 80 (RGB distance) from every sprite colour, else the farthest one."""
  cand = rng.uniform(30, 180, (16, 3))
  dist = np.linalg.norm(cand[:, None] - np.asarray(sprite_colours, np.float64)[None], axis=-1).min(1)
  far = dist >= 80
  colour = cand[np.argmax(far) if far.any() else np.argmax(dist)]
  return np.broadcast_to(colour, (h, w, 3))


def _subset(knob: str, value, allowed) -> tuple[str, ...]:
  """`value` (names, or one name) in `allowed`'s order; a ValueError naming the bad value and the allowed ones."""
  names = (value,) if isinstance(value, str) else tuple(value)
  bad = [x for x in names if x not in allowed]
  if bad or not names:
    raise ValueError(f'{knob}={value!r}: {"unknown " + repr(bad[0]) if bad else "empty"}; '
                     f'allowed: a non-empty subset of {tuple(allowed)}')
  return tuple(x for x in allowed if x in names)


def trajectory(rng: np.random.Generator, n: int, radius: float, motion: str) -> np.ndarray:
  """(n, 2) centres (y, x) in [0,1] frame units, keeping the sprite inside the frame most of the time."""
  lo, hi = 1.3 * radius + 0.02, 1 - 1.3 * radius - 0.02  # shapes reach ~1.25 radii when turned and stretched
  if lo >= hi:
    lo = hi = 0.5
  t = np.arange(n, dtype=np.float64)
  if motion == 'bounce':
    p = rng.uniform(lo, hi, 2)
    vel = rng.uniform(0.008, 0.03, 2) * rng.choice([-1, 1], 2)
    out = np.empty((n, 2))
    for i in range(n):
      out[i] = p
      p = p + vel
      for k in range(2):
        if p[k] < lo or p[k] > hi:
          vel[k] = -vel[k]
          p[k] = np.clip(p[k], lo, hi)
    return out
  c = rng.uniform(0.4, 0.6, 2)
  span = max(hi - 0.5, 0.02)
  if motion == 'orbit':
    a = rng.uniform(0.3, 1.0) * span
    w = rng.uniform(0.04, 0.12) * rng.choice([-1, 1])
    ph = rng.uniform(0, 2 * np.pi)
    return np.stack([c[0] + a * np.sin(w * t + ph), c[1] + a * np.cos(w * t + ph)], 1)
  if motion == 'zigzag':
    d = rng.uniform(0.006, 0.02) * rng.choice([-1, 1])
    a = rng.uniform(0.2, 0.8) * span
    w = rng.uniform(0.15, 0.4)
    x = c[1] + d * (t - n / 2)
    return np.stack([c[0] + a * np.sign(np.sin(w * t)) * np.abs(np.sin(w * t)) ** 0.5, x], 1)
  if motion == 'ease':
    p0, p1 = rng.uniform(lo, hi, 2), rng.uniform(lo, hi, 2)
    s = 0.5 - 0.5 * np.cos(np.pi * t / max(n - 1, 1))
    return p0[None] * (1 - s[:, None]) + p1[None] * s[:, None]
  if motion == 'eight':
    a = rng.uniform(0.3, 1.0) * span
    w = rng.uniform(0.03, 0.08)
    return np.stack([c[0] + 0.5 * a * np.sin(2 * w * t), c[1] + a * np.sin(w * t)], 1)
  raise ValueError(f'unknown motion {motion!r}')


class ProceduralSource(Source):
  """`num_videos` procedurally rendered videos of `size` (H, W) pixels and `min_frames`..`max_frames` frames."""

  name = 'procedural'

  def __init__(self, root: str | None = None, *, num_videos: int = 64, size: tuple[int, int] | int = 256,
               min_frames: int = 24, max_frames: int = 48, second_sprite_prob: float = 0.4, seed: int = 0,
               shapes=SHAPES, colours=tuple(COLOURS), patterns=PATTERNS, sizes=tuple(SIZES), spin: bool = True,
               pulse: bool = True, background: str = 'texture', renderer: str = 'analytic', shading: float = 0.0,
               colour_jitter: float = 0.0, jpeg_quality: tuple[int, int] = (0, 0)):
    del root  # nothing on disk
    self.num_videos = int(num_videos)
    self.size = (size, size) if isinstance(size, int) else tuple(size)
    self.min_frames, self.max_frames = int(min_frames), int(max_frames)
    self.second_sprite_prob = float(second_sprite_prob)
    self.seed = int(seed)
    self.shapes = _subset('shapes', shapes, SHAPES)
    self.colours = _subset('colours', colours, tuple(COLOURS))
    self.patterns = _subset('patterns', patterns, PATTERNS)
    self.sizes = _subset('sizes', sizes, tuple(SIZES))
    self._two_sprite_sizes = [x for x in self.sizes if x in TWO_SPRITE_SIZES]
    if self.second_sprite_prob > 0 and not self._two_sprite_sizes:
      raise ValueError(f'sizes={self.sizes!r} with second_sprite_prob={self.second_sprite_prob}: two-sprite videos '
                       f'need one of {TWO_SPRITE_SIZES} (or second_sprite_prob=0)')
    self.spin, self.pulse = bool(spin), bool(pulse)
    if background not in BACKGROUNDS:
      raise ValueError(f'background={background!r}: unknown; allowed: one of {BACKGROUNDS}')
    self.background = background
    if renderer not in RENDERERS:
      raise ValueError(f'renderer={renderer!r}: unknown; allowed: one of {RENDERERS}')
    self.renderer = renderer
    self.shading, self.colour_jitter = float(shading), float(colour_jitter)
    if not (0 <= self.shading < 1 and 0 <= self.colour_jitter < 1):
      raise ValueError(f'shading={shading!r}, colour_jitter={colour_jitter!r}: each must be in [0, 1)')
    q = tuple(int(x) for x in jpeg_quality)
    if len(q) != 2 or (q != (0, 0) and not 1 <= q[0] <= q[1] <= 100):
      raise ValueError(f'jpeg_quality={jpeg_quality!r}: (lo, hi) with 1 <= lo <= hi <= 100, or (0, 0) for none')
    self.jpeg_quality = q

  def describe(self) -> dict:
    """The build fingerprint's source part; knobs only when not the default, so the full task's builds keep theirs."""
    d = {'source': self.name, 'generator': 2, 'num_videos': self.num_videos, 'size': list(self.size),
         'min_frames': self.min_frames, 'max_frames': self.max_frames,
         'second_sprite_prob': self.second_sprite_prob, 'seed': self.seed}
    for knob, full in (('shapes', SHAPES), ('colours', tuple(COLOURS)), ('patterns', PATTERNS),
                       ('sizes', tuple(SIZES))):
      if getattr(self, knob) != full:
        d[knob] = list(getattr(self, knob))
    for knob, default in (('spin', True), ('pulse', True), ('background', 'texture'), ('renderer', 'analytic'),
                          ('shading', 0.0), ('colour_jitter', 0.0), ('jpeg_quality', (0, 0))):
      if getattr(self, knob) != default:
        d[knob] = list(getattr(self, knob)) if knob == 'jpeg_quality' else getattr(self, knob)
    return d

  def videos(self) -> list[str]:
    return [f'proc{i:05d}' for i in range(self.num_videos)]

  # ---------------------------------------------------------------------------------------- generation
  def _spec(self, video_id: str) -> dict:
    idx = int(video_id[4:])
    rng = np.random.default_rng([self.seed, idx, 7])
    n = int(rng.integers(self.min_frames, self.max_frames + 1))
    sprites = []
    count = 1 + int(rng.random() < self.second_sprite_prob)
    axis = int(rng.integers(2))
    for k in range(count):
      # two sprites live in the two halves of the frame (split along `axis`), so they never touch: a contact
      # would be an occlusion, and the clip selection would rightly reject those frames
      # the full subsets make the same calls as before (today's videos); spin and pulse are drawn even when off,
      # so turning them off changes nothing else in the video
      size = str(rng.choice(list(self.sizes) if count == 1 else self._two_sprite_sizes))
      sprites.append(dict(half=None if count == 1 else (axis, k),
          shape=str(rng.choice(self.shapes)), colour=str(rng.choice(list(self.colours))),
          pattern=str(rng.choice(self.patterns)), size=size, radius=float(rng.uniform(*SIZES[size])),
          motion=str(rng.choice(MOTIONS)), spin=float(rng.choice([0.0, rng.uniform(-0.08, 0.08)])) * self.spin,
          angle0=float(rng.uniform(0, 2 * np.pi)),
          pulse=float(rng.uniform(0, 0.08)) * self.pulse, pulse_w=float(rng.uniform(0.1, 0.3)),
          freq=float(rng.uniform(3, 6)), phase=float(rng.uniform(0, 2 * np.pi)),
          aspect=float(rng.uniform(0.8, 1.2)), traj_seed=int(rng.integers(2**31))))
    looks = np.random.default_rng([self.seed, idx, 11])   # the diversity knobs' own draws: the rest stays as is
    look = dict(polygon=self.renderer == 'polygon' or (self.renderer == 'mixed' and bool(looks.random() < 0.5)),
                light=(float(looks.uniform(0, 2 * np.pi)), float(looks.uniform(0, self.shading))),
                gain=tuple(float(g) for g in looks.uniform(1 - self.colour_jitter, 1 + self.colour_jitter, 3)),
                offset=float(looks.uniform(-40, 40)) * self.colour_jitter,
                jpeg=int(looks.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
    return dict(n=n, sprites=sprites, bg_seed=int(rng.integers(2**31)),
                pan=rng.uniform(-0.6, 0.6, 2) * (rng.random() < 0.6), look=look)

  @staticmethod
  def caption_words() -> tuple[str, ...]:
    """Every word a caption may hold (`caption_of`), for a tokenizer with one token per word."""
    return ('a',) + tuple(SIZES) + tuple(COLOURS) + PATTERNS + SHAPES

  @staticmethod
  def caption_of(sp: dict) -> str:
    pattern = '' if sp['pattern'] == 'plain' else sp['pattern'] + ' '
    return f"a {sp['size']} {sp['colour']} {pattern}{sp['shape']}"

  @functools.lru_cache(maxsize=4)
  def render(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """-> frames (N,H,W,3) uint8, labels (N,H,W) uint8 (0 background, k for sprite k, later sprites on top)."""
    spec = self._spec(video_id)
    n, (h, w) = spec['n'], self.size
    side = min(h, w)
    rng = np.random.default_rng(spec['bg_seed'])
    pad = int(np.ceil(np.abs(spec['pan']).max() * n)) + 1
    if self.background == 'texture':
      tex = background_texture(rng, h + 2 * pad, w + 2 * pad)
    else:
      tex = plain_background(rng, h + 2 * pad, w + 2 * pad, [COLOURS[sp['colour']] for sp in spec['sprites']])
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    look = spec['look']
    trajs = []
    for sp in spec['sprites']:
      r = np.random.default_rng(sp['traj_seed'])
      if sp['half'] is None:
        trajs.append(trajectory(r, n, sp['radius'], sp['motion']))
      else:
        ax, k = sp['half']
        tr = trajectory(r, n, 2 * sp['radius'], sp['motion'])  # in the half's own unit box
        tr[:, ax] = 0.5 * tr[:, ax] + 0.5 * k
        trajs.append(tr)
    for f in range(n):
      oy, ox = (pad + np.round(spec['pan'] * f)).astype(int)
      img = tex[oy:oy + h, ox:ox + w].copy()
      for k, (sp, tr) in enumerate(zip(spec['sprites'], trajs), start=1):
        rad = sp['radius'] * side * (1 + sp['pulse'] * np.sin(sp['pulse_w'] * f))
        cy, cx = tr[f, 0] * h, tr[f, 1] * w
        ext = rad * 1.25
        y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 2, h)
        x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 2, w)
        if y0 >= y1 or x0 >= x1:
          continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = (yy + 0.5 - cy) / rad, (xx + 0.5 - cx) / rad
        a = sp['angle0'] + sp['spin'] * f
        ca, sa = np.cos(a), np.sin(a)
        u = (ca * dx + sa * dy) / sp['aspect']
        v = (-sa * dx + ca * dy) * sp['aspect']
        col = pattern_colour(sp['pattern'], np.asarray(COLOURS[sp['colour']], np.float32), u, v, sp['freq'],
                             sp['phase'])
        shade = 1.0 - 0.15 * np.clip(0.5 * (u + v), -1, 1)[..., None]  # soft light from top-left
        patch = img[y0:y1, x0:x1]
        if look['polygon']:
          def to_pixels(uv, ca=ca, sa=sa, sp=sp, cx=cx, cy=cy, rad=rad):  # the inverse of (dx, dy) -> (u, v)
            us, vs = uv[:, 0] * sp['aspect'], uv[:, 1] / sp['aspect']
            return np.stack([cx + (ca * us - sa * vs) * rad - x0, cy + (sa * us + ca * vs) * rad - y0], 1)
          cov = polygon_coverage(sp['shape'], y1 - y0, x1 - x0, to_pixels)[..., None]
          m = cov[..., 0] >= 0.5
          patch[:] = patch * (1 - cov) + col * shade * cov
        else:
          m = shape_mask(sp['shape'], u, v)
          patch[m] = (col * shade)[m]
        labels[f, y0:y1, x0:x1][m] = k
      frames[f] = np.clip(self._look(img, look), 0, 255).astype(np.uint8)
    if look['jpeg']:
      for f in range(n):
        buf = io.BytesIO()
        Image.fromarray(frames[f]).save(buf, format='JPEG', quality=look['jpeg'])
        frames[f] = np.asarray(Image.open(buf).convert('RGB'))
    return frames, labels

  @staticmethod
  def _look(img: np.ndarray, look: dict) -> np.ndarray:
    """A frame under the video's light ramp and colour jitter (both identity when their knobs are 0)."""
    angle, strength = look['light']
    if strength:
      h, w = img.shape[:2]
      yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
      ramp = np.cos(angle) * (xx / max(w - 1, 1) - 0.5) + np.sin(angle) * (yy / max(h - 1, 1) - 0.5)
      img = img * (1 + 2 * strength * ramp)[..., None]
    if look['offset'] or any(g != 1 for g in look['gain']):
      img = img * np.asarray(look['gain']) + look['offset']
    return img

  def tracks(self, video_id: str) -> list[Track]:
    spec = self._spec(video_id)
    out = []
    for k, sp in enumerate(spec['sprites'], start=1):
      def load_masks(k=k):
        _, lab = self.render(video_id)
        others = (lab != k) & (lab != 0)
        return lab == k, (others if others.any() else None)

      def load_frames(idx):
        return self.render(video_id)[0][np.asarray(idx)]

      out.append(Track(source=self.name, video_id=video_id, object_id=k, class_name=sp['shape'],
                       caption=self.caption_of(sp), num_frames=spec['n'], load_masks=load_masks,
                       load_frames=load_frames, source_num_frames=spec['n']))
    return out
