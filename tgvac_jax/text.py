"""Text to CLIP token ids.

Real weights come with their `tokenizer/` folder (transformers' `CLIPTokenizer`). Models trained from scratch here
(the demo, tests) use a character-level CLIP vocabulary written by `write_char_tokenizer`, optionally with whole-word
tokens for a known vocabulary (as CLIP's BPE has one token for "red" or "heart"): a real `CLIPTokenizer`, so the
rest of the code never knows the difference.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from collections.abc import Sequence

import numpy as np

MAX_LENGTH = 77
CHARS = string.ascii_lowercase + string.digits + "-'"


def load_tokenizer(folder: str | os.PathLike):
  """transformers `CLIPTokenizer` from a local folder (vocab.json + merges.txt, or tokenizer.json); nothing is
  downloaded."""
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
  if not any(os.path.isfile(os.path.join(folder, f)) for f in ('vocab.json', 'tokenizer.json')):
    raise FileNotFoundError(f'{folder}: no vocab.json or tokenizer.json (not a CLIP tokenizer folder)')
  return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def write_char_tokenizer(folder: str | os.PathLike, words: Sequence[str] = ()) -> int:
  """Writes a character-level CLIP tokenizer to `folder`; returns its vocabulary size.

  Ids: 0 start, 1 end (also padding), then each character of `CHARS` alone and word-final (`c</w>`), then
  the pieces BPE merges build each of `words` from, up to the whole word (`word</w>`), so a caption
  made of known words is one token per word and any other word still tokenizes, character by character. A frozen
  random text encoder (the from-scratch stand-in for CLIP) then gives each known word its own embedding.
  """
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
  vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
  for c in CHARS:
    vocab[c] = len(vocab)
    vocab[c + '</w>'] = len(vocab)
  words = list(dict.fromkeys(w.lower() for w in words))
  for word in words:
    if not word or any(c not in CHARS for c in word):
      raise ValueError(f'tokenizer word {word!r}: only {CHARS!r} may appear in a word')
  merges: list[str] = []
  with tempfile.TemporaryDirectory() as raw:
    def tokenizer():
      with open(os.path.join(raw, 'vocab.json'), 'w') as f:
        json.dump(vocab, f)
      with open(os.path.join(raw, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n' + ''.join(m + '\n' for m in merges))
      return CLIPTokenizer(os.path.join(raw, 'vocab.json'), os.path.join(raw, 'merges.txt'),
                           pad_token='<|endoftext|>', model_max_length=MAX_LENGTH)
    tok = tokenizer()
    for _ in range(sum(len(w) for w in words) + 1):  # each round merges one more pair of every word still split
      split = [pieces for pieces in (tok.tokenize(w) for w in words) if len(pieces) > 1]
      if not split:
        break
      for pieces in split:   # join its first two pieces; BPE applies the new merge after the earlier ones
        merge = f'{pieces[0]} {pieces[1]}'
        if merge not in merges:
          merges.append(merge)
          vocab.setdefault(pieces[0] + pieces[1], len(vocab))
      tok = tokenizer()
    else:
      raise ValueError(f'tokenizer words {words}: could not give each word one token')
    tok.save_pretrained(str(folder))
  return len(vocab)


class Tokenize:
  """caption (or captions) -> int32 ids padded/truncated to 77, as SD-1.5 feeds its text encoder.

  Loads the tokenizer from `folder` on first use, so it pickles into Grain worker processes as a path.
  """

  def __init__(self, folder: str | os.PathLike, max_length: int = MAX_LENGTH):
    self.folder, self.max_length, self._tokenizer = str(folder), max_length, None

  def __getstate__(self):
    return {**self.__dict__, '_tokenizer': None}

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      self._tokenizer = load_tokenizer(self.folder)
    return self._tokenizer

  def __call__(self, text: str | Sequence[str]) -> np.ndarray:
    out = self.tokenizer(text, padding='max_length', truncation=True, max_length=self.max_length)
    return np.asarray(out['input_ids'], np.int32)
