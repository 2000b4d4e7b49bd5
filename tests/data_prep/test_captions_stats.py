"""Captions (source, file, BLIP-2 folder check), the SAM-2 folder check, and the Table-1 statistics."""

import json

import numpy as np
import pytest

from data_prep import stats
from data_prep.captions import FileCaptions, make_captioner, source_caption
from data_prep.sources.base import Track


def _track(video='v1', obj=2, caption='a dog'):
  return Track('davis', video, obj, 'dog', caption, 3, lambda: None, lambda i: None)


def test_captioners(tmp_path):
  t = _track()
  assert make_captioner('source') is source_caption and source_caption(t) == 'a dog'
  p = tmp_path / 'caps.json'
  p.write_text(json.dumps({'v1/2': 'a brown dog running on grass'}))
  cap = make_captioner(f'file:{p}')
  assert isinstance(cap, FileCaptions)
  assert cap(t) == 'a brown dog running on grass' and cap(_track(obj=1)) == 'a dog'
  with pytest.raises(FileNotFoundError, match='local model folder'):
    make_captioner(f'blip2:{tmp_path / "no_such_model"}')
  with pytest.raises(ValueError, match='--captions'):
    make_captioner('gpt')


def test_sam2_needs_a_local_folder(tmp_path):
  from data_prep.masker import Sam2BoxMasker
  with pytest.raises(FileNotFoundError, match='SAM-2 masks need a local model folder'):
    Sam2BoxMasker(str(tmp_path / 'missing'), str(tmp_path / 'cache'))


def test_table1():
  clips = [
      dict(video_id='a', object_id=1, class_name='dog', source_num_frames=10, occlusion_rate=[0.2, 0.4],
           coverage=0.5, object_size=0.1),
      dict(video_id='a', object_id=1, class_name='dog', source_num_frames=10, occlusion_rate=[0.6, 0.8],
           coverage=0.7, object_size=0.2),
      dict(video_id='b', object_id=3, class_name='cat', source_num_frames=30, occlusion_rate=[0.5, 0.5],
           coverage=0.9, object_size=0.3),
  ]
  s = stats.table1(clips)
  assert s['mean_frames'] == 20 and s['classes'] == 2 and s['instances'] == 2 and s['videos'] == 3
  assert s['avg_object_size'] == pytest.approx(0.2)
  assert s['avg_occlusion_rate'] == pytest.approx(np.mean([0.3, 0.7, 0.5]))
  assert s['avg_coverage'] == pytest.approx(0.7)
  assert (s['easy_videos'], s['hard_videos']) == (1, 2)
  assert s['hard_frame_share'] == pytest.approx(4 / 6)
  text = stats.format_table({'davis': s})
  assert '# average occlusion-coverage rate' in text and '20.00%' in text
  md = stats.format_markdown({'davis': s, 'empty': stats.table1([])})
  assert md.startswith('| | davis | empty |')
