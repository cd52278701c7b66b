"""Training throughput of each way to run the trainer, measured side by side in one run.

Typical usage:

  python -m train.benchmark                       # throughput table, real MNIST
  python -m train.benchmark --time_to_accuracy=0.99,0.992 --max_steps=3000 \
      --checkpoint=250

Every configuration trains the same model at the same global batch (--batch_size)
as real processes on this machine: one process, ParameterServerStrategy with 1 ps
and 1 or 2 workers (plus the chief), MultiWorkerMirroredStrategy with 2 workers.
Throughput is training examples/s over the intervals after the first (which holds
tracing and warm-up), evaluation and checkpoints excluded; ratios are against one
process in the same run. All tasks share this machine's cores, so a cluster here
measures the framework's overhead, not a speed-up.
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

from train import local_cluster


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str
  num_ps: int | None      # None: one process, no TF_CONFIG.
  num_workers: int = 0


SETUPS = (
    Setup("one process", None),
    Setup("PSS 1 ps + 1 worker", 1, 1),
    Setup("PSS 1 ps + 2 workers", 1, 2),
    Setup("MWMS 2 workers", 0, 2),
)


def run_setup(setup: Setup, task_args: list[str], workdir: str, timeout_s: float) -> dict:
  """Trains one setup from scratch in `workdir`; returns the chief's result JSON."""
  result_json = os.path.join(workdir, "result.json")
  args = [*task_args, f"--log_dir={workdir}/logs", f"--model_dir={workdir}/model",
          f"--result_json={result_json}", "--noexport"]
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "train.log")
  with open(log_path, "w") as log:
    if setup.num_ps is None:
      env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
      code = subprocess.call([sys.executable, "-m", "train.task", *args], env=env,
                             stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    else:
      cluster = local_cluster.make_cluster(setup.num_ps, setup.num_workers)
      with local_cluster.LocalCluster(cluster, args, output=log) as local:
        code = local.wait(timeout_s)
  if code != 0:
    with open(log_path) as f:
      raise RuntimeError(f"{setup.name} failed with exit code {code}:\n{f.read()[-3000:]}")
  with open(result_json) as f:
    return json.load(f)


def steady_throughput(history: list) -> float:
  """Median examples/s over the intervals after the first."""
  rates = [row[3] for row in history[1:]] or [row[3] for row in history]
  return statistics.median(rates)


FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 100, "Global batch size, the same for every setup.")
flags.DEFINE_integer("max_steps", 600, "Steps per setup.")
flags.DEFINE_integer("checkpoint", 100, "Interval in steps (log line, checkpoint, eval).")
flags.DEFINE_integer("steps_per_execution", 10, "Steps per scheduled function.")
flags.DEFINE_string("data_dir", None, "Training data; default: the vendored MNIST.")
flags.DEFINE_list("time_to_accuracy", None, "Instead of the throughput table: seconds of "
                  "training for one process and for PSS 1 ps + 2 workers to first reach "
                  "each of these test accuracies (evaluated every --checkpoint steps).")
flags.DEFINE_list("setups", None, "Subset of setups by index (0-3); default: all.")
flags.DEFINE_float("timeout", 1800.0, "Seconds per setup.")


def main(argv):
  del argv
  task_args = [f"--batch_size={FLAGS.batch_size}", f"--max_steps={FLAGS.max_steps}",
               f"--checkpoint={FLAGS.checkpoint}",
               f"--steps_per_execution={FLAGS.steps_per_execution}"]
  if FLAGS.data_dir:
    task_args.append(f"--data_dir={FLAGS.data_dir}")
  setups = SETUPS
  if FLAGS.time_to_accuracy:
    setups = (SETUPS[0], SETUPS[2])
  elif FLAGS.setups:
    setups = tuple(SETUPS[int(i)] for i in FLAGS.setups)
  rows = []
  with tempfile.TemporaryDirectory(prefix="train-benchmark-") as root:
    for i, setup in enumerate(setups):
      logging.info("running %s", setup.name)
      result = run_setup(setup, task_args, os.path.join(root, str(i)), FLAGS.timeout)
      rows.append((setup, result))
  print(f"global batch {FLAGS.batch_size}, {FLAGS.max_steps} steps, "
        f"steps_per_execution {FLAGS.steps_per_execution}, {os.cpu_count()} CPUs")
  if FLAGS.time_to_accuracy:
    targets = [float(t) for t in FLAGS.time_to_accuracy]
    print("| setup | " + " | ".join(f"seconds (step) to {t}" for t in targets)
          + " | final accuracy | examples/s |")
    print("|---|" + "---|" * (len(targets) + 2))
    for setup, result in rows:
      cells = []
      for target in targets:
        hit = next((h for h in result["history"] if h[2] is not None and h[2] >= target), None)
        cells.append("not reached" if hit is None else f"{hit[1]:.0f} ({hit[0]})")
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
  app.run(main)
