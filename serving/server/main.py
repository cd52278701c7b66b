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

import os
import shutil

from absl import logging

from model import contract
from serving.server import config
from serving.server.model_server import REAL_SERVER_BINARY
from serving.server.model_server import run_server

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


def define_flags():
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
  flags.DEFINE_integer("grpc_max_threads", config.ServerOptions.grpc_max_threads,
                       "Threads handling gRPC requests.")
  flags.DEFINE_integer("tensorflow_session_parallelism", 0, "Intra- and inter-op threads of "
                       "each session; 0: TensorFlow picks.")


def options_from_flags(flag_values) -> config.ServerOptions:
  """The only reader of the flags: checks them and builds ServerOptions."""
  f = flag_values
  if f.model_config_file:
    model_configs = config.parse_model_config_file(f.model_config_file)
  elif f.model_base_path:
    model_configs = (config.make_model_config(f.model_name, f.model_base_path),)
  else:
    raise ValueError("neither --model_base_path nor --model_config_file is set; expected one")
  if f.batching_parameters_file and not f.enable_batching:
    raise ValueError(f"--batching_parameters_file {f.batching_parameters_file} is set without "
                     "--enable_batching; expected both or neither")
  batching = None
  if f.enable_batching:
    batching = (config.parse_batching_parameters_file(f.batching_parameters_file)
                if f.batching_parameters_file else config.BatchingOptions())
  if f.file_system_poll_wait_seconds < 0:
    raise ValueError(f"--file_system_poll_wait_seconds is {f.file_system_poll_wait_seconds}; "
                     "expected 0 (load once) or more")
  return config.ServerOptions(
      model_config_list=model_configs, host=f.host, port=f.port,
      rest_api_port=f.rest_api_port,
      file_system_poll_wait_seconds=f.file_system_poll_wait_seconds, batching=batching,
      tensor_content=f.enable_serialization_as_tensor_content,
      enable_model_warmup=f.enable_model_warmup,
      num_request_iterations_for_warmup=f.num_request_iterations_for_warmup,
      ssl=config.parse_ssl_config_file(f.ssl_config_file) if f.ssl_config_file else None,
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

