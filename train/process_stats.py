"""CPU time, page faults and TCP bytes of processes on this machine, sampled while
they run (Linux).

A benchmark on shared cores measures wall time badly; the CPU a process spends per
training step (utime + stime from /proc/<pid>/stat) survives the sharing much
better. `Sampler` reads it for every process of a run a few times a second, and
`Sampler.cpu_between` interpolates it over any window of time.monotonic() (one
clock for every process of this machine). It counts each process's minor page
faults beside it: memory the process takes from the kernel again and again, as it
did before common/allocator.py, shows there. It can also read the bytes that went
through the TCP connections of one of them (from `ss -tip`), which for a parameter
server is the variables it sends and the gradients it receives.
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


def parse_stat_minor_faults(stat: str) -> int:
  """Minor page faults (field 10) from the text of /proc/<pid>/stat."""
  return int(stat.rsplit(")", 1)[1].split()[7])


def _read_stat(pid: int) -> str | None:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read()
  except (FileNotFoundError, ProcessLookupError):
    return None


def cpu_seconds(pid: int) -> float | None:
  """The CPU seconds `pid` has used so far; None once it has exited."""
  stat = _read_stat(pid)
  return None if stat is None else parse_stat_cpu_seconds(stat)


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


def parse_ss_bytes(ss_output: str, pid: int) -> int:
  """Bytes sent plus received over the connections of `pid` in `ss -tinpH` output.

  Each connection is a line naming its owner (`users:(("python",pid=N,fd=M))`)
  followed by an indented line of its counters.
  """
  owner = re.compile(rf"\bpid={pid},")
  total, owned = 0, False
  for line in ss_output.splitlines():
    if not line[:1].isspace():
      owned = bool(owner.search(line))
    elif owned:
      total += sum(int(count) for _, count in _SS_BYTES.findall(line))
  return total


def tcp_bytes(pid: int) -> int | None:
  """Bytes through the open TCP connections of `pid`, both ways, whoever opened them.

  None when `ss` (iproute2) is missing. Connections already closed are not counted,
  so read it over a window in which the connections stay up. A parameter server
  needs both kinds: its variables leave through the connections workers open to
  it, their gradients arrive through those it opens to them (TensorFlow's gRPC
  runtime pulls each tensor from the task that holds it).
  """
  try:
    run = subprocess.run(["ss", "-tinpH", "state", "established"],
                         capture_output=True, text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return parse_ss_bytes(run.stdout, pid)


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
  """Samples each named process's CPU seconds and page faults (and one's TCP bytes)
  on a thread.

  `pids_fn` returns the processes to sample now, {name: pid}: it is called at every
  sample, so processes that start later (a launcher's children) are picked up.
  `bytes_of` names the process whose TCP bytes to sample too. Use as a context
  manager around the run.
  """

  def __init__(self, pids_fn: Callable[[], Mapping[str, int]], *,
               bytes_of: str | None = None, interval_s: float = 0.25,
               clock=time.monotonic):
    self.pids_fn = pids_fn
    self.bytes_of = bytes_of
    self.interval_s = interval_s
    self.clock = clock
    self.cpu: dict[str, list[tuple[float, float]]] = {}
    self.faults: dict[str, list[tuple[float, float]]] = {}
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
    pids = dict(self.pids_fn())
    for name, pid in pids.items():
      # Read just before and after the clock: the time is within one read of both.
      t = self.clock()
      stat = _read_stat(pid)
      if stat is not None:
        self.cpu.setdefault(name, []).append((t, parse_stat_cpu_seconds(stat)))
        self.faults.setdefault(name, []).append((t, parse_stat_minor_faults(stat)))
    if self.bytes_of in pids:
      t = self.clock()
      count = tcp_bytes(pids[self.bytes_of])
      if count is not None:
        self.bytes.append((t, count))

  def _run(self) -> None:
    while not self._stop.is_set():
      self.sample()
      self._stop.wait(self.interval_s)

  def cpu_between(self, name: str, start: float, end: float) -> float | None:
    """CPU seconds process `name` used between two clock times; None if unsampled."""
    return _difference(self.cpu.get(name, []), start, end)

  def faults_between(self, name: str, start: float, end: float) -> float | None:
    """Minor page faults of process `name` between two clock times; None if unsampled."""
    return _difference(self.faults.get(name, []), start, end)

  def bytes_between(self, start: float, end: float) -> float | None:
    """Bytes through the `bytes_of` process's connections between two clock times."""
    return _difference(self.bytes, start, end)


def _difference(samples, start, end):
  first, last = interpolate(samples, start), interpolate(samples, end)
  return None if first is None or last is None else last - first
