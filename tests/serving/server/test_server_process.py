"""Slow tests: `python -m serving.server` and `python -m serving.client` as real processes."""

import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from common import processes
from serving.client import wait_until_serving
from tests.serving.conftest import copy_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _start(args, env=None, log_path=None) -> subprocess.Popen:
  # The child keeps its own copy of the log's file descriptor.
  with open(log_path or os.devnull, "w") as log:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _kill(process: subprocess.Popen) -> None:
  if process.poll() is None:
    process.kill()
    process.wait(10)


def _predict(stub, keys, images):
  # A raw stub and TensorFlow's own tensor helpers: no project code in the request path.
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "mnist"
  request.model_spec.signature_name = "serving_default"
  request.inputs["key"].CopyFrom(tf.make_tensor_proto(np.asarray(keys, np.int64)))
  request.inputs["image"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
  return stub.Predict(request, timeout=20)


REAL_BINARY = shutil.which("tensorflow_model_server")


@pytest.mark.parametrize("server_kind", [
    "embedded",
    pytest.param("tensorflow_model_server", marks=pytest.mark.skipif(
        REAL_BINARY is None,
        reason="tensorflow_model_server is not on the PATH (the real TF Serving binary has "
               "no package installable on this machine, and there is no Docker engine); "
               "the embedded server stood in for it")),
])
def test_serve_predict_hot_swap_cli_and_sigterm(server_kind, export_dir, tmp_path,
                                                sample_images):
  real = server_kind == "tensorflow_model_server"
  base = str(tmp_path / "mnist")
  os.makedirs(base)
  copy_version(export_dir, base, 1)
  (port,) = processes.pick_free_ports(1)
  log_path = tmp_path / "server.log"
  process = _start(["serving.server", f"--use_real_server={'always' if real else 'never'}",
                    "--model_name=mnist", f"--model_base_path={base}",
                    f"--port={port}", "--file_system_poll_wait_seconds=1"], log_path=log_path)
  try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
      wait_until_serving(channel, 60, process=process)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      response = _predict(stub, [31, 4, 15], sample_images[:3])
      assert tf.make_ndarray(response.outputs["key"]).tolist() == [31, 4, 15]
      np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]).sum(axis=1), 1.0,
                                 rtol=1e-5)
      assert response.model_spec.version.value == 1

      copy_version(export_dir, base, 2)
      deadline = time.monotonic() + 30
      while _predict(stub, [1], sample_images[:1]).model_spec.version.value != 2:
        assert time.monotonic() < deadline, "version 2 was not served within 30 s"
        time.sleep(0.1)

    client = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--server=127.0.0.1:{port}", "--num_tests=30",
         "--batch_size=4", "--concurrency=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert client.returncode == 0, client.stderr[-2000:]
    assert "Predicted 30 images with model mnist version(s) [2] in 8 requests" in client.stdout
    assert "Accuracy: " in client.stdout and "p50" in client.stdout

    failing = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--server=127.0.0.1:{port}",
         "--model_name=nope", "--num_tests=1"], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert failing.returncode == 1
    assert "Server error NOT_FOUND" in failing.stderr

    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
  finally:
    _kill(process)
  if real:
    assert "Running the real TensorFlow Serving binary" in log_path.read_text()
    return
  assert "Servable not found for request: Latest(nope)" in failing.stderr
  log = log_path.read_text()
  assert "Running the embedded TF Serving-compatible server" in log
  assert "Unloading model mnist version 1" in log
  assert "Received SIGTERM; stopping gracefully" in log and "ModelServer stopped" in log


def test_auto_runs_tensorflow_model_server_from_path(tmp_path):
  # A stand-in binary that records the flags it was given.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "tensorflow_model_server"
  fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n')
  fake.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
  process = _start(["serving.server", "--model_name=mnist", "--model_base_path=/models/mnist",
                    "--port=9123", "--enable_batching"], env=env, log_path=tmp_path / "log")
  try:
    assert process.wait(60) == 0
  finally:
    _kill(process)
  assert (tmp_path / "argv").read_text().split() == [
      "--port=9123", "--enable_batching=true", "--model_name=mnist",
      "--model_base_path=/models/mnist"]
  assert "Running the real TensorFlow Serving binary" in (tmp_path / "log").read_text()
