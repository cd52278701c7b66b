"""Tests for train/benchmark.py: the throughput it reports, and the command's table."""

import os
import re
import subprocess
import sys

from absl import flags
import pytest

from train import benchmark
from train import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_steady_throughput_skips_the_warm_up_interval():
  history = [loop.Interval(10, 5.0, 0.5, 100.0)._asdict(),
             loop.Interval(20, 6.0, 0.6, 900.0)._asdict(),
             loop.Interval(30, 7.0, 0.7, 1000.0)._asdict(),
             loop.Interval(40, 8.0, 0.8, 1100.0)._asdict()]
  assert benchmark.steady_throughput(history) == 1000.0
  assert benchmark.steady_throughput(history[:1]) == 100.0


def parsed(*argv):
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  flag_values(["benchmark", *argv])
  return flag_values


def test_setups_and_accuracy_targets_are_checked_before_anything_runs():
  assert benchmark.setups_from_flags(parsed("--setups=0,3")) == (
      benchmark.SETUPS[0], benchmark.SETUPS[3])
  with pytest.raises(ValueError, match=r"--setups 4,x: expected indices among 0, 1, 2, 3"):
    benchmark.setups_from_flags(parsed("--setups=1,4,x"))
  assert benchmark.accuracy_targets_from_flags(parsed("--time_to_accuracy=0.9,1")) == [0.9, 1.0]
  for bad in ("abc", "99"):
    with pytest.raises(ValueError, match=rf"--time_to_accuracy '{bad}': expected accuracies"):
      benchmark.accuracy_targets_from_flags(parsed(f"--time_to_accuracy=0.9,{bad}"))


@pytest.mark.slow
def test_command_prints_a_row_per_setup_with_ratios():
  run = subprocess.run(
      [sys.executable, "-m", "train.benchmark", "--setups=0,1", "--max_steps=30",
       "--checkpoint=10", "--batch_size=16", "--steps_per_execution=5",
       "--data_dir=synthetic", "--timeout=240"],
      cwd=REPO, capture_output=True, text=True, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = re.findall(r"^\| (one process|PSS 1 ps \+ 1 worker) \| (\d+) \| ([\d.]+)x \|$",
                    run.stdout, re.MULTILINE)
  assert [r[0] for r in rows] == ["one process", "PSS 1 ps + 1 worker"]
  assert rows[0][2] == "1.00" and int(rows[1][1]) > 0


def test_initializers_run_the_parameter_server_cluster_once_each():
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  flag_values(["benchmark", "--time_to_accuracy=0.992", "--compare_initializers=seed,keras"])
  setups = benchmark.setups_from_flags(flag_values)
  assert [(s.name, s.num_ps, s.num_workers, s.initializers) for s in setups] == [
      ("PSS 1 ps + 2 workers, seed initializers", 1, 2, "seed"),
      ("PSS 1 ps + 2 workers, keras initializers", 1, 2, "keras")]
  with pytest.raises(flags.IllegalFlagValueError, match="expected some of seed, keras"):
    flag_values(["benchmark", "--compare_initializers=glorot"])
