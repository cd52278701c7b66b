"""Tests for train/sizing.py: the arithmetic of the parameter-server sizing model."""

import pytest

from train import sizing

# 10 MB of variables moved each way, 20 ms of ps CPU per worker step, workers at 25
# steps/s.
COST = sizing.StepCost(parameter_bytes=10_000_000, bytes_each_way=10_000_000, ps_cpu_ms=20.0,
                       worker_steps_per_sec=25.0)


def test_a_worker_step_moves_its_bytes_each_way():
  assert COST.bytes_per_step == 20_000_000
  # 10 MB x 25 steps/s = 250 MB/s = 2 Gbit/s each way.
  assert sizing.worker_link_gbit_per_sec(COST) == pytest.approx(2.0)


def test_workers_per_shard_is_the_smaller_of_link_and_cores():
  # 10 Gbit/s = 1.25 GB/s each way, 250 MB/s per worker: 5 workers.
  assert sizing.workers_per_shard_network(COST, 10) == pytest.approx(5.0)
  # 4 cores = 4000 ms of CPU per second, 20 ms x 25 steps/s = 500 per worker: 8.
  assert sizing.workers_per_shard_cpu(COST, 4) == pytest.approx(8.0)
  assert sizing.workers_per_shard(COST, 10, 4) == pytest.approx(5.0)
  assert sizing.workers_per_shard(COST, 100, 4) == pytest.approx(8.0)


def test_shards_needed_rounds_up():
  assert sizing.shards_needed(1, COST, 10, 4) == 1
  assert sizing.shards_needed(5, COST, 10, 4) == 1
  assert sizing.shards_needed(6, COST, 10, 4) == 2
  assert sizing.shards_needed(64, COST, 100, 4) == 8
  with pytest.raises(ValueError, match="num_workers 0: expected at least 1"):
    sizing.shards_needed(0, COST, 10, 4)


def test_report_sets_each_cluster_beside_the_model():
  checks = [sizing.ClusterCheck(1, 19.5, 20.1e6), sizing.ClusterCheck(3, None, None)]
  report = sizing.report(COST, checks, ps_cores=4, worker_cores=2)
  assert "a worker with 2 cores of its own steps 25.0 times/s" in report[1]
  assert "| 1 | 19.5 | 20.0 | 20.10 | 20.00 |" in report
  assert "| 3 | - | 20.0 | - | 20.00 |" in report
  assert "| 10 Gbit/s | 5.0 | 8.0 | 1, 2, 4, 7, 13 |" in report


def test_fewer_bytes_each_way_feed_more_workers_per_link():
  # The products on the ps: 2 MB each way instead of 10, at 40 ms of ps CPU.
  cost = sizing.StepCost(parameter_bytes=10_000_000, bytes_each_way=2_000_000, ps_cpu_ms=40.0,
                         worker_steps_per_sec=25.0)
  assert sizing.worker_link_gbit_per_sec(cost) == pytest.approx(0.4)
  assert sizing.workers_per_shard_network(cost, 10) == pytest.approx(25.0)
  assert sizing.workers_per_shard_cpu(cost, 4) == pytest.approx(4.0)
  assert sizing.shards_needed(64, cost, 10, 4) == 16
  assert "per worker step 4.00 MB moved, 2.00 MB each way" in sizing.report(
      cost, [], ps_cores=4, worker_cores=2)[0]
