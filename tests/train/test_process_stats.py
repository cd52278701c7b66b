"""Tests for train/process_stats.py: reading /proc and ss, and sampling over time."""

import itertools
import os
import socket
import subprocess
import sys

from train import process_stats


def test_cpu_seconds_are_read_after_the_command_name():
  # A command name may hold spaces and parentheses: fields count after the last ')'.
  fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30
  stat = "1234 (a (weird) name) " + " ".join(fields)
  assert process_stats.parse_stat_cpu_seconds(stat, clock_ticks=100) == 4.0
  assert process_stats.parse_stat_minor_faults(
      "1234 (a (weird) name) S 1 2 3 4 5 6 987 0 0 0 250 150") == 987
  assert process_stats.cpu_seconds(os.getpid()) > 0


def test_ss_bytes_sum_both_ways_over_the_connections_of_one_process():
  output = (
      "0 0 127.0.0.1:5000 127.0.0.1:40000 users:((\"python\",pid=77,fd=5))\n"
      "\t bbr cwnd:11 bytes_sent:5000 bytes_acked:5000 bytes_received:100000 segs_out:3\n"
      "0 0 127.0.0.1:40000 127.0.0.1:5000 users:((\"python\",pid=771,fd=4))\n"
      "\t bytes_sent:100000 bytes_received:5000\n"
      "0 0 127.0.0.1:40002 127.0.0.1:6000 users:((\"python\",pid=77,fd=9))\n"
      "\t bytes_sent:7 bytes_received:3\n")
  assert process_stats.parse_ss_bytes(output, 77) == 105010
  assert process_stats.parse_ss_bytes(output, 771) == 105000
  assert process_stats.parse_ss_bytes(output, 7) == 0


def test_tcp_bytes_count_what_a_process_sent_and_received():
  with socket.create_server(("127.0.0.1", 0)) as server:
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    with client, accepted:
      before = process_stats.tcp_bytes(os.getpid())
      client.sendall(b"x" * 100_000)
      received = 0
      while received < 100_000:
        received += len(accepted.recv(65536))
      # Both ends are ours: the bytes count once sent and once received.
      assert process_stats.tcp_bytes(os.getpid()) - before == 200_000


def test_interpolate_between_samples_and_none_outside():
  samples = [(1.0, 10.0), (3.0, 30.0), (4.0, 30.0)]
  assert process_stats.interpolate(samples, 2.0) == 20.0
  assert process_stats.interpolate(samples, 3.0) == 30.0
  assert process_stats.interpolate(samples, 3.5) == 30.0
  assert process_stats.interpolate(samples, 0.5) is None
  assert process_stats.interpolate(samples, 4.5) is None


def test_sampler_differences_are_those_of_the_samples():
  # One clock read per process per sample: "me" is read at 10, 12 and 14.
  times = itertools.count(10.0)
  sampler = process_stats.Sampler(lambda: {"me": os.getpid(), "gone": 2 ** 22 + 1},
                                  clock=lambda: next(times))
  for _ in range(3):
    sampler.sample()
  assert list(sampler.cpu) == ["me"]  # A process that does not exist is skipped.
  (t0, first), _, (t2, last) = sampler.cpu["me"]
  assert (t0, t2) == (10.0, 14.0)
  assert sampler.cpu_between("me", 10.0, 14.0) == last - first
  assert sampler.cpu_between("me", 9.0, 14.0) is None
  assert sampler.cpu_between("unknown", 10.0, 14.0) is None
  (_, faults_before), _, (_, faults_after) = sampler.faults["me"]
  assert sampler.faults_between("me", 10.0, 14.0) == faults_after - faults_before


def test_sampler_counts_the_page_faults_of_new_memory():
  sampler = process_stats.Sampler(lambda: {"me": os.getpid()})
  sampler.sample()
  block = b"\x01" * (64 << 20)  # Fresh pages from the kernel, each faulted in when written.
  sampler.sample()
  del block
  (t0, _), (t1, _) = sampler.faults["me"]
  assert sampler.faults_between("me", t0, t1) >= (64 << 20) // 4096 // 2


def test_children_and_their_environment_are_found():
  child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                           env={**os.environ, "PROCESS_STATS_TEST": "x y"})
  try:
    assert child.pid in process_stats.children_of(os.getpid())
    assert process_stats.environment_of(child.pid)["PROCESS_STATS_TEST"] == "x y"
  finally:
    child.kill()
    child.wait()
  assert process_stats.environment_of(child.pid) == {}
