"""Readers on small fake DAVIS / YouTube-VOS / LaSOT / pix2gestalt folders, and the procedural source."""

import os
import re
import shutil

import numpy as np
import pytest

import fake_datasets as fake
from data_prep.sources import FrameError, SourceError, VideoError, get_source
from data_prep.sources.procedural import COLOURS, PATTERNS, SHAPES, SIZES, ProceduralSource


def test_davis_reader(tmp_path):
  root = fake.make_davis(str(tmp_path / 'davis'))
  src = get_source('davis', root)
  assert src.videos() == sorted(['bear', 'dog-agility', 'camel', 'car-turn', 'horse-jump'])
  tracks = src.tracks('dog-agility')  # index 1 -> two objects
  assert [t.object_id for t in tracks] == [1, 2]
  t = tracks[0]
  assert (t.class_name, t.caption, t.num_frames) == ('dog', 'a dog', 8)
  masks, others = t.load_masks()
  _, lab = fake.video(8, 1, n_obj=2)
  np.testing.assert_array_equal(masks, lab == 1)
  np.testing.assert_array_equal(others, lab == 2)
  frames = t.load_frames([0, 3])
  assert frames.shape == (2, fake.H, fake.W, 3) and frames.dtype == np.uint8


def test_davis_missing_annotation_folder(tmp_path):
  root = fake.make_davis(str(tmp_path / 'davis'), seqs=('a', 'b'))
  shutil.rmtree(os.path.join(root, 'Annotations'))
  with pytest.raises(SourceError, match='missing annotation folder'):
    get_source('davis', root)


def test_davis_bad_videos(tmp_path):
  root = fake.make_davis(str(tmp_path / 'davis'), seqs=('a', 'b', 'c'))
  os.remove(os.path.join(root, 'Annotations', '480p', 'a', '00007.png'))  # 8 frames, 7 masks
  ann = os.path.join(root, 'Annotations', '480p', 'b')
  for f in os.listdir(ann):                                              # all masks empty
    fake.palette_png(np.zeros((fake.H, fake.W), np.uint8), os.path.join(ann, f))
  with open(os.path.join(root, 'JPEGImages', '480p', 'c', '00002.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 not a jpeg')                               # corrupt frame
  src = get_source('davis', root)
  with pytest.raises(VideoError, match='8 frames but 7 annotation'):
    src.tracks('a')
  with pytest.raises(VideoError, match='no annotated objects'):
    src.tracks('b')
  t = src.tracks('c')[0]
  with pytest.raises(FrameError, match='00002.jpg'):
    t.load_frames([1, 2])


def test_youtube_vos_reader(tmp_path):
  root = fake.make_ytvos(str(tmp_path / 'ytvos'))
  src = get_source('youtube_vos', root)
  assert len(src.videos()) == 5
  tracks = src.tracks('0a1b2c')
  assert [(t.object_id, t.class_name) for t in tracks] == [(1, 'zebra'), (2, 'boat')]
  t = tracks[1]
  assert t.num_frames == 6 and t.source_num_frames == 30   # annotated every 5th frame of 30 JPEGs
  masks, _ = t.load_masks()
  _, lab = fake.video(30, 10, n_obj=2)
  np.testing.assert_array_equal(masks, lab[::5] == 2)
  frames = t.load_frames([1])
  fr, _ = fake.video(30, 10, n_obj=2)
  err = [np.abs(frames[0].astype(int) - f).mean() for f in fr]
  assert int(np.argmin(err)) == 5   # annotated frame 1 is JPEG 00010 = source frame 5 (names start at 00005)


def test_youtube_vos_errors(tmp_path):
  root = fake.make_ytvos(str(tmp_path / 'ytvos'), vids=('v1', 'v2'))
  os.remove(os.path.join(root, 'JPEGImages', 'v1', '00010.jpg'))  # an annotated frame without its JPEG
  src = get_source('youtube_vos', root)
  with pytest.raises(VideoError, match='without a frame'):
    src.tracks('v1')
  os.remove(os.path.join(root, 'meta.json'))
  with pytest.raises(SourceError, match='meta.json'):
    get_source('youtube_vos', root)


def test_lasot_reader(tmp_path):
  masks = str(tmp_path / 'masks')
  root = fake.make_lasot(str(tmp_path / 'lasot'), masks)
  with pytest.raises(SourceError, match='boxes, not masks'):
    get_source('lasot', root)
  src = get_source('lasot', root, masks=masks)
  assert src.videos() == ['airplane-1', 'airplane-2', 'airplane-3', 'bird-1', 'bird-2', 'bird-3']
  (t,) = src.tracks('bird-2')
  assert (t.class_name, t.caption, t.num_frames) == ('bird', 'a white bird flying in the sky', 8)
  small, _ = t.load_masks()
  assert t.usable.tolist() == [True] * 7 + [False]          # full_occlusion flag on the last frame
  full = t.load_window_masks([0, 1])
  _, lab = fake.video(8, 34, n_obj=1)
  np.testing.assert_array_equal(full, lab[:2] == 1)
  assert small.shape[0] == 8
  # box masks as a crude fallback cover the true mask
  (tb,) = get_source('lasot', root, masks='box').tracks('bird-2')
  tb.load_masks()
  assert (tb.load_window_masks([0])[0] >= (lab[0] == 1)).all()


def test_lasot_flag_count_mismatch(tmp_path):
  masks = str(tmp_path / 'masks')
  root = fake.make_lasot(str(tmp_path / 'lasot'), masks, classes=('cat',), per_class=2)
  with open(os.path.join(root, 'cat', 'cat-1', 'out_of_view.txt'), 'w') as f:
    f.write('0,0,0\n')
  with pytest.raises(VideoError, match='3 out_of_view flags for 8 frames'):
    get_source('lasot', root, masks=masks).tracks('cat-1')


def test_pix2gestalt_reader(tmp_path):
  root = fake.make_pix2gestalt(str(tmp_path / 'p2g'))
  os.remove(os.path.join(root, 'whole', 'sa_0005.png'))  # incomplete pair: left out, listed
  src = get_source('pix2gestalt', root)
  assert len(src) == 5 and src.incomplete == ['sa_0005']
  x = src[2]
  np.testing.assert_array_equal(x['visible_mask'], x['amodal_mask'] & ~x['occluder_mask'])
  assert (x['amodal'][~x['amodal_mask']] == 255).all()
  ((key, arrays, meta),) = src.pair_clips('sa_0001', (16, 16))
  assert arrays['occluded'].shape == (1, 16, 16, 3) and meta['source_num_frames'] == 1
  shutil.rmtree(os.path.join(root, 'whole_mask'))
  with pytest.raises(SourceError, match='whole_mask'):
    get_source('pix2gestalt', root)


def test_tfds_davis_without_tensorflow():
  pytest.importorskip  # the optional source explains what it needs
  import importlib.util
  if importlib.util.find_spec('tensorflow') is not None:
    pytest.skip('TensorFlow installed')
  with pytest.raises(SourceError, match='TensorFlow'):
    get_source('tfds_davis', '/nonexistent')


def test_procedural_is_deterministic_and_varied():
  a = ProceduralSource(num_videos=40, size=32, min_frames=6, max_frames=8, seed=3)
  b = ProceduralSource(num_videos=40, size=32, min_frames=6, max_frames=8, seed=3)
  fa, la = a.render('proc00007')
  fb, lb = b.render('proc00007')
  np.testing.assert_array_equal(fa, fb)
  np.testing.assert_array_equal(la, lb)
  caps = [t.caption for v in a.videos() for t in a.tracks(v)]
  pat = re.compile(rf"^a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) (({'|'.join(PATTERNS[1:])}) )?"
                   rf"({'|'.join(SHAPES)})$")
  assert all(pat.match(c) for c in caps), caps
  assert len({c.split()[-1] for c in caps}) >= 6 and len({c.split()[2] for c in caps}) >= 6
  t = a.tracks('proc00007')[0]
  m, _ = t.load_masks()
  assert m.any(axis=(1, 2)).all() and t.load_frames([0, 1]).shape == (2, 32, 32, 3)
  assert not np.array_equal(fa, ProceduralSource(num_videos=40, size=32, min_frames=6, max_frames=8,
                                                 seed=4).render('proc00007')[0][:len(fa)])


def _specs(src, n):
  """Spec dicts with the pan as a list, so whole specs compare with ==."""
  return [dict(sp, pan=list(sp['pan'])) for sp in map(src._spec, src.videos()[:n])]


def test_procedural_default_knobs_are_the_full_task():
  kw = dict(num_videos=30, size=24, min_frames=6, max_frames=8, second_sprite_prob=0.5, seed=5)
  a = ProceduralSource(**kw)
  b = ProceduralSource(**kw, shapes=SHAPES, colours=tuple(COLOURS), patterns=PATTERNS, sizes=tuple(SIZES),
                       spin=True, pulse=True, background='texture')
  assert a.describe() == b.describe() and set(a.describe()).isdisjoint(['shapes', 'spin', 'background'])
  assert _specs(a, 30) == _specs(b, 30)
  two = next(v for v in a.videos() if len(a._spec(v)['sprites']) == 2)
  for v in ('proc00000', two):
    for x, y in zip(a.render(v), b.render(v)):
      np.testing.assert_array_equal(x, y)


def test_procedural_subsets_are_respected():
  want = dict(shapes=('star', 'circle'), colours=('red',), patterns=('plain', 'striped'), sizes=('small', 'large'))
  src = ProceduralSource(num_videos=80, size=24, min_frames=6, max_frames=8, second_sprite_prob=0.5, **want)
  sprites = [sp for spec in _specs(src, 80) for sp in spec['sprites']]
  for knob, key in (('shapes', 'shape'), ('colours', 'colour'), ('patterns', 'pattern'), ('sizes', 'size')):
    assert {sp[key] for sp in sprites} == set(want[knob]), knob
  assert all(sp['size'] == 'small' for sp in sprites if sp['half'] is not None)  # two sprites: no large ones
  assert src.describe()['shapes'] == ['circle', 'star']  # canonical order: the fingerprint ignores the caller's
  assert all(ProceduralSource.caption_of(sp).startswith(f"a {sp['size']} red ") for sp in sprites)


def test_procedural_spin_and_pulse_off_change_nothing_else():
  kw = dict(num_videos=40, size=24, min_frames=6, max_frames=8)
  full = _specs(ProceduralSource(**kw), 40)
  still = _specs(ProceduralSource(**kw, spin=False, pulse=False), 40)
  assert any(sp['spin'] != 0 for spec in full for sp in spec['sprites'])
  for a, b in zip(full, still):
    assert all(sp['spin'] == 0 and sp['pulse'] == 0 for sp in b['sprites'])  # constant angle and radius
    strip = lambda spec: [dict(sp, spin=0, pulse=0) for sp in spec['sprites']]
    assert strip(a) == strip(b) and dict(a, sprites=0) == dict(b, sprites=0)


def test_procedural_plain_background():
  src = ProceduralSource(num_videos=8, size=32, min_frames=6, max_frames=8, background='plain')
  colours = set()
  for v in src.videos():
    frames, labels = src.render(v)
    bg = frames[labels == 0]
    assert (labels > 0).any() and (bg == bg[0]).all(), v  # one flat colour in every frame, panned or not
    assert bg[0].max() <= 180, bg[0]  # never near white: the target is the object on white
    colours.add(tuple(bg[0]))
  assert len(colours) == len(src.videos())
  assert src.describe()['background'] == 'plain'


@pytest.mark.parametrize('kw, match', [
    (dict(shapes=('circle', 'oval')), r"shapes=.*unknown 'oval'; allowed: .*'circle', 'square'"),
    (dict(colours=()), r'colours=\(\): empty'),
    (dict(patterns='zebra'), r"unknown 'zebra'.*'plain', 'striped'"),
    (dict(background='noise'), r"background='noise'.*'texture', 'plain'"),
    (dict(sizes=('large',)), r"two-sprite videos need one of \('small', 'medium'\)"),
])
def test_procedural_bad_knobs(kw, match):
  with pytest.raises(ValueError, match=match):
    ProceduralSource(**kw)
  if 'sizes' in kw:
    ProceduralSource(**kw, second_sprite_prob=0.0)  # one sprite per video: any size fits


def test_unknown_source():
  with pytest.raises(SourceError, match='unknown source'):
    get_source('kinetics', '/x')
