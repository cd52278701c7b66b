"""Runs a whole cluster on this machine: every task its own process on 127.0.0.1.

Typical usage:

  # The README's main job: 1 ps, 2 workers and a chief (ParameterServerStrategy).
  python -m train.local_cluster --num_ps=1 --num_workers=2 -- \
      --max_steps=2000 --log_dir=/tmp/logs --model_dir=/tmp/model

  # MultiWorkerMirroredStrategy: no ps, workers only (worker 0 is the chief).
  python -m train.local_cluster --num_ps=0 --num_workers=2 -- --max_steps=500

Everything after `--` goes to each `python -m train.task`. Each task gets its own
TF_CONFIG and free ports; its log lines are prefixed with its role. When the chief
exits the others are ended; if any task fails first, the rest are stopped and the
launcher exits non-zero. Ctrl-C, SIGTERM and --timeout end every process.
"""

import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging

from train import cluster as cluster_lib

EXIT_TIMEOUT = 124


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
  """Ports the kernel just handed out; all held open together so they differ."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def make_cluster(num_ps: int, num_workers: int, *, legacy_master: bool = False,
                 host: str = "127.0.0.1") -> dict[str, list[str]]:
  """A TF_CONFIG cluster: with ps, a chief (or legacy master) + workers + ps;
  without, workers only (MultiWorkerMirrored, worker 0 the chief)."""
  if num_workers < 1:
    raise ValueError(f"num_workers must be at least 1, got {num_workers}")
  if num_ps < 0:
    raise ValueError(f"num_ps must be >= 0, got {num_ps}")
  num_chiefs = 1 if num_ps else 0
  ports = iter(pick_free_ports(num_chiefs + num_workers + num_ps, host))
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


# Set by the launcher on each task: the launcher's pid (see die_with_launcher).
PARENT_PID_ENV = "LOCAL_CLUSTER_PARENT_PID"


def die_with_launcher(environ=os.environ) -> None:
  """In a task the launcher started: have the kernel SIGKILL it if the launcher dies.

  Called by the task itself at start-up (train/task.py), not in a preexec_fn: code
  between fork and exec in a multi-threaded launcher can deadlock or abort.
  """
  parent = environ.get(PARENT_PID_ENV)
  if not parent:
    return
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    return
  if os.getppid() != int(parent):  # The launcher died before prctl took effect.
    os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class Task:
  name: str               # "chief", "worker:1", ...
  tf_config: str
  process: subprocess.Popen | None = None

  @property
  def is_chief(self) -> bool:
    return cluster_lib.parse_tf_config(self.tf_config).is_chief


class LocalCluster:
  """Starts, watches and always ends the processes of one local cluster.

  Use as a context manager: leaving it ends every process still running.
  """

  def __init__(self, cluster: dict, task_args: list[str], *, evaluator: bool = False,
               env: dict | None = None, output=sys.stdout, python=sys.executable):
    self.cluster = cluster
    self.task_args = list(task_args)
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
               **{PARENT_PID_ENV: str(os.getpid())})
    task.process = subprocess.Popen(
        [self.python, "-m", "train.task", *self.task_args], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace")
    threading.Thread(target=self._pump, args=(task.name, task.process.stdout),
                     daemon=True).start()

  def _pump(self, name: str, stream) -> None:
    for line in stream:
      with self._lock:
        self.output.write(f"[{name}] {line}")
        self.output.flush()

  def stop(self, grace_s: float = 5.0) -> None:
    """Ends every process still running: SIGTERM, then SIGKILL after `grace_s`."""
    running = [t.process for t in self.tasks if t.process and t.process.poll() is None]
    for p in running:
      p.terminate()
    deadline = time.monotonic() + grace_s
    for p in running:
      try:
        p.wait(max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

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


def define_flags():
  """The launcher's own flags; defined only when it is the program (not when imported)."""
  flags.DEFINE_integer("num_ps", 1, "Parameter servers; 0 for MultiWorkerMirrored.")
  flags.DEFINE_integer("num_workers", 2, "Workers.")
  flags.DEFINE_bool("evaluator", False, "Also run a side-car evaluator task.")
  flags.DEFINE_bool("legacy_master", False, "Name the chief `master` in TF_CONFIG, "
                    "as r0.12 / AI Platform did.")
  flags.DEFINE_float("timeout", 1800.0, "Seconds before every process is ended.")


def main(argv):
  task_args = argv[1:]
  try:
    cluster = make_cluster(FLAGS.num_ps, FLAGS.num_workers, legacy_master=FLAGS.legacy_master)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  logging.info("Local cluster: %s", json.dumps(cluster))

  def on_signal(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)

  signal.signal(signal.SIGTERM, on_signal)
  with LocalCluster(cluster, task_args, evaluator=FLAGS.evaluator) as local:
    try:
      code = local.wait(FLAGS.timeout)
    except KeyboardInterrupt:
      logging.error("interrupted; stopping every task")
      code = 130
  logging.info("Local cluster finished with exit code %d", code)
  return code


if __name__ == "__main__":
  define_flags()
  app.run(main)
