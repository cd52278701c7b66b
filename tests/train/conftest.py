"""Fixtures of the train tests: small file systems that are full or read-only."""

import os
import subprocess

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path):
  """Mounts a tmpfs of `size` bytes at tmp_path/<name>, read-only if asked.

  A real full disk (ENOSPC) and a real read-only file system, which root cannot
  write either. Skips where mounting is not permitted: it needs root and
  CAP_SYS_ADMIN (not given in most containers).
  """
  mounted = []

  def mount(name: str, size: int = 1 << 20, read_only: bool = False) -> str:
    path = tmp_path / name
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0:
      pytest.skip("mounting a tmpfs needs root")
    try:
      run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
      pytest.skip("no mount command")
    if run.returncode != 0:
      pytest.skip(f"mounting a tmpfs is not permitted here: {run.stderr.strip()}")
    mounted.append(path)
    return str(path)

  yield mount
  for path in reversed(mounted):
    subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30)
