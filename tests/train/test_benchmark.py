"""Tests for train/benchmark.py: what it reads off a run, its tables, and the command."""

import json
import os
import re
import subprocess
import sys

from absl import flags
import pytest

from train import benchmark
from train import config as config_lib
from train import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows(*intervals):
  return [loop.Interval(step, 0.0, None, rate)._asdict() for step, rate in intervals]


def test_training_intervals_leave_out_the_first_and_read_each_rate():
  history = rows((100, 50.0), (200, 1000.0), (300, 500.0))
  assert benchmark.training_intervals(history, 100) == [(100, 200, 10.0), (200, 300, 20.0)]
  # 200 steps of 100 examples in 30 s, not the mean of the two rates.
  assert benchmark.steady_throughput(history, 100) == pytest.approx(20000 / 30)
  assert benchmark.steady_throughput(history[:1], 100) == 50.0


def test_training_intervals_skip_rows_without_a_rate_or_repeating_a_step():
  history = rows((100, 50.0), (200, 1000.0), (200, 7.0), (250, None), (300, 500.0))
  assert benchmark.training_intervals(history, 10) == [(100, 200, 1.0), (200, 300, 2.0)]


class FakeSampler:
  def __init__(self, cpu):
    self.cpu = cpu  # name -> CPU seconds used per second of clock.

  def cpu_between(self, name, start, end):
    rate = self.cpu[name]
    return None if rate is None else rate * (end - start)


def test_cpu_per_step_sums_the_processes_of_a_role():
  sampler = FakeSampler({"chief": 0.01, "ps:0": 0.2, "worker:0": 0.5, "worker:1": 0.25})
  by_role = benchmark.cpu_ms_per_step(sampler, [(0.0, 10.0), (20.0, 30.0)], 100)
  assert by_role == pytest.approx({"chief": 2.0, "ps": 40.0, "worker": 150.0})
  assert benchmark.cpu_ms_per_step(FakeSampler({"ps:0": None}), [(0.0, 1.0)], 10) == {
      "ps": None}


def test_page_faults_per_step_add_up_every_process():
  class Faults:
    faults = {"ps:0": None, "worker:0": None}
    def __init__(self, rates):
      self.rates = rates
    def faults_between(self, name, start, end):
      rate = self.rates[name]
      return None if rate is None else rate * (end - start)
  sampler = Faults({"ps:0": 10.0, "worker:0": 1000.0})
  assert benchmark.faults_per_step(sampler, [(0.0, 10.0), (20.0, 30.0)], 100) == \
      pytest.approx(202.0)
  assert benchmark.faults_per_step(Faults({"ps:0": 1.0, "worker:0": None}),
                                   [(0.0, 1.0)], 10) is None


def test_step_lines_note_the_first_time_each_step_is_logged():
  times = iter([1.0, 2.0, 3.0])
  log = []

  class Log:
    write = log.append

  lines = benchmark._StepLines(Log(), clock=lambda: next(times))
  lines.write("[chief] I1127 loop.py:220] step 100/200 train_loss 0.2 examples/s 900\n")
  lines.write("[worker:0] I1127 something else\n")
  lines.write("[worker:1] I1127 loop.py:220] step 100/200 train_loss 0.3\n")
  assert lines.times == {100: 1.0}
  assert len(log) == 3


def test_legacy_window_is_between_the_masters_recorded_steps():
  result = {"global_step": [1, 60, 101, 103, 150, 202, 204],
            "run_end_s": [0.0, 5.0, 10.0, 11.0, 15.0, 21.0, 22.0]}
  assert benchmark.legacy_step_window(result, 100, 200) == (10.0, 21.0, 101)
  with pytest.raises(ValueError, match=r"recorded global steps \[1\]..\[204\]: expected "
                     r"100 to 300"):
    benchmark.legacy_step_window(result, 100, 300)


def parsed(*argv):
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  flag_values(["benchmark", *argv])
  return flag_values


def test_legacy_runs_the_seed_past_the_window_without_evaluating_in_it():
  flag_values = parsed("--legacy", "--batch_size=50")
  config = benchmark.train_config_for(flag_values, benchmark.setups_from_flags(flag_values))
  assert (config.learning_rate, config.learning_rate_schedule) == (1e-4, "constant")
  argv = benchmark.legacy_argv(benchmark.LEGACY_SETUPS[1], "/w", config, 60)
  assert argv == ["--work_dir=/w", "--num_workers=1", "--batch_size=50", "--max_steps=210",
                  "--checkpoint=1200", "--rate_window=100,200", "--timeout=60"]
  assert "--one_process" in benchmark.legacy_argv(benchmark.LEGACY_SETUPS[0], "/w", config, 60)
  assert benchmark.train_config_for(parsed(), benchmark.SETUPS).learning_rate_schedule == \
      "cosine"
  only_legacy = (benchmark.LEGACY_SETUPS[0],)
  assert benchmark.train_config_for(parsed(), only_legacy).learning_rate == 1e-4


def _evaluated(*points, final=0.994):
  """A TrainResult's JSON with one history row per (step, elapsed_s, test_accuracy)."""
  return {"history": [loop.Interval(step, elapsed, accuracy, 1000.0)._asdict()
                      for step, elapsed, accuracy in points], "test_accuracy": final}


def test_time_to_accuracy_gives_each_round_and_the_median_ratio_of_seconds():
  one, cluster = benchmark.SETUPS[0], benchmark.SETUPS[2]
  rows = [(1, one, _evaluated((100, 10, 0.98), (200, 20, 0.992))),
          (1, cluster, _evaluated((100, 12, 0.99), (200, 25, 0.993))),
          (2, cluster, _evaluated((100, 9, 0.99), (200, 18, 0.991))),
          (2, one, _evaluated((100, 10, 0.99), (200, 20, 0.992))),
          (3, one, _evaluated((100, 10, 0.99), (200, 20, 0.992))),
          (3, cluster, _evaluated((100, 11, 0.99), (200, 19, 0.992)))]
  table = benchmark.time_to_accuracy_table(rows, [0.99, 0.992], 100)
  assert table[0].startswith("| round | setup | seconds (step) to 0.99 |")
  assert table[3] == "| 1 | PSS 1 ps + 2 workers | 12 (100) | 25 (200) | 0.9940 | 1000 |"
  assert table[4] == "| 2 | PSS 1 ps + 2 workers | 9 (100) | not reached | 0.9940 | 1000 |"
  # Each round's cluster over the same round's one process (round 1 reached 0.99 at
  # step 200 in one process, 20 s): 12/20, 9/10, 11/10.
  assert benchmark.time_to_accuracy_ratios(rows, [0.99, 0.992]) == [
      "PSS 1 ps + 2 workers / one process, seconds to 0.99: 0.90x (0.60, 0.90, 1.10)",
      "PSS 1 ps + 2 workers / one process, seconds to 0.992: 1.10x (1.25, 0.95) over 2 "
      "of 3 rounds"]
  # One round: no round column.
  assert benchmark.time_to_accuracy_table(rows[:2], [0.992], 100)[2] == \
      "| one process | 20 (200) | 0.9940 | 1000 |"


def test_setups_and_accuracy_targets_are_checked_before_anything_runs():
  assert benchmark.setups_from_flags(parsed("--setups=0,3")) == (
      benchmark.SETUPS[0], benchmark.SETUPS[3])
  assert benchmark.setups_from_flags(parsed("--setups=0,2", "--legacy")) == (
      benchmark.SETUPS[0], benchmark.SETUPS[2], *benchmark.LEGACY_SETUPS)
  assert benchmark.setups_from_flags(parsed("--sizing")) == benchmark.SIZING_SETUPS
  assert benchmark.setups_from_flags(parsed("--setups=3", "--sizing")) == (
      benchmark.SETUPS[3], *benchmark.SIZING_SETUPS)
  assert benchmark.setups_from_flags(parsed("--setups=0,4")) == (
      benchmark.SETUPS[0], benchmark.LEGACY_SETUPS[0])
  assert benchmark.setups_from_flags(parsed("--setups=5,0", "--legacy")) == (
      benchmark.LEGACY_SETUPS[1], benchmark.SETUPS[0], benchmark.LEGACY_SETUPS[0])
  with pytest.raises(ValueError, match=r"--setups 6,x: expected indices among 0, 1, 2, 3, 4, 5"):
    benchmark.setups_from_flags(parsed("--setups=1,6,x"))
  with pytest.raises(ValueError, match=r"--max_steps=100: expected more than --checkpoint=100"):
    benchmark.train_config_for(parsed("--max_steps=100"), benchmark.SETUPS)
  assert benchmark.accuracy_targets_from_flags(parsed("--time_to_accuracy=0.9,1")) == [0.9, 1.0]
  for bad in ("abc", "99"):
    with pytest.raises(ValueError, match=rf"--time_to_accuracy '{bad}': expected accuracies"):
      benchmark.accuracy_targets_from_flags(parsed(f"--time_to_accuracy=0.9,{bad}"))
  with pytest.raises(flags.IllegalFlagValueError):
    parsed("--rounds=0")


def test_a_bad_tf_enable_onednn_opts_exits_2_naming_it_before_anything_runs():
  env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="maybe")
  run = subprocess.run([sys.executable, "-m", "train.benchmark", "--setups=0"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2, run.stderr[-2000:]
  assert "error: TF_ENABLE_ONEDNN_OPTS='maybe' (the default of --onednn)" in run.stderr
  assert "Traceback" not in run.stderr and "round 1" not in run.stderr


def test_initializers_run_the_parameter_server_cluster_once_each():
  flag_values = parsed("--time_to_accuracy=0.992", "--compare_initializers=seed,keras")
  setups = benchmark.setups_from_flags(flag_values)
  assert [(s.name, s.num_ps, s.num_workers, s.initializers) for s in setups] == [
      ("PSS 1 ps + 2 workers, seed initializers", 1, 2, "seed"),
      ("PSS 1 ps + 2 workers, keras initializers", 1, 2, "keras")]
  with pytest.raises(flags.IllegalFlagValueError, match="expected some of seed, keras"):
    parsed("--compare_initializers=glorot")


def test_rounds_rotate_the_order():
  assert benchmark.round_orders(("a", "b", "c"), 4) == [
      ("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]


def measurement(rate, faults=None, **cpu):
  return benchmark.Measurement(rate, cpu, faults_per_step=faults)


def test_tables_give_median_ratios_of_each_round():
  one, pss, legacy_one = benchmark.SETUPS[0], benchmark.SETUPS[2], benchmark.LEGACY_SETUPS[0]
  runs = {one: [measurement(1000, 2000.0, process=200.0),
                measurement(500, 40000.0, process=260.0),
                measurement(800, 1500.0, process=220.0)],
          pss: [measurement(800, ps=30.0, chief=1.0, worker=300.0),
                measurement(450, ps=None, chief=1.0, worker=320.0),
                measurement(400, ps=34.0, chief=2.0, worker=310.0)],
          legacy_one: [measurement(1250, process=210.0), measurement(400, process=230.0),
                       measurement(1000, process=215.0)]}
  table = benchmark.throughput_table((one, pss, legacy_one), runs)
  assert table[2] == ("| one process | 800 | 1.00x (1.00, 1.00, 1.00) | 220.0 "
                      "| process 220.0 | 2,000 |")
  # Ratios per round 0.8, 0.9, 0.5: median 0.8. A round without the ps's CPU has no total.
  assert table[3] == ("| PSS 1 ps + 2 workers | 450 | 0.80x (0.80, 0.90, 0.50) | 338.5 "
                      "| ps 32.0 · chief 1.0 · worker 310.0 | - |")
  legacy = benchmark.legacy_table(runs)
  assert legacy[2:] == ["| one process / legacy, one process | 1000 | 800 "
                        "| 0.80x (0.80, 1.25, 0.80) | 215.0 | 220.0 |"]


def test_sizing_report_checks_the_model_on_each_cluster():
  pss1, pss2 = benchmark.SIZING_SETUPS[:2]
  runs = {pss1: [benchmark.Measurement(15.0, {"ps": 20.0, "worker": 160.0}, 20.5e6)],
          pss2: [benchmark.Measurement(18.0, {"ps": 22.0, "worker": 300.0}, 20.4e6)]}
  # 4 cores over 160 ms of worker CPU per step: 25 steps/s.
  report = benchmark.sizing_report(runs, 10_000_000, 10_000_000, ps_cores=4, worker_cores=4)
  assert report[0].startswith("Model: 10.00 MB of variables; per worker step 20.00 MB")
  assert "steps 25.0 times/s, so its link carries 2.00 Gbit/s each way" in report[1]
  assert "| 2 | 22.0 | 20.0 | 20.40 | 20.00 |" in report
  # As in tests/train/test_sizing.py: 5 workers per shard by the link, 8 by the cores.
  assert "| 10 Gbit/s | 5.0 | 8.0 | 1, 2, 4, 7, 13 |" in report
  assert "| 100 Gbit/s | 50.0 | 8.0 | 1, 1, 2, 4, 8 |" in report
  runs[pss1] = [benchmark.Measurement(15.0, {"ps": None, "worker": 160.0})]
  assert benchmark.sizing_report(runs, 1, 1, 4, 4) == [
      "sizing: the CPU of PSS 1 ps + 1 worker was not measured"]


def test_model_transfer_bytes_are_the_variables_or_the_hidden_layers_activations():
  # Every product on the worker: the CNN's float32 variables each way.
  assert benchmark.model_transfer_bytes(100, False) == (3_274_634 * 4, 3_274_634 * 4)
  # The hidden layer's on the ps: its 3136 x 1024 kernel stays there; 100 rows of its
  # input (3136) and of its output (1024) cross instead, each way.
  each_way = (3_274_634 - 3136 * 1024 + 100 * (3136 + 1024)) * 4
  assert benchmark.model_transfer_bytes(100, True) == (3_274_634 * 4, each_way)
  assert benchmark.model_transfer_bytes(50, True)[1] == each_way - 50 * (3136 + 1024) * 4


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_command_prints_ours_beside_the_legacy_program():
  run = subprocess.run(
      [sys.executable, "-m", "train.benchmark", "--setups=0,4", "--max_steps=60",
       "--checkpoint=30", "--batch_size=50", "--timeout=240"],
      cwd=REPO, capture_output=True, text=True, timeout=580)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = re.findall(r"^\| (one process|legacy, one process) \| (\d+) \| ([\d.]+)x "
                    r"\| ([\d.]+) \| process ([\d.]+) \| ([\d,]+) \|$", run.stdout,
                    re.MULTILINE)
  assert [r[0] for r in rows] == ["one process", "legacy, one process"]
  assert rows[0][2] == "1.00" and all(int(r[1]) > 0 and float(r[4]) > 0 for r in rows)
  assert re.search(r"^\| one process / legacy, one process \| \d+ \| \d+ \| [\d.]+x \|",
                   run.stdout, re.MULTILINE)
  assert "learning rate 0.0001 constant" in run.stdout
  # The second header line names each side's kernels; the seed's are TensorFlow's pick.
  assert re.search(r"^ours: oneDNN (on|off \(--noonednn\)); legacy: TF_ENABLE_ONEDNN_OPTS "
                   r"unset", run.stdout, re.MULTILINE)


@pytest.mark.parametrize("kernels, expected", [("default", None), ("on", "1"), ("off", "0")])
def test_legacy_kernels_are_tensorflows_choice_unless_asked(kernels, expected):
  environ = {"TF_ENABLE_ONEDNN_OPTS": "1", "PATH": "/bin"}
  env = benchmark.legacy_environment(kernels, environ)
  assert env.get("TF_ENABLE_ONEDNN_OPTS") == expected and env["PATH"] == "/bin"
  assert environ["TF_ENABLE_ONEDNN_OPTS"] == "1"  # Its own copy.


def test_header_names_the_kernels_of_each_side():
  config = benchmark.train_config_for(parsed(), benchmark.SETUPS)
  lines = benchmark.header(config, 2, config_lib.TaskOptions(onednn=False,
                                                             keep_freed_memory=False),
                           {"TF_ENABLE_ONEDNN_OPTS": "1"}).splitlines()
  assert lines[0].startswith("global batch 100,") and "2 round(s)" in lines[0]
  assert lines[1] == ("ours: oneDNN off (--noonednn), --nokeep_freed_memory; "
                      "legacy: TF_ENABLE_ONEDNN_OPTS=1")
  assert benchmark.header(config, 1).splitlines()[1] == "ours: oneDNN on"
  spinning = config_lib.TaskOptions(thread_spinning=True)
  assert benchmark.header(config, 1, spinning).splitlines()[1] == (
      "ours: oneDNN on, --thread_spinning")
  on_worker = benchmark.train_config_for(parsed("--noproducts_on_ps"), benchmark.SETUPS)
  assert benchmark.header(on_worker, 1).splitlines()[1] == "ours: oneDNN on, --noproducts_on_ps"


def test_loopback_cost_moves_and_copies_every_byte_each_repeat():
  cost = benchmark.loopback_cost(3_000_000, repeats=4)
  assert cost.nbytes == 3_000_000 and cost.received == 12_000_000
  # Each received tensor is copied once out of the receive buffer, as TensorFlow does.
  assert cost.copied == 12_000_000
  assert cost.cpu_ms > 0


def test_transfer_bound_adds_the_transfers_to_one_process_work():
  assert benchmark.transfer_bound(150.0, 0.0) == 1.0
  assert benchmark.transfer_bound(150.0, 50.0) == pytest.approx(0.75)


def test_transfer_report_bounds_one_worker_by_its_transfers():
  one, pss1 = benchmark.SETUPS[:2]
  runs = {one: [measurement(1000, process=150.0), measurement(900, process=160.0)],
          pss1: [measurement(800, ps=20.0, chief=2.0, worker=150.0),
                 measurement(810, ps=20.0, chief=2.0, worker=150.0)]}
  costs = [benchmark.LoopbackCost(13_000_000, 0, 0, 8.0), benchmark.LoopbackCost(
      13_000_000, 0, 0, 10.0), benchmark.LoopbackCost(13_000_000, 0, 0, 9.0)]
  lines = benchmark.transfer_report(runs, costs)
  # Median 9 ms each way, 18 ms a step; one process's median 155 ms: 155 / 173.
  assert "a worker step's 13.00 MB each way" in lines[0] and "costs 18.0 CPU ms" in lines[0]
  assert "median of 3" in lines[0]
  assert "one process's 155.0 CPU ms" in lines[1] and "at most 0.90x" in lines[1]
  assert lines[1].endswith("it ran at 0.85x.")  # Rounds: 0.80, 0.90.
  assert benchmark.transfer_report({one: runs[one]}, costs) == []
  assert benchmark.transfer_report(runs, []) == []


def test_throughput_runs_evaluate_only_the_last_step_unless_told():
  setups = benchmark.SETUPS
  assert benchmark.train_config_for(parsed(), setups).eval_steps == 0
  assert benchmark.train_config_for(parsed("--eval_every=50"), setups).eval_steps == 50
  timed = parsed("--time_to_accuracy=0.99", "--checkpoint=50")
  assert benchmark.train_config_for(timed, setups).eval_steps == 50
