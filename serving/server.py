"""A TF Serving-compatible gRPC model server for SavedModels in TF Serving's directory layout.

Typical usage:

  python -m serving.server --model_base_path=/tmp/model --port=8500 --rest_api_port=8501

serves the latest numeric version under /tmp/model/ as model "mnist" over TF
Serving's PredictionService and ModelService (plus gRPC health checking and
reflection), picks up new versions every --file_system_poll_wait_seconds, and with
--rest_api_port answers /v1/models/mnist:predict. Several models:

  python -m serving.server --model_config_file=/tmp/models.config

where the file is a ModelServerConfig text proto, as for tensorflow_model_server.
When `tensorflow_model_server` is on the PATH, --use_real_server=auto (the default)
runs that binary with the same flags instead; --use_real_server=never keeps this one.

Like TF Serving, it loads each version with the TF1 session loader (a Session over
the SavedModel's graph, run by the signature's tensor names) and answers tensors as
typed repeated fields unless --enable_serialization_as_tensor_content.
"""

import collections
import contextlib
import dataclasses
import functools
import os
import re
import shutil
import signal
import threading
import time
from concurrent import futures

from absl import logging
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
import numpy as np
from google.protobuf import text_format

from model import runtime

# Quiet TensorFlow's start-up before anything else imports it (a no-op once loaded).
tf = runtime.import_tensorflow()

from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2
from tensorflow_serving.config import model_server_config_pb2

from model import contract
from serving import rest
from serving import tensors
from serving.tensors import ServingError

REAL_SERVER_BINARY = "tensorflow_model_server"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving reads at most this many records from a warmup file.
MAX_WARMUP_RECORDS = 1000
INIT_OP_SIGNATURE = "__saved_model_init_op"
TENSORFLOW_PLATFORM = "tensorflow"
# TF Serving builds its gRPC server with SetMaxMessageSize(INT32_MAX).
MAX_MESSAGE_BYTES = 2**31 - 1
HEALTH_SERVICES = ("", prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"].full_name, model_service_pb2.DESCRIPTOR.services_by_name[
        "ModelService"].full_name)

_VERSION_RE = re.compile(r"^\d+$")
_State = get_model_status_pb2.ModelVersionStatus.State
_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
_CLASSIFY_METHOD = "tensorflow/serving/classify"
_REGRESS_METHOD = "tensorflow/serving/regress"


# ----------------------------------------------------------------------------
# Options and the text-proto config files of tensorflow_model_server.


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """TF Serving's BatchingParameters; the defaults are its BasicBatchScheduler's."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  num_batch_threads: int = os.cpu_count() or 1
  max_enqueued_batches: int = 10
  # Batches are padded up to the next of these sizes (with copies of their first
  # row) so that TensorFlow sees few distinct shapes; empty: no padding.
  allowed_batch_sizes: tuple = ()

  def __post_init__(self):
    for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
      if getattr(self, name) < 1:
        raise ValueError(f"batching {name} is {getattr(self, name)}; expected at least 1")
    if self.batch_timeout_micros < 0:
      raise ValueError(f"batching batch_timeout_micros is {self.batch_timeout_micros}; "
                       "expected 0 or more")
    sizes = list(self.allowed_batch_sizes)
    if sizes and (sizes != sorted(set(sizes)) or sizes[0] < 1
                  or sizes[-1] != self.max_batch_size):
      raise ValueError(f"batching allowed_batch_sizes {sizes} must increase and end with "
                       f"max_batch_size {self.max_batch_size}, as in TF Serving")


@dataclasses.dataclass(frozen=True)
class SslOptions:
  """TF Serving's SSLConfig: PEM contents (not paths), as in its --ssl_config_file."""
  server_key: str
  server_cert: str
  custom_ca: str = ""
  client_verify: bool = False


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """Everything the embedded server needs; `main` builds it from the flags."""
  model_config_list: tuple  # of model_server_config_pb2.ModelConfig
  host: str = "127.0.0.1"
  port: int = 8500  # 0 picks a free port; ModelServer.port tells which.
  rest_api_port: int = 0  # 0: no REST endpoint.
  file_system_poll_wait_seconds: float = 1.0  # 0: look for versions once.
  batching: BatchingOptions | None = None
  tensor_content: bool = False
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 1
  ssl: SslOptions | None = None
  grpc_max_threads: int = max(32, 4 * (os.cpu_count() or 1))
  session_parallelism: int = 0  # 0: TensorFlow picks.
  max_message_bytes: int = MAX_MESSAGE_BYTES


def make_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
  """The single-model config tensorflow_model_server builds from --model_name/--model_base_path."""
  return model_server_config_pb2.ModelConfig(
      name=name, base_path=base_path, model_platform=TENSORFLOW_PLATFORM)


def parse_model_config_file(path: str) -> tuple:
  """Reads a ModelServerConfig text proto; returns its model_config_list configs.

  Raises ValueError naming the file and the problem (a parse error, a custom
  config, a platform other than tensorflow, a duplicate or empty name).
  """
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise ValueError(f"--model_config_file {path} is not a ModelServerConfig text proto: "
                     f"{e}") from e
  if config.WhichOneof("config") == "custom_model_config":
    raise ValueError(f"--model_config_file {path} has custom_model_config; expected "
                     "model_config_list")
  configs = tuple(config.model_config_list.config)
  validate_model_configs(configs, source=path)
  return configs


def validate_model_configs(configs, source: str = "model config") -> None:
  names = set()
  for c in configs:
    if not c.name or not c.base_path:
      config_text = text_format.MessageToString(c, as_one_line=True)
      raise ValueError(f"{source}: model config {config_text!r} needs both a name and a "
                       "base_path")
    if c.name in names:
      raise ValueError(f"{source}: model name {c.name!r} appears twice; expected unique names")
    if c.model_platform not in ("", TENSORFLOW_PLATFORM):
      raise ValueError(f"{source}: model {c.name!r} has model_platform {c.model_platform!r}; "
                       f"expected {TENSORFLOW_PLATFORM!r}")
    names.add(c.name)
  if not names:
    raise ValueError(f"{source}: no models configured; expected at least one config")


@functools.lru_cache(maxsize=None)
def _config_message_classes():
  """BatchingParameters and SSLConfig message classes.

  The tensorflow-serving-api wheel ships neither session_bundle_config_pb2 nor
  ssl_config_pb2, so where they are missing the two messages are declared here,
  field for field as in TF Serving's .proto files, in a private descriptor pool
  (a private pool cannot clash with the real modules if they are imported later).
  """
  try:
    from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    batching_cls = session_bundle_config_pb2.BatchingParameters
  except ImportError:
    batching_cls = None
  try:
    from tensorflow_serving.config import ssl_config_pb2
    ssl_cls = ssl_config_pb2.SSLConfig
  except ImportError:
    ssl_cls = None
  if batching_cls and ssl_cls:
    return batching_cls, ssl_cls

  from google.protobuf import descriptor_pb2
  from google.protobuf import descriptor_pool
  from google.protobuf import message_factory
  from google.protobuf import wrappers_pb2
  F = descriptor_pb2.FieldDescriptorProto
  pool = descriptor_pool.DescriptorPool()
  wrappers = descriptor_pb2.FileDescriptorProto()
  wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
  pool.Add(wrappers)
  file = descriptor_pb2.FileDescriptorProto(
      name="serving/tf_serving_config_subset.proto", package="tensorflow.serving",
      syntax="proto3", dependency=["google/protobuf/wrappers.proto"])

  def add_message(name, fields):
    message = file.message_type.add(name=name)
    for number, (field_name, kind, type_name, label) in enumerate(fields, start=1):
      message.field.add(name=field_name, number=number, type=kind, type_name=type_name,
                        label=label)

  optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
  int64_value = (F.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional)
  add_message("BatchingParameters", [
      ("max_batch_size", *int64_value),
      ("batch_timeout_micros", *int64_value),
      ("max_enqueued_batches", *int64_value),
      ("num_batch_threads", *int64_value),
      ("thread_pool_name", F.TYPE_MESSAGE, ".google.protobuf.StringValue", optional),
      ("allowed_batch_sizes", F.TYPE_INT64, None, repeated),
      ("pad_variable_length_inputs", F.TYPE_BOOL, None, optional),
  ])
  add_message("SSLConfig", [
      ("server_key", F.TYPE_STRING, None, optional),
      ("server_cert", F.TYPE_STRING, None, optional),
      ("custom_ca", F.TYPE_STRING, None, optional),
      ("client_verify", F.TYPE_BOOL, None, optional),
  ])
  pool.Add(file)
  get = lambda name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
  return batching_cls or get("BatchingParameters"), ssl_cls or get("SSLConfig")


def _parse_text_proto(path: str, message_cls, flag: str):
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  message = message_cls()
  try:
    # Newer TF Serving releases add fields; those are logged and skipped.
    text_format.Parse(text, message, allow_unknown_field=True)
  except text_format.ParseError as e:
    raise ValueError(f"{flag} {path} is not a {message_cls.DESCRIPTOR.name} text proto: "
                     f"{e}") from e
  return message


def parse_batching_parameters_file(path: str) -> BatchingOptions:
  """Reads TF Serving's BatchingParameters text proto (`max_batch_size { value: 8 }`)."""
  params = _parse_text_proto(path, _config_message_classes()[0], "--batching_parameters_file")
  values = {f.name: getattr(params, f.name).value
            for f in dataclasses.fields(BatchingOptions)
            if f.name != "allowed_batch_sizes" and params.HasField(f.name)}
  if params.pad_variable_length_inputs:
    logging.warning("--batching_parameters_file %s: pad_variable_length_inputs is not "
                    "supported here; ignored", path)
  try:
    return BatchingOptions(**values, allowed_batch_sizes=tuple(params.allowed_batch_sizes))
  except ValueError as e:
    raise ValueError(f"--batching_parameters_file {path}: {e}") from e


def parse_ssl_config_file(path: str) -> SslOptions:
  """Reads TF Serving's SSLConfig text proto (PEM contents inline)."""
  config = _parse_text_proto(path, _config_message_classes()[1], "--ssl_config_file")
  if not config.server_key or not config.server_cert:
    raise ValueError(f"--ssl_config_file {path} needs server_key and server_cert (PEM text)")
  if config.client_verify and not config.custom_ca:
    raise ValueError(f"--ssl_config_file {path} sets client_verify but no custom_ca to "
                     "verify client certificates against")
  return SslOptions(config.server_key, config.server_cert, config.custom_ca,
                    config.client_verify)


# ----------------------------------------------------------------------------
# Versions on disk.


def list_versions(base_path: str) -> list[int]:
  """Numeric version directories under `base_path`, ascending; `.staging-*` and the like are not."""
  if not tf.io.gfile.isdir(base_path):
    return []
  versions = []
  for name in tf.io.gfile.listdir(base_path):
    name = name.rstrip("/")
    if _VERSION_RE.match(name) and tf.io.gfile.isdir(os.path.join(base_path, name)):
      versions.append(int(name))
  return sorted(versions)


def select_versions(on_disk: list[int], policy) -> set[int]:
  """The versions a ServableVersionPolicy aspires to serve (default: the latest one)."""
  choice = policy.WhichOneof("policy_choice")
  if choice == "all":
    return set(on_disk)
  if choice == "specific":
    return set(policy.specific.versions) & set(on_disk)
  num_versions = policy.latest.num_versions if choice == "latest" else 0
  return set(sorted(on_disk)[-max(1, num_versions):])


def status_from_exception(e: Exception) -> ServingError:
  """Maps errors from a session run to the gRPC status TF Serving would answer."""
  if isinstance(e, ServingError):
    return e
  if isinstance(e, tf.errors.OpError):
    return ServingError(_CODE_BY_VALUE.get(e.error_code, grpc.StatusCode.INTERNAL), e.message)
  return ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


# ----------------------------------------------------------------------------
# Server-side batching.


class _Task:
  __slots__ = ("feeds", "rows", "done", "outputs", "error")

  def __init__(self, feeds, rows):
    self.feeds, self.rows = feeds, rows
    self.done = threading.Event()
    self.outputs = self.error = None


class BatchScheduler:
  """Merges concurrent requests of one signature into one session call (--enable_batching).

  A batch thread takes the oldest queued request and every queued one that still
  fits into max_batch_size rows; with batch_timeout_micros > 0 it waits that long
  for more before running. Inputs are concatenated on dimension 0 and the
  outputs split back by each request's rows, so keys stay with their images.
  """

  def __init__(self, run_fn, options: BatchingOptions, name: str):
    self._run_fn = run_fn  # list of feed arrays -> list of output arrays
    self._options = options
    self._queue = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._closed = False
    self.num_batches = 0  # Batches run and requests in them, for tests and logs.
    self.num_requests = 0
    self._threads = [threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
                     for i in range(options.num_batch_threads)]
    for t in self._threads:
      t.start()

  def run(self, feeds: list, rows: int) -> list:
    options = self._options
    if rows == 0 or rows > options.max_batch_size:
      # A request bigger than a batch runs on its own rather than being refused.
      return self._run_fn(feeds)
    task = _Task(feeds, rows)
    with self._cond:
      if self._closed:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "the servable is unloading")
      if self._queued_rows + rows > options.max_enqueued_batches * options.max_batch_size:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"the batch queue is full ({self._queued_rows} rows queued, "
                           f"max_enqueued_batches={options.max_enqueued_batches})")
      self._queue.append(task)
      self._queued_rows += rows
      self._cond.notify()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def close(self) -> None:
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for t in self._threads:
      t.join()

  def _take_batch(self) -> list:
    timeout_s = self._options.batch_timeout_micros / 1e6
    with self._cond:
      while not self._queue and not self._closed:
        self._cond.wait()
      if not self._queue:
        return []
      batch = [self._queue.popleft()]
      rows = batch[0].rows
      deadline = time.monotonic() + timeout_s
      while rows < self._options.max_batch_size:
        if self._queue:
          if rows + self._queue[0].rows > self._options.max_batch_size:
            break
          batch.append(self._queue.popleft())
          rows += batch[-1].rows
          continue
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._closed:
          break
        self._cond.wait(remaining)
      self._queued_rows -= rows
      self.num_batches += 1
      self.num_requests += len(batch)
      return batch

  def _loop(self) -> None:
    while True:
      batch = self._take_batch()
      if not batch:
        return
      try:
        self._run_batch(batch)
      except Exception as e:  # pylint: disable=broad-except
        error = status_from_exception(e)
        for task in batch:
          task.error = error
      finally:
        for task in batch:
          task.done.set()

  def _run_batch(self, batch: list) -> None:
    if len(batch) == 1:
      feeds = batch[0].feeds
    else:
      feeds = [np.concatenate(arrays) for arrays in zip(*(t.feeds for t in batch))]
    rows = sum(t.rows for t in batch)
    padded_rows = next((s for s in self._options.allowed_batch_sizes if s >= rows), rows)
    if padded_rows > rows:
      feeds = [np.concatenate([f, np.repeat(f[:1], padded_rows - rows, axis=0)]) for f in feeds]
    outputs = self._run_fn(feeds)
    for out in outputs:
      if out.ndim == 0 or out.shape[0] != padded_rows:
        raise ServingError(grpc.StatusCode.INTERNAL,
                           f"a batched output has shape {list(out.shape)}; expected "
                           f"dimension 0 to be the batch size {padded_rows}")
    if len(batch) == 1:
      batch[0].outputs = [out[:rows] for out in outputs]
      return
    splits = np.cumsum([t.rows for t in batch])
    parts = [np.split(out[:rows], splits[:-1]) for out in outputs]
    for i, task in enumerate(batch):
      task.outputs = [p[i] for p in parts]


# ----------------------------------------------------------------------------
# One loaded version.


class Servable:
  """One version of one model, loaded as TF Serving's SavedModelBundle: a Session on its graph."""

  def __init__(self, name: str, version: int, path: str, *,
               session_config=None, batching: BatchingOptions | None = None):
    self.name, self.version, self.path = name, version, path
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
    with self.graph.as_default():
      meta_graph = tf.compat.v1.saved_model.loader.load(
          self.session, [tf.saved_model.SERVING], path)
    self.signatures = {k: v for k, v in meta_graph.signature_def.items()
                       if k != INIT_OP_SIGNATURE}
    self.warmup_requests_run = 0
    self._batching = batching
    self._callables = {}
    self._batchers = {}
    self._lock = threading.RLock()  # _batcher makes a callable while holding it.
    self._in_flight = 0
    self._cond = threading.Condition()
    self._closed = False

  def signature(self, signature_name: str):
    signature_name = signature_name or contract.SIGNATURE_NAME
    try:
      return signature_name, self.signatures[signature_name]
    except KeyError:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{self.name}' version {self.version} has no signature "
                         f"'{signature_name}'; expected one of {sorted(self.signatures)}") from None

  def predict(self, signature_name: str, inputs: dict, output_filter=()) -> tuple:
    """Validates and runs one request; returns (signature name, {output name: array})."""
    signature_name, signature = self.signature(signature_name)
    tensors.check_inputs(signature_name, signature, inputs)
    output_names = tensors.check_output_filter(signature_name, signature, output_filter)
    input_names = tuple(sorted(inputs))
    feeds = [inputs[n] for n in input_names]
    key = (signature_name, input_names, output_names)
    batcher = self._batcher(key, signature) if self._batching else None
    if batcher is not None:
      outputs = batcher.run(feeds, feeds[0].shape[0])
    else:
      outputs = self._callable(key)(feeds)
    return signature_name, dict(zip(output_names, outputs))

  def _callable(self, key):
    fn = self._callables.get(key)
    if fn is None:
      signature_name, input_names, output_names = key
      signature = self.signatures[signature_name]
      options = config_pb2.CallableOptions(
          feed=[signature.inputs[n].name for n in input_names],
          fetch=[signature.outputs[n].name for n in output_names])
      with self._lock:
        # A session callable (TF_SessionMakeCallable) skips the feed and fetch
        # handling that Session.run and Session.make_callable redo on every call:
        # about 0.3 ms of a 1 ms batch-1 request. The method is private, but it is
        # what tf.compat.v1 Keras has long run its functions with.
        # pylint: disable-next=protected-access
        session_fn = self.session._make_callable_from_options(options)
        fn = self._callables[key] = lambda feeds: session_fn(*feeds)
    return fn

  def _batcher(self, key, signature):
    if not tensors.is_batch_major(signature):
      return None
    batcher = self._batchers.get(key)
    if batcher is None:
      with self._lock:
        batcher = self._batchers.get(key)
        if batcher is None:
          batcher = self._batchers[key] = BatchScheduler(
              self._callable(key), self._batching, f"{self.name}-{self.version}-{key[0]}")
    return batcher

  def acquire(self) -> None:
    with self._cond:
      if self._closed:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"model '{self.name}' version {self.version} is unloading")
      self._in_flight += 1

  def release(self) -> None:
    with self._cond:
      self._in_flight -= 1
      self._cond.notify_all()

  def close(self, drain_timeout_s: float = 30.0) -> None:
    """Waits for requests in flight (up to drain_timeout_s), then frees the session."""
    with self._cond:
      self._closed = True
      self._cond.wait_for(lambda: self._in_flight == 0, timeout=drain_timeout_s)
    for (signature_name, _, _), batcher in self._batchers.items():
      batcher.close()
      logging.info("Model %s version %d signature %s ran %d requests in %d batches",
                   self.name, self.version, signature_name, batcher.num_requests,
                   batcher.num_batches)
    self.session.close()


def run_warmup(servable: Servable, iterations: int = 1) -> int:
  """Replays the version's assets.extra/tf_serving_warmup_requests; returns how many ran.

  Like TF Serving, a warmup request that fails fails the load, and at most
  MAX_WARMUP_RECORDS records are read. The model name in a record is not checked.
  """
  path = os.path.join(servable.path, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return 0
  count = 0
  for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    for _ in range(max(1, iterations)):
      if kind == "predict_log":
        request = log.predict_log.request
        inputs = tensors.decode_inputs(request.inputs)
        servable.predict(request.model_spec.signature_name, inputs, request.output_filter)
      elif kind == "classify_log":
        run_classify(servable, log.classify_log.request)
      elif kind == "regress_log":
        run_regress(servable, log.regress_log.request)
      elif kind == "multi_inference_log":
        run_multi_inference(servable, log.multi_inference_log.request)
      else:
        raise ValueError(f"warmup record {count} in {path} is a {kind}; expected a "
                         "predict, classify, regress or multi_inference log")
    count += 1
  servable.warmup_requests_run = count
  return count


# ----------------------------------------------------------------------------
# All models and their versions.


@dataclasses.dataclass
class _VersionStatus:
  state: int
  error: ServingError | None = None
  servable: Servable | None = None


class ModelManager:
  """Loads, serves and unloads the versions of the configured models.

  `poll_once` compares each model's version directories with its version policy:
  it loads the aspired versions that are new (running their warmup records),
  then unloads the ones no longer aspired, but only once an aspired version is
  available, so a model never goes dark during a swap (TF Serving's
  AvailabilityPreservingPolicy). A version that fails to load is not retried
  until its directory is deleted and published again.
  """

  def __init__(self, model_configs, *, session_config=None,
               batching: BatchingOptions | None = None, enable_model_warmup: bool = True,
               warmup_iterations: int = 1, on_change=None):
    validate_model_configs(model_configs)
    self._configs = {c.name: c for c in model_configs}
    self._versions = {c.name: {} for c in model_configs}  # name -> version -> _VersionStatus
    self._session_config = session_config
    self._batching = batching
    self._enable_model_warmup = enable_model_warmup
    self._warmup_iterations = warmup_iterations
    self._on_change = on_change or (lambda manager: None)
    self._lock = threading.Lock()
    self._poll_lock = threading.Lock()
    self._stop = threading.Event()
    self._poll_thread = None

  # -- loading --

  def poll_once(self) -> None:
    with self._poll_lock:
      with self._lock:
        configs = list(self._configs.values())
        removed = [n for n in self._versions if n not in self._configs]
      for name in removed:
        self._unload_model(name)
      for config in configs:
        self._poll_model(config)
      self._on_change(self)

  def _poll_model(self, config) -> None:
    try:
      on_disk = list_versions(config.base_path)
    except tf.errors.OpError as e:
      logging.warning("Cannot list versions of model %s under %s: %s", config.name,
                      config.base_path, e)
      return
    aspired = select_versions(on_disk, config.model_version_policy)
    with self._lock:
      versions = self._versions[config.name]
      # A failed or unloaded version whose directory is gone is forgotten, so that
      # it loads afresh if it is published again.
      for version in [v for v, s in versions.items() if s.state == _State.END
                      and v not in on_disk]:
        del versions[version]
      # Versions unloaded cleanly load again when aspired again (say, the newer
      # one was deleted); failed ones stay failed.
      held = {v for v, s in versions.items() if s.state != _State.END or s.error is not None}
    for version in sorted(aspired - held):
      self._load(config, version)
    with self._lock:
      versions = self._versions[config.name]
      any_aspired_available = any(versions[v].state == _State.AVAILABLE
                                  for v in aspired if v in versions)
      to_unload = [v for v, s in versions.items()
                   if s.state == _State.AVAILABLE and v not in aspired
                   and (any_aspired_available or v not in on_disk)]
    for version in to_unload:
      self._unload(config.name, version)
    if not on_disk:
      logging.log_first_n(logging.WARNING, "No versions of model %s found under %s", 10,
                          config.name, config.base_path)

  def _load(self, config, version: int) -> None:
    name, path = config.name, os.path.join(config.base_path, str(version))
    with self._lock:
      self._versions[name][version] = _VersionStatus(_State.LOADING)
    logging.info("Loading model %s version %d from %s", name, version, path)
    start = time.monotonic()
    servable = None
    try:
      servable = Servable(name, version, path, session_config=self._session_config,
                          batching=self._batching)
      warmed = run_warmup(servable, self._warmup_iterations) if self._enable_model_warmup else 0
    except Exception as e:  # pylint: disable=broad-except
      error = status_from_exception(e)
      if servable is not None:
        servable.close()
      logging.error("Failed to load model %s version %d from %s: %s", name, version, path,
                    error)
      with self._lock:
        self._versions[name][version] = _VersionStatus(_State.END, error=error)
      return
    with self._lock:
      self._versions[name][version] = _VersionStatus(_State.AVAILABLE, servable=servable)
    logging.info("Model %s version %d is available (loaded in %.2f s, %d warmup requests)",
                 name, version, time.monotonic() - start, warmed)

  def _unload(self, name: str, version: int) -> None:
    with self._lock:
      status = self._versions[name][version]
      servable, status.servable, status.state = status.servable, None, _State.UNLOADING
    logging.info("Unloading model %s version %d", name, version)
    servable.close()
    with self._lock:
      status.state = _State.END

  def _unload_model(self, name: str) -> None:
    with self._lock:
      versions = [v for v, s in self._versions[name].items() if s.servable is not None]
    for version in versions:
      self._unload(name, version)
    with self._lock:
      del self._versions[name]

  def reload_config(self, model_configs) -> None:
    """Serves exactly `model_configs` from now on (ModelService.HandleReloadConfigRequest)."""
    validate_model_configs(model_configs)
    with self._lock:
      self._configs = {c.name: c for c in model_configs}
      for c in model_configs:
        self._versions.setdefault(c.name, {})
    self.poll_once()

  def start_polling(self, interval_s: float) -> None:
    """Polls every interval_s seconds in a thread; 0: never (the first poll is the caller's)."""
    if interval_s <= 0:
      return

    def poll_fn():
      while not self._stop.wait(interval_s):
        try:
          self.poll_once()
        except Exception:  # pylint: disable=broad-except
          logging.exception("Polling the model directories failed; retrying in %g s",
                            interval_s)

    self._poll_thread = threading.Thread(target=poll_fn, name="version-poll", daemon=True)
    self._poll_thread.start()

  def close(self) -> None:
    self._stop.set()
    if self._poll_thread is not None:
      self._poll_thread.join()
    with self._poll_lock:
      for name in list(self._versions):
        self._unload_model(name)

  # -- serving --

  @contextlib.contextmanager
  def servable(self, name: str, version: int | None = None, label: str | None = None):
    """Resolves a ModelSpec to an available version and holds it for the request."""
    with self._lock:
      servable = self._resolve(name, version, label)
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def _resolve(self, name: str, version: int | None, label: str | None) -> Servable:
    if not name:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         "the request's model_spec has no model name; expected one of "
                         f"{sorted(self._configs)}")
    if name not in self._configs:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{name}' is not served; expected one of {sorted(self._configs)}")
    available = {v: s.servable for v, s in self._versions[name].items()
                 if s.state == _State.AVAILABLE}
    if label:
      labels = self._configs[name].version_labels
      if label not in labels:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' has no version label '{label}'; expected one of "
                           f"{sorted(labels)}")
      version = labels[label]
    if version is None:
      if not available:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"model '{name}' has no version available yet")
      return available[max(available)]
    if version not in available:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{name}' version {version} is not available; expected one of "
                         f"{sorted(available)}")
    return available[version]

  def has_available_version(self) -> bool:
    with self._lock:
      return any(s.state == _State.AVAILABLE for v in self._versions.values() for s in v.values())

  def version_states(self, name: str, version: int | None = None,
                     label: str | None = None) -> list:
    """[(version, state enum, ServingError or None)], newest first, for GetModelStatus."""
    with self._lock:
      if name not in self._configs:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' is not served; expected one of {sorted(self._configs)}")
      if label:
        labels = self._configs[name].version_labels
        if label not in labels:
          raise ServingError(grpc.StatusCode.NOT_FOUND,
                             f"model '{name}' has no version label '{label}'")
        version = labels[label]
      states = [(v, s.state, s.error) for v, s in sorted(self._versions[name].items(),
                                                         reverse=True)]
    if version is not None:
      states = [s for s in states if s[0] == version]
      if not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' has no version {version}")
    return states


# ----------------------------------------------------------------------------
# Classify and Regress, for SavedModels with such signatures (tf.Example input).


def _serialized_examples(input_proto) -> np.ndarray:
  kind = input_proto.WhichOneof("kind")
  if kind == "example_list":
    examples = [e.SerializeToString() for e in input_proto.example_list.examples]
  elif kind == "example_list_with_context":
    # Parsing concatenated serializations merges them: the context's features
    # first, each example's overriding them, as in TF Serving.
    context = input_proto.example_list_with_context.context.SerializeToString()
    examples = [context + e.SerializeToString()
                for e in input_proto.example_list_with_context.examples]
  else:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       "the request's input has no examples; expected example_list or "
                       "example_list_with_context")
  if not examples:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "the request's input has 0 examples")
  return np.array(examples, dtype=object)


def _example_signature(servable: Servable, signature_name: str, method: str):
  signature_name, signature = servable.signature(signature_name)
  if signature.method_name != method:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' has method {signature.method_name!r}; "
                       f"expected {method!r}")
  if len(signature.inputs) != 1:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' has inputs {sorted(signature.inputs)}; "
                       "expected one serialized tf.Example input")
  return signature_name, next(iter(signature.inputs))


def run_classify(servable: Servable, request) -> classification_pb2.ClassificationResult:
  signature_name, input_name = _example_signature(
      servable, request.model_spec.signature_name, _CLASSIFY_METHOD)
  examples = _serialized_examples(request.input)
  _, outputs = servable.predict(signature_name, {input_name: examples})
  classes, scores = outputs.get("classes"), outputs.get("scores")
  rows = len(examples)
  result = classification_pb2.ClassificationResult()
  for i in range(rows):
    out = result.classifications.add()
    n = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    for j in range(n):
      c = out.classes.add()
      if classes is not None:
        c.label = classes.reshape(rows, -1)[i, j].decode()
      if scores is not None:
        c.score = float(scores.reshape(rows, -1)[i, j])
  return result


def run_regress(servable: Servable, request) -> regression_pb2.RegressionResult:
  signature_name, input_name = _example_signature(
      servable, request.model_spec.signature_name, _REGRESS_METHOD)
  examples = _serialized_examples(request.input)
  _, outputs = servable.predict(signature_name, {input_name: examples})
  values = outputs.get("outputs")
  if values is None or values.size != len(examples):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' needs an output 'outputs' with one value "
                       "per example")
  return regression_pb2.RegressionResult(
      regressions=[regression_pb2.Regression(value=float(v)) for v in values.reshape(-1)])


def run_multi_inference(servable: Servable, request) -> inference_pb2.MultiInferenceResponse:
  response = inference_pb2.MultiInferenceResponse()
  for task in request.tasks:
    result = response.results.add()
    result.model_spec.CopyFrom(task.model_spec)
    result.model_spec.version.value = servable.version
    sub_request = classification_pb2.ClassificationRequest(model_spec=task.model_spec,
                                                           input=request.input)
    if task.method_name == _CLASSIFY_METHOD:
      result.classification_result.CopyFrom(run_classify(servable, sub_request))
    elif task.method_name == _REGRESS_METHOD:
      result.regression_result.CopyFrom(run_regress(servable, regression_pb2.RegressionRequest(
          model_spec=task.model_spec, input=request.input)))
    else:
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f"inference task method {task.method_name!r} is not supported; "
                         f"expected {_CLASSIFY_METHOD!r} or {_REGRESS_METHOD!r}")
  return response


# ----------------------------------------------------------------------------
# gRPC services.


def _spec_version(model_spec):
  version = model_spec.version.value if model_spec.HasField("version") else None
  return model_spec.name, version, model_spec.version_label or None


def _require_method(servable: Servable, method: str) -> None:
  # A model without any signature of the method answers like a server without
  # the RPC; one that has such a signature, but not under the requested name,
  # gets the signature-level INVALID_ARGUMENT of run_classify/run_regress.
  if not any(s.method_name == method for s in servable.signatures.values()):
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"model '{servable.name}' version {servable.version} has no "
                       f"{method!r} signature; its signatures are {sorted(servable.signatures)}")


def _abort(context, method: str, error: Exception):
  error = status_from_exception(error)
  if error.code == grpc.StatusCode.INTERNAL:
    logging.exception("%s failed", method)
  else:
    logging.info("%s failed: %s", method, error)
  context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's PredictionService over a ModelManager."""

  def __init__(self, manager: ModelManager, tensor_content: bool = False):
    self._manager = manager
    self._tensor_content = tensor_content

  def Predict(self, request, context):
    try:
      inputs = tensors.decode_inputs(request.inputs)
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        signature_name, outputs = servable.predict(
            request.model_spec.signature_name, inputs, request.output_filter)
        signature = servable.signatures[signature_name]
      response = predict_pb2.PredictResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.model_spec.signature_name = signature_name
      for name, array in outputs.items():
        response.outputs[name].CopyFrom(tensors.from_numpy(
            array, signature.outputs[name].dtype, tensor_content=self._tensor_content))
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "Predict", e)

  def GetModelMetadata(self, request, context):
    try:
      fields = list(request.metadata_field)
      if fields != ["signature_def"]:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"metadata_field is {fields}; expected ['signature_def']")
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signatures.items():
          signature_map.signature_def[name].CopyFrom(signature)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(signature_map)
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "GetModelMetadata", e)

  def Classify(self, request, context):
    try:
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        _require_method(servable, _CLASSIFY_METHOD)
        result = run_classify(servable, request)
      response = classification_pb2.ClassificationResponse(result=result)
      response.model_spec.CopyFrom(request.model_spec)
      response.model_spec.version.value = servable.version
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "Classify", e)

  def Regress(self, request, context):
    try:
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        _require_method(servable, _REGRESS_METHOD)
        result = run_regress(servable, request)
      response = regression_pb2.RegressionResponse(result=result)
      response.model_spec.CopyFrom(request.model_spec)
      response.model_spec.version.value = servable.version
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "Regress", e)

  def MultiInference(self, request, context):
    try:
      specs = {(t.model_spec.name, _spec_version(t.model_spec)[1:]) for t in request.tasks}
      if len(specs) != 1:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"MultiInference tasks name {len(specs)} model versions; expected "
                           "all tasks to name the same one")
      with self._manager.servable(*_spec_version(request.tasks[0].model_spec)) as servable:
        return run_multi_inference(servable, request)
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "MultiInference", e)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """TF Serving's ModelService: version states and config reloads."""

  def __init__(self, manager: ModelManager):
    self._manager = manager

  def GetModelStatus(self, request, context):
    try:
      states = self._manager.version_states(*_spec_version(request.model_spec))
      response = get_model_status_pb2.GetModelStatusResponse()
      for version, state, error in states:
        status = response.model_version_status.add(version=version, state=state)
        if error is not None:
          status.status.error_code = error.code.value[0]
          status.status.error_message = error.message
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "GetModelStatus", e)

  def HandleReloadConfigRequest(self, request, context):
    response = model_management_pb2.ReloadConfigResponse()
    try:
      if request.config.WhichOneof("config") != "model_config_list":
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "ReloadConfigRequest has no model_config_list")
      try:
        self._manager.reload_config(tuple(request.config.model_config_list.config))
      except ValueError as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
    except Exception as e:  # pylint: disable=broad-except
      error = status_from_exception(e)
      response.status.error_code = error.code.value[0]
      response.status.error_message = error.message
      logging.info("HandleReloadConfigRequest failed: %s", error)
    return response


# ----------------------------------------------------------------------------
# The server.


class ModelServer:
  """The embedded model server: gRPC (and optionally REST) over a ModelManager.

  `start()` loads what is on disk before it returns, so a test can predict right
  away; health checking answers SERVING from the first available version on.
  """

  def __init__(self, options: ServerOptions):
    self.options = options
    session_config = None
    if options.session_parallelism:
      session_config = tf.compat.v1.ConfigProto(
          intra_op_parallelism_threads=options.session_parallelism,
          inter_op_parallelism_threads=options.session_parallelism)
    self.health = health.HealthServicer(experimental_non_blocking=True)
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    self.manager = ModelManager(
        options.model_config_list, session_config=session_config, batching=options.batching,
        enable_model_warmup=options.enable_model_warmup,
        warmup_iterations=options.num_request_iterations_for_warmup,
        on_change=self._update_health)
    self.port = None
    self.rest_port = None
    self._grpc_server = None
    self._rest_server = None

  def _update_health(self, manager: ModelManager) -> None:
    serving = manager.has_available_version()
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)

  def start(self) -> "ModelServer":
    self.manager.poll_once()
    try:
      self._start_servers()
    except BaseException:
      self.stop(grace_s=0)
      raise
    self.manager.start_polling(self.options.file_system_poll_wait_seconds)
    return self

  def _start_servers(self) -> None:
    options = self.options
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.grpc_max_threads,
                                   thread_name_prefix="grpc"),
        options=[("grpc.max_send_message_length", options.max_message_bytes),
                 ("grpc.max_receive_message_length", options.max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    predictions = PredictionServicer(self.manager, options.tensor_content)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
    health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
    reflection.enable_server_reflection(HEALTH_SERVICES[1:] + (
        health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{options.host}:{options.port}"
    try:
      if options.ssl:
        credentials = grpc.ssl_server_credentials(
            [(options.ssl.server_key.encode(), options.ssl.server_cert.encode())],
            root_certificates=options.ssl.custom_ca.encode() or None,
            require_client_auth=options.ssl.client_verify)
        self.port = server.add_secure_port(address, credentials)
      else:
        self.port = server.add_insecure_port(address)
    except RuntimeError as e:
      raise OSError(f"cannot listen on {address} ({e}); expected a free port") from e
    if not self.port:
      raise OSError(f"cannot listen on {address}; expected a free port")
    server.start()
    self._grpc_server = server
    logging.info("Running ModelServer (embedded) at %s:%d (%s) ...", options.host, self.port,
                 "TLS" if options.ssl else "plaintext")
    if options.rest_api_port:
      if options.rest_api_port == options.port:
        raise ValueError(f"--rest_api_port {options.rest_api_port} equals --port; expected "
                         "a different port")
      self._rest_server = rest.start_rest_server(
          options.host, options.rest_api_port, self.manager)
      self.rest_port = self._rest_server.server_address[1]
      logging.info("Exporting HTTP/REST API at %s:%d ...", options.host, self.rest_port)

  def stop(self, grace_s: float = 5.0) -> None:
    """Stops taking requests, lets those in flight finish (up to grace_s), unloads all."""
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    if self._rest_server is not None:
      self._rest_server.shutdown()
      self._rest_server.server_close()
    if self._grpc_server is not None:
      self._grpc_server.stop(grace_s).wait()
    self.manager.close()
    logging.info("ModelServer stopped")

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop(grace_s=0)


def run_server(options: ServerOptions, stop_event: threading.Event | None = None) -> None:
  """Serves until SIGTERM or SIGINT (or `stop_event`), then stops gracefully."""
  stop_event = stop_event or threading.Event()

  def handle_signal(signum, frame):
    del frame
    logging.info("Received %s; stopping gracefully", signal.Signals(signum).name)
    stop_event.set()

  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, handle_signal)
    signal.signal(signal.SIGINT, handle_signal)
  server = ModelServer(options).start()
  try:
    while not stop_event.wait(1.0):
      pass
  finally:
    server.stop()


# ----------------------------------------------------------------------------
# Entry point: the real tensorflow_model_server when present, else this one.

# Flags that tensorflow_model_server takes under the same name. --host is ours:
# the real binary always listens on all interfaces.
REAL_SERVER_FLAGS = (
    "port", "rest_api_port", "model_name", "model_base_path", "model_config_file",
    "file_system_poll_wait_seconds", "enable_batching", "batching_parameters_file",
    "enable_serialization_as_tensor_content", "ssl_config_file", "enable_model_warmup",
    "num_request_iterations_for_warmup", "grpc_max_threads", "tensorflow_session_parallelism",
)
# Passed even when left at their defaults: ours differ from the binary's
# (model_name "default" there) or say what the user expects to listen on.
_ALWAYS_PASSED = ("port", "rest_api_port", "model_name")


def real_server_command(binary: str, flag_values: dict) -> list[str]:
  """argv for tensorflow_model_server from {flag name: value} of REAL_SERVER_FLAGS."""
  argv = [binary]
  for name in REAL_SERVER_FLAGS:
    if name not in flag_values or flag_values[name] is None:
      continue
    if name in ("model_name", "model_base_path") and flag_values.get("model_config_file"):
      continue  # The binary ignores them next to a config file; say so by leaving them out.
    value = flag_values[name]
    if isinstance(value, bool):
      value = "true" if value else "false"
    argv.append(f"--{name}={value}")
  return argv


def _define_flags():
  from absl import flags
  flags.DEFINE_enum("use_real_server", "auto", ["auto", "always", "never"],
                    f"auto: run `{REAL_SERVER_BINARY}` with these flags when it is on the "
                    "PATH, else the embedded server; always: require the binary; never: "
                    "always the embedded server.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (embedded server only; "
                      "tensorflow_model_server listens on all interfaces).")
  flags.DEFINE_integer("port", 8500, "Port to listen on for gRPC API; 0 picks a free one.")
  flags.DEFINE_integer("rest_api_port", 0, "Port for the HTTP/REST API; 0: no REST API.")
  flags.DEFINE_string("model_name", contract.DEFAULT_MODEL_NAME,
                      "Name of the model (ignored with --model_config_file).")
  flags.DEFINE_string("model_base_path", None, "Directory of numeric version "
                      "subdirectories (ignored with --model_config_file).")
  flags.DEFINE_string("model_config_file", None, "A ModelServerConfig text proto listing "
                      "the models to serve, with name, base_path, model_platform and "
                      "model_version_policy.")
  flags.DEFINE_integer("file_system_poll_wait_seconds", 1, "Seconds between looks for new "
                       "versions; 0: look once at start.")
  flags.DEFINE_bool("enable_batching", False, "Merge concurrent requests into one session run.")
  flags.DEFINE_string("batching_parameters_file", None, "A BatchingParameters text proto "
                      "(max_batch_size, batch_timeout_micros, num_batch_threads, "
                      "max_enqueued_batches); needs --enable_batching.")
  flags.DEFINE_bool("enable_serialization_as_tensor_content", False, "Answer tensors as "
                    "packed tensor_content instead of typed repeated fields.")
  flags.DEFINE_string("ssl_config_file", None, "An SSLConfig text proto (server_key, "
                      "server_cert, custom_ca, client_verify) for a TLS gRPC port.")
  flags.DEFINE_bool("enable_model_warmup", True, "Replay assets.extra/"
                    "tf_serving_warmup_requests when a version loads.")
  flags.DEFINE_integer("num_request_iterations_for_warmup", 1, "Times each warmup request runs.")
  flags.DEFINE_integer("grpc_max_threads", ServerOptions.grpc_max_threads,
                       "Threads handling gRPC requests.")
  flags.DEFINE_integer("tensorflow_session_parallelism", 0, "Intra- and inter-op threads of "
                       "each session; 0: TensorFlow picks.")


def options_from_flags(flag_values) -> ServerOptions:
  """The only reader of the flags: checks them and builds ServerOptions."""
  f = flag_values
  if f.model_config_file:
    model_configs = parse_model_config_file(f.model_config_file)
  elif f.model_base_path:
    model_configs = (make_model_config(f.model_name, f.model_base_path),)
  else:
    raise ValueError("neither --model_base_path nor --model_config_file is set; expected one")
  if f.batching_parameters_file and not f.enable_batching:
    raise ValueError(f"--batching_parameters_file {f.batching_parameters_file} is set without "
                     "--enable_batching; expected both or neither")
  batching = None
  if f.enable_batching:
    batching = (parse_batching_parameters_file(f.batching_parameters_file)
                if f.batching_parameters_file else BatchingOptions())
  if f.file_system_poll_wait_seconds < 0:
    raise ValueError(f"--file_system_poll_wait_seconds is {f.file_system_poll_wait_seconds}; "
                     "expected 0 (load once) or more")
  return ServerOptions(
      model_config_list=model_configs, host=f.host, port=f.port,
      rest_api_port=f.rest_api_port,
      file_system_poll_wait_seconds=f.file_system_poll_wait_seconds, batching=batching,
      tensor_content=f.enable_serialization_as_tensor_content,
      enable_model_warmup=f.enable_model_warmup,
      num_request_iterations_for_warmup=f.num_request_iterations_for_warmup,
      ssl=parse_ssl_config_file(f.ssl_config_file) if f.ssl_config_file else None,
      grpc_max_threads=f.grpc_max_threads,
      session_parallelism=f.tensorflow_session_parallelism)


def main(argv):
  from absl import app
  from absl import flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  FLAGS = flags.FLAGS
  binary = shutil.which(REAL_SERVER_BINARY)
  if FLAGS.use_real_server == "always" and not binary:
    raise app.UsageError(f"--use_real_server=always but {REAL_SERVER_BINARY} is not on the PATH")
  if binary and FLAGS.use_real_server != "never":
    values = {name: FLAGS[name].value for name in REAL_SERVER_FLAGS
              if FLAGS[name].present or name in _ALWAYS_PASSED}
    command = real_server_command(binary, values)
    if FLAGS.host != "127.0.0.1":
      logging.warning("--host=%s is not a %s flag; it listens on all interfaces", FLAGS.host,
                      REAL_SERVER_BINARY)
    logging.info("Running the real TensorFlow Serving binary: %s", " ".join(command))
    os.execv(binary, command)
  logging.info("Running the embedded TF Serving-compatible server (%s)",
               "--use_real_server=never" if binary else f"{REAL_SERVER_BINARY} is not on the PATH")
  try:
    options = options_from_flags(FLAGS)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  run_server(options)


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
