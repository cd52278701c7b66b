r"""Training throughput of each way to run the trainer, measured side by side in one run.

Typical usage:

  python -m train.benchmark                       # throughput table, real MNIST
  python -m train.benchmark --time_to_accuracy=0.99,0.992 --max_steps=3000 \
      --checkpoint=250
  # Which first weights reach 99.2% sooner, on PSS 1 ps + 2 workers:
  python -m train.benchmark --time_to_accuracy=0.992 --compare_initializers=seed,keras \
      --max_steps=3000 --checkpoint=250

Every configuration trains the same model at the same global batch (--batch_size)
as real processes on this machine: one process, ParameterServerStrategy with 1 ps
and 1 or 2 workers (plus the chief), MultiWorkerMirroredStrategy with 2 workers.
Throughput is training examples/s over the intervals after the first (which holds
tracing and warm-up), evaluation and checkpoints excluded; ratios are against one
process in the same run. All tasks share this machine's cores, so a cluster here
measures the framework's overhead, not a speed-up.

Exit codes: 0 the table is printed; 1 a setup failed (its log is printed); 2 a bad flag.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

from common import processes
from common import settings
from train import config as config_lib
from train import local_cluster


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str
  num_ps: int | None      # None: one process, no TF_CONFIG.
  num_workers: int = 0
  initializers: str | None = None  # None: the trainer's default.


SETUPS = (
    Setup("one process", None),
    Setup("PSS 1 ps + 1 worker", 1, 1),
    Setup("PSS 1 ps + 2 workers", 1, 2),
    Setup("MWMS 2 workers", 0, 2),
)


class SetupFailedError(RuntimeError):
  """A setup's training exited non-zero; the message holds the end of its log."""


def run_setup(setup: Setup, train_config: config_lib.TrainConfig, workdir: str,
              timeout_s: float) -> dict:
  """Trains one setup from scratch in `workdir`; returns the chief's result JSON."""
  result_json = os.path.join(workdir, "result.json")
  train_config = dataclasses.replace(train_config.with_log_dir(f"{workdir}/logs"),
                                     model_dir=f"{workdir}/model", export=False)
  if setup.initializers:
    train_config = dataclasses.replace(train_config, initializers=setup.initializers)
  options = config_lib.TaskOptions(result_json=result_json)
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "train.log")
  with open(log_path, "w") as log:
    if setup.num_ps is None:
      env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
      process = processes.start_module(
          config_lib.TASK_MODULE, config_lib.task_argv(train_config, options), env=env,
          stdout=log, stderr=subprocess.STDOUT)
      try:
        code = process.wait(timeout_s)
      except subprocess.TimeoutExpired:
        code = local_cluster.EXIT_TIMEOUT
      finally:
        processes.stop_process(process)
    else:
      cluster = local_cluster.make_cluster(setup.num_ps, setup.num_workers)
      with local_cluster.LocalCluster(cluster, train_config, options, output=log) as local:
        code = local.wait(timeout_s)
  if code != 0:
    with open(log_path) as f:
      raise SetupFailedError(f"{setup.name} failed with exit code {code}:\n"
                             f"{f.read()[-3000:]}")
  with open(result_json) as f:
    return json.load(f)


def steady_throughput(history: list) -> float:
  """Median examples/s over the intervals after the first (rows as in result JSON)."""
  rates = [row["examples_per_sec"] for row in history[1:] or history]
  return statistics.median(rates)


# The trainer's settings this benchmark varies; the rest keep train.task's defaults.
TRAIN_SETTINGS = ("global_batch_size", "max_steps", "checkpoint_interval",
                  "steps_per_execution", "data_dir")

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  settings.define_flags(config_lib.TrainConfig, flag_values, only=TRAIN_SETTINGS,
                                   defaults={"max_steps": 600})
  flags.DEFINE_list("time_to_accuracy", None, "Instead of the throughput table: seconds "
                    "of training for one process and for PSS 1 ps + 2 workers to first "
                    "reach each of these test accuracies (evaluated every --checkpoint "
                    "steps).", flag_values=flag_values)
  flags.DEFINE_list("compare_initializers", None, "With --time_to_accuracy: PSS 1 ps + "
                    "2 workers once per initializers listed (seed, keras; see train.task "
                    "--initializers) instead of the default setups.",
                    flag_values=flag_values)
  flags.register_validator(
      "compare_initializers", lambda names: set(names or ()) <= set(config_lib.INITIALIZERS),
      message=f"--compare_initializers: expected some of {', '.join(config_lib.INITIALIZERS)}",
      flag_values=flag_values)
  flags.DEFINE_list("setups", None, "Subset of setups by index (0-3); default: all.",
                    flag_values=flag_values)
  flags.DEFINE_float("timeout", 1800.0, "Seconds per setup.", flag_values=flag_values)


def setups_from_flags(flag_values: flags.FlagValues) -> tuple:
  """The setups to run; raises ValueError naming an index that is not one."""
  if flag_values.time_to_accuracy and flag_values.compare_initializers:
    cluster = SETUPS[2]
    return tuple(dataclasses.replace(cluster, name=f"{cluster.name}, {name} initializers",
                                     initializers=name)
                 for name in flag_values.compare_initializers)
  if flag_values.time_to_accuracy:
    return (SETUPS[0], SETUPS[2])
  if not flag_values.setups:
    return SETUPS
  indices = [str(i) for i in range(len(SETUPS))]
  unknown = [i for i in flag_values.setups if i not in indices]
  if unknown:
    raise ValueError(f"--setups {','.join(unknown)}: expected indices among "
                     f"{', '.join(indices)}")
  return tuple(SETUPS[int(i)] for i in flag_values.setups)


def accuracy_targets_from_flags(flag_values: flags.FlagValues) -> list[float]:
  """--time_to_accuracy as numbers; raises ValueError naming one that is not in (0, 1]."""
  targets = []
  for text in flag_values.time_to_accuracy or ():
    try:
      target = float(text)
    except ValueError:
      target = None
    if target is None or not 0 < target <= 1:
      raise ValueError(f"--time_to_accuracy {text!r}: expected accuracies in (0, 1]")
    targets.append(target)
  return targets


def main(argv):
  del argv
  try:
    train_config = config_lib.train_config_from_flags(FLAGS)
    setups = setups_from_flags(FLAGS)
    targets = accuracy_targets_from_flags(FLAGS)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return settings.EXIT_USAGE
  rows = []
  with tempfile.TemporaryDirectory(prefix="train-benchmark-") as root:
    for i, setup in enumerate(setups):
      logging.info("running %s", setup.name)
      try:
        result = run_setup(setup, train_config, os.path.join(root, str(i)), FLAGS.timeout)
      except SetupFailedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
      rows.append((setup, result))
  print(f"global batch {train_config.global_batch_size}, {train_config.max_steps} steps, "
        f"steps_per_execution {train_config.steps_per_execution}, {os.cpu_count()} CPUs")
  if targets:
    print("| setup | " + " | ".join(f"seconds (step) to {t}" for t in targets)
          + " | final accuracy | examples/s |")
    print("|---|" + "---|" * (len(targets) + 2))
    for setup, result in rows:
      cells = []
      for target in targets:
        hit = next((h for h in result["history"]
                    if h["test_accuracy"] is not None and h["test_accuracy"] >= target), None)
        cells.append("not reached" if hit is None
                     else f"{hit['elapsed_s']:.0f} ({hit['step']})")
      print(f"| {setup.name} | " + " | ".join(cells)
            + f" | {result['test_accuracy']:.4f} | {steady_throughput(result['history']):.0f} |")
    return 0
  baseline = steady_throughput(rows[0][1]["history"])
  print("| setup | examples/s | vs one process |")
  print("|---|---|---|")
  for setup, result in rows:
    rate = steady_throughput(result["history"])
    print(f"| {setup.name} | {rate:.0f} | {rate / baseline:.2f}x |")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
