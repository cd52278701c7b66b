"""Keeps freed memory in the process for reuse, under glibc's malloc.

TensorFlow's CPU allocator is malloc. glibc serves a block of more than its mmap
threshold (128 KiB at first) with a fresh mmap and gives it back to the kernel
when freed; it raises the threshold as such blocks are freed, but only for the
main thread's arena. Kernels allocate from the threads of TensorFlow's pools,
each with an arena of its own, and the top of those arenas is trimmed too. A step
allocates the same large blocks each time (activations, gradients, the 12.8 MB
kernel of the dense layer and its gradient, the contraction kernels' packing
buffers), so each step took them from the kernel again, and every page of them
was a page fault: measured on a parameter-server worker, 141,000 page faults a
second and half a core of system time, with every kernel taking about twice as
long as in one process (BUILD.md, "Performance").

`keep_freed_memory()` makes glibc serve every block from its arenas and never
trim them (mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB), before TensorFlow
allocates anything. A block too large for a thread's arena (64 MiB) is still
mapped, and returned when freed. The process then holds its peak working set, as
a long training task does anyway. It changes nothing but where memory comes from.
Outside glibc (another libc, or an allocator preloaded in front of it) it does
nothing.
"""

import ctypes
import ctypes.util

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def _glibc():
  """glibc's handle, or None where the C library is not glibc."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
  except (OSError, AttributeError):
    return None
  return libc


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to serve all blocks from its arenas and never trim them;
  True if it did (glibc), False where there is no glibc."""
  libc = _glibc()
  if libc is None:
    return False
  # mallopt returns 1 on success, 0 on error.
  return bool(libc.mallopt(M_MMAP_MAX, 0)) and \
      bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
