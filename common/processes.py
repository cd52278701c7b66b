"""Child processes and ports on this machine: pick free ports, start, stop, die together.

Shared by everything that starts servers or tasks as processes (the local launcher,
the demo, the benchmarks, the tests), so that each of these exists once.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

LOCALHOST = "127.0.0.1"

# Set by a launcher on each child: the launcher's pid (see die_with_parent).
PARENT_PID_ENV = "LOCAL_CLUSTER_PARENT_PID"


def pick_free_ports(count: int, host: str = LOCALHOST) -> list[int]:
  """Ports the kernel just handed out; all held open together so they differ."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def accepts_connections(address: str, timeout_s: float) -> bool:
  """Whether something listens at `host:port` (a plain TCP connect, nothing sent)."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
      return True
  except OSError:
    return False


def start_module(module: str, args=(), *, python: str = sys.executable,
                 **popen_kwargs) -> subprocess.Popen:
  """Starts `python -m module args...` (this interpreter by default), stdin closed."""
  popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
  return subprocess.Popen([python, "-m", module, *args], **popen_kwargs)


def stop_processes(processes, grace_s: float = 5.0) -> None:
  """Ends every process still running: SIGTERM to all, then SIGKILL after `grace_s`."""
  running = [p for p in processes if p is not None and p.poll() is None]
  for p in running:
    p.terminate()
  deadline = time.monotonic() + grace_s
  for p in running:
    try:
      p.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def stop_process(process: subprocess.Popen, grace_s: float = 5.0) -> None:
  """Ends one process if it still runs: SIGTERM, then SIGKILL after `grace_s`."""
  stop_processes([process], grace_s)


def die_with_parent(environ=os.environ) -> None:
  """In a child a launcher started: have the kernel SIGKILL it if the launcher dies.

  The launcher names itself in PARENT_PID_ENV. Called by the child at start-up
  (train/task.py's main), not in a preexec_fn: code between fork and exec in a
  multi-threaded launcher can deadlock or abort.
  """
  parent = environ.get(PARENT_PID_ENV)
  if not parent:
    return
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    return
  if os.getppid() != int(parent):  # The launcher died before prctl took effect.
    os.kill(os.getpid(), signal.SIGKILL)
