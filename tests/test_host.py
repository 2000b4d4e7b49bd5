"""tgvac_jax/host.py: the restart with glibc's huge-page tunable, and when it is wanted."""

import os
import subprocess
import sys

import pytest

from tgvac_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = ('GLIBC_TUNABLES', host.OPT_OUT, 'JAX_PLATFORMS')  # what decides `wanted()`; tests set them explicitly
BLOCK = 64 << 20  # bytes; far above glibc's largest mmap threshold (32 MiB), so malloc maps it afresh

# Restarts itself if wanted, then counts the page faults of writing one malloc'd block (numpy would madvise huge
# pages itself, so the block comes from libc directly).
CHILD = f"""
import ctypes, os, resource, sys
sys.path.insert(0, {ROOT!r})
from tgvac_jax import host
host.use_huge_pages()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc({BLOCK}), 1, {BLOCK})
print(os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get('GLIBC_TUNABLES'))
"""


def _child(**env):
  clean = {k: v for k, v in os.environ.items() if k not in ENV}
  proc = subprocess.Popen([sys.executable, '-c', CHILD], env=dict(clean, **env), stdout=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0
  pid, faults, tunables = out.split()
  return proc.pid, int(pid), int(faults), tunables


def _wanted_here() -> bool:
  saved = {k: os.environ.pop(k) for k in ENV if k in os.environ}
  try:
    return host.wanted()
  finally:
    os.environ.update(saved)


@pytest.mark.skipif(not _wanted_here(), reason='needs Linux, glibc >= 2.35, THP in madvise mode, JAX on CPU')
def test_restart_backs_large_blocks_with_huge_pages():
  pages = BLOCK // 4096
  spawned, pid, faults, tunables = _child(GLIBC_TUNABLES='glibc.malloc.arena_max=8')
  assert pid == spawned  # exec in place: whoever waits on or signals the process still has it
  assert tunables == f'glibc.malloc.arena_max=8:{host.TUNABLE}=1'  # the user's tunables kept
  assert faults < pages / 8  # 2 MiB pages where the kernel could give them (~550 faults, not 16384)
  _, _, plain, tunables = _child(**{host.OPT_OUT: '0'})
  assert tunables == 'None'
  assert plain >= pages  # one fault per 4 KiB page: what the restart avoids


@pytest.fixture
def linux_glibc(monkeypatch, tmp_path):
  """A host where the tunable is wanted: Linux, glibc 2.36, THP `madvise`, no accelerator plugin, clean env."""
  mode = tmp_path / 'enabled'
  mode.write_text('always [madvise] never\n')
  monkeypatch.setattr(host, 'THP_MODE', str(mode))
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr(host.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  monkeypatch.setattr(host.importlib.util, 'find_spec', lambda name: None)
  for k in ENV:
    monkeypatch.delenv(k, raising=False)
  return mode


def test_wanted_only_on_cpu_hosts_that_need_it(linux_glibc, monkeypatch):
  assert host.wanted()
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host.wanted()
  for key, value in (('JAX_PLATFORMS', 'cuda'), ('GLIBC_TUNABLES', f'{host.TUNABLE}=0'), (host.OPT_OUT, '0')):
    with monkeypatch.context() as m:
      m.setenv(key, value)
      assert not host.wanted(), key
  monkeypatch.delenv('JAX_PLATFORMS')
  with monkeypatch.context() as m:  # a GPU plugin installed: JAX would pick the GPU
    m.setattr(host.importlib.util, 'find_spec', lambda name: object() if name == 'jax_cuda12_plugin' else None)
    assert not host.wanted()
  with monkeypatch.context() as m:
    m.setattr(host.platform, 'libc_ver', lambda: ('glibc', '2.34'))  # no such tunable before 2.35
    assert not host.wanted()
  with monkeypatch.context() as m:
    m.setattr(host.platform, 'libc_ver', lambda: ('', ''))  # musl
    assert not host.wanted()
  for text in ('[always] madvise never\n', 'always madvise [never]\n'):  # nothing to ask for / nothing to get
    linux_glibc.write_text(text)
    assert not host.wanted(), text
  linux_glibc.unlink()
  assert not host.wanted()
