"""files.atomic_folder: a folder appears complete or not at all, whatever `write` does."""

import os

import pytest

from tgvac_jax.files import atomic_folder


def _write(files):
  def write(tmp):
    for name, text in files.items():
      (tmp / name).write_text(text)
  return write


def test_replaces_a_folder_whole_and_leaves_no_temporaries(tmp_path):
  out = tmp_path / 'out'
  assert atomic_folder(out, _write({'a': '1', 'b': '2'})) == out
  atomic_folder(out, _write({'c': '3'}))
  assert sorted(p.name for p in out.iterdir()) == ['c']
  assert sorted(os.listdir(tmp_path)) == ['out']


def test_a_failing_write_leaves_the_old_folder_as_it_was(tmp_path):
  out = tmp_path / 'out'
  atomic_folder(out, _write({'a': '1'}))

  def broken(tmp):
    (tmp / 'a').write_text('half')
    raise RuntimeError('disk full')

  with pytest.raises(RuntimeError, match='disk full'):
    atomic_folder(out, broken)
  assert (out / 'a').read_text() == '1' and sorted(os.listdir(tmp_path)) == ['out']
  with pytest.raises(RuntimeError):
    atomic_folder(tmp_path / 'new', broken)
  assert not (tmp_path / 'new').exists() and sorted(os.listdir(tmp_path)) == ['out']


def test_without_overwrite_an_existing_folder_is_an_error(tmp_path):
  atomic_folder(tmp_path / 'out', _write({'a': '1'}))
  with pytest.raises(FileExistsError, match='out exists'):
    atomic_folder(tmp_path / 'out', _write({'a': '2'}), overwrite=False)
  assert (tmp_path / 'out' / 'a').read_text() == '1'


def test_the_folder_gets_a_normal_mode(tmp_path):
  """mkdtemp makes 0700 folders; the finished one follows the umask as `mkdir` would."""
  umask = os.umask(0o022)
  try:
    out = atomic_folder(tmp_path / 'out', _write({}))
  finally:
    os.umask(umask)
  assert out.stat().st_mode & 0o777 == 0o755
