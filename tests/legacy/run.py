"""Runs the seed's r0.12 program (tests/legacy/trainer) as one process or a local cluster.

Typical usage:

  # 1 ps + master on the vendored MNIST: checkpoints in /tmp/legacy/logs, the
  # export in /tmp/legacy/model, step times in /tmp/legacy/result.json.
  python -m tests.legacy.run --work_dir=/tmp/legacy --max_steps=30 --checkpoint=10

  # Throughput over global steps 100-200 (no evaluation in between), for
  # 1 ps + master + 1 worker, and for the seed's graph alone in one process.
  python -m tests.legacy.run --work_dir=/tmp/legacy1 --num_workers=1 \
      --max_steps=210 --checkpoint=1000 --rate_window=100,200
  python -m tests.legacy.run --work_dir=/tmp/legacy2 --one_process \
      --max_steps=210 --checkpoint=1000 --rate_window=100,200

Run it from the repository root. Every task runs tests.legacy.trainer.task as its
main module with its own TF_CONFIG (none in one-process mode) on 127.0.0.1 free
ports, its output in <work_dir>/<task>.log.
Workers check every --recovery_wait_secs (1 here, 30 in the seed's Supervisor)
whether the master has initialised the model, so that they train beside it almost
from its first step. The run is over when the master exits: as in the seed, the ps
never exits and a worker trains on until the global step reaches --max_steps, so
both are ended then.
Any task failing first, or the master not done within --timeout (a cluster that
never comes up, say), ends every process and fails the run with the task's name
and the last lines of its log.
"""

import collections
import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from common import processes
from tests.legacy import input_data
from tests.legacy import timing
from train import local_cluster

SEED_MODULE = "tests.legacy.trainer.task"
MASTER = "master"
PS = "ps"
WORKER = "worker"
ONE_PROCESS = "one_process"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The task asks the kernel to end it with the launcher (as train.task does), then
# runs the seed's module as its __main__; the seed's own text stays untouched.
_BOOTSTRAP = ("from common import processes; processes.die_with_parent(); "
              f"import runpy; runpy.run_module({SEED_MODULE!r}, run_name='__main__', "
              "alter_sys=True)")


class LegacyRunError(RuntimeError):
  """A task failed or the run timed out; the message names the task and shows its log."""


@dataclasses.dataclass(frozen=True)
class LegacyRun:
  """What a finished run left: the seed's two directories and the master's result."""
  work_dir: str      # Also holds each task's log, <task>.log.
  log_dir: str       # Supervisor checkpoints model.ckpt-N, events, graph.pbtxt.
  model_dir: str     # export.meta, export.index, export.data-*.
  result_json: str   # The master's --result_json (see tests/legacy/timing.py).
  result: dict       # Its content.
  max_steps: int     # The seed's --max_steps it ran with.


@dataclasses.dataclass
class Task:
  name: str                  # "master", "ps:0", "worker:1" or "one_process".
  tf_config: str | None      # None: no TF_CONFIG, the seed's graph alone.
  log_path: str
  process: subprocess.Popen | None = None

  def tail(self, lines: int = 25) -> str:
    try:
      with open(self.log_path, errors="replace") as f:
        return "".join(collections.deque(f, lines))
    except OSError as e:
      return f"(no log: {e})"


def make_tasks(work_dir: str, *, one_process: bool = False,
               num_workers: int = 0) -> list[Task]:
  """The tasks of one run: 1 ps, the master and `num_workers` workers, or one process."""
  if one_process:
    return [Task(ONE_PROCESS, None, os.path.join(work_dir, f"{ONE_PROCESS}.log"))]
  if num_workers < 0:
    raise ValueError(f"num_workers {num_workers}: expected 0 or more")
  host = processes.LOCALHOST
  ports = iter(processes.pick_free_ports(2 + num_workers, host))
  cluster = {MASTER: [f"{host}:{next(ports)}"],
             WORKER: [f"{host}:{next(ports)}" for _ in range(num_workers)],
             PS: [f"{host}:{next(ports)}"]}
  if not num_workers:
    del cluster[WORKER]
  tasks = []
  for task_type, addresses in cluster.items():
    for index in range(len(addresses)):
      name = MASTER if task_type == MASTER else f"{task_type}:{index}"
      tasks.append(Task(name, local_cluster.tf_config_for(cluster, task_type, index),
                        os.path.join(work_dir, name.replace(":", "-") + ".log")))
  return tasks


def seed_args(work_dir: str, *, max_steps: int, checkpoint: int, batch_size: int,
              recovery_wait_secs: int) -> list[str]:
  """The seed's flags for a run in `work_dir`, plus our --result_json and
  --recovery_wait_secs."""
  return [f"--batch_size={batch_size}", f"--max_steps={max_steps}",
          f"--checkpoint={checkpoint}", f"--log_dir={os.path.join(work_dir, 'logs')}",
          f"--model_dir={os.path.join(work_dir, 'model')}",
          f"--result_json={os.path.join(work_dir, 'result.json')}",
          f"--recovery_wait_secs={recovery_wait_secs}"]


class LegacyCluster:
  """Starts, watches and always ends the processes of one run (a context manager)."""

  def __init__(self, tasks: list[Task], args: list[str], *, data: str | None = None,
               env: dict | None = None, python: str = sys.executable):
    self.tasks = tasks
    self.args = list(args)
    self.python = python
    self.env = dict(os.environ if env is None else env)
    self.env.pop("TF_CONFIG", None)
    self.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, self.env.get("PYTHONPATH")) if p)
    if data is not None:
      self.env[input_data.DATA_ENV] = data

  def __enter__(self):
    self.start()
    return self

  def __exit__(self, *exc):
    self.stop()

  def start(self) -> None:
    # The master last, so that the servers it connects to are already starting.
    for task in sorted(self.tasks, key=lambda t: t.name == MASTER):
      env = dict(self.env, PYTHONUNBUFFERED="1",
                 **{processes.PARENT_PID_ENV: str(os.getpid())})
      if task.tf_config is not None:
        env["TF_CONFIG"] = task.tf_config
      os.makedirs(os.path.dirname(task.log_path), exist_ok=True)
      with open(task.log_path, "w") as log:
        task.process = subprocess.Popen(
            [self.python, "-c", _BOOTSTRAP, *self.args], cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

  def stop(self, grace_s: float = 5.0) -> None:
    """Ends every process still running: SIGTERM, then SIGKILL after `grace_s`."""
    processes.stop_processes([t.process for t in self.tasks], grace_s)

  def wait(self, timeout_s: float, poll_s: float = 0.2) -> None:
    """Returns when the master (or the one process) exits 0; raises LegacyRunError
    if it fails, if another task fails first, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    master = next(t for t in self.tasks if t.name in (MASTER, ONE_PROCESS))
    while time.monotonic() < deadline:
      code = master.process.poll()
      if code == 0:
        return
      if code is not None:
        raise LegacyRunError(self._failure(master, f"exited with code {code}"))
      for task in self.tasks:
        code = task.process.poll()
        # A worker may finish first (it stops at --max_steps too); a ps never should.
        if code not in (None, 0) or (code == 0 and task.name.startswith(PS)):
          raise LegacyRunError(self._failure(
              task, f"exited with code {code} before the master finished"))
      time.sleep(poll_s)
    raise LegacyRunError(self._failure(
        master, f"did not finish within {timeout_s:g} s (the timeout); every task "
        "was ended. A master that never logs a training step is waiting for a task "
        "of its cluster that never came up"))

  def _failure(self, task: Task, what: str) -> str:
    return (f"legacy {task.name} {what}. Last lines of {task.log_path}:\n"
            f"{task.tail()}")


def run_legacy(work_dir: str, *, one_process: bool = False, num_workers: int = 0,
               max_steps: int = 30, checkpoint: int = 10, batch_size: int = 100,
               recovery_wait_secs: int = 1, data: str | None = None,
               timeout_s: float = 600.0) -> LegacyRun:
  """Runs the seed program in `work_dir` to --max_steps and returns what it wrote.

  `one_process`: its graph alone, no TF_CONFIG; else 1 ps + the master +
  `num_workers` workers. `recovery_wait_secs`: how often a worker checks that the
  master has initialised the model (the seed's Supervisor waited 30 s; 1 s lets
  the workers train beside the master almost from its first step). `data`:
  LEGACY_MNIST_DATA for every task (None: inherited, by default the vendored MNIST). `work_dir` must not hold an earlier run's
  checkpoints: the seed's Supervisor would resume from them.
  """
  for name, value in (("max_steps", max_steps), ("checkpoint", checkpoint),
                      ("batch_size", batch_size), ("recovery_wait_secs", recovery_wait_secs)):
    if value < 1:
      raise ValueError(f"{name} {value}: expected a positive integer")
  work_dir = os.path.abspath(work_dir)
  log_dir = os.path.join(work_dir, "logs")
  if os.path.exists(os.path.join(log_dir, "checkpoint")):
    raise ValueError(f"{log_dir} already holds checkpoints: expected a fresh work_dir "
                     "(the seed's Supervisor would resume from them)")
  args = seed_args(work_dir, max_steps=max_steps, checkpoint=checkpoint,
                   batch_size=batch_size, recovery_wait_secs=recovery_wait_secs)
  tasks = make_tasks(work_dir, one_process=one_process, num_workers=num_workers)
  with LegacyCluster(tasks, args, data=data) as cluster:
    cluster.wait(timeout_s)
  result_json = os.path.join(work_dir, "result.json")
  with open(result_json) as f:
    result = json.load(f)
  return LegacyRun(work_dir, log_dir, os.path.join(work_dir, "model"), result_json, result,
                   max_steps)


FLAGS = flags.FLAGS


def define_flags():
  """The launcher's flags; defined only when it is the program (not when imported)."""
  flags.DEFINE_string("work_dir", None, "Fresh directory for logs/, model/, result.json "
                      "and each task's log.", required=True)
  flags.DEFINE_bool("one_process", False, "The seed's graph alone: no TF_CONFIG, no ps.")
  flags.DEFINE_integer("num_workers", 0, "Workers beside 1 ps and the master.")
  flags.DEFINE_integer("max_steps", 30, "The seed's --max_steps.")
  flags.DEFINE_integer("checkpoint", 10, "The seed's --checkpoint.")
  flags.DEFINE_integer("batch_size", 100, "The seed's --batch_size.")
  flags.DEFINE_integer("recovery_wait_secs", 1, "Seconds between a worker's checks that "
                       "the master has initialised the model (the seed's Supervisor: 30).")
  flags.DEFINE_string("data", None, "MNIST for the seed program: a directory, an .npz or "
                      "'synthetic'; default: the vendored data/mnist.")
  flags.DEFINE_float("timeout", 600.0, "Seconds before every process is ended.")
  flags.DEFINE_list("rate_window", None, "Two global steps FIRST,LAST: also print the "
                    "examples/s between them (keep evaluations out: --checkpoint > LAST).")


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}: expected flags only", file=sys.stderr)
    return 2
  window = FLAGS.rate_window
  if window is not None and (len(window) != 2 or not all(w.isdigit() for w in window)):
    print(f"error: --rate_window={','.join(window)}: expected two global steps FIRST,LAST",
          file=sys.stderr)
    return 2
  try:
    run = run_legacy(FLAGS.work_dir, one_process=FLAGS.one_process,
                     num_workers=FLAGS.num_workers, max_steps=FLAGS.max_steps,
                     checkpoint=FLAGS.checkpoint, batch_size=FLAGS.batch_size,
                     recovery_wait_secs=FLAGS.recovery_wait_secs, data=FLAGS.data,
                     timeout_s=FLAGS.timeout)
  except (ValueError, LegacyRunError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  summary = {"log_dir": run.log_dir, "model_dir": run.model_dir,
             "result_json": run.result_json,
             "final_global_step": run.result["final_global_step"],
             "test_accuracy": run.result["test_accuracy"]}
  if window is not None:
    try:
      summary["examples_per_second"] = timing.examples_per_second(
          run.result, int(window[0]), int(window[1]))
    except ValueError as e:
      print(f"error: --rate_window: {e}", file=sys.stderr)
      return 1
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
