"""tgvac_jax/host.py: the restart with tcmalloc preloaded or glibc's huge-page tunable, and when each is wanted."""

import os
import subprocess
import sys

import pytest

from tgvac_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What decides `wanted()`; tests set them explicitly. NO_TCMALLOC is the child's own switch (below).
ENV = ('GLIBC_TUNABLES', 'LD_PRELOAD', host.OPT_OUT, 'JAX_PLATFORMS', 'NO_TCMALLOC')
BLOCK = 64 << 20  # bytes; far above glibc's largest mmap threshold (32 MiB), so glibc maps it afresh

# Restarts itself if wanted (as if the system had no tcmalloc when NO_TCMALLOC is set), then counts the page faults
# of writing one malloc'd block, and of writing a second one after freeing the first (numpy would madvise huge pages
# itself, so the blocks come from malloc directly).
CHILD = f"""
import ctypes, os, resource, sys
sys.path.insert(0, {ROOT!r})
from tgvac_jax import host
if os.environ.get('NO_TCMALLOC'):
  host.TCMALLOC = ()
host.tune_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
block = libc.malloc({BLOCK})
ctypes.memset(block, 1, {BLOCK})
first = faults() - before
libc.free(block)
before = faults()
ctypes.memset(libc.malloc({BLOCK}), 1, {BLOCK})
again = faults() - before
with open('/proc/self/maps') as f:
  mapped = 'tcmalloc' in f.read()
print(os.getpid(), first, again, mapped, os.environ.get('GLIBC_TUNABLES'), os.environ.get('LD_PRELOAD'))
"""


def _child(**env):
  clean = {k: v for k, v in os.environ.items() if k not in ENV}
  proc = subprocess.Popen([sys.executable, '-c', CHILD], env=dict(clean, **env), stdout=subprocess.PIPE, text=True)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0
  pid, first, again, mapped, tunables, preload = out.split()
  return dict(spawned=proc.pid, pid=int(pid), first=int(first), again=int(again), tcmalloc=mapped == 'True',
              tunables=tunables, preload=preload)


def _clean_env_wanted(**env) -> dict:
  saved = {k: os.environ.pop(k) for k in ENV if k in os.environ}
  os.environ.update(env)
  try:
    return host.wanted()
  finally:
    for k in env:
      os.environ.pop(k, None)
    os.environ.update(saved)


def _huge_pages_here() -> bool:
  saved, host.TCMALLOC = host.TCMALLOC, ()
  try:
    return 'GLIBC_TUNABLES' in _clean_env_wanted()
  finally:
    host.TCMALLOC = saved


PAGES = BLOCK // 4096


@pytest.mark.skipif(not _huge_pages_here(), reason='needs Linux, glibc >= 2.35, THP in madvise mode, JAX on CPU')
def test_restart_backs_large_blocks_with_huge_pages_without_tcmalloc():
  child = _child(NO_TCMALLOC='1', GLIBC_TUNABLES='glibc.malloc.arena_max=8')
  assert child['pid'] == child['spawned']  # exec in place: whoever waits on or signals the process still has it
  assert child['tunables'] == f'glibc.malloc.arena_max=8:{host.TUNABLE}=1'  # the user's tunables kept
  assert child['first'] < PAGES / 8  # 2 MiB pages where the kernel could give them (~550 faults, not 16384)
  plain = _child(NO_TCMALLOC='1', **{host.OPT_OUT: '0'})
  assert plain['tunables'] == 'None' and not plain['tcmalloc']
  assert plain['first'] >= PAGES and plain['again'] >= PAGES  # one fault per 4 KiB page, on every new block


@pytest.mark.skipif(host.tcmalloc() is None or sys.platform != 'linux' or not host._cpu_only(),  # pylint: disable=protected-access
                    reason='needs tcmalloc on the system (apt install libtcmalloc-minimal4), Linux, JAX on CPU')
def test_restart_preloads_tcmalloc_which_keeps_freed_blocks_mapped():
  child = _child(LD_PRELOAD='', GLIBC_TUNABLES='glibc.malloc.arena_max=8')
  assert child['pid'] == child['spawned']
  assert child['tcmalloc'] and 'tcmalloc' in child['preload']
  assert child['tunables'] == 'glibc.malloc.arena_max=8'  # nothing else changed
  plain = _child(**{host.OPT_OUT: '0'})
  assert not plain['tcmalloc'] and plain['again'] > 0  # glibc maps the second block afresh and faults it in again
  # tcmalloc reuses the first block's pages (0 faults here, against 16385 in 4 KiB pages; under THP `always`
  # glibc's would be ~32 huge-page faults)
  assert child['again'] <= plain['again'] / 8


@pytest.fixture
def linux_glibc(monkeypatch, tmp_path):
  """A host where the tunable is wanted: Linux, glibc 2.36, THP `madvise`, no accelerator plugin, no tcmalloc,
  clean env."""
  mode = tmp_path / 'enabled'
  mode.write_text('always [madvise] never\n')
  monkeypatch.setattr(host, 'THP_MODE', str(mode))
  monkeypatch.setattr(host, 'tcmalloc', lambda: None)
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr(host.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  monkeypatch.setattr(host.importlib.util, 'find_spec', lambda name: None)
  for k in ENV:
    monkeypatch.delenv(k, raising=False)
  return mode


HUGE = {'GLIBC_TUNABLES': f'{host.TUNABLE}=1'}


def test_huge_pages_wanted_only_on_cpu_hosts_that_need_them(linux_glibc, monkeypatch):
  assert host.wanted() == HUGE
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host.wanted() == HUGE
  for key, value in (('JAX_PLATFORMS', 'cuda'), ('GLIBC_TUNABLES', f'{host.TUNABLE}=0'), (host.OPT_OUT, '0')):
    with monkeypatch.context() as m:
      m.setenv(key, value)
      assert host.wanted() == {}, key
  monkeypatch.delenv('JAX_PLATFORMS')
  with monkeypatch.context() as m:  # a GPU plugin installed: JAX would pick the GPU
    m.setattr(host.importlib.util, 'find_spec', lambda name: object() if name == 'jax_cuda12_plugin' else None)
    assert host.wanted() == {}
  with monkeypatch.context() as m:
    m.setattr(host.platform, 'libc_ver', lambda: ('glibc', '2.34'))  # no such tunable before 2.35
    assert host.wanted() == {}
  with monkeypatch.context() as m:
    m.setattr(host.platform, 'libc_ver', lambda: ('', ''))  # musl
    assert host.wanted() == {}
  for text in ('[always] madvise never\n', 'always madvise [never]\n'):  # nothing to ask for / nothing to get
    linux_glibc.write_text(text)
    assert host.wanted() == {}, text
  linux_glibc.unlink()
  assert host.wanted() == {}


def test_tcmalloc_preferred_where_the_system_has_it(linux_glibc, monkeypatch):
  monkeypatch.setattr(host, 'tcmalloc', lambda: 'libtcmalloc_minimal.so.4')
  assert host.wanted() == {'LD_PRELOAD': 'libtcmalloc_minimal.so.4'}
  linux_glibc.write_text('[always] madvise never\n')  # whatever THP says
  assert host.wanted() == {'LD_PRELOAD': 'libtcmalloc_minimal.so.4'}
  monkeypatch.setenv('LD_PRELOAD', 'libfoo.so')  # the user's preloads kept, after ours
  assert host.wanted() == {'LD_PRELOAD': 'libtcmalloc_minimal.so.4:libfoo.so'}
  monkeypatch.setenv('LD_PRELOAD', '/opt/lib/libtcmalloc.so.4')  # already preloaded: no restart
  assert host.wanted() == {}
  monkeypatch.setenv('LD_PRELOAD', 'libjemalloc.so.2')  # the user's own allocator: kept, no restart
  assert host.wanted() == {}
  monkeypatch.delenv('LD_PRELOAD')
  for key, value in (('JAX_PLATFORMS', 'tpu'), (host.OPT_OUT, '0')):
    with monkeypatch.context() as m:
      m.setenv(key, value)
      assert host.wanted() == {}, key
