r"""Training throughput of each way to run the trainer, measured side by side in one run.

Typical usage:

  python -m train.benchmark                       # throughput table, real MNIST
  # Beside the r0.12 program we replace (run from the repository checkout), 3 rounds:
  python -m train.benchmark --legacy --setups=0,2 --rounds=3
  # The same, the r0.12 program on oneDNN's kernels as ours (see common/onednn.py):
  python -m train.benchmark --legacy --setups=0,2 --legacy_onednn=on --rounds=3
  # How many parameter servers a bigger cluster needs, checked on 1, 2, 3 workers here:
  python -m train.benchmark --sizing --rounds=2
  # Where each task's CPU goes per step (TensorFlow's profiler, 3 s of each task):
  python -m train.benchmark --setups=0,1,3 --profile_ms=3000
  # Seconds to 99% and 99.2% test accuracy, one process against PSS 1 ps + 2 workers,
  # and their ratio per round and its median:
  python -m train.benchmark --time_to_accuracy=0.99,0.992 --max_steps=3000 \
      --checkpoint=100 --rounds=3
  # Which first weights reach 99.2% sooner, on PSS 1 ps + 2 workers:
  python -m train.benchmark --time_to_accuracy=0.992 --compare_initializers=seed,keras \
      --max_steps=3000 --checkpoint=250

Every configuration trains the same model at the same global batch (--batch_size)
as real processes on this machine: one process, ParameterServerStrategy with 1 ps
and 1 or 2 workers (plus the chief), MultiWorkerMirroredStrategy with 2 workers.
Throughput is training examples/s from step --checkpoint to --max_steps: the first
interval (tracing, warm-up), evaluation and checkpoints are left out. Ratios are
against one process in the same round. `--rounds` runs every setup once per round,
in an order that rotates, and reports the median of each ratio.

Beside examples/s the table gives CPU milliseconds per step of each process role
(/proc/<pid>/stat over the same steps): on shared cores wall time is what the
neighbours leave, CPU per step is the work. All tasks share this machine's cores,
so a cluster here measures the framework's overhead, not a speed-up. The last
column counts the minor page faults of all processes per step: memory taken from
the kernel again every step, which `--nokeep_freed_memory` (ours with glibc's
allocation as TensorFlow leaves it; common/allocator.py) shows.

`--legacy` adds the r0.12 program of tests/legacy (through tf.compat.v1), run as
`python -m tests.legacy.run` from the repository checkout this module sits in, as
one process and as 1 ps + master + worker, at the seed's Adam 1e-4 constant (ours
then train with the same), with the ratios ours / legacy. Ours run oneDNN's
kernels (train.task --onednn, common/onednn.py); the r0.12 program runs those
TensorFlow picks for this CPU, as it would for a team that runs it today, or with
--legacy_onednn=on the same kernels as ours. The report's second line says which
each ran. `--noproducts_on_ps` runs the parameter-server setups with every
product on the worker (train.task's flag). `--sizing` adds PSS with
3 workers, measures the bytes through the ps's connections, and prints the sizing
model of train/sizing.py beside what each local cluster measured.

Exit codes: 0 the table is printed; 1 a setup failed (its log is printed); 2 a bad flag.
"""

import collections
import dataclasses
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
from absl import logging

from common import onednn
from common import processes
from common import settings
from train import config as config_lib
from train import local_cluster
from train import process_stats
from train import profile
from train import sizing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY_MODULE = "tests.legacy.run"
# The seed's optimizer: Adam at a constant 1e-4. Ours train with it beside the seed.
LEGACY_LEARNING_RATE = 1e-4
# --legacy_onednn: the r0.12 program on the kernels TensorFlow picks for this CPU.
LEGACY_DEFAULT_KERNELS = "default"
# Process roles, as the CPU column names them.
ONE_PROCESS_ROLE = "process"


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str
  num_ps: int | None      # None: one process, no TF_CONFIG.
  num_workers: int = 0
  initializers: str | None = None  # None: the trainer's default.
  legacy: bool = False    # The r0.12 program (num_workers beside its master).


SETUPS = (
    Setup("one process", None),
    Setup("PSS 1 ps + 1 worker", 1, 1),
    Setup("PSS 1 ps + 2 workers", 1, 2),
    Setup("MWMS 2 workers", 0, 2),
)
SIZING_SETUPS = (SETUPS[1], SETUPS[2], Setup("PSS 1 ps + 3 workers", 1, 3))
LEGACY_SETUPS = (
    Setup("legacy, one process", None, legacy=True),
    Setup("legacy, 1 ps + master + worker", 1, 1, legacy=True),
)
ALL_SETUPS = SETUPS + LEGACY_SETUPS  # By --setups index.
# Ours beside the seed's, shape by shape: (ours, legacy).
LEGACY_SHAPES = ((SETUPS[0], LEGACY_SETUPS[0]), (SETUPS[2], LEGACY_SETUPS[1]))


class SetupFailedError(RuntimeError):
  """A setup's training exited non-zero; the message holds the end of its log."""


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One setup's run over its steady steps."""
  examples_per_sec: float
  cpu_ms_per_step: dict        # Role ("ps", "chief", "worker", ...) -> ms per global step.
  ps_bytes_per_step: float | None = None   # Through the ps's connections, both ways.
  faults_per_step: float | None = None     # Minor page faults of all processes.
  profiles: dict = dataclasses.field(default_factory=dict)  # Task -> profile.Breakdown.

  @property
  def total_cpu_ms_per_step(self) -> float | None:
    values = list(self.cpu_ms_per_step.values())
    return sum(values) if values and None not in values else None


# --- Our trainer ------------------------------------------------------------------


class _StepLines:
  """Passes a run's output on to its log and notes when each `step N/M` line came.

  The chief logs that line when an interval ends; the next interval's training
  starts right after it.
  """
  _STEP = re.compile(r"\bstep (\d+)/\d+\b")

  def __init__(self, log, clock=time.monotonic):
    self.log = log
    self.clock = clock
    self.times: dict[int, float] = {}
    self._lock = threading.Lock()

  def write(self, text: str) -> None:
    t = self.clock()
    with self._lock:
      self.log.write(text)
      for match in self._STEP.finditer(text):
        self.times.setdefault(int(match.group(1)), t)

  def flush(self) -> None:
    self.log.flush()


def _copy_lines(stream, lines: _StepLines) -> None:
  for line in stream:
    lines.write(line)


def training_intervals(history: list, global_batch_size: int) -> list[tuple[int, int, float]]:
  """(first step, last step, training seconds) of each interval after the first.

  Reads the rows of a result JSON's history: per row its `step` and the training
  examples/s of the interval that ended there. The first interval holds tracing and
  warm-up and is left out. Rows without a rate, or repeating a step, are skipped.
  """
  rows = {}
  for row in history:
    rate = row.get("examples_per_sec")
    if rate and row["step"] not in rows:
      rows[row["step"]] = rate
  steps = sorted(rows)
  return [(first, last, (last - first) * global_batch_size / rows[last])
          for first, last in zip(steps, steps[1:])]


def steady_throughput(history: list, global_batch_size: int) -> float:
  """Training examples/s over the intervals after the first (all, if only one)."""
  intervals = training_intervals(history, global_batch_size)
  if not intervals:
    row = history[-1]
    return row["examples_per_sec"]
  steps = sum(last - first for first, last, _ in intervals)
  return steps * global_batch_size / sum(seconds for _, _, seconds in intervals)


def role_of(task_name: str) -> str:
  """`ps:0` -> ps, `worker:1` -> worker, chief, master, process."""
  return task_name.split(":")[0]


def cpu_ms_per_step(sampler: process_stats.Sampler, windows: list[tuple[float, float]],
                    steps: int) -> dict:
  """CPU ms per step of each role, its processes summed, over the clock windows."""
  by_role = {}
  for name in sampler.cpu:
    seconds = [sampler.cpu_between(name, start, end) for start, end in windows]
    role = role_of(name)
    if None in seconds or by_role.get(role, 0.0) is None:
      by_role[role] = None
    else:
      by_role[role] = by_role.get(role, 0.0) + sum(seconds) * 1000.0 / steps
  return by_role


def faults_per_step(sampler: process_stats.Sampler, windows: list[tuple[float, float]],
                    steps: int) -> float | None:
  """Minor page faults per step of all processes together, over the clock windows."""
  counts = [sampler.faults_between(name, start, end)
            for name in sampler.faults for start, end in windows]
  return None if not counts or None in counts else sum(counts) / steps


def _trace_when_steady(lines: _StepLines, addresses, trace_dir: str, duration_ms: int,
                       done: threading.Event) -> None:
  """Once the first log line is out (tracing and warm-up are over), traces every task
  at once for `duration_ms`. `addresses`: task name -> profiler host:port.
  """
  while not lines.times:
    if done.wait(0.2):
      return
  threads = [threading.Thread(target=_capture_quietly,
                              args=(address, os.path.join(trace_dir, name.replace(":", "-")),
                                    duration_ms))
             for name, address in addresses().items()]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()


def _capture_quietly(address: str, trace_dir: str, duration_ms: int) -> None:
  try:
    profile.capture(address, trace_dir, duration_ms)
  except Exception as e:  # A task that ended first: its row says no steps traced.
    logging.warning("no trace of %s: %s", address, e)


def run_setup(setup: Setup, train_config: config_lib.TrainConfig, workdir: str,
              timeout_s: float, *, ps_bytes: bool = False, profile_ms: int = 0,
              ours: config_lib.TaskOptions = config_lib.TaskOptions()):
  """Trains one setup of ours from scratch in `workdir`, its tasks with the options
  of `ours` (allocation, kernels).

  Returns the chief's result JSON, the clock time of each step line, and the
  sampler of the run's processes' CPU (and, with `ps_bytes`, of ps:0's TCP bytes).
  With `profile_ms`, every task is traced for that long from the first log line on,
  into `workdir`/traces/<task>.
  """
  result_json = os.path.join(workdir, "result.json")
  train_config = dataclasses.replace(train_config.with_log_dir(f"{workdir}/logs"),
                                     model_dir=f"{workdir}/model", export=False)
  if setup.initializers:
    train_config = dataclasses.replace(train_config, initializers=setup.initializers)
  port = processes.pick_free_ports(1)[0] if profile_ms and setup.num_ps is None else 0
  options = dataclasses.replace(ours, result_json=result_json, profiler_port=port)
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  # The kernels asked for, whatever TF_ENABLE_ONEDNN_OPTS this process has.
  onednn.set_onednn(options.onednn, env)
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, "train.log")
  done = threading.Event()
  tracer = None
  with open(log_path, "w") as log:
    lines = _StepLines(log)
    def start_tracing(addresses):
      nonlocal tracer
      if profile_ms:
        tracer = threading.Thread(target=_trace_when_steady, daemon=True, args=(
            lines, addresses, os.path.join(workdir, "traces"), profile_ms, done))
        tracer.start()
    if setup.num_ps is None:
      process = processes.start_module(
          config_lib.TASK_MODULE, config_lib.task_argv(train_config, options), env=env,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
      pump = threading.Thread(target=_copy_lines, args=(process.stdout, lines), daemon=True)
      pump.start()
      start_tracing(lambda: {ONE_PROCESS_ROLE: f"{processes.LOCALHOST}:{port}"})
      sampler = process_stats.Sampler(lambda: {ONE_PROCESS_ROLE: process.pid})
      try:
        with sampler:
          code = process.wait(timeout_s)
      except subprocess.TimeoutExpired:
        code = local_cluster.EXIT_TIMEOUT
      finally:
        processes.stop_process(process)
      pump.join(5)
    else:
      cluster = local_cluster.make_cluster(setup.num_ps, setup.num_workers)
      with local_cluster.LocalCluster(cluster, train_config, options, env=env,
                                      output=lines, profilers=bool(profile_ms)) as local:
        start_tracing(lambda: {t.name: f"{processes.LOCALHOST}:{t.profiler_port}"
                               for t in local.tasks})
        sampler = process_stats.Sampler(
            lambda: {t.name: t.process.pid for t in local.tasks},
            bytes_of="ps:0" if ps_bytes and setup.num_ps else None)
        with sampler:
          code = local.wait(timeout_s)
  done.set()
  if tracer is not None:
    tracer.join()
  if code != 0:
    with open(log_path) as f:
      raise SetupFailedError(f"{setup.name} failed with exit code {code}:\n"
                             f"{f.read()[-3000:]}")
  with open(result_json) as f:
    return json.load(f), lines.times, sampler


def measure_setup(setup: Setup, train_config: config_lib.TrainConfig, workdir: str,
                  timeout_s: float, *, ps_bytes: bool = False, profile_ms: int = 0,
                  ours: config_lib.TaskOptions = config_lib.TaskOptions()) -> Measurement:
  """Examples/s and CPU per step of one setup of ours over its steady intervals."""
  result, line_times, sampler = run_setup(setup, train_config, workdir, timeout_s,
                                          ps_bytes=ps_bytes, profile_ms=profile_ms,
                                          ours=ours)
  batch = train_config.global_batch_size
  intervals = training_intervals(result["history"], batch)
  windows = [(line_times[first], line_times[first] + seconds)
             for first, _, seconds in intervals if first in line_times]
  steps = sum(last - first for first, last, _ in intervals)
  cpu = (cpu_ms_per_step(sampler, windows, steps)
         if intervals and len(windows) == len(intervals) else {})
  moved = None
  if ps_bytes and windows:
    parts = [sampler.bytes_between(start, end) for start, end in windows]
    moved = None if None in parts else sum(parts) / steps
  profiles = {}
  traces = os.path.join(workdir, "traces")
  for name in sorted(os.listdir(traces)) if profile_ms and os.path.isdir(traces) else ():
    breakdown = profile.read_breakdown(os.path.join(traces, name))
    if breakdown is not None:
      profiles[name.replace("-", ":")] = breakdown
  faults = faults_per_step(sampler, windows, steps) if cpu else None
  return Measurement(steady_throughput(result["history"], batch), cpu,
                     ps_bytes_per_step=moved, faults_per_step=faults, profiles=profiles)


# --- What a worker step's transfers cost at the least ------------------------------


@dataclasses.dataclass(frozen=True)
class LoopbackCost:
  """CPU to move `nbytes` once through loopback TCP: sender and receiver together."""
  nbytes: int
  received: int      # Bytes the receiver got over all repeats.
  copied: int        # Bytes it copied out of its receive buffer, as TensorFlow does.
  cpu_ms: float      # Per move: this process's user + system time, both threads.


def loopback_cost(nbytes: int, repeats: int = 20) -> LoopbackCost:
  """Sends `nbytes` `repeats` times from one thread to another over TCP on 127.0.0.1.

  The processes of a local cluster move every tensor that way. This is the least
  of it: the kernel's copies into and out of the socket on loopback, and the one
  copy a TensorFlow receiver makes of each tensor, out of gRPC's buffers into the
  tensor's own (`TensorResponse` in tensorflow/core/distributed_runtime/
  tensor_coding.cc; the sender's side is zero-copy). No gRPC framing, no
  serialisation, no TensorFlow runtime: a floor under what a ps and a worker pay.
  """
  payload = bytearray(nbytes)
  received = copied = 0
  with socket.create_server((processes.LOCALHOST, 0)) as server:
    sender = socket.create_connection(server.getsockname()[:2])
    receiver, _ = server.accept()

    def receive():
      nonlocal received, copied
      into = memoryview(bytearray(nbytes))
      tensor = memoryview(bytearray(nbytes))
      for _ in range(repeats):
        got = 0
        while got < nbytes:
          n = receiver.recv_into(into[got:], nbytes - got)
          if n == 0:
            return
          got += n
        received += got
        tensor[:] = into  # One memcpy, as TensorResponse's parse into the tensor.
        copied += len(tensor)

    with sender, receiver:
      thread = threading.Thread(target=receive, daemon=True)
      start = time.process_time()
      thread.start()
      for _ in range(repeats):
        sender.sendall(payload)
      thread.join()
      cpu_s = time.process_time() - start
  return LoopbackCost(nbytes, received, copied, cpu_s * 1000.0 / repeats)


def transfer_bound(one_process_cpu_ms: float, transfer_cpu_ms: float) -> float:
  """Most that a ps and one worker can reach of one process on the same cores.

  They do one process's work per step (forward, backward, the update), plus the
  step's transfers; at the same use of the cores, throughput goes as 1 / CPU per step.
  An estimate: one process's CPU per step stands for a step's work, and a run can
  show the cluster spending less than that plus the transfers (BUILD.md,
  "Transfers").
  """
  return one_process_cpu_ms / (one_process_cpu_ms + transfer_cpu_ms)


def transfer_report(runs: dict, costs: list[LoopbackCost]) -> list[str]:
  """Lines: the loopback floor of one worker's transfers and the ratio it allows."""
  one = _median_or_none([m.total_cpu_ms_per_step for m in runs.get(SETUPS[0], ())])
  single = runs.get(SETUPS[1])
  if one is None or not single or not costs:
    return []
  nbytes = costs[0].nbytes
  # A worker step moves as many bytes to the ps as from it.
  transfer_ms = 2 * statistics.median(c.cpu_ms for c in costs)
  measured = statistics.median(rate_ratios(single, runs[SETUPS[0]]))
  return [
      f"Transfers alone: moving a worker step's {nbytes / 1e6:.2f} MB each way through "
      f"loopback TCP, with the one copy of each received tensor TensorFlow makes, "
      f"costs {transfer_ms:.1f} CPU ms per step on this machine (sender and receiver; "
      f"no gRPC framing, serialisation or TensorFlow runtime; median of {len(costs)}).",
      f"So {SETUPS[1].name}, with one process's {one:.1f} CPU ms of work per step and "
      f"nothing else added, reaches at most {transfer_bound(one, transfer_ms):.2f}x of "
      f"one process on these shared cores; it ran at {measured:.2f}x."]


# --- The r0.12 program ------------------------------------------------------------


def legacy_step_window(result: dict, first_step: int, last_step: int
                       ) -> tuple[float, float, int]:
  """(start, end, global steps) between the master's first recorded steps at or past
  `first_step` and `last_step`, from the seed's --result_json (tests/legacy/timing.py:
  per step it ran, the global step and the time.monotonic() after its sess.run)."""
  steps = result["global_step"]
  try:
    i = next(i for i, step in enumerate(steps) if step >= first_step)
    j = next(j for j, step in enumerate(steps) if step >= last_step)
  except StopIteration:
    raise ValueError(f"the legacy run recorded global steps {steps[:1]}..{steps[-1:]}: "
                     f"expected {first_step} to {last_step}") from None
  return result["run_end_s"][i], result["run_end_s"][j], steps[j] - steps[i]


def legacy_argv(setup: Setup, work_dir: str, train_config: config_lib.TrainConfig,
                timeout_s: float) -> list[str]:
  """`python -m tests.legacy.run` arguments: the seed's flags for the same steps.

  It runs a few steps past --max_steps (a worker's steps interleave with the
  master's, which records only its own) and evaluates only before the window
  (the seed evaluates at its first step and every --checkpoint steps).
  """
  first, last = train_config.checkpoint_interval, train_config.max_steps
  shape = ["--one_process"] if setup.num_ps is None else [f"--num_workers={setup.num_workers}"]
  return [f"--work_dir={work_dir}", *shape,
          f"--batch_size={train_config.global_batch_size}", f"--max_steps={last + 10}",
          f"--checkpoint={last + 1000}", f"--rate_window={first},{last}",
          f"--timeout={timeout_s:g}"]


def _legacy_task_names(launcher_pid: int, known: dict) -> dict:
  """The launcher's children by task name (ps:0, master, worker:0, process)."""
  for pid in process_stats.children_of(launcher_pid):
    if pid not in known:
      tf_config = process_stats.environment_of(pid).get("TF_CONFIG")
      if tf_config is None:
        known[pid] = ONE_PROCESS_ROLE
      else:
        task = json.loads(tf_config)["task"]
        known[pid] = task["type"] if task["type"] == "master" \
            else f"{task['type']}:{task['index']}"
  return {name: pid for pid, name in known.items()}


def legacy_environment(kernels: str, environ=None) -> dict:
  """The r0.12 program's environment for --legacy_onednn `kernels`: default leaves
  TensorFlow to choose for this CPU, as it does for a program that does not say."""
  env = dict(os.environ if environ is None else environ)
  if kernels == LEGACY_DEFAULT_KERNELS:
    env.pop(onednn.ENV_VAR, None)
  else:
    onednn.set_onednn(kernels == "on", env)
  return env


def measure_legacy(setup: Setup, train_config: config_lib.TrainConfig, workdir: str,
                   timeout_s: float, env: dict | None = None) -> Measurement:
  """Runs the r0.12 program as a subprocess, with `env`, and measures it like ours."""
  if not os.path.isdir(os.path.join(REPO_ROOT, "tests", "legacy")):
    raise SetupFailedError(f"--legacy runs {LEGACY_MODULE} from the repository "
                           f"checkout; {REPO_ROOT}/tests/legacy does not exist")
  work_dir = os.path.join(workdir, "legacy")
  argv = legacy_argv(setup, work_dir, train_config, timeout_s)
  known = {}
  with tempfile.TemporaryFile("w+") as output:
    launcher = processes.start_module(LEGACY_MODULE, argv, cwd=REPO_ROOT, stdout=output,
                                      stderr=subprocess.STDOUT, text=True,
                                      env=legacy_environment(LEGACY_DEFAULT_KERNELS)
                                      if env is None else env)
    try:
      with process_stats.Sampler(lambda: _legacy_task_names(launcher.pid, known)) as sampler:
        code = launcher.wait(timeout_s + 60)
    except subprocess.TimeoutExpired:
      code = local_cluster.EXIT_TIMEOUT
    finally:
      processes.stop_process(launcher)
    output.seek(0)
    text = output.read()
  if code != 0:
    raise SetupFailedError(f"{setup.name} failed with exit code {code}:\n{text[-3000:]}")
  # The launcher ends with its summary, a JSON object whose first line is "{".
  summary = json.loads(text[text.rfind("\n{\n") + 1:])
  with open(summary["result_json"]) as f:
    result = json.load(f)
  start, end, steps = legacy_step_window(result, train_config.checkpoint_interval,
                                         train_config.max_steps)
  return Measurement(summary["examples_per_second"],
                     cpu_ms_per_step(sampler, [(start, end)], steps),
                     faults_per_step=faults_per_step(sampler, [(start, end)], steps))


# --- Rounds and tables --------------------------------------------------------------


def round_orders(setups: tuple, rounds: int) -> list[tuple]:
  """The order of the setups in each round: rotated by one each round, so that no
  setup always runs first (after a quiet spell) or last."""
  n = len(setups)
  return [tuple(setups[(r + i) % n] for i in range(n)) for r in range(rounds)]


def rate_ratios(measurements: list[Measurement], baselines: list[Measurement]) -> list[float]:
  """Each round's examples/s over the baseline's in the same round."""
  return [m.examples_per_sec / b.examples_per_sec for m, b in zip(measurements, baselines)]


def ratio_cell(ratios: list[float]) -> str:
  """The median ratio, with each round's when there are several."""
  text = f"{statistics.median(ratios):.2f}x"
  if len(ratios) > 1:
    text += " (" + ", ".join(f"{r:.2f}" for r in ratios) + ")"
  return text


def _median_or_none(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def _ms(value) -> str:
  return "-" if value is None else f"{value:.1f}"


def cpu_cell(measurements: list[Measurement]) -> str:
  """Median CPU ms/step by role over the rounds, e.g. `ps 27.5 · chief 1.2 · worker 393`."""
  roles = []
  for m in measurements:
    roles += [r for r in m.cpu_ms_per_step if r not in roles]
  order = {"ps": 0, "chief": 1, "master": 2, "worker": 3, ONE_PROCESS_ROLE: 4}
  roles.sort(key=lambda r: order.get(r, 9))
  return " · ".join(
      f"{role} {_ms(_median_or_none([m.cpu_ms_per_step.get(role) for m in measurements]))}"
      for role in roles) or "-"


def throughput_table(setups: tuple, runs: dict) -> list[str]:
  """Markdown rows: examples/s, ratio to one process, CPU ms/step (medians of rounds)."""
  lines = ["| setup | examples/s | vs one process | CPU ms/step, all processes "
           "| CPU ms/step by process | page faults/step |", "|---|---|---|---|---|---|"]
  baseline = runs.get(SETUPS[0])
  for setup in setups:
    measurements = runs[setup]
    rate = statistics.median(m.examples_per_sec for m in measurements)
    ratio = "-"
    if baseline is not None:
      ratio = ratio_cell(rate_ratios(measurements, baseline))
    total = _median_or_none([m.total_cpu_ms_per_step for m in measurements])
    faults = _median_or_none([m.faults_per_step for m in measurements])
    lines.append(f"| {setup.name} | {rate:.0f} | {ratio} | {_ms(total)} "
                 f"| {cpu_cell(measurements)} | {'-' if faults is None else f'{faults:,.0f}'} |")
  return lines


def legacy_table(runs: dict) -> list[str]:
  """Markdown rows: ours / legacy per shape (median of the rounds' ratios)."""
  lines = ["| shape | legacy examples/s | ours examples/s | ours / legacy "
           "| legacy CPU ms/step | ours CPU ms/step |", "|---|---|---|---|---|---|"]
  for ours, legacy in LEGACY_SHAPES:
    if ours not in runs or legacy not in runs:
      continue
    pairs = list(zip(runs[ours], runs[legacy]))
    lines.append(
        f"| {ours.name} / {legacy.name} "
        f"| {statistics.median(l.examples_per_sec for _, l in pairs):.0f} "
        f"| {statistics.median(o.examples_per_sec for o, _ in pairs):.0f} "
        f"| {ratio_cell(rate_ratios(runs[ours], runs[legacy]))} "
        f"| {_ms(_median_or_none([l.total_cpu_ms_per_step for _, l in pairs]))} "
        f"| {_ms(_median_or_none([o.total_cpu_ms_per_step for o, _ in pairs]))} |")
  return lines


def model_transfer_bytes(global_batch_size: int, products_on_ps: bool) -> tuple[int, int]:
  """(bytes of the CNN's variables, bytes a worker step moves each way under
  parameter servers) (imports TensorFlow).

  Each way, a step moves every variable (read) or its gradient (sent); with the
  hidden layer's products on the ps (model/layers.py's DenseAtKernel), that layer's
  kernel is replaced by its activations: the input and the output's gradient to
  the ps, the output and the input's gradient back, `global_batch_size` rows each.
  """
  from model import cnn  # pylint: disable=g-import-not-at-top: loads TensorFlow.
  from model import layers  # pylint: disable=g-import-not-at-top
  model = cnn.build_cnn(dense_at_kernel=products_on_ps)
  parameter_bytes = sum(v.shape.num_elements() * v.dtype.size for v in model.variables)
  each_way = parameter_bytes
  for layer in model.layers:
    if isinstance(layer, layers.DenseAtKernel):
      inputs, units = layer.kernel.shape
      each_way += (global_batch_size * (inputs + units) - inputs * units) * layer.kernel.dtype.size
  return parameter_bytes, each_way


def sizing_report(runs: dict, parameter_bytes: int, bytes_each_way: int, ps_cores: float,
                  worker_cores: float) -> list[str]:
  """The sizing model from the costs measured here, checked on each local cluster.

  The per-step costs are PSS 1 ps + 1 worker's: the ps's CPU per step, and the
  worker's, from which a worker with `worker_cores` cores of its own steps
  `worker_cores` seconds of CPU per second. CPU per step survives this machine's
  sharing; its wall-clock rates do not.
  """
  single = runs[SIZING_SETUPS[0]]
  ps_cpu_ms = _median_or_none([m.cpu_ms_per_step.get("ps") for m in single])
  worker_cpu_ms = _median_or_none([m.cpu_ms_per_step.get("worker") for m in single])
  if ps_cpu_ms is None or worker_cpu_ms is None:
    return ["sizing: the CPU of PSS 1 ps + 1 worker was not measured"]
  cost = sizing.StepCost(parameter_bytes, bytes_each_way, ps_cpu_ms,
                         worker_cores * 1000.0 / worker_cpu_ms)
  checks = [sizing.ClusterCheck(
      setup.num_workers,
      _median_or_none([m.cpu_ms_per_step.get("ps") for m in runs[setup]]),
      _median_or_none([m.ps_bytes_per_step for m in runs[setup]]))
            for setup in SIZING_SETUPS if setup in runs]
  return sizing.report(cost, checks, ps_cores, worker_cores)


# --- The command --------------------------------------------------------------------

# The trainer's settings this benchmark varies; the rest keep train.task's defaults.
TRAIN_SETTINGS = ("global_batch_size", "max_steps", "checkpoint_interval",
                  "eval_interval", "steps_per_execution", "data_dir", "products_on_ps")

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  settings.define_flags(config_lib.TrainConfig, flag_values, only=TRAIN_SETTINGS,
                        defaults={"max_steps": 200})
  # Ours with glibc's default allocation (--nokeep_freed_memory), Eigen's kernels
  # (--noonednn) or spinning thread pools (--thread_spinning) too, to see what each saves.
  settings.define_flags(config_lib.TaskOptions, flag_values,
                        only=("keep_freed_memory", "onednn", "thread_spinning"))
  flags.DEFINE_enum("legacy_onednn", LEGACY_DEFAULT_KERNELS,
                    [LEGACY_DEFAULT_KERNELS, "on", "off"], "The r0.12 program's kernels: "
                    "default, TensorFlow's choice for this CPU (as the seed runs); on, "
                    "oneDNN's, as ours; off, Eigen's (TF_ENABLE_ONEDNN_OPTS=1 or 0).",
                    flag_values=flag_values)
  flags.DEFINE_list("time_to_accuracy", None, "Instead of the throughput table: seconds "
                    "of training for one process and for PSS 1 ps + 2 workers to first "
                    "reach each of these test accuracies (evaluated every --checkpoint "
                    "steps), and each setup's seconds over the first's, per round.",
                    flag_values=flag_values)
  flags.DEFINE_list("compare_initializers", None, "With --time_to_accuracy: PSS 1 ps + "
                    "2 workers once per initializers listed (seed, keras; see train.task "
                    "--initializers) instead of the default setups.",
                    flag_values=flag_values)
  flags.register_validator(
      "compare_initializers", lambda names: set(names or ()) <= set(config_lib.INITIALIZERS),
      message=f"--compare_initializers: expected some of {', '.join(config_lib.INITIALIZERS)}",
      flag_values=flag_values)
  flags.DEFINE_list("setups", None, "Subset of setups by index: 0 one process, 1 PSS 1 ps "
                    "+ 1 worker, 2 PSS 1 ps + 2 workers, 3 MWMS 2 workers, 4 and 5 the "
                    "r0.12 program's (see --legacy); default: 0-3.",
                    flag_values=flag_values)
  flags.DEFINE_bool("legacy", False, "Also run the r0.12 program (tests/legacy, through "
                    "tf.compat.v1; needs the repository checkout) as one process and as "
                    "1 ps + master + worker (setups 4 and 5), and print ours / legacy for "
                    "those shapes. With either, every setup trains with the seed's Adam "
                    "at a constant 1e-4.",
                    flag_values=flag_values)
  flags.DEFINE_integer("rounds", 1, "Run every setup once per round, in rotating order; "
                       "report the median of each ratio.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_bool("sizing", False, "Also run PSS with 1, 2 and 3 workers and print the "
                    "sizing model: bytes and ps CPU per worker step, the workers one ps "
                    "shard feeds at 10 and 100 Gbit/s, the --num_ps_shards a cluster "
                    "needs; checked against the bytes and ps CPU per step measured on "
                    "each.", flag_values=flag_values)
  flags.DEFINE_float("ps_cores", 4, "With --sizing: cores of each parameter server of "
                     "the cluster sized.", lower_bound=0.1, flag_values=flag_values)
  flags.DEFINE_float("worker_cores", 4, "With --sizing: cores of each worker of the "
                     "cluster sized.", lower_bound=0.1, flag_values=flag_values)
  flags.DEFINE_integer("profile_ms", 0, "Trace every task of our setups with "
                       "TensorFlow's profiler for this many milliseconds from the first "
                       "log line on, and print where each one's CPU goes per step (0: "
                       "no traces). Tracing costs CPU: take examples/s from a run "
                       "without it.", lower_bound=0, flag_values=flag_values)
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
  indices = [str(i) for i in range(len(ALL_SETUPS))]
  unknown = [i for i in flag_values.setups or () if i not in indices]
  if unknown:
    raise ValueError(f"--setups {','.join(unknown)}: expected indices among "
                     f"{', '.join(indices)}")
  chosen = (tuple(ALL_SETUPS[int(i)] for i in flag_values.setups) if flag_values.setups
            else () if flag_values.sizing else SETUPS)
  if flag_values.sizing:
    chosen += tuple(s for s in SIZING_SETUPS if s not in chosen)
  if flag_values.legacy:
    chosen += tuple(s for s in LEGACY_SETUPS if s not in chosen)
  return chosen


def train_config_for(flag_values: flags.FlagValues, setups: tuple) -> config_lib.TrainConfig:
  """The trainer's config of the parsed flags; the seed's optimizer when `setups`
  hold the r0.12 program.

  Throughput is training alone: unless --eval_every says otherwise, only the last
  step is evaluated (under parameter servers evaluations run beside the workers,
  and on shared cores they would take theirs).
  """
  overrides = {}
  if any(setup.legacy for setup in setups):
    overrides = {"learning_rate": LEGACY_LEARNING_RATE, "learning_rate_schedule": "constant"}
  if not flag_values.time_to_accuracy and not flag_values["eval_every"].present:
    overrides["eval_interval"] = 0
  train_config = config_lib.train_config_from_flags(flag_values, **overrides)
  if not flag_values.time_to_accuracy and \
      train_config.max_steps <= train_config.checkpoint_interval:
    raise ValueError(f"--max_steps={train_config.max_steps}: expected more than "
                     f"--checkpoint={train_config.checkpoint_interval} (the steps after "
                     "the first interval are measured)")
  return train_config


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


def first_reaching(result: dict, target: float) -> dict | None:
  """The first history row of a run whose test accuracy reached `target`, if any."""
  return next((h for h in result["history"]
               if h["test_accuracy"] is not None and h["test_accuracy"] >= target), None)


def time_to_accuracy_table(rows: list, targets: list[float], global_batch_size: int
                           ) -> list[str]:
  """rows: (round, setup, result) in the order run; a round column if several."""
  several = len({r for r, _, _ in rows}) > 1
  lines = ["| " + ("round | " if several else "") + "setup | "
           + " | ".join(f"seconds (step) to {t}" for t in targets)
           + " | final accuracy | examples/s |",
           "|---|" + "---|" * (len(targets) + 2 + several)]
  for r, setup, result in rows:
    cells = []
    for target in targets:
      hit = first_reaching(result, target)
      cells.append("not reached" if hit is None
                   else f"{hit['elapsed_s']:.0f} ({hit['step']})")
    lines.append("| " + (f"{r} | " if several else "") + f"{setup.name} | "
                 + " | ".join(cells) + f" | {result['test_accuracy']:.4f} "
                 f"| {steady_throughput(result['history'], global_batch_size):.0f} |")
  return lines


def time_to_accuracy_ratios(rows: list, targets: list[float]) -> list[str]:
  """Lines: each later setup's seconds to each target over the first setup's, per
  round (the same round's runs), and their median."""
  by_round = collections.defaultdict(dict)
  for r, setup, result in rows:
    by_round[r][setup] = result
  setups = list(dict.fromkeys(setup for _, setup, _ in rows))
  lines = []
  for setup in setups[1:]:
    for target in targets:
      ratios = []
      for results in by_round.values():
        hits = [first_reaching(results[s], target) if s in results else None
                for s in (setup, setups[0])]
        if all(hits):
          ratios.append(hits[0]["elapsed_s"] / max(hits[1]["elapsed_s"], 1e-9))
      lines.append(f"{setup.name} / {setups[0].name}, seconds to {target}: "
                   + (ratio_cell(ratios) if ratios else "not reached by both in any round")
                   + (f" over {len(ratios)} of {len(by_round)} rounds"
                      if len(ratios) < len(by_round) and ratios else ""))
  return lines


def main(argv):
  del argv
  try:
    setups = setups_from_flags(FLAGS)
    train_config = train_config_for(FLAGS, setups)
    targets = accuracy_targets_from_flags(FLAGS)
    ours = config_lib.task_options_from_flags(FLAGS, os.environ)  # TF_ENABLE_ONEDNN_OPTS.
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return settings.EXIT_USAGE
  legacy_env = legacy_environment(FLAGS.legacy_onednn)
  # The floor under one worker's transfers, beside its row.
  floor = not targets and SETUPS[0] in setups and SETUPS[1] in setups
  parameter_bytes, bytes_each_way = (
      model_transfer_bytes(train_config.global_batch_size, train_config.products_on_ps)
      if FLAGS.sizing or floor else (None, None))
  runs = {setup: [] for setup in setups}
  transfer_costs = []
  rows = []
  with tempfile.TemporaryDirectory(prefix="train-benchmark-") as root:
    for r, order in enumerate(round_orders(setups, FLAGS.rounds)):
      for setup in order:
        logging.info("round %d: running %s", r + 1, setup.name)
        workdir = os.path.join(root, f"{r}-{setups.index(setup)}")
        try:
          if targets:
            rows.append((r + 1, setup, run_setup(setup, train_config, workdir,
                                                 FLAGS.timeout, ours=ours)[0]))
          elif setup.legacy:
            runs[setup].append(measure_legacy(setup, train_config, workdir, FLAGS.timeout,
                                              legacy_env))
          else:
            runs[setup].append(measure_setup(setup, train_config, workdir, FLAGS.timeout,
                                             ps_bytes=FLAGS.sizing,
                                             profile_ms=FLAGS.profile_ms, ours=ours))
        except SetupFailedError as e:
          print(f"error: {e}", file=sys.stderr)
          return 1
        if not targets:
          logging.info("round %d: %s: %s", r + 1, setup.name, runs[setup][-1])
      if floor:
        transfer_costs.append(loopback_cost(bytes_each_way))
      if not targets:
        # Every round's tables, so that a run cut short still leaves its medians.
        print_report(train_config, setups, runs, r + 1,
                     legacy=any(setup.legacy for setup in setups),
                     sizing_inputs=((parameter_bytes, bytes_each_way, FLAGS.ps_cores,
                                     FLAGS.worker_cores)
                                    if FLAGS.sizing else None),
                     ours=ours, legacy_env=legacy_env, transfer_costs=transfer_costs)
  if targets:
    print(header(train_config, FLAGS.rounds, ours))
    print("\n".join(time_to_accuracy_table(rows, targets, train_config.global_batch_size)))
    print()
    print("\n".join(time_to_accuracy_ratios(rows, targets)))
  return 0


def header(train_config: config_lib.TrainConfig, rounds: int,
           ours: config_lib.TaskOptions = config_lib.TaskOptions(),
           legacy_env: dict | None = None) -> str:
  """The report's first line: what was run, how, on what machine; the second names
  the kernels of ours and, with `legacy_env`, of the r0.12 program."""
  kernels = f"ours: oneDNN {'on' if ours.onednn else 'off (--noonednn)'}"
  if not ours.keep_freed_memory:
    kernels += ", --nokeep_freed_memory"
  if ours.thread_spinning:
    kernels += ", --thread_spinning"
  if not train_config.products_on_ps:
    kernels += ", --noproducts_on_ps"
  if legacy_env is not None:
    kernels += f"; legacy: {onednn.describe(legacy_env)}"
  return (f"global batch {train_config.global_batch_size}, examples/s over steps "
          f"{train_config.checkpoint_interval}-{train_config.max_steps}, "
          f"steps_per_execution {train_config.steps_per_execution}, learning rate "
          f"{train_config.learning_rate:g} {train_config.learning_rate_schedule}, "
          f"{os.cpu_count()} CPUs, {rounds} round(s), load average "
          f"{os.getloadavg()[0]:.1f}\n{kernels}")


def print_report(train_config: config_lib.TrainConfig, setups: tuple, runs: dict,
                 rounds: int, *, legacy: bool, sizing_inputs: tuple | None,
                 ours: config_lib.TaskOptions = config_lib.TaskOptions(),
                 legacy_env: dict | None = None,
                 transfer_costs: list[LoopbackCost] = ()) -> None:
  """The tables of the rounds run so far; `sizing_inputs`: (parameter bytes, bytes
  each way per worker step, ps cores, worker cores); `transfer_costs`: each round's
  loopback_cost of a worker step's bytes each way."""
  print(header(train_config, rounds, ours, legacy_env if legacy else None))
  print("\n".join(throughput_table(setups, runs)))
  floor = transfer_report(runs, list(transfer_costs))
  if floor:
    print()
    print("\n".join(floor))
  if legacy:
    print()
    print("\n".join(legacy_table(runs)))
  if sizing_inputs:
    print()
    print("\n".join(sizing_report(runs, *sizing_inputs)))
  traced = [(f"{setup.name}: {task}", breakdown)
            for setup in setups for measurement in runs[setup][-1:]
            for task, breakdown in measurement.profiles.items()]
  if traced:
    print()
    print("Thread time per step by kind of work, from each task's profiler trace (last round):")
    print("\n".join(profile.table(traced)))
  print(flush=True)

if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
