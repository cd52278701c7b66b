"""Tests of serving/load_test.py's parts, against the in-process server (the 60 s run is a
benchmark, not a test)."""

import os

from serving import load_test
from model import contract


def test_clients_predict_for_the_duration_without_errors(model_server, sample_images):
  request = contract.make_predict_request([3], sample_images[:1])
  ticks = []
  requests, errors, latencies = load_test.run_clients(
      f"127.0.0.1:{model_server.port}", request, clients=2, duration_s=1.0, timeout_s=10,
      on_tick=lambda: ticks.append(1))
  assert requests > 0 and len(latencies) == requests
  assert errors == {}
  assert ticks


def test_sample_process_reads_rss_and_open_files():
  sample = load_test.sample_process(os.getpid())
  assert sample.rss_bytes > 10 * 2**20 and sample.open_fds >= 3
