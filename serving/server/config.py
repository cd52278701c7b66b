"""Server options and tensorflow_model_server's text-proto config files (models, batching, SSL)."""

import dataclasses
import functools
import os

from absl import logging
from google.protobuf import text_format
import tensorflow as tf
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW_PLATFORM = "tensorflow"
# TF Serving builds its gRPC server with SetMaxMessageSize(INT32_MAX).
MAX_MESSAGE_BYTES = 2**31 - 1


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
  """Everything the embedded server needs; server.options_from_flags builds it from the flags."""
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


def _parse_text_proto(path: str, message_cls, flag: str, allow_unknown_field: bool = False):
  """Reads `path` as a `message_cls` text proto; a ValueError names `flag` and the file."""
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  message = message_cls()
  try:
    text_format.Parse(text, message, allow_unknown_field=allow_unknown_field)
  except text_format.ParseError as e:
    raise ValueError(f"{flag} {path} is not a {message_cls.DESCRIPTOR.name} text proto: "
                     f"{e}") from e
  return message


def parse_model_config_file(path: str) -> tuple:
  """Reads a ModelServerConfig text proto; returns its model_config_list configs.

  Raises ValueError naming the file and the problem (a parse error, a custom
  config, a platform other than tensorflow, a duplicate or empty name).
  """
  config = _parse_text_proto(path, model_server_config_pb2.ModelServerConfig,
                             "--model_config_file")
  if config.WhichOneof("config") == "custom_model_config":
    raise ValueError(f"--model_config_file {path} has custom_model_config; expected "
                     "model_config_list")
  configs = tuple(config.model_config_list.config)
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


def parse_batching_parameters_file(path: str) -> BatchingOptions:
  """Reads TF Serving's BatchingParameters text proto (`max_batch_size { value: 8 }`)."""
  # Newer TF Serving releases add fields; those are logged and skipped.
  params = _parse_text_proto(path, _config_message_classes()[0], "--batching_parameters_file",
                             allow_unknown_field=True)
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
  config = _parse_text_proto(path, _config_message_classes()[1], "--ssl_config_file",
                             allow_unknown_field=True)  # As for the batching file.
  if not config.server_key or not config.server_cert:
    raise ValueError(f"--ssl_config_file {path} needs server_key and server_cert (PEM text)")
  if config.client_verify and not config.custom_ca:
    raise ValueError(f"--ssl_config_file {path} sets client_verify but no custom_ca to "
                     "verify client certificates against")
  return SslOptions(config.server_key, config.server_cert, config.custom_ca,
                    config.client_verify)
