"""Latency and throughput of the embedded server next to in-process SavedModel calls.

Typical usage, on the main job's export (`make demo` writes runs/demo/model), or on
any export base (`python -m train.export --checkpoint_dir=... --model_dir=...`):

  python -m serving.benchmark --model_base_path=runs/demo/model

It loads the latest version in process (the TF2 loader's signature call, and the
TF1 session the server itself runs) and starts two `python -m serving.server`
child processes, without and with --enable_batching. It then times, in rounds so
that load from other processes spreads evenly over the rows: the in-process
calls, and gRPC Predict through a raw PredictionServiceStub, at batch 1 (one
client, and --concurrency clients as threads) and at --batch_size. It prints one
table (p50/p99 latency per call, images/s) and whether the two aims are met:
gRPC p50 at batch 1 within 1 ms of in process, and batched concurrent batch-1
throughput at least the in-process batch-1 loop's.
"""

import dataclasses
import os
import subprocess
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

import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from model import cnn  # noqa: E402
from model import contract  # noqa: E402
from serving import client  # noqa: E402
from serving.server.servable import Servable  # noqa: E402


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  model_base_path: str
  num_calls: int = 1000  # Calls timed per batch-1 row, over all rounds.
  num_batched_calls: int = 50  # Calls timed per large-batch row, over all rounds.
  rounds: int = 5
  warmup_calls: int = 20
  concurrency: int = 8
  batch_size: int = 100
  batching_parameters_file: str | None = None
  server_flags: tuple = ()  # More `python -m serving.server` flags, for both servers.
  server_startup_timeout_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class Row:
  path: str
  batch_size: int
  clients: int
  p50_ms: float
  p99_ms: float
  images_per_s: float


def time_calls(call_fn, num_calls: int, concurrency: int = 1, warmup_calls: int = 0) -> tuple:
  """(per-call latencies in s, wall time in s) of num_calls calls from `concurrency` threads."""
  for _ in range(warmup_calls):
    call_fn()
  latencies = np.zeros(num_calls)
  counter = iter(range(num_calls))
  lock = threading.Lock()

  def worker_fn():
    while True:
      with lock:
        i = next(counter, None)
      if i is None:
        return
      t = time.perf_counter()
      call_fn()
      latencies[i] = time.perf_counter() - t

  threads = [threading.Thread(target=worker_fn) for _ in range(concurrency)]
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return latencies, time.perf_counter() - start


def make_row(path: str, batch_size: int, clients: int, latencies, wall_s: float) -> Row:
  p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
  return Row(path, batch_size, clients, float(p50), float(p99),
             len(latencies) * batch_size / wall_s)


def start_server_process(model_base_path: str, port: int, extra_flags=(),
                         timeout_s: float = 60.0) -> subprocess.Popen:
  """Starts `python -m serving.server` and waits until its health check says SERVING."""
  # The model is named as the requests name it; the server's default is TF Serving's "default".
  args = ["--use_real_server=never", f"--model_name={contract.DEFAULT_MODEL_NAME}",
          f"--model_base_path={model_base_path}", f"--port={port}",
          "--file_system_poll_wait_seconds=0", *extra_flags]
  process = processes.start_module("serving.server", args, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
  try:
    with grpc.insecure_channel(f"{processes.LOCALHOST}:{port}") as channel:
      client.wait_until_serving(channel, timeout_s, process=process)
  except client.NotServingError as e:
    processes.stop_process(process)
    raise RuntimeError(f"python -m serving.server {' '.join(args)}: {e}: "
                       f"{process.stderr.read()[-2000:]}") from None
  return process


@dataclasses.dataclass
class _Case:
  path: str
  batch_size: int
  clients: int
  call_fn: object
  calls: int
  latencies: list = dataclasses.field(default_factory=list)
  wall_s: float = 0.0


def _run_rounds(cases: list, rounds: int, warmup_calls: int) -> list:
  """Times every case in each of `rounds` rounds, so that load from other processes
  on a shared machine spreads over all rows instead of skewing one."""
  for case in cases:
    time_calls(case.call_fn, 0, warmup_calls=warmup_calls)
  for _ in range(rounds):
    for case in cases:
      latencies, wall_s = time_calls(case.call_fn, max(1, case.calls // rounds), case.clients)
      case.latencies.extend(latencies)
      case.wall_s += wall_s
  return [make_row(c.path, c.batch_size, c.clients, c.latencies, c.wall_s) for c in cases]


def run_benchmark(config: BenchmarkConfig) -> list:
  versions = contract.list_versions(config.model_base_path)
  if not versions:
    raise ValueError(f"no numeric version directory under {config.model_base_path}; expected "
                     "an export such as `python -m train.export` writes")
  export_dir = os.path.join(config.model_base_path, str(versions[-1]))
  images = np.random.default_rng(0).random(
      (max(config.batch_size, 1), cnn.IMAGE_PIXELS), dtype=np.float32)
  n, c = config.batch_size, config.concurrency

  # In process, TF2 loader: what a Python program embedding the model would call.
  signature_fn = tf.saved_model.load(export_dir).signatures[contract.SIGNATURE_NAME]

  def tf2_call_fn(rows):
    keys, batch = tf.constant(np.arange(rows, dtype=np.int64)), tf.constant(images[:rows])
    return lambda: {k: v.numpy() for k, v in signature_fn(key=keys, image=batch).items()}

  # In process, TF1 session: the server's own path without gRPC.
  servable = Servable("benchmark", versions[-1], export_dir)

  def session_call_fn(rows):
    inputs = {contract.KEY: np.arange(rows, dtype=np.int64), contract.IMAGE: images[:rows]}
    return lambda: servable.predict(contract.SIGNATURE_NAME, inputs)

  batching_flags = ["--enable_batching"]
  if config.batching_parameters_file:
    batching_flags.append(f"--batching_parameters_file={config.batching_parameters_file}")
  servers, channels = [], []
  try:
    stubs = {}
    for label, own_flags in (("gRPC Predict", []), ("gRPC Predict --enable_batching",
                                                     batching_flags)):
      (port,) = processes.pick_free_ports(1)
      logging.info("Starting `python -m serving.server %s` on port %d", " ".join(own_flags),
                   port)
      servers.append(start_server_process(config.model_base_path, port,
                                          [*config.server_flags, *own_flags],
                                          config.server_startup_timeout_s))
      channels.append(grpc.insecure_channel(f"{processes.LOCALHOST}:{port}"))
      stubs[label] = prediction_service_pb2_grpc.PredictionServiceStub(channels[-1])

    def grpc_call_fn(label, rows):
      request = contract.make_predict_request(np.arange(rows), images[:rows])
      stub = stubs[label]
      return lambda: stub.Predict(request, timeout=30)

    plain, batched = stubs
    b1, bn = config.num_calls, config.num_batched_calls
    cases = [
        _Case("in-process TF2 signature", 1, 1, tf2_call_fn(1), b1),
        _Case("in-process TF1 session", 1, 1, session_call_fn(1), b1),
        _Case(plain, 1, 1, grpc_call_fn(plain, 1), b1),
        _Case(plain, 1, c, grpc_call_fn(plain, 1), b1),
        _Case(batched, 1, c, grpc_call_fn(batched, 1), b1),
        _Case("in-process TF2 signature", n, 1, tf2_call_fn(n), bn),
        _Case("in-process TF1 session", n, 1, session_call_fn(n), bn),
        _Case(plain, n, 1, grpc_call_fn(plain, n), bn),
    ]
    return _run_rounds(cases, config.rounds, config.warmup_calls)
  finally:
    for channel in channels:
      channel.close()
    processes.stop_processes(servers, grace_s=15)
    servable.close()


def check_aims(rows: list) -> list:
  """The embedded server's two targets, each as one line with the numbers: gRPC adds
  at most 1 ms to an in-process call at batch 1, and batching lets concurrent batch-1
  clients reach at least the in-process batch-1 loop's throughput."""
  def find(path, batch_size, clients):
    return next(r for r in rows if (r.path, r.batch_size, r.clients) == (path, batch_size, clients))
  in_process = [r for r in rows if r.path.startswith("in-process") and r.batch_size == 1]
  fastest_p50 = min(in_process, key=lambda r: r.p50_ms)
  fastest_loop = max(in_process, key=lambda r: r.images_per_s)
  grpc_one = find("gRPC Predict", 1, 1)
  batched = next(r for r in rows if "batching" in r.path)
  gap = grpc_one.p50_ms - fastest_p50.p50_ms
  return [
      f"gRPC p50 at batch 1 is {gap:+.2f} ms from the fastest in-process call "
      f"({fastest_p50.path}): aim <= 1 ms {'met' if gap <= 1 else 'NOT met'}",
      f"batched {batched.clients}-client batch-1 throughput {batched.images_per_s:.0f} images/s "
      f"vs the fastest in-process batch-1 loop ({fastest_loop.path}) "
      f"{fastest_loop.images_per_s:.0f}: aim >= "
      f"{'met' if batched.images_per_s >= fastest_loop.images_per_s else 'NOT met'}",
  ]


def format_table(rows: list) -> str:
  header = (f"{'path':<40} {'batch':>5} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'images/s':>9}")
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(f"{r.path:<40} {r.batch_size:>5} {r.clients:>7} {r.p50_ms:>8.2f} "
                 f"{r.p99_ms:>8.2f} {r.images_per_s:>9.0f}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The command line's flags; their defaults are BenchmarkConfig's."""
  c, f = BenchmarkConfig, dict(flag_values=flag_values)
  flags.DEFINE_string("model_base_path", None, "Export base with numeric version "
                      "directories (python -m train.export writes one).", required=True, **f)
  flags.DEFINE_integer("num_calls", c.num_calls, "Calls timed per batch-1 row.", **f)
  flags.DEFINE_integer("num_batched_calls", c.num_batched_calls,
                       "Calls timed per --batch_size row.", **f)
  flags.DEFINE_integer("rounds", c.rounds, "Rounds over all rows; each row runs "
                       "num_calls / rounds calls per round.", **f)
  flags.DEFINE_integer("concurrency", c.concurrency, "Concurrent clients.", **f)
  flags.DEFINE_integer("batch_size", c.batch_size, "The large batch.", **f)
  flags.DEFINE_string("batching_parameters_file", c.batching_parameters_file,
                      "BatchingParameters text proto for the --enable_batching server; "
                      "default: TF Serving's defaults.", **f)
  flags.DEFINE_list("server_flags", None, "More flags for both servers, e.g. "
                    "--server_flags=--tensorflow_session_parallelism=1.", **f)


def config_from_flags(flag_values: flags.FlagValues) -> BenchmarkConfig:
  f = flag_values
  return BenchmarkConfig(
      model_base_path=f.model_base_path, num_calls=f.num_calls,
      num_batched_calls=f.num_batched_calls, rounds=f.rounds, concurrency=f.concurrency,
      batch_size=f.batch_size, batching_parameters_file=f.batching_parameters_file,
      server_flags=tuple(f.server_flags or ()))


def main(argv):
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  config = config_from_flags(FLAGS)
  load_before = os.getloadavg()[0]
  rows = run_benchmark(config)
  print(f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; server flags: {' '.join(config.server_flags) or '-'}")
  print(format_table(rows))
  print("\n".join(check_aims(rows)))


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
