r"""A TF Serving-compatible model server for SavedModels in TF Serving's directory layout.

Typical usage:

  python -m serving.server --model_name=mnist --model_base_path=/tmp/model \
      --port=8500 --rest_api_port=8501

serves the latest numeric version under /tmp/model/ as model "mnist" over TF
Serving's PredictionService and ModelService (plus gRPC health checking and
reflection), picks up new versions every --file_system_poll_wait_seconds, and with
--rest_api_port answers /v1/models/mnist:predict. Several models:

  python -m serving.server --model_config_file=/tmp/models.config

where the file is a ModelServerConfig text proto, as for tensorflow_model_server.
It takes every flag of tensorflow_model_server, with the same names, types and
defaults (BUILD.md says which ones act differently here), plus a few of its own
(--use_real_server, --host, --max_request_rows, --max_request_bytes). When
`tensorflow_model_server` is on the PATH, --use_real_server=auto (the default)
runs that binary with the same flags instead; --use_real_server=never keeps this one.

Like TF Serving, it loads each version with the TF1 session loader (a Session over
the SavedModel's graph, run by the signature's tensor names) and answers tensors as
typed repeated fields unless --enable_serialization_as_tensor_content.
"""

import os
import shutil
import sys

from absl import app
from absl import flags
from absl import logging

from serving.server import config

REAL_SERVER_BINARY = "tensorflow_model_server"
_SERVE_TAG = "serve"

# tensorflow_model_server's flags (model_servers/main.cc and server.h), in its order:
# name, kind, default ("cpus": the number of CPUs), help. They are passed on to the
# binary when set; BUILD.md tells how each acts here.
_TF_SERVING_FLAG_TABLE = """
port                              integer 8500    gRPC TCP port; 0 disables it (then --grpc_socket_path is needed)
grpc_socket_path                  string  -       Also listen for gRPC on this UNIX socket path
rest_api_port                     integer 0       HTTP/REST port (must differ from --port); 0: no REST API
rest_api_num_threads              integer 4*cpus  Threads answering HTTP/REST requests
rest_api_timeout_in_ms            integer 30000   Time an HTTP/REST request may take, from its first byte to its answer
rest_api_enable_cors_support      bool    false   Add CORS headers to HTTP/REST answers
enable_batching                   bool    false   Merge concurrent requests into one session run
allow_version_labels_for_unavailable_models bool false Let version_labels name versions not (yet) available
batching_parameters_file          string  -       A BatchingParameters text proto, instead of the defaults (needs --enable_batching)
enable_per_model_batching_parameters bool false   Use each version's batching_params.pbtxt, if any (with --enable_batching)
model_config_file                 string  -       A ModelServerConfig text proto of the models to serve (then --model_name, --model_base_path are ignored)
model_config_file_poll_wait_seconds integer 0     Seconds between re-reads of --model_config_file; 0: read once
model_name                        string  default Name of the model (ignored with --model_config_file)
model_base_path                   string  -       The folder holding the model's numeric version folders (ignored with --model_config_file)
num_load_threads                  integer 0       Threads loading versions; 0: one version at a time
num_unload_threads                integer 0       Threads unloading versions (accepted; unloads run in the polling thread here)
max_num_load_retries              integer 5       Times a failed load is retried before the version is given up; 0: tried once
load_retry_interval_micros        integer 60000000 Microseconds between load retries; negative: no wait
file_system_poll_wait_seconds     integer 1       Seconds between looks for new versions; 0: look once
flush_filesystem_caches           bool    true    Flush file system caches after loads (accepted; no effect here)
tensorflow_session_parallelism    integer 0       Intra- and inter-op threads of each session; 0: TensorFlow picks
tensorflow_session_config_file    string  -       A tensorflow.ConfigProto text proto for the sessions (the parallelism flags override it)
tensorflow_intra_op_parallelism   integer 0       Threads within one op; 0: TensorFlow picks
tensorflow_inter_op_parallelism   integer 0       Ops run at once; 0: TensorFlow picks
use_alts_credentials              bool    false   Google ALTS credentials (not available here: the server refuses to start)
ssl_config_file                   string  -       An SSLConfig text proto (PEM key, certificate, CA) for TLS on the gRPC port
platform_config_file              string  -       A PlatformConfigMap text proto (not supported here: use tensorflow_model_server)
per_process_gpu_memory_fraction   float   0       Fraction of GPU memory each session may take; 0: TensorFlow picks
saved_model_tags                  string  serve   Comma-separated tags of the MetaGraph to load
grpc_channel_arguments            string  -       gRPC server arguments, name=value,... (e.g. grpc.max_connection_age_ms=2000)
grpc_max_threads                  integer 4*cpus  Threads answering gRPC requests
enable_model_warmup               bool    true    Replay assets.extra/tf_serving_warmup_requests when a version loads
num_request_iterations_for_warmup integer 0       Times each warmup request runs; used if > 0, else once
version                           bool    false   Print the versions and exit
monitoring_config_file            string  -       A MonitoringConfig text proto: Prometheus metrics on the REST port
remove_unused_fields_from_bundle_metagraph bool true Drop unused MetaGraphDef fields (accepted; no effect here)
prefer_tflite_model               bool    false   Serve model.tflite (not supported here: such a version fails to load, naming this flag)
num_tflite_pools                  integer cpus    TFLite interpreter pools (TFLite is not supported here)
num_tflite_interpreters_per_pool  integer 1       TFLite interpreters per pool (TFLite is not supported here)
enable_signature_method_name_check bool   false   Check signature method names (keep off for TF2 classify and regress models)
xla_cpu_compilation_enabled       bool    false   XLA:CPU JIT (accepted; jit_compile functions compile with XLA here either way)
xla_gpu_compilation_enabled       bool    false   XLA:GPU JIT (accepted; no GPU support here)
enable_profiler                   bool    true    The profiler service (accepted; there is none here: use tensorflow_model_server)
thread_pool_factory_config_file   string  -       A ThreadPoolConfig text proto (accepted; ignored here, with a warning)
mixed_precision                   string  -       Mixed precision mode: bfloat16 (oneDNN's auto mixed precision) or none
skip_initialize_tpu               bool    false   Skip initializing the TPU (no TPU support here)
enable_grpc_healthcheck_service   bool    false   The standard gRPC health service (served here in any case)
enable_serialization_as_tensor_content bool false Answer Predict tensors as tensor_content
"""


def _parse_flag_table(table: str) -> tuple:
  """((name, kind, default, help), ...) of _TF_SERVING_FLAG_TABLE."""
  convert = {"integer": int, "float": float, "string": lambda text: text,
             "bool": lambda text: text == "true"}
  named_defaults = {"4*cpus": 4 * config.CPUS, "cpus": config.CPUS, "-": ""}
  rows = []
  for line in table.strip().splitlines():
    name, kind, default, help_text = line.split(None, 3)
    value = named_defaults[default] if default in named_defaults else convert[kind](default)
    rows.append((name, kind, value, help_text))
  return tuple(rows)


TF_SERVING_FLAGS = _parse_flag_table(_TF_SERVING_FLAG_TABLE)
TF_SERVING_FLAG_NAMES = tuple(name for name, *_ in TF_SERVING_FLAGS)


def define_flags(flag_values=flags.FLAGS) -> None:
  """tensorflow_model_server's flags, and this server's own."""
  for name, kind, default, help_text in TF_SERVING_FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=flag_values)
  flags.DEFINE_enum("use_real_server", "auto", ["auto", "always", "never"],
                    f"auto: run `{REAL_SERVER_BINARY}` with these flags when it is on the "
                    "PATH, else the embedded server; always: require the binary; never: "
                    "always the embedded server.", flag_values=flag_values)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (embedded server only; "
                      "tensorflow_model_server listens on all interfaces).",
                      flag_values=flag_values)
  flags.DEFINE_integer("max_request_rows", config.RequestLimits.max_rows,
                       "Most rows (dimension 0 of an input, or examples) one request may carry "
                       "(embedded server only).", lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("max_request_bytes", config.RequestLimits.max_bytes,
                       "Most bytes one request may take: the gRPC message, the REST body, and "
                       "its inputs once decoded (embedded server only).", lower_bound=1,
                       flag_values=flag_values)


def real_server_command(binary: str, flag_values) -> list[str]:
  """argv for tensorflow_model_server: the TF Serving flags set on the command line."""
  argv = [binary]
  for name in TF_SERVING_FLAG_NAMES:
    if not flag_values[name].present:
      continue
    value = flag_values[name].value
    if isinstance(value, bool):
      value = "true" if value else "false"
    argv.append(f"--{name}={value}")
  return argv


def _session_config(f):
  """The tensorflow.ConfigProto the flags ask for, built as TF Serving builds it; None if none."""
  wants = (f.tensorflow_session_config_file or f.tensorflow_session_parallelism
           or f.tensorflow_intra_op_parallelism or f.tensorflow_inter_op_parallelism
           or f.per_process_gpu_memory_fraction or f.mixed_precision == "bfloat16")
  if not wants:
    return None
  from tensorflow.core.protobuf import config_pb2
  from tensorflow.core.protobuf import rewriter_config_pb2
  session_config = (config.parse_session_config_file(f.tensorflow_session_config_file)
                    if f.tensorflow_session_config_file else config_pb2.ConfigProto())
  intra, inter, both = (f.tensorflow_intra_op_parallelism, f.tensorflow_inter_op_parallelism,
                        f.tensorflow_session_parallelism)
  if intra > 0 and inter > 0 and both > 0:
    raise ValueError("Either configure --tensorflow_session_parallelism or "
                     "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                     "separately. You cannot configure all.")
  if intra > 0 or inter > 0:
    session_config.intra_op_parallelism_threads = intra
    session_config.inter_op_parallelism_threads = inter
  elif both or not f.tensorflow_session_config_file:
    session_config.intra_op_parallelism_threads = both
    session_config.inter_op_parallelism_threads = both
  session_config.gpu_options.per_process_gpu_memory_fraction = f.per_process_gpu_memory_fraction
  if f.mixed_precision == "bfloat16":
    session_config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
        rewriter_config_pb2.RewriterConfig.ON)
  return session_config


def _check_unsupported(f) -> None:
  """Refuses what this server would otherwise do differently without saying so."""
  use_binary = f"use {REAL_SERVER_BINARY}"
  if f.use_alts_credentials:
    if f.ssl_config_file:
      raise ValueError("Either --use_alts_credentials must be false or --ssl_config_file "
                       "must be empty.")
    raise ValueError("--use_alts_credentials: this server has no ALTS credentials and will not "
                     f"serve in plaintext instead; {use_binary} (or --ssl_config_file for TLS)")
  if f.platform_config_file:
    raise ValueError(f"--platform_config_file {f.platform_config_file}: platform configs are "
                     f"not supported here; {use_binary}, or the flags that set the session "
                     "(--tensorflow_session_config_file, --enable_batching)")
  if f.port == 0 and not f.grpc_socket_path:
    raise ValueError("At least one of --port or --grpc_socket_path must be set "
                     "(--port=0 disables the TCP port, as in tensorflow_model_server).")


def options_from_flags(f) -> config.ServerOptions:
  """The only reader of the flags: checks them and builds ServerOptions.

  Raises ValueError naming the flag and the problem.
  """
  _check_unsupported(f)
  if f.model_config_file:
    model_configs = config.parse_model_config_file(f.model_config_file)
  elif f.model_base_path:
    model_configs = (config.make_model_config(f.model_name, f.model_base_path),)
  else:
    raise ValueError("Both --model_base_path and --model_config_file are empty; expected one "
                     "(--model_base_path: the folder holding the numeric version folders)")
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
  tags = tuple(t for t in f.saved_model_tags.split(",") if t) or (_SERVE_TAG,)
  if f.mixed_precision not in ("", "bfloat16"):
    logging.warning("--mixed_precision=%s is not supported (only bfloat16); ignored",
                    f.mixed_precision)
  if f.thread_pool_factory_config_file:
    logging.warning("--thread_pool_factory_config_file %s is ignored: requests run on the gRPC "
                    "and REST threads here", f.thread_pool_factory_config_file)
  load = config.LoadOptions(
      saved_model_tags=tags, session_config=_session_config(f),
      enable_model_warmup=f.enable_model_warmup,
      num_request_iterations_for_warmup=max(1, f.num_request_iterations_for_warmup),
      max_num_load_retries=max(0, f.max_num_load_retries),
      load_retry_interval_s=max(0, f.load_retry_interval_micros) / 1e6,
      num_load_threads=max(0, f.num_load_threads), prefer_tflite_model=f.prefer_tflite_model,
      batching=batching, enable_per_model_batching_params=f.enable_per_model_batching_parameters)
  return config.ServerOptions(
      model_config_list=model_configs, model_config_file=f.model_config_file or None,
      model_config_file_poll_wait_seconds=f.model_config_file_poll_wait_seconds,
      host=f.host, port=f.port or None, grpc_socket_path=f.grpc_socket_path,
      grpc_channel_arguments=config.parse_channel_arguments(f.grpc_channel_arguments),
      grpc_max_threads=max(1, f.grpc_max_threads), rest_api_port=f.rest_api_port,
      rest_api_num_threads=max(1, f.rest_api_num_threads),
      rest_api_timeout_in_ms=max(1, f.rest_api_timeout_in_ms),
      enable_cors_support=f.rest_api_enable_cors_support,
      prometheus_path=(config.parse_monitoring_config_file(f.monitoring_config_file)
                       if f.monitoring_config_file else None),
      file_system_poll_wait_seconds=f.file_system_poll_wait_seconds, load=load,
      tensor_content=f.enable_serialization_as_tensor_content,
      ssl=config.parse_ssl_config_file(f.ssl_config_file) if f.ssl_config_file else None,
      enable_signature_method_name_check=f.enable_signature_method_name_check,
      allow_version_labels_for_unavailable_models=(
          f.allow_version_labels_for_unavailable_models),
      limits=config.RequestLimits(f.max_request_rows, f.max_request_bytes))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  f = flags.FLAGS
  binary = shutil.which(REAL_SERVER_BINARY)
  if f.use_real_server == "always" and not binary:
    raise app.UsageError(f"--use_real_server=always but {REAL_SERVER_BINARY} is not on the PATH")
  if binary and f.use_real_server != "never":
    command = real_server_command(binary, f)
    if f.host != "127.0.0.1":
      logging.warning("--host=%s is not a %s flag; it listens on all interfaces", f.host,
                      REAL_SERVER_BINARY)
    logging.info("Running the real TensorFlow Serving binary: %s", " ".join(command))
    os.execv(binary, command)
  # Quiet TensorFlow's start-up before the server's modules import it.
  from common import runtime
  tf = runtime.import_tensorflow()
  if f.version:
    print(f"TensorFlow ModelServer: embedded (python -m serving.server)\n"
          f"TensorFlow Library: {tf.__version__}")
    return
  logging.info("Running the embedded TF Serving-compatible server (%s)",
               "--use_real_server=never" if binary else f"{REAL_SERVER_BINARY} is not on the PATH")
  try:
    options = options_from_flags(f)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  from serving.server import errors
  from serving.server import model_server
  try:
    model_server.run_server(options)
  except (OSError, ValueError, errors.ServingError) as e:
    # tensorflow_model_server's words for a server that cannot start.
    print(f"Failed to start server. Error: {e}", file=sys.stderr)
    sys.exit(1)
