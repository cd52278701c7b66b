r"""Runs a whole cluster on this machine: every task its own process on 127.0.0.1.

Typical usage:

  # The README's main job: 1 ps, 2 workers and a chief (ParameterServerStrategy).
  python -m train.local_cluster --num_ps=1 --num_workers=2 -- \
      --max_steps=2000 --log_dir=/tmp/logs --model_dir=/tmp/model

  # MultiWorkerMirroredStrategy: no ps, workers only (worker 0 is the chief).
  python -m train.local_cluster --num_ps=0 --num_workers=2 -- --max_steps=500

The flags after `--` are train.task's (train/config.py): checked here, then given
to each `python -m train.task`. Each task gets its own TF_CONFIG and free ports;
its log lines are prefixed with its role. When the chief exits the others are
ended; if any task fails first, the rest are stopped and the launcher exits
non-zero. Ctrl-C, SIGTERM and --timeout end every process.

Exit codes: the chief's (train.task's: 0 done, 2 what a restart cannot fix, 3 the
cluster did not come up, 4 a task failed), or the first failed task's; 2 a bad
flag, the launcher's or train.task's; 124 --timeout; 130 interrupted.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging

from common import processes
from common import settings
from common.settings import setting
from train import cluster as cluster_lib
from train import config as config_lib

EXIT_BAD_FLAGS = settings.EXIT_USAGE
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
  """The launcher's own settings (the tasks' come after `--`)."""
  num_ps: int = setting(1, "Parameter servers; 0 for MultiWorkerMirrored.")
  num_workers: int = setting(2, "Workers.")
  evaluator: bool = setting(False, "Also run a side-car evaluator task.")
  legacy_master: bool = setting(False, "Name the chief `master` in TF_CONFIG, as r0.12 "
                                "/ AI Platform did.")
  timeout_s: float = setting(1800.0, "Seconds before every process is ended.",
                             flag="timeout")

  def __post_init__(self):
    if self.num_ps < 0:
      raise ValueError(f"num_ps must be 0 or more, got {self.num_ps}")
    if self.num_workers < 1:
      raise ValueError(f"num_workers must be at least 1, got {self.num_workers}")
    if not self.timeout_s > 0:
      raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout_s}")


def make_cluster(num_ps: int, num_workers: int, *, legacy_master: bool = False,
                 host: str = processes.LOCALHOST) -> dict[str, list[str]]:
  """A TF_CONFIG cluster: with ps, a chief (or legacy master) + workers + ps;
  without, workers only (MultiWorkerMirrored, worker 0 the chief)."""
  if num_workers < 1:
    raise ValueError(f"num_workers must be at least 1, got {num_workers}")
  if num_ps < 0:
    raise ValueError(f"num_ps must be >= 0, got {num_ps}")
  num_chiefs = 1 if num_ps else 0
  ports = iter(processes.pick_free_ports(num_chiefs + num_workers + num_ps, host))
  cluster = {}
  if num_chiefs:
    cluster[cluster_lib.MASTER if legacy_master else cluster_lib.CHIEF] = [
        f"{host}:{next(ports)}"]
  cluster[cluster_lib.WORKER] = [f"{host}:{next(ports)}" for _ in range(num_workers)]
  if num_ps:
    cluster[cluster_lib.PS] = [f"{host}:{next(ports)}" for _ in range(num_ps)]
  return cluster


def tf_config_for(cluster: dict, task_type: str, index: int) -> str:
  return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@dataclasses.dataclass
class Task:
  name: str               # "chief", "worker:1", ...
  tf_config: str
  process: subprocess.Popen | None = None
  profiler_port: int = 0  # Its own, on this shared host; 0: no profiler.

  @property
  def is_chief(self) -> bool:
    return cluster_lib.parse_tf_config(self.tf_config).is_chief


class LocalCluster:
  """Starts, watches and always ends the processes of one local cluster.

  Use as a context manager: leaving it ends every process still running. With
  `profilers`, each task serves TensorFlow's profiler on a free port of its own.
  """

  def __init__(self, cluster: dict,
               train_config: config_lib.TrainConfig = config_lib.TrainConfig(),
               options: config_lib.TaskOptions = config_lib.TaskOptions(), *,
               evaluator: bool = False, profilers: bool = False,
               env: dict | None = None, output=sys.stdout, python=sys.executable):
    self.cluster = cluster
    self.task_args = config_lib.task_argv(train_config, options)
    self.env = dict(os.environ if env is None else env)
    self.output = output
    self.python = python
    self._lock = threading.Lock()
    self.tasks: list[Task] = []
    for task_type, addresses in cluster.items():
      for index in range(len(addresses)):
        name = task_type if task_type in (cluster_lib.CHIEF, cluster_lib.MASTER) \
            else f"{task_type}:{index}"
        self.tasks.append(Task(name, tf_config_for(cluster, task_type, index)))
    if evaluator:
      self.tasks.append(Task("evaluator", tf_config_for(cluster, cluster_lib.EVALUATOR, 0)))
    if profilers:
      for task, port in zip(self.tasks, processes.pick_free_ports(len(self.tasks))):
        task.profiler_port = port

  def __enter__(self):
    self.start()
    return self

  def __exit__(self, *exc):
    self.stop()

  def task(self, name: str) -> Task:
    return next(t for t in self.tasks if t.name == name)

  def start(self) -> None:
    # Servers first, so the chief finds them quickly.
    for task in sorted(self.tasks, key=lambda t: t.is_chief):
      self.start_task(task)

  def start_task(self, task: Task) -> None:
    """Starts (or restarts) one task's process with its own TF_CONFIG."""
    env = dict(self.env, TF_CONFIG=task.tf_config, PYTHONUNBUFFERED="1",
               **{processes.PARENT_PID_ENV: str(os.getpid())})
    args = self.task_args + ([f"--profiler_port={task.profiler_port}"]
                             if task.profiler_port else [])
    task.process = processes.start_module(
        config_lib.TASK_MODULE, args, python=self.python, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    threading.Thread(target=self._pump, args=(task.name, task.process.stdout),
                     daemon=True).start()

  def _pump(self, name: str, stream) -> None:
    for line in stream:
      with self._lock:
        self.output.write(f"[{name}] {line}")
        self.output.flush()

  def stop(self, grace_s: float = 5.0) -> None:
    """Ends every process still running: SIGTERM, then SIGKILL after `grace_s`."""
    processes.stop_processes([t.process for t in self.tasks], grace_s)

  def wait(self, timeout_s: float, poll_s: float = 0.2, clock=time.monotonic) -> int:
    """Waits for the chief; returns its exit code, or non-zero when a task fails first.

    Another task exiting with 0 is fine (a MultiWorkerMirrored worker or the
    evaluator that finished); any other exit code stops the cluster. After the
    chief, the evaluator is given time to read the final checkpoint.
    """
    deadline = clock() + timeout_s
    chief = next(t for t in self.tasks if t.is_chief)
    evaluator = next((t for t in self.tasks if t.name == "evaluator"), None)
    while clock() < deadline:
      code = chief.process.poll()
      if code is not None:
        if code != 0 or evaluator is None:
          return code
        try:
          return evaluator.process.wait(max(1.0, min(120.0, deadline - clock())))
        except subprocess.TimeoutExpired:
          logging.error("the evaluator did not finish after the chief")
          return 1
      for task in self.tasks:
        code = task.process.poll()
        if task is not chief and code not in (None, 0):
          logging.error("%s exited with code %s before the chief finished; stopping "
                        "the cluster", task.name, code)
          return code
      time.sleep(poll_s)
    logging.error("the cluster did not finish within %gs (--timeout)", timeout_s)
    return EXIT_TIMEOUT


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The launcher's own flags, one per setting of LaunchConfig."""
  settings.define_flags(LaunchConfig, flag_values)


def launch_config_from_flags(flag_values: flags.FlagValues) -> LaunchConfig:
  return LaunchConfig(**settings.values_from_flags(LaunchConfig, flag_values))


def run_local_cluster(launch: LaunchConfig, train_config: config_lib.TrainConfig,
                      options: config_lib.TaskOptions) -> int:
  """Runs the cluster until the chief is done; returns the exit code (see `wait`)."""
  cluster = make_cluster(launch.num_ps, launch.num_workers,
                         legacy_master=launch.legacy_master)
  logging.info("Local cluster: %s", json.dumps(cluster))

  def on_signal(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)

  signal.signal(signal.SIGTERM, on_signal)
  with LocalCluster(cluster, train_config, options, evaluator=launch.evaluator) as local:
    try:
      code = local.wait(launch.timeout_s)
    except KeyboardInterrupt:
      logging.error("interrupted; stopping every task")
      code = EXIT_INTERRUPTED
  logging.info("Local cluster finished with exit code %d", code)
  return code


def main(argv):
  try:
    # The tasks' flags are checked here, once, rather than by every task.
    train_config, options = config_lib.parse_task_argv(argv[1:])
    launch = launch_config_from_flags(FLAGS)
  except (flags.Error, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_FLAGS
  return run_local_cluster(launch, train_config, options)


def hint_for_task_flags(error: flags.Error) -> str | None:
  """For a train.task flag given before `--`: where it goes."""
  task_flags = flags.FlagValues()
  config_lib.define_flags(task_flags)
  if isinstance(error, flags.UnrecognizedFlagError) and error.flagname in task_flags:
    return f"--{error.flagname} is train.task's: give it after `--`"
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """The launcher's flags; the rest, after `--`, are the tasks'."""
  return settings.parse_flags(argv, takes_arguments=True, hint=hint_for_task_flags)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
