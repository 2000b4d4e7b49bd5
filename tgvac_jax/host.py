"""Process set-up for CPU hosts, done before JAX starts: `run.py` and the benches call `tune_allocator()` first.

XLA:CPU allocates a compiled program's temporary buffer afresh on every call (a medium motion train step's is
2.6 GiB), and glibc's malloc serves blocks that large with a new mmap each time and unmaps them on free, so every
train step page-faults its whole temp buffer again. On a VM whose balloon driver hands freed memory back to the
hypervisor, those faults cost most when the memory sat free for a moment (bench/train_step.py's interleaved
column). Two remedies, in this order:

- gperftools' tcmalloc, where the system has it (Debian/Ubuntu: `apt install libtcmalloc-minimal4`), preloaded
  (`LD_PRELOAD`): it keeps freed spans mapped and hands them to the next step, so the faults are paid once
  (bench/train_step.py's small motion step on a 2-core AMD EPYC, steps interleaved with torch's: 1929 -> 782 ms;
  torch's own step, in its own process, unchanged).
- otherwise glibc >= 2.35's `glibc.malloc.hugetlb=1` tunable: the blocks still come and go, but in 2 MiB pages
  (that step back to back: 218k -> ~700 faults, 1.6 -> 1.3 s).

Both are read only when a process starts, hence the restart (same pid, arguments and environment).
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'
TCMALLOC = ('tcmalloc_minimal', 'tcmalloc')  # library names, most wanted first
# Set to 0 to keep the process as started.
OPT_OUT = 'TGVAC_JAX_TUNE_ALLOCATOR'
GOOGLE_PCI_VENDOR = '0x1ae0'


def _thp_mode() -> str | None:
  """The kernel's THP mode, the bracketed word of `always [madvise] never`."""
  try:
    with open(THP_MODE) as f:
      text = f.read()
  except OSError:
    return None
  return text[text.find('[') + 1:text.find(']')] if '[' in text else None


def _tpu_chips() -> bool:
  """Whether a TPU chip is on the PCI bus (Google's vendor id, as JAX's own check reads it)."""
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor) as f:
        if f.read().strip() == GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      pass
  return False


def _cpu_only() -> bool:
  """Whether JAX will run on CPU: JAX_PLATFORMS says so, or no GPU plugin is installed and no TPU chip is there for
  libtpu (installed on CPU hosts too, by the tpu extra, to compile TPU programs: configs/compile.py). Checked without
  importing JAX, which must not start before the restart."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms == 'cpu'
  if any(importlib.util.find_spec(m) for m in ('jax_plugins', 'jax_cuda12_plugin', 'jax_cuda13_plugin')):
    return False
  return not (importlib.util.find_spec('libtpu') and _tpu_chips())


def tcmalloc() -> str | None:
  """The system's tcmalloc as the loader finds it (a file name such as `libtcmalloc_minimal.so.4`), or None."""
  for name in TCMALLOC:
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def _preloaded() -> bool:
  """Whether an allocator is preloaded already: ours after the restart, or the user's (tcmalloc, jemalloc,
  mimalloc), which we keep rather than put tcmalloc in front of."""
  return 'malloc' in os.environ.get('LD_PRELOAD', '')


def _huge_pages_wanted() -> bool:
  """glibc >= 2.35 with THP in `madvise` mode (`always` needs nothing, `never` cannot help), tunable not set."""
  if TUNABLE in os.environ.get('GLIBC_TUNABLES', ''):
    return False
  libc, version = platform.libc_ver()
  if libc != 'glibc' or tuple(int(v) for v in version.split('.')[:2]) < (2, 35):
    return False
  return _thp_mode() == 'madvise'


def wanted() -> dict[str, str]:
  """The environment this process should restart with ({} for none): on Linux with JAX on CPU, not opted out and
  no allocator preloaded already, tcmalloc preloaded where the system has it, else glibc's huge-page tunable
  where it helps."""
  if sys.platform != 'linux' or os.environ.get(OPT_OUT) == '0' or not _cpu_only() or _preloaded():
    return {}
  library = tcmalloc()
  if library:
    preload = os.environ.get('LD_PRELOAD', '')
    return {'LD_PRELOAD': f'{library}:{preload}' if preload else library}
  if _huge_pages_wanted():
    tunables = os.environ.get('GLIBC_TUNABLES', '')
    return {'GLIBC_TUNABLES': f'{tunables}:{TUNABLE}=1' if tunables else f'{TUNABLE}=1'}
  return {}


def tune_allocator() -> None:
  """Restart this process (same pid, interpreter flags, arguments and environment) with the allocator set-up of
  `wanted()`, when there is one; otherwise return at once. Call before anything else runs."""
  changes = wanted()
  if not changes:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, dict(os.environ, **changes))
