"""What every converter's check shares: the error figures, our module compiled once, quiet reference libraries.

A converter proves itself by running the reference library's model and ours on the same random input; these are
the pieces that `convert.from_diffusers --verify`, `convert.animatediff --verify` and the video export check of
`convert.to_diffusers` use alike, so the three report the same figures the same way.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from convert.rules import ConversionError


def errors(ours, theirs) -> tuple[float, float]:
  """(max |ours - theirs|, ||ours - theirs|| / ||theirs||) in float64."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    raise ConversionError(f'verify: output shapes differ: ours {ours.shape}, PyTorch {theirs.shape}')
  diff = ours - theirs
  return float(np.abs(diff).max()), float(np.linalg.norm(diff) / max(np.linalg.norm(theirs), 1e-30))


class Jitted:
  """`module(*args)` compiled as one program (op-by-op eager dispatch is far slower for a whole UNet); modules of
  one architecture share the compiled program."""

  def __init__(self, module):
    self.config = module.config
    self._module = module

  def __call__(self, *args):
    return _call(self._module, *args)


@nnx.jit
def _call(module, *args):
  return module(*args)


def quiet_libraries() -> None:
  """diffusers/transformers info messages and progress bars off (the CLIs print their own lines)."""
  for lib in ('transformers', 'diffusers'):
    try:
      logging = importlib.import_module(f'{lib}.utils.logging')
    except ImportError:
      continue
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def one_line(error: BaseException) -> str:
  """An error's message on one line (multi-line key reports joined with '; '), as the CLIs print it."""
  return '; '.join(line.strip() for line in str(error).splitlines() if line.strip())


def run_cli(work: Callable[[], Any]) -> int:
  """A converter command's exit status: 0, or 2 after its error on one line (the converters write nothing then)."""
  try:
    work()
  except (ConversionError, ValueError, FileNotFoundError) as e:  # SourceError, CheckpointError are ValueErrors
    print(f'error: {one_line(e)}', file=sys.stderr)
    return 2
  return 0
