"""Tests for common/allocator.py: glibc serves large blocks from its arenas, and keeps them.

Each case runs in a child process, whose allocator nothing else has touched (and
so that the test process keeps glibc's defaults).
"""

import subprocess
import sys
import textwrap

import pytest

from common import allocator

# In a child: optionally keep_freed_memory(), then malloc 16 MiB from a thread
# (a thread's own arena, as TensorFlow's kernels allocate), free it, and print
# the mmapped blocks it added (mallinfo2) and the free bytes the arenas hold once
# it is freed.
_CHILD = textwrap.dedent("""
    import ctypes, sys, threading
    from common import allocator

    class MallInfo2(ctypes.Structure):
      _fields_ = [(name, ctypes.c_size_t) for name in (
          "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
          "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
      assert allocator.keep_freed_memory()
    result = []
    def allocate():
      mmapped_before = libc.mallinfo2().hblks
      block = libc.malloc(16 << 20)
      ctypes.memset(block, 1, 16 << 20)
      result.append(libc.mallinfo2().hblks - mmapped_before)
      libc.free(block)
      result.append(libc.mallinfo2().fordblks)
    thread = threading.Thread(target=allocate)
    thread.start()
    thread.join()
    print(*result)
""")


def _run_child(mode: str) -> tuple[int, int]:
  out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True,
                       text=True, timeout=60, check=True).stdout
  mmapped, free_bytes = out.split()
  return int(mmapped), int(free_bytes)


@pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc")  # pylint: disable=protected-access
def test_large_blocks_stay_in_the_arenas_after_keep_freed_memory():
  mmapped, free_bytes = _run_child("keep")
  assert mmapped == 0
  assert free_bytes >= 16 << 20  # Freed, and still held for the next step.


@pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc")  # pylint: disable=protected-access
def test_without_it_glibc_maps_large_blocks_and_returns_them():
  mmapped, free_bytes = _run_child("default")
  assert mmapped == 1
  assert free_bytes < 16 << 20
