"""Builds and registers our C++ kernels for XLA:CPU (`cpu_attention.cc`, `cpu_conv.cc`, sharing `cpu_kernels.h`).

Each is compiled on first use with the machine's C++ compiler (`$CXX`, else `g++`) for this CPU, kept in
`$TGVAC_JAX_KERNEL_CACHE` (default `~/.cache/tgvac_jax/kernels`), one file per source, flags, jaxlib and CPU, so a
build happens once per machine, and its handlers are registered as XLA FFI targets. Where a kernel cannot be built,
`load` says False and warns once with the caller's words; the models then keep XLA's own lowering.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shlex
import subprocess
import tempfile
import warnings

import jax

HEADER = pathlib.Path(__file__).with_name('cpu_kernels.h')
FLAGS = ('-O3', '-march=native', '-fopenmp-simd', '-std=c++17', '-shared', '-fPIC', '-w')


def _cpu_flags() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith(('flags', 'Features')):
        return line
  except OSError:
    pass
  return ''


def library_path(source: pathlib.Path, flags: tuple[str, ...] = FLAGS) -> pathlib.Path:
  """Where this machine's build of `source` lives: named by a hash of the sources, flags, compiler, jaxlib and CPU
  features."""
  compiler = os.environ.get('CXX', 'g++')
  key = hashlib.sha256('\0'.join([source.read_text(), HEADER.read_text(), ' '.join(flags), compiler,
                                  jax.__version__, _cpu_flags()]).encode()).hexdigest()[:16]
  root = pathlib.Path(os.environ.get('TGVAC_JAX_KERNEL_CACHE', pathlib.Path.home() / '.cache/tgvac_jax/kernels'))
  return root / f'{source.stem}_{key}.so'


def _build(source: pathlib.Path, flags: tuple[str, ...], path: pathlib.Path) -> None:
  """Compiles into a temporary file and renames it, so concurrent processes never load half a library."""
  path.parent.mkdir(parents=True, exist_ok=True)
  compiler = shlex.split(os.environ.get('CXX', 'g++'))
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    out = pathlib.Path(tmp) / path.name
    cmd = [*compiler, *flags, f'-I{jax.ffi.include_dir()}', f'-I{HEADER.parent}', str(source), '-o', str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(f'{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}')
    os.replace(out, path)


def load(source: pathlib.Path, targets: dict[str, str], unavailable: str,
         flags: tuple[str, ...] = FLAGS) -> bool:
  """Builds `source` (once per machine) and registers each FFI target name -> exported handler symbol; False,
  with one warning `unavailable: <why>`, where it cannot. Callers cache the answer."""
  try:
    path = library_path(source, flags)
    if not path.exists():
      _build(source, flags, path)
    library = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in targets.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  except (OSError, RuntimeError) as e:
    warnings.warn(f'{unavailable}: {e}', stacklevel=3)
    return False
  return True
