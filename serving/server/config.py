"""Server options and tensorflow_model_server's text-proto config files (models, batching, SSL,
monitoring, session), read the way TF Serving reads them.

Importing this module does not import TensorFlow (the flags are defined from it
before main() quiets TensorFlow's start-up); reading a file does.
"""

import dataclasses
import functools
import os

from absl import logging
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW_PLATFORM = "tensorflow"
# TF Serving builds its gRPC server with SetMaxMessageSize(INT32_MAX): answers may be that large.
MAX_SEND_MESSAGE_BYTES = 2**31 - 1
CPUS = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class RequestLimits:
  """Bounds on one request, checked before anything of its size is allocated.

  TF Serving has none; these keep a small machine (2 cores, 24 GiB) alive under
  hostile or mistaken requests. The MNIST CNN needs about 0.3 MB of activations
  per row, so the default rows cost about 300 MB per request in flight.
  """
  max_rows: int = 1000  # Dimension 0 of every input, or examples per Classify/Regress.
  max_bytes: int = 64 * 1024 * 1024  # Serialized request (gRPC message, REST body).

  def __post_init__(self):
    for name in ("max_rows", "max_bytes"):
      if getattr(self, name) < 1:
        raise ValueError(f"request limit {name} is {getattr(self, name)}; expected at least 1")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """TF Serving's BatchingParameters; the defaults are its BasicBatchScheduler's."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  num_batch_threads: int = CPUS
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
class LoadOptions:
  """How versions are loaded: tags, warmup, retries, and features this server lacks."""
  saved_model_tags: tuple = ("serve",)
  session_config: object = None  # A tensorflow.ConfigProto; None: TensorFlow's defaults.
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 1
  max_num_load_retries: int = 5
  load_retry_interval_s: float = 60.0
  num_load_threads: int = 0  # 0: one version at a time.
  prefer_tflite_model: bool = False
  batching: BatchingOptions | None = None
  enable_per_model_batching_params: bool = False


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """Everything the embedded server needs; main.options_from_flags builds it from the flags."""
  model_config_list: tuple  # of model_server_config_pb2.ModelConfig
  model_config_file: str | None = None  # Re-read every model_config_file_poll_wait_seconds.
  model_config_file_poll_wait_seconds: int = 0  # 0: read once.
  host: str = "127.0.0.1"
  port: int | None = 8500  # 0 picks a free port (ModelServer.port tells which); None: none.
  grpc_socket_path: str = ""  # Also serve gRPC on this unix socket.
  grpc_channel_arguments: tuple = ()  # (name, int or str) pairs.
  grpc_max_threads: int = 4 * CPUS
  rest_api_port: int = 0  # 0: no REST endpoint.
  rest_api_num_threads: int = 4 * CPUS
  rest_api_timeout_in_ms: int = 30000
  enable_cors_support: bool = False
  prometheus_path: str | None = None  # From --monitoring_config_file; None: no metrics page.
  file_system_poll_wait_seconds: float = 1.0  # 0: look for versions once.
  load: LoadOptions = LoadOptions()
  tensor_content: bool = False
  ssl: SslOptions | None = None
  enable_signature_method_name_check: bool = False
  allow_version_labels_for_unavailable_models: bool = False
  limits: RequestLimits = RequestLimits()


def make_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
  """The single-model config tensorflow_model_server builds from --model_name/--model_base_path."""
  return model_server_config_pb2.ModelConfig(
      name=name, base_path=base_path, model_platform=TENSORFLOW_PLATFORM)


def parse_channel_arguments(text: str) -> tuple:
  """--grpc_channel_arguments "a=1,b=x" as ((a, 1), (b, 'x')): ints as ints, as TF Serving."""
  pairs = []
  for item in filter(None, text.split(",")):
    name, sep, value = item.partition("=")
    if not sep or not name:
      raise ValueError(f"--grpc_channel_arguments item {item!r} is not name=value")
    try:
      pairs.append((name, int(value)) if -2**31 <= int(value) < 2**31 else (name, value))
    except ValueError:
      pairs.append((name, value))
  return tuple(pairs)


def _read_text_proto(path: str, message, flag: str, allow_unknown_field: bool = False):
  """Parses the text proto in `path` into `message`; a ValueError names `flag` and the file.

  The parse error reads as TF Serving's ("Error parsing text-format
  tensorflow.serving.ModelServerConfig: ..."), which tools and tests match on.
  """
  import tensorflow as tf
  try:
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
  except (tf.errors.OpError, UnicodeDecodeError) as e:
    raise ValueError(f"{flag} {path} cannot be read: {e}") from e
  try:
    text_format.Parse(text, message, allow_unknown_field=allow_unknown_field)
  except text_format.ParseError as e:
    raise ValueError(f"{flag} {path}: Error parsing text-format "
                     f"{message.DESCRIPTOR.full_name}: {e}") from e
  return message


def parse_model_config_file(path: str) -> tuple:
  """Reads a ModelServerConfig text proto; returns its model_config_list configs.

  Raises ValueError naming the file and the problem (a parse error, a custom
  config, a platform other than tensorflow, a duplicate or empty name).
  """
  server_config = _read_text_proto(path, model_server_config_pb2.ModelServerConfig(),
                                   "--model_config_file")
  if server_config.WhichOneof("config") == "custom_model_config":
    raise ValueError(f"--model_config_file {path} has custom_model_config; expected "
                     "model_config_list")
  configs = tuple(server_config.model_config_list.config)
  validate_model_configs(configs, source=path)
  return configs


def validate_model_configs(configs, source: str = "model config") -> None:
  """Raises ValueError unless `configs` are one or more uniquely named tensorflow models."""
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


# TF Serving's config messages that the tensorflow-serving-api wheel does not ship,
# field for field as in its .proto files: {message: [(field, type, message type, label)]}.
_MISSING_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", "int64_value"), ("batch_timeout_micros", "int64_value"),
        ("max_enqueued_batches", "int64_value"), ("num_batch_threads", "int64_value"),
        ("thread_pool_name", "string_value"), ("allowed_batch_sizes", "repeated_int64"),
        ("pad_variable_length_inputs", "bool")],
    "SSLConfig": [("server_key", "string"), ("server_cert", "string"), ("custom_ca", "string"),
                  ("client_verify", "bool")],
    "PrometheusConfig": [("enable", "bool"), ("path", "string")],
    "MonitoringConfig": [("prometheus_config", "PrometheusConfig")],
}


@functools.lru_cache(maxsize=None)
def config_message_class(name: str):
  """The message class of TF Serving's `name` (BatchingParameters, SSLConfig, MonitoringConfig).

  Taken from tensorflow_serving when it is installed; else declared from
  _MISSING_MESSAGES in a private descriptor pool, which cannot clash with the
  real modules if they are imported later.
  """
  real_modules = {"BatchingParameters": "tensorflow_serving.servables.tensorflow."
                                        "session_bundle_config_pb2",
                  "SSLConfig": "tensorflow_serving.config.ssl_config_pb2",
                  "MonitoringConfig": "tensorflow_serving.config.monitoring_config_pb2"}
  try:
    import importlib
    return getattr(importlib.import_module(real_modules[name]), name)
  except ImportError:
    pass
  from google.protobuf import message_factory
  pool = _private_pool()
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))


@functools.lru_cache(maxsize=None)
def _private_pool():
  from google.protobuf import descriptor_pb2
  from google.protobuf import descriptor_pool
  from google.protobuf import wrappers_pb2
  F = descriptor_pb2.FieldDescriptorProto
  kinds = {
      "int64_value": (F.TYPE_MESSAGE, ".google.protobuf.Int64Value", F.LABEL_OPTIONAL),
      "string_value": (F.TYPE_MESSAGE, ".google.protobuf.StringValue", F.LABEL_OPTIONAL),
      "repeated_int64": (F.TYPE_INT64, None, F.LABEL_REPEATED),
      "bool": (F.TYPE_BOOL, None, F.LABEL_OPTIONAL),
      "string": (F.TYPE_STRING, None, F.LABEL_OPTIONAL),
  }
  pool = descriptor_pool.DescriptorPool()
  wrappers = descriptor_pb2.FileDescriptorProto()
  wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
  pool.Add(wrappers)
  file = descriptor_pb2.FileDescriptorProto(
      name="serving/tf_serving_config_subset.proto", package="tensorflow.serving",
      syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
  for message_name, fields in _MISSING_MESSAGES.items():
    message = file.message_type.add(name=message_name)
    for number, (field_name, kind) in enumerate(fields, start=1):
      field_type, type_name, label = kinds.get(
          kind, (F.TYPE_MESSAGE, f".tensorflow.serving.{kind}", F.LABEL_OPTIONAL))
      message.field.add(name=field_name, number=number, type=field_type, type_name=type_name,
                        label=label)
  pool.Add(file)
  return pool


def parse_batching_parameters_file(path: str) -> BatchingOptions:
  """Reads TF Serving's BatchingParameters text proto (`max_batch_size { value: 8 }`)."""
  # Newer TF Serving releases add fields; those are skipped.
  params = _read_text_proto(path, config_message_class("BatchingParameters")(),
                            "--batching_parameters_file", allow_unknown_field=True)
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
  ssl_config = _read_text_proto(path, config_message_class("SSLConfig")(), "--ssl_config_file",
                                allow_unknown_field=True)  # As for the batching file.
  if not ssl_config.server_key or not ssl_config.server_cert:
    raise ValueError(f"--ssl_config_file {path} needs server_key and server_cert (PEM text)")
  if ssl_config.client_verify and not ssl_config.custom_ca:
    raise ValueError(f"--ssl_config_file {path} sets client_verify but no custom_ca to "
                     "verify client certificates against")
  return SslOptions(ssl_config.server_key, ssl_config.server_cert, ssl_config.custom_ca,
                    ssl_config.client_verify)


PROMETHEUS_DEFAULT_PATH = "/monitoring/prometheus/metrics"


def parse_monitoring_config_file(path: str) -> str | None:
  """The Prometheus page path of TF Serving's MonitoringConfig text proto; None if disabled."""
  monitoring = _read_text_proto(path, config_message_class("MonitoringConfig")(),
                                "--monitoring_config_file", allow_unknown_field=True)
  prometheus = monitoring.prometheus_config
  if not prometheus.enable:
    return None
  if prometheus.path and not prometheus.path.startswith("/"):
    raise ValueError(f"--monitoring_config_file {path}: prometheus_config path "
                     f"{prometheus.path!r} must start with '/'")
  return prometheus.path or PROMETHEUS_DEFAULT_PATH


def parse_session_config_file(path: str):
  """Reads --tensorflow_session_config_file, a tensorflow.ConfigProto text proto."""
  from tensorflow.core.protobuf import config_pb2
  return _read_text_proto(path, config_pb2.ConfigProto(), "--tensorflow_session_config_file")
