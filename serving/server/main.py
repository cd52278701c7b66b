"""A TF Serving-compatible model server for SavedModels in TF Serving's directory layout.

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
# (name, kind, default, help). They are passed on to the binary when set.
TF_SERVING_FLAGS = (
    ("port", "integer", 8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to "
     "zero (then --grpc_socket_path is needed)."),
    ("grpc_socket_path", "string", "", "If non-empty, listen to a UNIX socket for gRPC API on the "
     "given path."),
    ("rest_api_port", "integer", 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST "
     "API will not be exported. Must differ from --port."),
    ("rest_api_num_threads", "integer", 4 * config.CPUS, "Number of threads for HTTP/REST API "
     "processing."),
    ("rest_api_timeout_in_ms", "integer", 30000, "Timeout for HTTP/REST API calls."),
    ("rest_api_enable_cors_support", "bool", False, "Enable CORS headers in response."),
    ("enable_batching", "bool", False, "Enable batching."),
    ("allow_version_labels_for_unavailable_models", "bool", False, "If true, allows assigning "
     "unused version labels to models that are not available yet."),
    ("batching_parameters_file", "string", "", "If non-empty, read an ascii BatchingParameters "
     "protobuf from the supplied file name and use the contained values instead of the "
     "defaults."),
    ("enable_per_model_batching_parameters", "bool", False, "Read batching parameters from "
     "batching_params.pbtxt in each SavedModel folder (with --enable_batching)."),
    ("model_config_file", "string", "", "If non-empty, read an ascii ModelServerConfig protobuf "
     "from the supplied file name, and serve the models in that file. (If used, --model_name, "
     "--model_base_path are ignored.)"),
    ("model_config_file_poll_wait_seconds", "integer", 0, "Interval in seconds between each poll "
     "of the filesystem for model_config_file. If unset or set to zero, poll will be done "
     "exactly once and not periodically."),
    ("model_name", "string", "default", "Name of model (ignored if --model_config_file flag is "
     "set)."),
    ("model_base_path", "string", "", "Path to export (ignored if --model_config_file flag is "
     "set, otherwise required): the folder holding the numeric version folders."),
    ("num_load_threads", "integer", 0, "The number of threads in the thread-pool used to load "
     "servables. If set as 0, versions load one at a time."),
    ("num_unload_threads", "integer", 0, "The number of threads in the thread-pool used to unload "
     "servables (accepted; unloads run in the polling thread here)."),
    ("max_num_load_retries", "integer", 5, "Maximum number of times it retries loading a model "
     "after the first failure, before giving up. If set to 0, a load is attempted only once."),
    ("load_retry_interval_micros", "integer", 60 * 1000 * 1000, "The interval, in microseconds, "
     "between each servable load retry. If set negative, it doesn't wait."),
    ("file_system_poll_wait_seconds", "integer", 1, "Interval in seconds between each poll of "
     "the filesystem for new model version. If set to zero poll will be exactly done once and "
     "not periodically."),
    ("flush_filesystem_caches", "bool", True, "Flush filesystem caches after loads (accepted; "
     "no effect here)."),
    ("tensorflow_session_parallelism", "integer", 0, "Number of threads to use for running a "
     "Tensorflow session. Auto-configured by default."),
    ("tensorflow_session_config_file", "string", "", "If non-empty, read an ascii TensorFlow "
     "Session ConfigProto protobuf from the supplied file name."),
    ("tensorflow_intra_op_parallelism", "integer", 0, "Number of threads to use to parallelize "
     "the execution of an individual op. Auto-configured by default."),
    ("tensorflow_inter_op_parallelism", "integer", 0, "Controls the number of operators that can "
     "be executed simultaneously. Auto-configured by default."),
    ("use_alts_credentials", "bool", False, "Use Google ALTS credentials (not available here: "
     "the server refuses to start rather than serve in plaintext)."),
    ("ssl_config_file", "string", "", "If non-empty, read an ascii SSLConfig protobuf from the "
     "supplied file name and set up a secure gRPC channel."),
    ("platform_config_file", "string", "", "If non-empty, read an ascii PlatformConfigMap "
     "protobuf (not supported here: use tensorflow_model_server)."),
    ("per_process_gpu_memory_fraction", "float", 0.0, "Fraction that each process occupies of "
     "the GPU memory space (0.0: TensorFlow picks)."),
    ("saved_model_tags", "string", _SERVE_TAG, "Comma-separated set of tags corresponding to the "
     "meta graph def to load from SavedModel."),
    ("grpc_channel_arguments", "string", "", "A comma separated list of arguments to be passed "
     "to the grpc server. (e.g. grpc.max_connection_age_ms=2000)"),
    ("grpc_max_threads", "integer", 4 * config.CPUS, "Max grpc server threads to handle grpc "
     "messages."),
    ("enable_model_warmup", "bool", True, "Enables model warmup, which triggers lazy "
     "initializations (such as TF optimizations) at load time, to reduce first request "
     "latency."),
    ("num_request_iterations_for_warmup", "integer", 0, "Number of times a request is iterated "
     "during warmup replay. This value is used only if > 0."),
    ("version", "bool", False, "Display version."),
    ("monitoring_config_file", "string", "", "If non-empty, read an ascii MonitoringConfig "
     "protobuf from the supplied file name (Prometheus metrics on the REST port)."),
    ("remove_unused_fields_from_bundle_metagraph", "bool", True, "Removes unused fields from "
     "MetaGraphDef proto message to save memory (accepted; no effect here)."),
    ("prefer_tflite_model", "bool", False, "Prefer TensorFlow Lite model from `model.tflite` "
     "(not supported here: such a version fails to load, naming this flag)."),
    ("num_tflite_pools", "integer", config.CPUS, "Number of TFLite interpreter pools (TFLite is "
     "not supported here)."),
    ("num_tflite_interpreters_per_pool", "integer", 1, "Number of TFLite interpreters per pool "
     "(TFLite is not supported here)."),
    ("enable_signature_method_name_check", "bool", False, "Enable method_name check for "
     "SignatureDef. Disable this if serving native TF2 regression/classification models."),
    ("xla_cpu_compilation_enabled", "bool", False, "Enable XLA:CPU JIT (accepted; functions "
     "marked jit_compile compile with XLA here either way)."),
    ("xla_gpu_compilation_enabled", "bool", False, "Enable XLA:GPU JIT (accepted; no GPU "
     "support here)."),
    ("enable_profiler", "bool", True, "Enable profiler service (there is none here: use "
     "tensorflow_model_server to profile)."),
    ("thread_pool_factory_config_file", "string", "", "If non-empty, read an ascii "
     "ThreadPoolConfig protobuf (accepted; ignored here, with a warning)."),
    ("mixed_precision", "string", "", "Specify mixed_precision mode (bfloat16: oneDNN's "
     "bfloat16 auto mixed precision)."),
    ("skip_initialize_tpu", "bool", False, "Whether to skip auto initializing TPU (no TPU "
     "support here)."),
    ("enable_grpc_healthcheck_service", "bool", False, "Enable the standard gRPC healthcheck "
     "service (served here in any case)."),
    ("enable_serialization_as_tensor_content", "bool", False, "Enable serialization of predict "
     "response as tensor content."),
)
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
