"""Load test of the embedded server: many clients of batch-1 Predicts for a while.

Typical usage, on the main job's export (`make demo` writes runs/demo/model), or on
any export base (`python -m train.export --checkpoint_dir=... --model_dir=...`):

  python -m serving.load_test --model_base_path=runs/demo/model --clients=8 --duration_s=60

It starts `python -m serving.server` as a child process, warms it up, then runs
--clients threads, each on a channel of its own, sending batch-1 Predicts back to
back for --duration_s. It prints the requests answered, the errors by status, the
latency percentiles, and the server's resident memory (RSS) and open file
descriptors at the start and the end of the run (and the RSS peak in between):
a server that leaks shows it in the last two.
"""

import collections
import dataclasses
import os
import re
import threading
import time

from absl import flags
from absl import logging
import grpc
import numpy as np

from common import processes
from common import runtime
from common import settings

if __name__ == "__main__":
  runtime.import_tensorflow()  # The program: quiet TensorFlow's start-up, before it loads.

from model import cnn  # noqa: E402
from model import contract  # noqa: E402


@dataclasses.dataclass(frozen=True)
class LoadTestConfig:
  model_base_path: str
  clients: int = 8
  duration_s: float = 60.0
  warmup_requests: int = 50
  server_flags: tuple = ()  # More `python -m serving.server` flags.
  request_timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class ProcessSample:
  rss_bytes: int
  open_fds: int


@dataclasses.dataclass(frozen=True)
class LoadTestResult:
  requests: int
  errors: dict  # status name -> count
  seconds: float
  latencies_s: np.ndarray
  start: ProcessSample
  end: ProcessSample
  peak: ProcessSample  # The largest RSS and open files seen during the run.


def sample_process(pid: int) -> ProcessSample:
  """RSS and open file descriptors of a process, from /proc."""
  with open(f"/proc/{pid}/status") as f:
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", f.read())[1])
  return ProcessSample(rss_kb * 1024, len(os.listdir(f"/proc/{pid}/fd")))


def run_clients(target: str, request, clients: int, duration_s: float, timeout_s: float,
                on_tick=None) -> tuple:
  """(requests answered, {status: errors}, latencies) of `clients` threads calling Predict
  back to back for duration_s, each on a connection of its own. on_tick() runs about every
  second."""
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  errors = collections.Counter()
  latencies = [[] for _ in range(clients)]
  stop = threading.Event()
  lock = threading.Lock()

  def client_fn(i):
    # A subchannel pool of its own: a connection of its own, as a separate client has
    # (channels of one process to one target otherwise share a connection).
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      while not stop.is_set():
        start = time.perf_counter()
        try:
          stub.Predict(request, timeout=timeout_s)
          latencies[i].append(time.perf_counter() - start)
        except grpc.RpcError as e:
          with lock:
            errors[e.code().name] += 1

  threads = [threading.Thread(target=client_fn, args=(i,), name=f"client-{i}")
             for i in range(clients)]
  for t in threads:
    t.start()
  deadline = time.monotonic() + duration_s
  while time.monotonic() < deadline:
    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if on_tick:
      on_tick()
  stop.set()
  for t in threads:
    t.join()
  all_latencies = np.concatenate([np.asarray(l) for l in latencies]) if clients else np.zeros(0)
  return len(all_latencies), dict(errors), all_latencies


def run_load_test(config: LoadTestConfig) -> LoadTestResult:
  from serving import benchmark
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  request = contract.make_predict_request(
      [0], np.random.default_rng(0).random((1, cnn.IMAGE_PIXELS), dtype=np.float32))
  (port,) = processes.pick_free_ports(1)
  process = benchmark.start_server_process(config.model_base_path, port, config.server_flags)
  target = f"{processes.LOCALHOST}:{port}"
  try:
    with grpc.insecure_channel(target) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      for _ in range(config.warmup_requests):
        stub.Predict(request, timeout=config.request_timeout_s)
    start = sample_process(process.pid)
    samples = [start]

    def on_tick():
      samples.append(sample_process(process.pid))

    began = time.monotonic()
    requests, errors, latencies = run_clients(target, request, config.clients,
                                              config.duration_s, config.request_timeout_s,
                                              on_tick)
    seconds = time.monotonic() - began
    end = sample_process(process.pid)
    samples.append(end)
    peak = ProcessSample(max(s.rss_bytes for s in samples), max(s.open_fds for s in samples))
    return LoadTestResult(requests, errors, seconds, latencies, start, end, peak)
  finally:
    processes.stop_process(process)


def format_result(config: LoadTestConfig, result: LoadTestResult) -> str:
  p50, p99 = (np.percentile(result.latencies_s, [50, 99]) * 1e3 if result.requests
              else (float("nan"),) * 2)
  mib = 2**20
  errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())) or "none"
  return "\n".join([
      f"{config.clients} clients x {result.seconds:.0f} s of batch-1 Predict "
      f"({os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f})",
      f"requests answered: {result.requests} ({result.requests / result.seconds:.0f}/s), "
      f"errors: {sum(result.errors.values())} ({errors})",
      f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms",
      f"server RSS: {result.start.rss_bytes / mib:.0f} MiB at start, "
      f"{result.end.rss_bytes / mib:.0f} MiB at end, peak {result.peak.rss_bytes / mib:.0f} MiB",
      f"server open file descriptors: {result.start.open_fds} at start, "
      f"{result.end.open_fds} at end, peak {result.peak.open_fds}",
  ])


def config_from_flags(f) -> LoadTestConfig:
  if not contract.list_versions(f.model_base_path):
    raise ValueError(f"--model_base_path {f.model_base_path} has no numeric version folder; "
                     "expected an export such as `python -m train.export` writes")
  return LoadTestConfig(model_base_path=f.model_base_path, clients=f.clients,
                        duration_s=f.duration_s, server_flags=tuple(f.server_flags or ()))


def main(argv):
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  try:
    config = config_from_flags(FLAGS)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info("Load test: %d clients for %g s against python -m serving.server", config.clients,
               config.duration_s)
  result = run_load_test(config)
  print(format_result(config, result))
  return 1 if result.errors or not result.requests else 0


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  c, f = LoadTestConfig, dict(flag_values=flag_values)
  flags.DEFINE_string("model_base_path", None, "Export base with numeric version folders.",
                      required=True, **f)
  flags.DEFINE_integer("clients", c.clients, "Concurrent clients.", lower_bound=1, **f)
  flags.DEFINE_float("duration_s", c.duration_s, "Seconds of load.", **f)
  flags.DEFINE_list("server_flags", None, "More flags for the server, e.g. "
                    "--server_flags=--enable_batching.", **f)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
