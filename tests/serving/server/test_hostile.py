"""Hostile and mistaken requests against a real `python -m serving.server` process (slow).

Each request gets its status; afterwards the server is still healthy, answers a
good request, has logged no traceback, and its memory has stayed bounded.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from common import processes
from tests.serving.conftest import copy_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MAX_BYTES = 16 * 1024 * 1024
MAX_ROWS = 1000
REST_TIMEOUT_MS = 3000
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _rss_bytes(pid: int) -> int:
  with open(f"/proc/{pid}/status") as f:
    return int(re.search(r"VmRSS:\s+(\d+) kB", f.read())[1]) * 1024


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
  """The server as a process: model `mnist`, and model `empty` whose base path has no version."""
  work = tmp_path_factory.mktemp("hostile")
  base, empty = work / "mnist", work / "empty"
  base.mkdir()
  empty.mkdir()
  copy_version(export_dir, str(base), 1)
  config_path = work / "models.config"
  config_path.write_text(
      f'model_config_list {{ config {{ name: "mnist" base_path: "{base}" '
      f'model_platform: "tensorflow" }} config {{ name: "empty" base_path: "{empty}" '
      f'model_platform: "tensorflow" }} }}')
  port, rest_port = processes.pick_free_ports(2)
  log_path = work / "server.log"
  with open(log_path, "w") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--use_real_server=never",
         f"--model_config_file={config_path}", f"--port={port}", f"--rest_api_port={rest_port}",
         f"--max_request_bytes={MAX_BYTES}", f"--max_request_rows={MAX_ROWS}",
         f"--rest_api_timeout_in_ms={REST_TIMEOUT_MS}", "--rest_api_num_threads=4"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
      ("grpc.max_send_message_length", 4 * MAX_BYTES)])
  try:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 120
    while True:
      assert process.poll() is None, log_path.read_text()[-3000:]
      assert time.monotonic() < deadline, "the server was not SERVING after 120 s"
      try:
        if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
            health_pb2.HealthCheckResponse.SERVING:
          break
      except grpc.RpcError:
        time.sleep(0.3)
    yield {"process": process, "channel": channel, "rest_port": rest_port, "log": log_path,
           "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel)}
  finally:
    channel.close()
    process.terminate()
    try:
      process.wait(20)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(10)


def _good_request(rows=1, model="mnist"):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.inputs["key"].CopyFrom(tf.make_tensor_proto(np.arange(rows, dtype=np.int64)))
  request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.full((rows, 784), 0.5, np.float32)))
  return request


def _declaring(shape, dtype=types_pb2.DT_FLOAT, **fields):
  """A good request whose image declares `shape` and carries `fields` (none: no values)."""
  request = _good_request()
  image = request.inputs["image"]
  image.Clear()
  image.dtype = dtype
  image.tensor_shape.dim.extend([image.tensor_shape.Dim(size=d) for d in shape])
  for name, values in fields.items():
    if name == "tensor_content":
      image.tensor_content = values
    else:
      getattr(image, name).extend(values)
  return request


def _spoiled(fn):
  request = _good_request()
  fn(request)
  return request


def _unknown_rank(request):
  request.inputs["image"].tensor_shape.unknown_rank = True


def _model(name):
  return _spoiled(lambda r: setattr(r.model_spec, "name", name))


def _string_image(request):
  request.inputs["image"].CopyFrom(tf.make_tensor_proto([b"x"] * 784, shape=[1, 784]))


GRPC_CASES = [
    # Sizes and shapes that name more than they carry, or more than the limits.
    ("54 bytes declaring [100000, 784]", "Predict", _declaring([100_000, 784]), INVALID, "values"),
    ("shape [2^40, 784]", "Predict", _declaring([2**40, 784]), INVALID, "values"),
    ("shape [1, 2^62]", "Predict", _declaring([1, 2**62]), INVALID, "values"),
    ("negative dimension", "Predict", _declaring([-1, 784]), INVALID, "negative"),
    ("unknown rank", "Predict", _spoiled(_unknown_rank), INVALID, "unknown rank"),
    ("40 dimensions", "Predict", _declaring([1] * 40), INVALID, "40 dimensions"),
    ("short tensor_content", "Predict", _declaring([1, 784], tensor_content=b"\0" * 12), INVALID,
     "holds 12 bytes"),
    ("too few float_val", "Predict", _declaring([1, 784], float_val=[0.5] * 3), INVALID,
     "needs exactly 784"),
    ("one row over --max_request_rows", "Predict", _good_request(MAX_ROWS + 1), INVALID,
     "--max_request_rows"),
    ("message over --max_request_bytes", "Predict",
     _declaring([1, MAX_BYTES // 4 + 1024], tensor_content=b"\0" * (MAX_BYTES + 4096)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    # Dtypes.
    ("double image", "Predict", _declaring([1, 784], types_pb2.DT_DOUBLE, double_val=[0.5] * 784),
     INVALID, "dtype float64; expected float32"),
    ("resource dtype", "Predict", _declaring([1], types_pb2.DT_RESOURCE), INVALID,
     "cannot be sent"),
    ("string image", "Predict", _spoiled(_string_image), INVALID, "dtype string"),
    ("int8 value 300", "Predict", _declaring([1], types_pb2.DT_INT8, int_val=[300]), INVALID,
     "do not fit dtype int8"),
    # Names.
    ("100 KB model name", "Predict", _model("m" * 100_000), grpc.StatusCode.NOT_FOUND,
     r"Latest\(m+\.\.\.\(100000 chars\)\)"),
    ("model name forging a log line", "Predict", _model("x\nI0101 00:00:00 forged"),
     grpc.StatusCode.NOT_FOUND, r"x\\nI0101"),
    ("empty model name", "Predict", _model(""), grpc.StatusCode.NOT_FOUND, r"Latest\(\)"),
    ("model with no version yet", "Predict", _good_request(model="empty"),
     grpc.StatusCode.NOT_FOUND, r"Servable not found for request: Latest\(empty\)"),
    ("version 2^62", "Predict", _spoiled(lambda r: r.model_spec.version.__setattr__("value", 2**62)),
     grpc.StatusCode.NOT_FOUND, "Specific"),
    ("unknown signature", "Predict", _spoiled(lambda r: setattr(r.model_spec, "signature_name",
                                                                "nope\x00")),
     grpc.StatusCode.FAILED_PRECONDITION, "not found"),
    ("duplicate output_filter", "Predict", _spoiled(lambda r: r.output_filter.extend(
        ["scores", "scores"])), INVALID, "duplicate output tensor alias"),
    ("keys for another batch", "Predict", _spoiled(lambda r: r.inputs["key"].CopyFrom(
        tf.make_tensor_proto(np.zeros(3, np.int64)))), INVALID, "batch sizes"),
    ("image of the wrong width", "Predict", _declaring([1, 100], float_val=[0.5] * 100), INVALID,
     r"\[1,100\]; expected \[-1,784\]"),
    # Other RPCs.
    ("Classify of 0 examples", "Classify",
     classification_pb2.ClassificationRequest(model_spec={"name": "mnist"}), INVALID, ""),
    ("MultiInference of no task", "MultiInference", inference_pb2.MultiInferenceRequest(),
     INVALID, "no tasks"),
    ("metadata field bogus", "GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "mnist"}, metadata_field=["bogus"]), INVALID, "not supported"),
]


def test_hostile_grpc_requests_get_their_status(server):
  stub = server["stub"]
  for label, rpc, request, code, words in GRPC_CASES:
    with pytest.raises(grpc.RpcError) as info:
      getattr(stub, rpc)(request, timeout=30)
    assert info.value.code() == code, (label, info.value.details())
    assert re.search(words, info.value.details() or ""), (label, info.value.details())
    assert len(info.value.details() or "") < 2000, label
  # Bytes that are no PredictRequest at all: INVALID_ARGUMENT, not gRPC's INTERNAL.
  raw = server["channel"].unary_unary("/tensorflow.serving.PredictionService/Predict")
  with pytest.raises(grpc.RpcError) as info:
    raw(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
  assert info.value.code() == INVALID and "not a valid tensorflow.serving.PredictRequest" in \
      info.value.details()
  assert stub.Predict(_good_request(3), timeout=30).outputs["key"].int64_val == [0, 1, 2]


def _http(server, raw: bytes, read_timeout_s: float = 30) -> tuple:
  """Sends raw bytes to the REST port; (status, body) of the answer, or (None, b'') if the
  server closed the connection without one."""
  with socket.create_connection(("127.0.0.1", server["rest_port"]), timeout=read_timeout_s) as s:
    s.sendall(raw)
    data = b""
    try:
      while True:
        chunk = s.recv(65536)
        if not chunk:
          break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        if length and len(body) >= int(length[1]):
          break
    except (ConnectionResetError, socket.timeout):
      pass
  if not data:
    return None, b""
  head, _, body = data.partition(b"\r\n\r\n")
  return int(head.split(b" ")[1]), body


def _post(path: str, body, headers: str = "", length=None) -> bytes:
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  length = len(data) if length is None else length
  return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
          f"Content-Length: {length}\r\n\r\n").encode() + data


IMAGE = [0.5] * 784
PREDICT = "/v1/models/mnist:predict"
REST_CASES = [
    ("Content-Length abc", _post(PREDICT, b"{}", length="abc"), 400),
    ("Content-Length -1", _post(PREDICT, b"{}", length="-1"), 400),
    ("Content-Length over --max_request_bytes", _post(PREDICT, b"", length=MAX_BYTES + 1), 413),
    ("two Content-Lengths", _post(PREDICT, b"{}", headers="Content-Length: 7\r\n"), 400),
    ("chunked body", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked"
     b"\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501),
    ("HTTP/2.0 request line", b"GET /v1/models/mnist HTTP/2.0\r\n\r\n", 505),
    ("64 KB of headers", b"GET /v1/models/mnist HTTP/1.1\r\n" + b"X-A: " + b"a" * 70_000 +
     b"\r\n\r\n", 431),
    ("body not JSON", _post(PREDICT, b"{instances: [1]"), 400),
    ("body not UTF-8", _post(PREDICT, b'{"instances": ["\xff\xfe"]}'), 400),
    ("JSON list body", _post(PREDICT, [1, 2]), 400),
    ("signature_name a list", _post(PREDICT, {"signature_name": ["a"], "instances": [1]}), 400),
    ("key 2^70", _post(PREDICT, {"instances": [{"key": 2**70, "image": IMAGE}]}), 400),
    ("key 1.7", _post(PREDICT, {"instances": [{"key": 1.7, "image": IMAGE}]}), 400),
    ("key true", _post(PREDICT, {"instances": [{"key": True, "image": IMAGE}]}), 400),
    ("image of strings", _post(PREDICT, {"instances": [{"key": 1, "image": ["0.5"] * 784}]}), 400),
    ("ragged images", _post(PREDICT, {"inputs": {"key": [1, 2], "image": [IMAGE, [0.5]]}}), 400),
    ("100000 nested lists", _post(PREDICT, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 +
                                  b"}"), 400),
    ("instances and inputs", _post(PREDICT, {"instances": [], "inputs": []}), 400),
    ("no instances", _post(PREDICT, {"instances": []}), 400),
    ("rows over --max_request_rows", _post(PREDICT, {"inputs": {
        "key": list(range(MAX_ROWS + 1)), "image": [[0.0]] * (MAX_ROWS + 1)}}), 400),
    ("unknown model", _post("/v1/models/nope:predict", {"instances": [1]}), 404),
    ("model with no version yet: status", b"GET /v1/models/empty HTTP/1.1\r\n\r\n", 404),
    ("model with no version yet: predict", _post("/v1/models/empty:predict",
                                                 {"instances": [1]}), 404),
    ("model name with a newline", _post("/v1/models/a%0Aforged" + "b" * 5000 + ":predict",
                                        {"instances": [1]}), 404),
    ("GET of :predict", b"GET /v1/models/mnist:predict HTTP/1.1\r\n\r\n", 400),
    ("unknown path", b"GET /v2/anything HTTP/1.1\r\n\r\n", 404),
]


def test_hostile_rest_requests_get_their_status_and_tf_servings_error_body(server):
  for label, raw, status in REST_CASES:
    got, body = _http(server, raw)
    assert got == status, (label, got, body[:500])
    assert set(json.loads(body)) == {"error"}, (label, body[:500])
    assert len(body) < 4000, label


def test_stalled_and_vanishing_clients_hold_no_worker(server):
  port = server["rest_port"]
  # Far more stalled connections than the 4 REST workers: headers promise a body
  # that never comes, or nothing is sent at all.
  stalled = []
  for i in range(60):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(_post(PREDICT, b"", length=100) if i % 2 else b"GET /v1/mo")
    stalled.append(s)
  # Clients that send a request and hang up before the answer.
  for _ in range(10):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
      s.sendall(_post(PREDICT, {"instances": [{"key": 1, "image": IMAGE}]}))
  start = time.monotonic()
  status, body = _http(server, _post(PREDICT, {"instances": [{"key": 7, "image": IMAGE}]}))
  assert status == 200 and json.loads(body)["predictions"][0]["key"] == 7
  assert time.monotonic() - start < REST_TIMEOUT_MS / 1000, "a good request waited on stalled ones"
  # The server closes a stalled connection once --rest_api_timeout_in_ms has passed.
  stalled[0].settimeout(REST_TIMEOUT_MS / 1000 + 10)
  assert stalled[0].recv(1) == b""
  for s in stalled:
    s.close()


def test_the_server_stays_healthy_and_bounded(server):
  # Runs after the others (pytest keeps file order): one more round of everything,
  # measured from a warmed-up server.
  stub, pid = server["stub"], server["process"].pid
  for _ in range(5):
    stub.Predict(_good_request(100), timeout=30)
  rss_before = _rss_bytes(pid)
  test_hostile_grpc_requests_get_their_status(server)
  test_hostile_rest_requests_get_their_status_and_tf_servings_error_body(server)
  rss_after = _rss_bytes(pid)
  print(f"server RSS {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after a "
        f"round of {len(GRPC_CASES) + 1} gRPC and {len(REST_CASES)} REST hostile requests")
  assert rss_after < rss_before + 256 * 2**20
  assert server["process"].poll() is None
  health = health_pb2_grpc.HealthStub(server["channel"])
  assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
      health_pb2.HealthCheckResponse.SERVING
  assert stub.Predict(_good_request(2), timeout=30).outputs["key"].int64_val == [0, 1]
  log = server["log"].read_text()
  assert "Traceback" not in log, log[-3000:]
  assert not re.search(r"^I0101 00:00:00 forged", log, re.MULTILINE)
  # Failed requests are logged, but rate-limited: far fewer lines than requests.
  failures = [line for line in log.splitlines() if " failed: " in line]
  assert 0 < len(failures) < len(GRPC_CASES) + len(REST_CASES), failures
