"""Tests for common/processes.py: free ports, connection checks, ending processes."""

import socket
import subprocess
import sys
import time

from common import processes


def test_free_ports_differ_and_can_be_bound():
  ports = processes.pick_free_ports(5)
  assert len(set(ports)) == 5
  with socket.socket() as s:
    s.bind((processes.LOCALHOST, ports[0]))


def test_accepts_connections_only_where_something_listens():
  with socket.socket() as server:
    server.bind((processes.LOCALHOST, 0))
    server.listen()
    address = f"{processes.LOCALHOST}:{server.getsockname()[1]}"
    assert processes.accepts_connections(address, 1.0)
  assert not processes.accepts_connections(address, 1.0)


def test_stop_kills_what_ignores_sigterm():
  ignores = processes.start_module(
      "tests.common.ignore_sigterm", stdout=subprocess.PIPE, text=True)
  polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    assert ignores.stdout.readline().strip() == "ready"
    start = time.monotonic()
    processes.stop_processes([ignores, polite, None], grace_s=0.5)
    assert ignores.returncode == -9 and polite.returncode == -15
    assert time.monotonic() - start < 10
  finally:
    for p in (ignores, polite):
      if p.poll() is None:
        p.kill()
