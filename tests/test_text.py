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


def test_word_tokens_for_a_known_vocabulary(tmp_path):
  """Every caption word of the procedural source is one token (checked by transformers' own BPE), other words
  still tokenize by characters and decode back, and the character ids stay where they were."""
  from data_prep.sources.procedural import ProceduralSource  # pylint: disable=import-outside-toplevel
  words = ProceduralSource.caption_words()
  size = text.write_char_tokenizer(tmp_path, words)
  tok = text.load_tokenizer(tmp_path)
  assert len(tok) == size
  for w in words:
    assert tok.tokenize(w) == [w + '</w>'], w
  caption = 'a large red striped heart'
  ids = text.Tokenize(tmp_path)(caption)
  assert list(ids[:7]) == [0] + [tok.convert_tokens_to_ids(w + '</w>') for w in caption.split()] + [1]
  assert len(set(ids[1:6])) == 5
  other = 'greens starfish'       # prefixes of known words, not words: pieces, decoded back exactly
  assert len(tok.tokenize(other)) > 2 and tok.decode(text.Tokenize(tmp_path)(other), skip_special_tokens=True) == other
  a = 2 + 2 * text.CHARS.index('q')
  assert tok.convert_tokens_to_ids(['q', 'q</w>']) == [a, a + 1]


def test_word_tokens_reject_other_characters(tmp_path):
  with pytest.raises(ValueError, match='only'):
    text.write_char_tokenizer(tmp_path, ['red', 'Blue!'])
