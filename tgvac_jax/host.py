"""Process set-up for CPU hosts, done before JAX starts: `run.py` and the benches call `use_huge_pages()` first.

XLA:CPU allocates a compiled program's temporary buffer afresh on every call, and glibc serves blocks that large
with a new mmap each time, so every train step page-faults its whole temp buffer in 4 KiB pages (the small motion
step of bench/train_step.py: 839 MiB, 218k faults, 0.5-1.4 s of system time per 1.6 s step on a 2-core AMD EPYC).
glibc >= 2.35 can back such blocks with transparent huge pages (the `glibc.malloc.hugetlb=1` tunable: ~700
faults, that step 1.6 -> 1.3 s); the tunable is read only when a process starts, hence the restart. PyTorch's
CPU allocator does the same for its large blocks when asked (`THP_MEM_ALLOC_ENABLE=1`). Memory still goes back to
the kernel after each step; on a VM whose balloon hands freed memory to the hypervisor, a step that follows a
pause of a few seconds pays host faults to touch it again (bench/train_step.py's docstring has the figures).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'
# Set to 0 to keep the process as started.
OPT_OUT = 'TGVAC_JAX_HUGE_PAGES'


def _thp_mode() -> str | None:
  """The kernel's THP mode, the bracketed word of `always [madvise] never`."""
  try:
    with open(THP_MODE) as f:
      text = f.read()
  except OSError:
    return None
  return text[text.find('[') + 1:text.find(']')] if '[' in text else None


def _cpu_only() -> bool:
  """Whether JAX will run on CPU: JAX_PLATFORMS says so, or no GPU/TPU plugin is installed (checked without
  importing JAX, which must not start before the restart)."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms == 'cpu'
  return not any(importlib.util.find_spec(m) for m in ('jax_plugins', 'libtpu', 'jax_cuda12_plugin',
                                                       'jax_cuda13_plugin'))


def wanted() -> bool:
  """Whether this process should restart with the tunable: Linux with glibc >= 2.35, THP in `madvise` mode
  (`always` needs nothing, `never` cannot help), JAX on CPU, not set already, not opted out."""
  if sys.platform != 'linux' or os.environ.get(OPT_OUT) == '0':
    return False
  if TUNABLE in os.environ.get('GLIBC_TUNABLES', ''):
    return False
  libc, version = platform.libc_ver()
  if libc != 'glibc' or tuple(int(v) for v in version.split('.')[:2]) < (2, 35):
    return False
  return _thp_mode() == 'madvise' and _cpu_only()


def use_huge_pages() -> None:
  """Restart this process (same pid, interpreter flags, arguments and environment) with glibc's malloc asking
  for transparent huge pages, when `wanted()`; otherwise return at once. Call before anything else runs."""
  if not wanted():
    return
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  env = dict(os.environ, GLIBC_TUNABLES=f'{tunables}:{TUNABLE}=1' if tunables else f'{TUNABLE}=1')
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
