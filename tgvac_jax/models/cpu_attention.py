"""The fused CPU attention kernel (`cpu_attention.cc`), built on first use and called through the XLA FFI.

XLA:CPU cannot keep a block of attention scores in cache from the dot that makes them through the softmax to the
value product: each is a separate op over the whole block in memory. The kernel makes a tile of 8 query rows'
scores, probabilities and output (and in the backward dP and dS) while they are in the core's cache. It is built
with the machine's C++ compiler (`$CXX`, else `g++`) for this CPU and kept in `$TGVAC_JAX_KERNEL_CACHE` (default
`~/.cache/tgvac_jax/kernels`), one file per source, jaxlib and CPU, so a build happens once per machine. Where it
cannot be built, `available()` says False, names the reason once in a warning, and `attention.py` keeps XLA's
blocked path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shlex
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_suffix('.cc')
FLAGS = ('-O3', '-march=native', '-fopenmp-simd', '-std=c++17', '-shared', '-fPIC', '-w')
_TARGETS = {'forward': 'tgvac_attention_forward', 'backward': 'tgvac_attention_backward'}
_SYMBOLS = {'forward': 'TgvacAttentionForward', 'backward': 'TgvacAttentionBackward'}


def _cpu_flags() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith(('flags', 'Features')):
        return line
  except OSError:
    pass
  return ''


def library_path() -> pathlib.Path:
  """Where this machine's build lives: named by a hash of the source, flags, compiler, jaxlib and CPU features."""
  compiler = os.environ.get('CXX', 'g++')
  key = hashlib.sha256('\0'.join([SOURCE.read_text(), ' '.join(FLAGS), compiler, jax.__version__,
                                  _cpu_flags()]).encode()).hexdigest()[:16]
  root = pathlib.Path(os.environ.get('TGVAC_JAX_KERNEL_CACHE', pathlib.Path.home() / '.cache/tgvac_jax/kernels'))
  return root / f'cpu_attention_{key}.so'


def _build(path: pathlib.Path) -> None:
  """Compiles into a temporary file and renames it, so concurrent processes never load half a library."""
  path.parent.mkdir(parents=True, exist_ok=True)
  compiler = shlex.split(os.environ.get('CXX', 'g++'))
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    out = pathlib.Path(tmp) / path.name
    cmd = [*compiler, *FLAGS, f'-I{jax.ffi.include_dir()}', str(SOURCE), '-o', str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(f'{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}')
    os.replace(out, path)


@functools.cache
def available() -> bool:
  """Builds (once per machine) and registers the kernel; False, with one warning saying why, where it cannot."""
  try:
    path = library_path()
    if not path.exists():
      _build(path)
    library = ctypes.cdll.LoadLibrary(str(path))
    for name, symbol in _SYMBOLS.items():
      jax.ffi.register_ffi_target(_TARGETS[name], jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  except (OSError, RuntimeError) as e:
    warnings.warn(f'the fused CPU attention kernel is unavailable, attention takes XLA\'s blocked path: {e}',
                  stacklevel=2)
    return False
  return True


def supported(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
  """What the kernel takes: float32 (B, T, C) projections, keys and values alike."""
  return all(x.dtype == jnp.float32 and x.ndim == 3 for x in (q, k, v)) and k.shape == v.shape and \
      q.shape[0] == k.shape[0] and q.shape[2] == k.shape[2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
  """softmax(q k^T / sqrt(D)) v on (B, T, H*D) float32 projections, without mask; see `supported`."""
  return _forward(q, k, v, heads)[0]


def _scale(q, heads):
  return np.float32((q.shape[-1] // heads) ** -0.5)


def _call(name, outputs, *args, heads):
  if not available():
    raise RuntimeError('the fused CPU attention kernel could not be built (see the warning above)')
  # Under vmap the kernel gets the vmapped axes as leading batch dimensions.
  return jax.ffi.ffi_call(_TARGETS[name], outputs, vmap_method='broadcast_all')(
      *args, heads=np.int64(heads), scale=_scale(args[0], heads))


def _forward(q, k, v, heads):
  b, t, c = q.shape
  if c % heads:
    raise ValueError(f'attention width {c} is not divisible by {heads} heads')
  out, lse = _call('forward', (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                               jax.ShapeDtypeStruct((b, heads, t), jnp.float32)), q, k, v, heads=heads)
  return out, (q, k, v, out, lse)


def _backward(heads, res, dout):
  q, k, v, out, lse = res
  return _call('backward', tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v)),
               q, k, v, out, lse, dout.astype(jnp.float32), heads=heads)


attention.defvjp(_forward, _backward)
