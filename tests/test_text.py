"""The character-level CLIP tokenizer is a real transformers CLIPTokenizer with the ids we document."""

import pickle

import numpy as np
import pytest

from tgvac_jax import text


def test_char_tokenizer_ids(tmp_path):
  size = text.write_char_tokenizer(tmp_path)
  assert size == 2 + 2 * len(text.CHARS)
  tok = text.load_tokenizer(tmp_path)
  tokenize = pickle.loads(pickle.dumps(text.Tokenize(tmp_path)))  # travels to loader workers as a path
  ids = tokenize(['ab c', ''])
  assert ids.shape == (2, 77) and ids.dtype == np.int32
  a, b, c = (2 + 2 * text.CHARS.index(ch) for ch in 'abc')
  np.testing.assert_array_equal(ids[0, :5], [0, a, b + 1, c + 1, 1])  # start, a, b</w>, c</w>, end
  assert (ids[0, 5:] == 1).all() and ids[1, 0] == 0 and (ids[1, 1:] == 1).all()
  assert tok.decode(ids[0], skip_special_tokens=True) == 'ab c'


def test_missing_tokenizer_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='tokenizer'):
    text.load_tokenizer(tmp_path)
