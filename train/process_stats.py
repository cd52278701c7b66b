"""CPU time and TCP bytes of processes on this machine, sampled while they run (Linux).

A benchmark on shared cores measures wall time badly; the CPU a process spends per
training step (utime + stime from /proc/<pid>/stat) survives the sharing much
better. `Sampler` reads it for every process of a run a few times a second, and
`Sampler.cpu_between` interpolates it over any window of time.monotonic() (one
clock for every process of this machine). It can also read the bytes that went
through the TCP connections a server accepted on its port (from `ss -ti`), which
is what a parameter server sends and receives.
"""

import bisect
import os
import re
import subprocess
import threading
import time
from typing import Callable, Mapping

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu_seconds(stat: str, clock_ticks: int = _CLOCK_TICKS) -> float:
  """utime + stime in seconds from the text of /proc/<pid>/stat.

  The command name (field 2) may hold spaces and parentheses, so the fields are
  counted after its last ')': utime and stime are fields 14 and 15.
  """
  fields = stat.rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / clock_ticks


def cpu_seconds(pid: int) -> float | None:
  """The CPU seconds `pid` has used so far; None once it has exited."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return parse_stat_cpu_seconds(f.read())
  except (FileNotFoundError, ProcessLookupError):
    return None


def children_of(pid: int) -> list[int]:
  """The processes whose parent is `pid` (a scan of /proc)."""
  children = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
      continue
    if parent == pid:
      children.append(int(name))
  return children


def environment_of(pid: int) -> dict[str, str]:
  """The environment `pid` was started with (empty if it cannot be read)."""
  try:
    with open(f"/proc/{pid}/environ", "rb") as f:
      entries = f.read().split(b"\0")
  except OSError:
    return {}
  return dict(entry.decode(errors="replace").split("=", 1)
              for entry in entries if b"=" in entry)


_SS_BYTES = re.compile(r"\bbytes_(sent|received):(\d+)")


def parse_ss_bytes(ss_output: str) -> int:
  """Bytes sent plus received over every connection `ss -tinH` listed."""
  return sum(int(count) for _, count in _SS_BYTES.findall(ss_output))


def tcp_bytes(port: int) -> int | None:
  """Bytes through the open TCP connections accepted on 127.0.0.1:`port`, both ways.

  None when `ss` (iproute2) is missing. Connections already closed are not counted,
  so read it over a window in which the connections stay up.
  """
  try:
    run = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return parse_ss_bytes(run.stdout)


def interpolate(samples: list[tuple[float, float]], t: float) -> float | None:
  """The value at time `t` of a counter sampled as (time, value) pairs in time order.

  Linear between the samples around `t`; None when `t` is outside them.
  """
  times = [s[0] for s in samples]
  i = bisect.bisect_left(times, t)
  if i < len(samples) and times[i] == t:
    return samples[i][1]
  if i == 0 or i == len(samples):
    return None
  (t0, v0), (t1, v1) = samples[i - 1], samples[i]
  return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


class Sampler:
  """Samples each named process's CPU seconds (and a port's TCP bytes) on a thread.

  `pids_fn` returns the processes to sample now, {name: pid}: it is called at every
  sample, so processes that start later (a launcher's children) are picked up.
  Use as a context manager around the run.
  """

  def __init__(self, pids_fn: Callable[[], Mapping[str, int]], *, port: int | None = None,
               interval_s: float = 0.25, clock=time.monotonic):
    self.pids_fn = pids_fn
    self.port = port
    self.interval_s = interval_s
    self.clock = clock
    self.cpu: dict[str, list[tuple[float, float]]] = {}
    self.bytes: list[tuple[float, float]] = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  def sample(self) -> None:
    for name, pid in dict(self.pids_fn()).items():
      # Read just before and after the clock: the time is within one read of both.
      t = self.clock()
      seconds = cpu_seconds(pid)
      if seconds is not None:
        self.cpu.setdefault(name, []).append((t, seconds))
    if self.port is not None:
      t = self.clock()
      count = tcp_bytes(self.port)
      if count is not None:
        self.bytes.append((t, count))

  def _run(self) -> None:
    while not self._stop.is_set():
      self.sample()
      self._stop.wait(self.interval_s)

  def cpu_between(self, name: str, start: float, end: float) -> float | None:
    """CPU seconds process `name` used between two clock times; None if unsampled."""
    return _difference(self.cpu.get(name, []), start, end)

  def bytes_between(self, start: float, end: float) -> float | None:
    """Bytes through the port's connections between two clock times."""
    return _difference(self.bytes, start, end)


def _difference(samples, start, end):
  first, last = interpolate(samples, start), interpolate(samples, end)
  return None if first is None or last is None else last - first
