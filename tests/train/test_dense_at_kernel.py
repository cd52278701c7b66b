"""DenseAtKernel on a real ParameterServerStrategy: the hidden kernel split over 2 ps."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_products_run_on_each_kernel_shards_ps_and_match_dense():
  run = subprocess.run(
      [sys.executable, os.path.join(REPO, "tests", "train", "dense_at_kernel_cluster.py")],
      capture_output=True, text=True, timeout=240, cwd=REPO)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  # The kernel is split over both ps; each multiplies its part, forward and backward.
  assert [d.split("/")[1:3] for d in result["hidden_shard_devices"]] == [
      ["job:ps", "replica:0"]] * 2
  assert result["matmul_jobs_at_kernel"] == {"ps:0": 3, "ps:1": 3, "unplaced": 3}
  assert result["matmul_jobs_plain"] == {"unplaced": 6}
  # The same function of the same weights: only the order of the sums differs.
  assert result["score_diff"] <= 1e-6 * result["score_max"]
  assert len(result["grad_diffs"]) == len(result["variables"]) == 9
  for name, diff, largest in zip(result["variables"], result["grad_diffs"],
                                 result["grad_maxes"]):
    assert largest > 0, name
    assert diff <= 1e-5 * largest, (name, diff, largest)
