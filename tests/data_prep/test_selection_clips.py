"""data_prep/selection_clips.py, the generator that the demo's settings are chosen on: its signed-distance rasterizer
against the shapes' analytic areas, its frames and masks against each other and through inference's and evaluation's
readers, its acceptance rules on the written masks, its determinism, vocabulary and command line, and its
independence from the other two generators."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import selection_clips as sc

SIZE, FRAMES = 48, 10


def _area(kind: str, r: float) -> float:
  """Each outline's area from geometry, not from pixels."""
  if kind == 'circle':
    return np.pi * r * r
  if kind == 'square':
    return (2 * sc.SQUARE_HALF * r) ** 2
  if kind == 'triangle':   # equilateral from its circumradius
    return 3 * np.sqrt(3) / 4 * (sc.TRIANGLE_OUTER * r) ** 2
  if kind == 'star':       # ten triangles between outer and inner vertices, pi/5 apart
    return 5 * sc.STAR_OUTER * sc.STAR_INNER * r * r * np.sin(np.pi / 5)
  if kind == 'heart':      # the square plus the outer half of each disc on its upper sides
    s = sc.HEART_SIDE * r
    return s * s + np.pi * s * s / 4
  arm, half = sc.CROSS_ARM * r, sc.CROSS_HALF_WIDTH * r   # two bars minus their shared middle
  return 2 * (2 * arm) * (2 * half) - (2 * half) ** 2


@pytest.mark.parametrize('kind', sc.SHAPES)
def test_antialiased_coverage_has_the_shapes_area_and_stays_in_bound(kind):
  rng = np.random.default_rng(len(kind))
  r, centre, angle = rng.uniform(14, 20), rng.uniform(46, 50, 2), rng.uniform(0, 2 * np.pi)
  sprite = sc.Sprite(kind, r, centre[None], np.array([angle]), np.zeros(3, np.float32))
  k = np.arange(96, dtype=np.float32) + 0.5
  sd = sprite.sd(k[None, :, None], k[None, None, :])[0]
  exact = _area(kind, r)
  assert abs(sc.coverage(sd).sum() - exact) <= 0.01 * exact, (sc.coverage(sd).sum(), exact)
  assert abs((sd <= 0).sum() - exact) <= 0.03 * exact, 'the mask is the coverage cut at one half'
  ys, xs = np.nonzero(sc.coverage(sd) > 0)
  assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).max() <= sc.BOUND * r + 1, 'BOUND keeps the border'


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  root = sc.write_root(tmp_path_factory.mktemp('sel') / 'root', 'task', 3, seed=5, size=SIZE, num_frames=FRAMES)
  return root, [sc.make_clip(5, i, size=SIZE, num_frames=FRAMES) for i in range(3)]


def test_root_reads_back_through_inference_and_evaluation(written):
  from tgvac_jax.eval import amodal_root
  from tgvac_jax.infer.sources import davis_sequences
  root, clips = written
  seqs = davis_sequences(root)
  assert [s.name for s in seqs] == [c.name for c in clips] == amodal_root.sequences(root)
  assert [s.text for s in seqs] == [c.caption for c in clips]
  for seq, clip in zip(seqs, clips):
    assert sorted(p.suffix for p in (root / 'JPEGImages' / clip.name).iterdir()) == ['.jpg'] * FRAMES
    assert seq.check() == (FRAMES, SIZE, SIZE)
    loaded = seq.load()
    assert np.array_equal(loaded.visible, clip.visible)
    error = loaded.frames.astype(float) - clip.frames
    assert 10 * np.log10(255 ** 2 / np.mean(error ** 2)) > 22 and np.median(np.abs(error)) <= 4, \
        'the JPEG frames are the rendered clip (quality 90, 4:2:0 chroma on sharp flat-colour edges)'
    again = io.BytesIO()
    Image.fromarray(clip.frames[-1]).save(again, format='JPEG', quality=90)
    assert np.array_equal(loaded.frames[-1], np.asarray(Image.open(again))), 'exactly this frame at quality 90'
    gt = amodal_root.read_ground_truth(root, clip.name)
    assert np.array_equal(gt.amodal, clip.amodal) and np.array_equal(gt.visible, clip.visible)
    assert np.array_equal(gt.objects, clip.objects)
  manifest = json.loads((root / sc.MANIFEST).read_text())
  assert manifest['generator'] == 'data_prep/selection_clips.py' and manifest['clips'] == 3
  stamp = (root / 'captions.json').stat().st_mtime_ns
  assert sc.write_root(root, 'task', 3, seed=5, size=SIZE, num_frames=FRAMES) == root
  assert (root / 'captions.json').stat().st_mtime_ns == stamp, 'the same settings reuse the folder'


def test_visible_mask_is_where_the_frame_shows_the_target(written):
  """The rendered colour, not the masks' own bookkeeping: visible pixels show the target's colour; hidden ones show
  an occluder, which is far from it."""
  for clip in written[1]:
    assert not (clip.visible & ~clip.amodal).any()
    solid = clip.objects[clip.amodal].astype(float)
    colour = np.median(solid, axis=0)
    distance = np.linalg.norm(clip.frames.astype(float) - colour, axis=-1)
    # away from outlines (the 1-px ramps blend colours), as the 4-neighbour erosion of each mask
    def inner(m):
      return m & np.roll(m, 1, 1) & np.roll(m, -1, 1) & np.roll(m, 1, 2) & np.roll(m, -1, 2)
    hidden = clip.amodal & ~clip.visible
    assert (distance[inner(clip.visible)] <= 1).mean() >= 0.98
    if inner(hidden).any():
      assert (distance[inner(hidden)] >= 40).mean() >= 0.98
    background = ~(clip.amodal | np.roll(clip.amodal, 1, 1) | np.roll(clip.amodal, -1, 1) |
                   np.roll(clip.amodal, 1, 2) | np.roll(clip.amodal, -1, 2))
    assert (distance[background] >= 40).mean() >= 0.98, 'only the target has the target colour'


def test_hidden_is_where_an_occluder_covers_at_least_half_the_pixel():
  """Unmixing the rendered colours: how far an occluder moved each pixel from the frame drawn without it."""
  checked = 0
  for i in range(6):
    scene = sc.draw_scene(np.random.default_rng((21, i)), 48, 6)
    scene.occluders = scene.occluders[:1]
    clip = sc.render(scene, 48, 6, 'one')
    bare = sc.render(dataclasses.replace(scene, occluders=[]), 48, 6, 'bare')
    towards = scene.occluders[0].colour - bare.frames.astype(float)
    alpha = ((clip.frames - bare.frames.astype(float)) * towards).sum(-1) / (towards * towards).sum(-1)
    clear = clip.amodal & (np.abs(alpha - 0.5) > 0.02)
    assert np.array_equal((alpha >= 0.5)[clear], ~clip.visible[clear])
    checked += (clip.amodal & ~clip.visible).sum()
  assert checked > 100


def test_clips_keep_the_acceptance_rules_on_their_full_masks(written):
  clips = written[1] + [sc.make_clip(11, i, size=64, num_frames=16) for i in range(3)]
  for clip in clips:
    area = clip.amodal.sum((1, 2))
    rate = 1 - clip.visible.sum((1, 2)) / area
    assert area.min() > 0
    assert 0.15 <= rate.mean() <= 0.85, rate
    assert clip.visible[0].sum() >= 3, 'visible in the first frame'
    assert (clip.visible.sum((1, 2)) >= 3).mean() >= 1 / 3
    assert not (clip.amodal[:, [0, -1]].any() or clip.amodal[:, :, [0, -1]].any()), 'never cut by the border'
    assert (clip.objects[~clip.amodal] == 255).all(), 'the whole object lies over white'


def test_same_settings_same_bytes_and_clips_do_not_depend_on_the_count(tmp_path):
  a = sc.write_root(tmp_path / 'a', 'task', 2, seed=3, size=32, num_frames=6)
  b = sc.write_root(tmp_path / 'b', 'task', 3, seed=3, size=32, num_frames=6)
  c = sc.write_root(tmp_path / 'c', 'task', 2, seed=4, size=32, num_frames=6)
  files = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file() and p.parent != a)
  assert len(files) == 2 * 4 * 6
  assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
  assert not all((a / f).read_bytes() == (c / f).read_bytes() for f in files)


def test_captions_follow_the_grammar_and_name_the_drawn_colour():
  grammar = re.compile(rf'a ({"|".join(sc.SIZES)}) ({"|".join(sc.COLOURS)}) ({"|".join(sc.SHAPES)})')
  centres = np.array(list(sc.COLOURS.values()), float)
  seen = set()
  for i in range(60):
    scene = sc.draw_scene(np.random.default_rng((9, i)), 64, 8)
    m = grammar.fullmatch(scene.caption)
    assert m, scene.caption
    seen.add(m.group(3))
    nearest = list(sc.COLOURS)[np.argmin(np.linalg.norm(centres - scene.target.colour, axis=1))]
    assert nearest == m.group(2), (scene.caption, scene.target.colour)
    assert scene.target.kind == m.group(3)
    assert np.linalg.norm(scene.background - 255) >= 100, 'the background is never near white'
    assert 0.08 * 64 <= scene.target.r <= 0.22 * 64
  assert seen == set(sc.SHAPES)


@pytest.mark.parametrize('argv', [['--clips', '0'], ['--size', '8'], ['--family', 'full'], ['--clips', 'x'],
                                  ['--jpeg_quality', '0']])
def test_bad_arguments_are_one_error_line_and_nothing_on_disk(tmp_path, capsys, argv):
  try:
    rc = sc.main(['--out', str(tmp_path / 'out')] + argv)
  except SystemExit as e:
    rc = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and 'error:' in err[0], err
  assert not list(tmp_path.iterdir())


def test_shares_no_code_with_the_other_generators():
  tree = ast.parse(Path(sc.__file__).read_text())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert not any(m and m.startswith('data_prep') for m in imported), imported
