"""Tests of serving/benchmark.py's timing and reporting (the run itself is timed by hand)."""

import threading

from serving import benchmark


def test_time_calls_makes_every_call_once_from_the_threads():
  calls, lock = [], threading.Lock()

  def call_fn():
    with lock:
      calls.append(threading.get_ident())

  latencies, wall_s = benchmark.time_calls(call_fn, 40, concurrency=4, warmup_calls=3)
  assert len(calls) == 43 and len(latencies) == 40 and (latencies > 0).all()
  assert wall_s >= latencies.max()


def test_table_and_aims():
  rows = [
      benchmark.Row("in-process TF2 signature", 1, 1, 1.0, 2.0, 900.0),
      benchmark.Row("in-process TF1 session", 1, 1, 0.9, 2.0, 1000.0),
      benchmark.Row("gRPC Predict", 1, 1, 1.5, 3.0, 600.0),
      benchmark.Row("gRPC Predict", 1, 8, 9.0, 20.0, 800.0),
      benchmark.Row("gRPC Predict --enable_batching", 1, 8, 6.0, 9.0, 1200.0),
  ]
  table = benchmark.format_table(rows)
  assert table.splitlines()[3].split()[-3:] == ["0.90", "2.00", "1000"]
  gap, throughput = benchmark.check_aims(rows)
  assert gap.startswith("gRPC p50 at batch 1 is +0.60 ms") and gap.endswith("met")
  assert "1200 images/s" in throughput and "1000: aim >= met" in throughput
  slow = rows[:2] + [benchmark.Row("gRPC Predict", 1, 1, 2.5, 3.0, 400.0)] + rows[3:]
  assert benchmark.check_aims(slow)[0].endswith("NOT met")
