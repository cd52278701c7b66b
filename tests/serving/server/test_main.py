"""The entry point of the embedded server: its flags, and the options built from them."""

import os
import re
import subprocess
import sys

from absl import flags as absl_flags
import pytest

from serving.server import config
from serving.server import main as server_main


def _flags(*argv):
  flag_values = absl_flags.FlagValues()
  server_main.define_flags(flag_values)
  flag_values(["serving.server", *argv])
  return flag_values


def test_importing_the_server_defines_no_flag_and_keeps_stderr():
  # In a fresh interpreter: importing every module of the package neither defines
  # flags on absl's FLAGS nor redirects file descriptor 2 (TensorFlow is quieted in main()).
  code = (
      "import os, sys\n"
      "from absl import flags\n"
      "import tensorflow  # Defines absl's and its own flags; ours must add none.\n"
      "before = set(flags.FLAGS)\n"
      "fd2 = os.fstat(2).st_ino\n"
      "import serving.server.main, serving.server.model_server, serving.server.rest\n"
      "import serving.server.manager, serving.server.servable, serving.server.api\n"
      "assert set(flags.FLAGS) == before, set(flags.FLAGS) - before\n"
      "assert os.fstat(2).st_ino == fd2\n"
      "print('ok')\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_options_follow_the_flags():
  options = server_main.options_from_flags(_flags(
      "--model_name=mnist", "--model_base_path=/m", "--port=0", "--grpc_socket_path=/tmp/s.sock",
      "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
      "--max_num_load_retries=2", "--load_retry_interval_micros=500000",
      "--saved_model_tags=serve,gpu", "--tensorflow_intra_op_parallelism=2",
      "--max_request_rows=10", "--num_request_iterations_for_warmup=0"))
  assert [(c.name, c.base_path) for c in options.model_config_list] == [("mnist", "/m")]
  assert options.port is None and options.grpc_socket_path == "/tmp/s.sock"
  assert options.grpc_channel_arguments == (("grpc.max_connection_age_ms", 2000),
                                            ("grpc.lb_policy_name", "grpclb"))
  assert (options.load.max_num_load_retries, options.load.load_retry_interval_s) == (2, 0.5)
  assert options.load.saved_model_tags == ("serve", "gpu")
  assert options.load.session_config.intra_op_parallelism_threads == 2
  assert options.load.num_request_iterations_for_warmup == 1
  assert options.limits == config.RequestLimits(max_rows=10)


@pytest.mark.parametrize("argv,message", [
    (["--model_base_path=/m", "--port=0"], "At least one of --port or --grpc_socket_path"),
    ([], "Both --model_base_path and --model_config_file are empty"),
    (["--model_base_path=/m", "--use_alts_credentials"], "--use_alts_credentials: .* "
     "tensorflow_model_server"),
    (["--model_base_path=/m", "--platform_config_file=/p"], "platform configs are not supported"),
    (["--model_base_path=/m", "--batching_parameters_file=/b"], "without --enable_batching"),
    (["--model_base_path=/m", "--tensorflow_session_parallelism=1",
      "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
     "You cannot configure all"),
    (["--model_base_path=/m", "--grpc_channel_arguments=novalue"], "is not name=value"),
])
def test_flags_that_cannot_work_are_refused_naming_the_flag(argv, message):
  with pytest.raises(ValueError, match=message):
    server_main.options_from_flags(_flags(*argv))


def test_tflite_and_tpu_flags_alone_start_the_server():
  # The flag alone does not stop the server; a version that needs the feature fails to load.
  options = server_main.options_from_flags(_flags(
      "--model_base_path=/m", "--prefer_tflite_model", "--enable_profiler",
      "--num_tflite_pools=3", "--skip_initialize_tpu", "--xla_cpu_compilation_enabled"))
  assert options.load.prefer_tflite_model


def test_real_server_command_passes_the_tf_serving_flags_given():
  command = server_main.real_server_command("/bin/tfs", _flags(
      "--port=9000", "--model_name=mnist", "--model_base_path=/m", "--enable_batching",
      "--host=0.0.0.0", "--max_request_rows=5"))
  # In TF Serving's flag order; this server's own flags stay here.
  assert command == ["/bin/tfs", "--port=9000", "--enable_batching=true", "--model_name=mnist",
                     "--model_base_path=/m"]


def test_every_tensorflow_model_server_flag_is_accepted_with_its_default():
  flag_values = _flags()
  defaults = {name: flag_values[name].default for name in server_main.TF_SERVING_FLAG_NAMES}
  assert len(defaults) == 48
  assert (defaults["model_name"], defaults["port"], defaults["rest_api_timeout_in_ms"],
          defaults["max_num_load_retries"], defaults["load_retry_interval_micros"],
          defaults["saved_model_tags"], defaults["enable_profiler"]) == (
              "default", 8500, 30000, 5, 60_000_000, "serve", True)


def _tf_serving_main_cc():
  """model_servers/main.cc of the tensorflow/serving source the suite runner finds, or None."""
  from tests.serving.server import tf_serving_suite
  source = tf_serving_suite.find_source()
  if source is None:
    return None
  path = "tensorflow_serving/model_servers/main.cc"
  if os.path.exists(os.path.join(source, path)):
    with open(os.path.join(source, path)) as f:
      return f.read()
  return subprocess.run(["git", f"--git-dir={source}", "show", f"HEAD:{path}"], check=True,
                        capture_output=True, text=True, timeout=60).stdout


def test_the_flags_are_tensorflow_model_servers_own():
  main_cc = _tf_serving_main_cc()
  if main_cc is None:
    pytest.skip("no tensorflow/serving source to read main.cc from (see tf_serving_suite)")
  names = re.findall(r'tensorflow::Flag\(\s*"(\w+)"', main_cc)
  assert len(names) > 40
  assert list(server_main.TF_SERVING_FLAG_NAMES) == names
