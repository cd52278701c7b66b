"""Keeps freed memory in the process for reuse, under glibc's malloc.

TensorFlow's CPU allocator is malloc. TensorFlow 2.21's GeneratorDataset kernel,
which the distributed input of ParameterServerStrategy's and MultiWorkerMirrored-
Strategy's workers is built on, fixes glibc's mmap threshold at 128 KiB the first
time it runs (mallopt in `ApplyPython311MemoryPatch`, logged as "Memory patch
applied", a remedy for memory growth under Python 3.11). A fixed threshold also
stops glibc from raising it as it otherwise does, so from then on every block over
128 KiB is a fresh mmap, returned to the kernel when freed. A training step
allocates the same large blocks every time (activations, gradients, the 12.8 MB
kernel of the dense layer and its gradient, the matrix kernels' packing buffers):
each step took them from the kernel again, every page of them a page fault, and
a parameter-server worker spent about 1.6 times the CPU per step of one process,
which never runs that kernel (`python -m train.benchmark --nokeep_freed_memory` shows
it; BUILD.md, "Performance"). The r0.12 program feeds its batches without tf.data
and never had this.

`keep_freed_memory()` makes glibc serve every block from its arenas, whatever the
threshold, and never trim them (mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB),
before TensorFlow allocates anything; the patch, which sets only the threshold,
does not undo it. A block too large for a thread's arena (64 MiB) is still mapped,
and returned when freed. The process holds on to its peak working set, which for
a training task is the same every step. It changes nothing but where memory
comes from.
Outside glibc (another libc, or an allocator preloaded in front of it) it does
nothing.
"""

import ctypes

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def _glibc():
  """glibc's handle, or None where the C library is not glibc."""
  # The symbols already loaded into this process, libc's among them: no search of
  # the library path (ctypes.util.find_library runs ldconfig) at every task's start.
  libc = ctypes.CDLL(None)
  return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to serve all blocks from its arenas and never trim them;
  True if it did (glibc), False where there is no glibc."""
  libc = _glibc()
  if libc is None:
    return False
  # mallopt returns 1 on success, 0 on error.
  return bool(libc.mallopt(M_MMAP_MAX, 0)) and \
      bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
