"""Occlusion synthesis (paper §3.2): an unoccluded object track + an occluder cut from another video -> one clip.

For a target track we keep clips (`clip_len` frames, every `frame_step`-th source frame) in which the object is
present, not truncated by the image border, not touching another annotated object and free of sudden area drops
(the signature of an unannotated occlusion), in frames the source marks usable. The clip is cropped to the output
aspect around the object and resized to `resolution`. An occluder track from another video (present through its
own clip) is cut out along its mask, scaled and moved along a trajectory (static, linear sweep across the object,
or following it with drift) chosen among random candidates so that the clip's mean occlusion rate lands in the
requested band: easy (< 50 %) or hard (>= 50 %).

Real occlusion is not only other objects, so `SynthConfig.occluders` draws each clip's occluder kind by weight:
  object    the cut-out above (the default, alone: today's clips exactly)
  entering  the cut-out sliding in from a frame edge and coming to rest over the object
  bar       a bar or post (thin or thick band; vertical, horizontal or slanted) standing still or sweeping across
  region    a large slab (straight or wavy edge) sliding in from a frame edge over part of the object
Bars and regions are drawn, not cut: a random flat colour, stripes or blocky noise, never near the object's mean
colour, so the model cannot mistake the occluder for the hidden part. All kinds go through the same band search.

Outputs per frame i (A = amodal mask of the object, O = occluder mask, both at output resolution):
  occluded_i = O ? occluder pixel : source pixel           (the model input)
  visible_i  = A and not O                                 (exactly)
  amodal_i   = A ? source pixel : 255 (white)              (the target: the whole object on white)
  rate_i     = |A∩O| / |A|;   coverage = |∪(A∩O)| / |∪A|   (Table 1)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image


OCCLUDER_KINDS = ('object', 'entering', 'bar', 'region')
OBJECT_ONLY = (('object', 1.0),)
MOTIONS = ('static', 'sweep', 'follow')   # a cut-out object's trajectories


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  clip_len: int = 14               # frames per clip (paper: 14)
  frame_step: int = 1              # take every k-th annotated source frame
  resolution: int | tuple[int, int] = 256   # output (H, W) (paper: 256^2)
  clips_per_track: int = 5         # synthesized clips per object track (paper: ~5 per instance)
  min_clip_gap: int = 0            # min distance between clip starts of one track, in clip lengths (0: overlap ok)
  # "present and unoccluded" rules, evaluated on the source masks
  min_area: float = 0.002          # object area / frame area, every frame
  max_area: float = 0.6
  border: int = 2                  # the mask must stay this many pixels away from the image border
  contact: int = 2                 # ... and this many pixels away from any other annotated object
  max_area_change: float = 0.35    # |area_t / area_{t-1} - 1| between consecutive clip frames
  margin: float = 0.05             # free space around the object's union box inside the crop (fraction of crop)
  # occluder placement
  hard_fraction: float = 0.5       # share of clips asked to be hard (>= 50 % mean occlusion)
  easy_range: tuple[float, float] = (0.08, 0.5)
  hard_range: tuple[float, float] = (0.5, 0.9)
  area_ratio: tuple[float, float] = (0.4, 2.5)   # occluder area / object area
  candidates: int = 48             # random placements tried per clip
  occluder_tries: int = 4          # occluder tracks tried per clip
  min_occluder_area: float = 0.001
  occluders: tuple[tuple[str, float], ...] = OBJECT_ONLY   # (kind, weight) pairs, drawn per clip (OCCLUDER_KINDS)

  def __post_init__(self):
    try:
      pairs = tuple((str(k), float(w)) for k, w in self.occluders)
    except (TypeError, ValueError):
      raise ValueError(f'occluders must be (kind, weight) pairs, got {self.occluders!r}') from None
    bad = [k for k, _ in pairs if k not in OCCLUDER_KINDS]
    if bad or not pairs or any(w < 0 for _, w in pairs) or sum(w for _, w in pairs) <= 0:
      raise ValueError(f'occluders {self.occluders!r}: kinds must be among {OCCLUDER_KINDS} with weights >= 0 '
                       'summing to more than 0')
    object.__setattr__(self, 'occluders', pairs)

  @property
  def size(self) -> tuple[int, int]:
    r = self.resolution
    return (int(r), int(r)) if isinstance(r, (int, np.integer)) else (int(r[0]), int(r[1]))


@dataclasses.dataclass
class Clip:
  occluded: np.ndarray        # (F,H,W,3) uint8
  amodal: np.ndarray          # (F,H,W,3) uint8, object on white
  visible_mask: np.ndarray    # (F,H,W) bool
  amodal_mask: np.ndarray     # (F,H,W) bool
  occluder_mask: np.ndarray   # (F,H,W) bool
  frame_indices: np.ndarray   # (F,) int32, indices into the target track's frames
  occluder_frame_indices: np.ndarray
  occlusion_rate: np.ndarray  # (F,) float32
  coverage: float
  object_size: float          # mean |A| / (H W)
  difficulty: str             # 'easy' | 'hard' (by mean occlusion rate)
  placement: dict


# ------------------------------------------------------------------------------------------------ metrics

def occlusion_rates(amodal: np.ndarray, occluder: np.ndarray) -> np.ndarray:
  """Per frame |A∩O| / |A| (0 where A is empty). (F,H,W) bool -> (F,) float32."""
  inter = np.logical_and(amodal, occluder).sum(axis=(1, 2))
  area = amodal.sum(axis=(1, 2))
  return np.where(area > 0, inter / np.maximum(area, 1), 0.0).astype(np.float32)


def occlusion_coverage(amodal: np.ndarray, occluder: np.ndarray) -> float:
  """Paper Table 1: |∪_i (A_i ∩ O_i)| / |∪_i A_i| over the frames of one video."""
  u_obj = amodal.any(axis=0).sum()
  u_occ = np.logical_and(amodal, occluder).any(axis=0).sum()
  return float(u_occ / u_obj) if u_obj else 0.0


def compose(frames: np.ndarray, amodal_mask: np.ndarray, occluder_rgb: np.ndarray,
            occluder_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """-> occluded frames, amodal target (object on white), visible mask. Pure masking, no blending."""
  occluded = np.where(occluder_mask[..., None], occluder_rgb, frames).astype(np.uint8)
  amodal = np.where(amodal_mask[..., None], frames, np.uint8(255)).astype(np.uint8)
  visible = np.logical_and(amodal_mask, np.logical_not(occluder_mask))
  return occluded, amodal, visible


# ------------------------------------------------------------------------------------------ selection

def _shift_or(m: np.ndarray, r: int) -> np.ndarray:
  """Binary dilation of (N,H,W) bool by a (2r+1)^2 square, with shifts."""
  if r <= 0:
    return m
  out = m.copy()
  for ax in (1, 2):
    acc = out.copy()
    for s in range(1, r + 1):
      sl_a = [slice(None)] * 3
      sl_b = [slice(None)] * 3
      sl_a[ax], sl_b[ax] = slice(s, None), slice(None, -s)
      acc[tuple(sl_a)] |= out[tuple(sl_b)]
      acc[tuple(sl_b)] |= out[tuple(sl_a)]
    out = acc
  return out


def frame_ok(masks: np.ndarray, others: np.ndarray | None, usable: np.ndarray | None,
             cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
  """Per frame: is the object present and plausibly unoccluded? -> (ok (N,) bool, area (N,) int)."""
  n, h, w = masks.shape
  area = masks.sum(axis=(1, 2))
  frac = area / float(h * w)
  ok = (frac >= cfg.min_area) & (frac <= cfg.max_area)
  if cfg.border > 0:
    b = cfg.border
    edge = (masks[:, :b].any(axis=(1, 2)) | masks[:, -b:].any(axis=(1, 2)) |
            masks[:, :, :b].any(axis=(1, 2)) | masks[:, :, -b:].any(axis=(1, 2)))
    ok &= ~edge
  if others is not None and cfg.contact >= 0:
    for i in np.flatnonzero(ok):
      if others[i].any() and (_shift_or(masks[i:i + 1], cfg.contact)[0] & others[i]).any():
        ok[i] = False
  if usable is not None:
    ok &= np.asarray(usable, bool)
  return ok, area


def clip_starts(ok: np.ndarray, area: np.ndarray, cfg: SynthConfig) -> list[int]:
  """Start indices s such that frames s, s+step, ..., s+(F-1)step are all ok with smooth area."""
  span = (cfg.clip_len - 1) * cfg.frame_step
  out = []
  for s in range(0, len(ok) - span):
    idx = np.arange(s, s + span + 1, cfg.frame_step)
    if not ok[idx].all():
      continue
    a = area[idx].astype(np.float64)
    if len(a) > 1 and np.any(np.abs(a[1:] / a[:-1] - 1) > cfg.max_area_change):
      continue
    out.append(s)
  return out


def pick_starts(starts: Sequence[int], k: int, rng: np.random.Generator, gap: int) -> list[int]:
  """Up to k starts, random order, at least `gap` apart."""
  chosen: list[int] = []
  for s in rng.permutation(np.asarray(starts, int)):
    if all(abs(int(s) - c) >= gap for c in chosen):
      chosen.append(int(s))
    if len(chosen) == k:
      break
  return sorted(chosen)


def present_starts(masks: np.ndarray, usable: np.ndarray | None, cfg: SynthConfig) -> list[int]:
  """Occluder windows: the occluder is present (any size) in every frame."""
  h, w = masks.shape[1:]
  ok = masks.sum(axis=(1, 2)) >= max(1, cfg.min_occluder_area * h * w)
  if usable is not None:
    ok &= np.asarray(usable, bool)
  span = (cfg.clip_len - 1) * cfg.frame_step
  return [s for s in range(0, len(ok) - span) if ok[s:s + span + 1:cfg.frame_step].all()]


# ------------------------------------------------------------------------------------------- geometry

def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
  """(y0, x0, y1, x1) exclusive box of a (…,H,W) mask's union, or None if empty."""
  m = mask.reshape(-1, *mask.shape[-2:]).any(axis=0)
  ys, xs = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
  if len(ys) == 0:
    return None
  return int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1


def crop_window(box, src_hw, out_hw, margin: float, rng: np.random.Generator):
  """Largest crop of the output aspect inside the frame that contains `box` with `margin`, at a random offset.

  -> (y0, x0, ch, cw) or None if the object does not fit."""
  h0, w0 = src_hw
  oh, ow = out_hw
  scale = min(h0 / oh, w0 / ow)
  ch, cw = int(round(oh * scale)), int(round(ow * scale))
  ch, cw = min(ch, h0), min(cw, w0)
  my, mx = int(margin * ch), int(margin * cw)
  y0, x0, y1, x1 = box
  lo_y, hi_y = max(0, y1 + my - ch), min(h0 - ch, y0 - my)
  lo_x, hi_x = max(0, x1 + mx - cw), min(w0 - cw, x0 - mx)
  if lo_y > hi_y or lo_x > hi_x:
    return None
  return int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1)), ch, cw


def resize_rgb(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """(F,h,w,3) uint8 -> (F,H,W,3), bilinear (antialiased when shrinking)."""
  if x.shape[1:3] == tuple(hw):
    return x
  return np.stack([np.asarray(Image.fromarray(f).resize((hw[1], hw[0]), Image.BILINEAR)) for f in x])


def resize_mask(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """(F,h,w) bool -> (F,H,W) bool, by area-weighted vote (bilinear on 0/255, threshold at half)."""
  if m.shape[1:3] == tuple(hw):
    return m
  return np.stack([np.asarray(Image.fromarray(f.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.BILINEAR))
                   >= 128 for f in m])


def paste(canvas_hw, patch: np.ndarray, top: int, left: int):
  """Slices to paste `patch` (h,w,…) at (top, left) on a canvas, clipped. -> (canvas slices, patch slices) or None."""
  h, w = canvas_hw
  ph, pw = patch.shape[:2]
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + ph, h), min(left + pw, w)
  if y0 >= y1 or x0 >= x1:
    return None
  return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _centroids(m: np.ndarray) -> np.ndarray:
  out = np.zeros((len(m), 2))
  for i, f in enumerate(m):
    ys, xs = np.nonzero(f)
    out[i] = (ys.mean(), xs.mean()) if len(ys) else (f.shape[0] / 2, f.shape[1] / 2)
  return out


@dataclasses.dataclass
class _Patch:
  rgb: np.ndarray   # (F,h,w,3)
  mask: np.ndarray  # (F,h,w)


def _scaled(patch: _Patch, s: float) -> _Patch:
  h, w = patch.mask.shape[1:]
  hw = (max(1, int(round(h * s))), max(1, int(round(w * s))))
  return _Patch(resize_rgb(patch.rgb, hw), resize_mask(patch.mask, hw))


def _positions(kind: str, cents: np.ndarray, rad: float, rng: np.random.Generator, f: int) -> np.ndarray:
  """(F,2) occluder centres in output pixels."""
  t = np.linspace(0, 1, f)[:, None]
  if kind == 'static':
    p = cents.mean(axis=0) + rng.normal(0, 0.8 * rad, 2)
    return np.repeat(p[None], f, 0)
  if kind == 'sweep':
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.sin(ang), np.cos(ang)]) * rad * rng.uniform(0.5, 2.5)
    off = rng.normal(0, 0.5 * rad, 2)
    return cents.mean(axis=0) + off + (t - 0.5) * 2 * d
  # follow the object, with a slow drift
  off0, off1 = rng.normal(0, 0.8 * rad, 2), rng.normal(0, 0.8 * rad, 2)
  return cents + off0 * (1 - t) + off1 * t


def _entry_positions(cents: np.ndarray, rad: float, rng: np.random.Generator, f: int, hw, lead) -> np.ndarray:
  """(F,2) patch centres of an object entering: from a frame edge to a rest over the target, reached part-way
  through the clip (a fixed point, or one moving with the target). It starts with its first frame's mask (whose box
  centre is `lead` from the patch centre) straddling the edge, so it shows and touches that edge in the first frame."""
  off = rng.normal(0, 0.8 * rad, 2)
  end = cents + off if rng.random() < 0.5 else np.repeat(cents.mean(axis=0, keepdims=True) + off, f, 0)
  side = int(rng.integers(4))   # top, bottom, left, right
  start = end[0].copy()
  start[side // 2] = (0.0 if side % 2 == 0 else hw[side // 2] - 1.0) - lead[side // 2]
  t = np.minimum(np.linspace(0, 1, f) / rng.uniform(0.1, 1.0), 1.0)[:, None]
  return start + (end - start) * t


def _band(cfg: SynthConfig, rng: np.random.Generator, difficulty: str) -> tuple[float, float, float]:
  """The difficulty's occlusion-rate band and this clip's goal inside it."""
  lo, hi = cfg.hard_range if difficulty == 'hard' else cfg.easy_range
  return lo, hi, rng.uniform(lo, hi)


def _best_placement(amodal: np.ndarray, band, n: int, propose):
  """The placement search shared by every occluder kind: of `n` proposals, the one whose mean occlusion rate is in
  the band and nearest its goal. `propose(c)` -> (params, per-frame |A∩O|). -> (params, mean rate)."""
  lo, hi, goal = band
  area = np.maximum(amodal.sum(axis=(1, 2)), 1)
  best, best_err = None, np.inf
  for c in range(n):
    params, inter = propose(c)
    mean = (inter / area).mean()
    err = abs(mean - goal) + (0 if lo <= mean < hi else 1.0)
    if err < best_err:
      best, best_err = (params, float(mean)), err
  return best


def place_occluder(amodal: np.ndarray, patch: _Patch, cfg: SynthConfig, rng: np.random.Generator,
                   difficulty: str, motions: Sequence[str] = MOTIONS) -> tuple[np.ndarray, np.ndarray, dict]:
  """Search placements of `patch` over the (F,H,W) object masks for one hitting the difficulty band.
  `motions`: trajectories to draw from (MOTIONS, or ('enter',) for an object entering from the frame's edge).

  -> occluder rgb canvas (F,H,W,3), occluder mask (F,H,W), placement parameters."""
  f, h, w = amodal.shape
  area_obj = amodal.sum(axis=(1, 2)).mean()
  area_occ = max(patch.mask.sum(axis=(1, 2)).mean(), 1.0)
  base = np.sqrt(area_obj / area_occ)
  cents = _centroids(amodal)
  rad = np.sqrt(area_obj / np.pi)
  band = _band(cfg, rng, difficulty)
  goal = band[2]
  ratios = np.exp(rng.uniform(np.log(cfg.area_ratio[0]), np.log(cfg.area_ratio[1]), 4))
  if difficulty == 'hard':
    ratios = np.maximum(ratios, 1.0)
  def hw_of(r):
    h0, w0 = patch.mask.shape[1:]
    s = base * np.sqrt(r)
    return max(1, int(round(h0 * s))), max(1, int(round(w0 * s)))
  scaled = [_Patch(None, resize_mask(patch.mask, hw_of(r))) for r in ratios]  # rgb only for the winner

  def propose(c):
    si = c % len(scaled)
    sp = scaled[si]
    kind = motions[int(rng.integers(len(motions)))]
    ph, pw = sp.mask.shape[1:]
    if kind == 'enter':
      box = bbox(sp.mask[0])
      lead = (0.0, 0.0) if box is None else ((box[0] + box[2] - ph) / 2, (box[1] + box[3] - pw) / 2)
      pos = _entry_positions(cents, rad, rng, f, (h, w), lead)
    else:
      pos = _positions(kind, cents, rad, rng, f)
    tops = np.round(pos[:, 0] - ph / 2).astype(int)
    lefts = np.round(pos[:, 1] - pw / 2).astype(int)
    inter = np.zeros(f)
    for i in range(f):
      sl = paste((h, w), sp.mask[i], tops[i], lefts[i])
      if sl is not None:
        inter[i] = np.logical_and(amodal[i][sl[0]], sp.mask[i][sl[1]]).sum()
    return (si, kind, tops, lefts), inter

  (si, kind, tops, lefts), _ = _best_placement(amodal, band, cfg.candidates, propose)
  sp = _Patch(resize_rgb(patch.rgb, hw_of(ratios[si])), scaled[si].mask)
  rgb = np.zeros((f, h, w, 3), np.uint8)
  mask = np.zeros((f, h, w), bool)
  for i in range(f):
    sl = paste((h, w), sp.mask[i], tops[i], lefts[i])
    if sl is None:
      continue
    m = sp.mask[i][sl[1]]
    mask[i][sl[0]] = m
    rgb[i][sl[0]][m] = sp.rgb[i][sl[1]][m]
  placement = dict(kind=kind, area_ratio=float(ratios[si]), goal=float(goal), requested=difficulty,
                   top0=int(tops[0]), left0=int(lefts[0]), top1=int(tops[-1]), left1=int(lefts[-1]))
  return rgb, mask, placement


# ------------------------------------------------------------------------------- drawn occluders (bar, region)

def _occluder_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
  """A random colour at least 96 (RGB distance) from `avoid`, the object's mean colour: never a copy of it."""
  for _ in range(32):
    c = rng.integers(0, 256, 3)
    if np.linalg.norm(c - avoid) >= 96:
      return c
  return np.where(avoid < 128, 255, 0)   # the far corner of the colour cube


def _paint(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, avoid: np.ndarray) -> tuple[np.ndarray, str]:
  """Occluder pixels over its own (F,H,W) coordinates (u along its edge, v across it), so a texture moves with it:
  a flat colour, stripes or blocky noise. -> (F,H,W,3) uint8, the texture's name."""
  side = min(u.shape[1:])
  c = _occluder_colour(rng, avoid)
  texture = ('flat', 'stripes', 'noise')[int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
  if texture == 'flat':
    rgb = np.broadcast_to(c, (*u.shape, 3))
  elif texture == 'stripes':
    half = max(1.0, rng.uniform(0.03, 0.12) * side)
    a = rng.uniform(0, np.pi)
    on = (np.floor((u * np.cos(a) + v * np.sin(a)) / half) % 2).astype(bool)
    rgb = np.where(on[..., None], c, _occluder_colour(rng, avoid))
  else:
    cell = max(1.0, rng.uniform(0.03, 0.1) * side)
    table = rng.integers(-48, 49, (16, 16, 3))
    rgb = c + table[(np.floor(u / cell) % 16).astype(int), (np.floor(v / cell) % 16).astype(int)]
  return np.clip(rgb, 0, 255).astype(np.uint8), texture


def _frame_coords(h: int, w: int, origin, angle: float):
  """(H,W) coordinates of every pixel centre along the unit normal at `angle` (s) and along its edge (u)."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  ny, nx = np.sin(angle), np.cos(angle)
  dy, dx = yy - origin[0], xx - origin[1]
  return dy * ny + dx * nx, dx * ny - dy * nx


def _propose_bar(amodal, cents, rad, rng):
  """A bar or post through the object: a band |s - offset_t| < thickness / 2 across the whole frame, still or
  sweeping across the object along its normal. -> (params, (F,H,W) mask, u, v: its texture coordinates)."""
  f, h, w = amodal.shape
  orient = ('vertical', 'horizontal', 'slanted')[int(rng.integers(3))]
  angle = {'vertical': 0.0, 'horizontal': np.pi / 2}.get(orient, rng.choice((-1, 1)) * rng.uniform(0.35, 1.22))
  thick = max(1.0, rad * np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
  centre = cents.mean(axis=0)
  s, u = _frame_coords(h, w, centre, angle)
  track = (cents - centre) @ np.array([np.sin(angle), np.cos(angle)])   # the object's own offset along the normal
  motion = ('static', 'sweep')[int(rng.integers(2))]
  t = np.linspace(-1, 1, f)
  if motion == 'static':
    offsets = np.full(f, track.mean() + rng.normal(0, 0.6 * rad))
  else:
    offsets = rng.normal(0, 0.3 * rad) + rng.choice((-1, 1)) * (rad * rng.uniform(1.0, 3.0) + thick / 2) * t
  v = s[None] - offsets[:, None, None]
  return dict(orientation=orient, angle=float(angle), thickness=float(thick), motion=motion,
              offset0=float(offsets[0]), offset1=float(offsets[-1])), np.abs(v) < thick / 2, u, v


def _propose_region(amodal, cents, rad, rng):
  """A large slab sliding in from a frame edge: s < edge_t + wave(u), s the depth from that edge (tilted up to 15
  degrees), the edge straight or wavy; it stops over part of the object. The edge's depth never drops below the
  wave's amplitude + 1, so the slab always touches its frame edge. -> (params, (F,H,W) mask, u, v)."""
  f, h, w = amodal.shape
  side = ('top', 'bottom', 'left', 'right')[int(rng.integers(4))]
  origin, normal = {'top': ((0, w / 2), np.pi / 2), 'bottom': ((h - 1, w / 2), -np.pi / 2),
                    'left': ((h / 2, 0), 0.0), 'right': ((h / 2, w - 1), np.pi)}[side]
  angle = normal + rng.uniform(-1, 1) * np.pi / 12
  s, u = _frame_coords(h, w, origin, angle)
  wavy = rng.random() < 0.5
  amp = rng.uniform(0.03, 0.12) * min(h, w) if wavy else 0.0
  wave = amp * np.sin(2 * np.pi * u / (rng.uniform(0.3, 1.0) * min(h, w)) + rng.uniform(0, 2 * np.pi))
  depth = (cents - np.asarray(origin)) @ np.array([np.sin(angle), np.cos(angle)])
  start = amp + 1.0
  end = max(start, depth.mean() + rad * rng.uniform(-1.2, 1.2))
  ramp = np.minimum(np.linspace(0, 1, f) / rng.uniform(0.3, 1.0), 1.0)
  edges = start + (end - start) * ramp
  v = s[None] - wave[None] - edges[:, None, None]
  return dict(side=side, angle=float(angle), wavy=bool(wavy), amplitude=float(amp), edge0=float(edges[0]),
              edge1=float(edges[-1])), v < 0, u, v


def place_drawn(amodal: np.ndarray, kind: str, cfg: SynthConfig, rng: np.random.Generator, difficulty: str,
                avoid: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
  """A drawn occluder ('bar' or 'region') over the (F,H,W) object masks, its geometry found by the band search
  of the cut-out occluders, painted away from the object's mean colour `avoid`.

  -> occluder rgb (F,H,W,3), occluder mask (F,H,W), placement parameters."""
  area_obj = amodal.sum(axis=(1, 2)).mean()
  cents = _centroids(amodal)
  rad = np.sqrt(area_obj / np.pi)
  band = _band(cfg, rng, difficulty)
  propose_kind = _propose_bar if kind == 'bar' else _propose_region

  def propose(_):
    params, mask, u, v = propose_kind(amodal, cents, rad, rng)
    return (params, mask, u, v), np.logical_and(amodal, mask).sum(axis=(1, 2))

  (params, mask, u, v), _ = _best_placement(amodal, band, cfg.candidates, propose)
  rgb, texture = _paint(np.broadcast_to(u, mask.shape), v, rng, avoid)
  rgb = np.where(mask[..., None], rgb, np.uint8(0))
  return rgb, mask, dict(params, texture=texture, goal=float(band[2]), requested=difficulty)


def cut_occluder(frames: np.ndarray, masks: np.ndarray, max_side: int) -> _Patch:
  """Crops an occluder clip to its union box and shrinks it so the longer side is at most `max_side`."""
  y0, x0, y1, x1 = bbox(masks)
  rgb, m = frames[:, y0:y1, x0:x1], masks[:, y0:y1, x0:x1]
  s = min(1.0, max_side / max(y1 - y0, x1 - x0))
  return _scaled(_Patch(rgb, m), s) if s < 1.0 else _Patch(rgb, m)


def occluder_kind(cfg: SynthConfig, rng: np.random.Generator) -> str:
  """A clip's occluder kind, drawn by `cfg.occluders`' weights; one kind draws nothing (the default's stream)."""
  if len(cfg.occluders) == 1:
    return cfg.occluders[0][0]
  weights = np.array([w for _, w in cfg.occluders])
  return cfg.occluders[int(rng.choice(len(weights), p=weights / weights.sum()))][0]


def synthesize_clip(frames: np.ndarray, masks: np.ndarray, occ_frames: np.ndarray | None,
                    occ_masks: np.ndarray | None, cfg: SynthConfig, rng: np.random.Generator,
                    difficulty: str | None = None, frame_indices=None, occluder_frame_indices=None,
                    kind: str = 'object') -> Clip | None:
  """One clip from F target frames/masks (source resolution) and, for the cut-out kinds ('object', 'entering'),
  F occluder frames/masks (None for the drawn kinds). None if the object does not fit in an output-aspect crop."""
  out_hw = cfg.size
  box = bbox(masks)
  win = crop_window(box, masks.shape[1:], out_hw, cfg.margin, rng) if box else None
  if win is None and box:  # the margin is a preference; the object inside the crop is the rule
    win = crop_window(box, masks.shape[1:], out_hw, 0.0, rng)
  if win is None:
    return None
  y0, x0, ch, cw = win
  tf = resize_rgb(np.ascontiguousarray(frames[:, y0:y0 + ch, x0:x0 + cw]), out_hw)
  ta = resize_mask(np.ascontiguousarray(masks[:, y0:y0 + ch, x0:x0 + cw]), out_hw)
  if not ta.any(axis=(1, 2)).all():
    return None
  if difficulty is None:
    difficulty = 'hard' if rng.random() < cfg.hard_fraction else 'easy'
  if kind in ('bar', 'region'):
    occ_rgb, occ_mask, placement = place_drawn(ta, kind, cfg, rng, difficulty, avoid=tf[ta].mean(axis=0))
    occluder_frame_indices = np.full(len(tf), -1)   # no source frames
  else:
    patch = cut_occluder(occ_frames, occ_masks, max_side=2 * max(out_hw))
    occ_rgb, occ_mask, placement = place_occluder(ta, patch, cfg, rng, difficulty,
                                                  motions=('enter',) if kind == 'entering' else MOTIONS)
  placement['occluder_kind'] = kind
  occluded, amodal, visible = compose(tf, ta, occ_rgb, occ_mask)
  rates = occlusion_rates(ta, occ_mask)
  placement['crop'] = [y0, x0, ch, cw]
  f = len(tf)
  return Clip(occluded=occluded, amodal=amodal, visible_mask=visible, amodal_mask=ta, occluder_mask=occ_mask,
              frame_indices=np.asarray(frame_indices if frame_indices is not None else np.arange(f), np.int32),
              occluder_frame_indices=np.asarray(
                  occluder_frame_indices if occluder_frame_indices is not None else np.arange(f), np.int32),
              occlusion_rate=rates, coverage=occlusion_coverage(ta, occ_mask),
              object_size=float(ta.mean()), difficulty='hard' if rates.mean() >= 0.5 else 'easy',
              placement=placement)


# ------------------------------------------------------------------------------------------ per track

def synthesize_track(track, pick_occluder, cfg: SynthConfig, rng: np.random.Generator, report) -> list[Clip]:
  """Up to `cfg.clips_per_track` clips for one target `Track`.

  `pick_occluder(rng)` -> a Track from another video (or None); `report(where, why)` records skips.
  Frames that fail to decode are reported, marked unusable, and the clip is retried elsewhere.
  """
  from data_prep.sources.base import FrameError  # local: keep this module free of reader imports
  masks, others = track.load_masks()
  if len(masks) != track.num_frames:
    raise ValueError(f'{track.key}: {len(masks)} masks for {track.num_frames} frames')
  usable = np.ones(len(masks), bool) if track.usable is None else np.asarray(track.usable, bool).copy()
  ok, area = frame_ok(masks, others, usable, cfg)
  starts = clip_starts(ok, area, cfg)
  if not starts:
    report(track.key, f'no {cfg.clip_len}-frame clip (step {cfg.frame_step}) with the object present and '
                      f'unoccluded ({int(ok.sum())}/{len(ok)} frames qualify)')
    return []
  span = (cfg.clip_len - 1) * cfg.frame_step
  gap = cfg.min_clip_gap * (span + 1)
  clips: list[Clip] = []
  bad: set[int] = set()
  tries = 0
  order = list(rng.permutation(np.asarray(starts, int)))
  while order and len(clips) < cfg.clips_per_track and tries < 4 * cfg.clips_per_track + 8:
    tries += 1
    s = int(order.pop(0))
    idx = np.arange(s, s + span + 1, cfg.frame_step)
    if bad.intersection(idx.tolist()) or any(abs(s - int(c.frame_indices[0])) < gap for c in clips):
      continue
    try:
      frames = track.load_frames(idx)
      tmasks = track.window_masks(idx, masks)
    except FrameError as e:
      report(track.key, str(e))
      bad.update([int(e.index)] if e.index is not None else idx.tolist())
      continue
    kind = occluder_kind(cfg, rng)
    clip = None
    if kind in ('bar', 'region'):   # drawn: no occluder track
      clip = synthesize_clip(frames, tmasks, None, None, cfg, rng, frame_indices=idx, kind=kind)
    for _ in range(cfg.occluder_tries if kind in ('object', 'entering') else 0):
      occ = pick_occluder(rng)
      if occ is None:
        break
      try:
        om, _ = occ.load_masks()
        ost = present_starts(om, occ.usable, cfg)
        if not ost:
          continue
        os_ = int(rng.choice(ost))
        oidx = np.arange(os_, os_ + span + 1, cfg.frame_step)
        of = occ.load_frames(oidx)
        ofm = occ.window_masks(oidx, om)
      except FrameError as e:  # a bad occluder frame: report it, try another occluder
        report(occ.key, str(e))
        continue
      clip = synthesize_clip(frames, tmasks, of, ofm, cfg, rng, frame_indices=idx, occluder_frame_indices=oidx,
                             kind=kind)
      if clip is not None:
        clip.placement['occluder'] = occ
      break  # None means the target does not fit the crop: another occluder will not help
    if clip is not None:
      clips.append(clip)
  if not clips:
    report(track.key, 'no clip could be synthesized (object does not fit the output crop or no usable occluder)')
  return clips
