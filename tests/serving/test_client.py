"""Tests of serving/client.py: retries, key checks, batching, TLS and the command line's run()."""

import gzip
import os
import subprocess
import sys
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from common import mnist
from common import processes
from model import contract
from serving import client
from serving.server import config
from serving.server import model_server as model_server_lib
from serving.server import tensors


class FakeRpcError(grpc.RpcError):

  def __init__(self, code):
    super().__init__(code.name)
    self._code = code

  def code(self):
    return self._code

  def details(self):
    return f"fake {self._code.name}"


class FakeRpc:
  """A unary stub method that fails with the given codes, then answers."""

  def __init__(self, codes, answer="ok"):
    self.codes, self.answer, self.timeouts = list(codes), answer, []

  def __call__(self, request, timeout=None):
    self.timeouts.append(timeout)
    if self.codes:
      raise FakeRpcError(self.codes.pop(0))
    return self.answer


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_retries_transient_errors_with_exponential_backoff(code):
  rpc, sleeps = FakeRpc([code] * 3), []
  policy = client.RetryPolicy(max_attempts=4, initial_backoff_s=0.1, multiplier=2.0)
  assert client.call_with_retry(rpc, "request", timeout_s=3.0, retry=policy,
                                sleep_fn=sleeps.append) == "ok"
  assert sleeps == pytest.approx([0.1, 0.2, 0.4])
  assert rpc.timeouts == [3.0] * 4  # Every try has the deadline.


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_other_errors_are_not_retried(code):
  rpc, sleeps = FakeRpc([code]), []
  with pytest.raises(grpc.RpcError) as info:
    client.call_with_retry(rpc, "request", timeout_s=1.0, sleep_fn=sleeps.append)
  assert info.value.code() == code
  assert len(rpc.timeouts) == 1 and sleeps == []


def test_retries_stop_after_max_attempts_and_backoff_is_capped():
  rpc, sleeps = FakeRpc([grpc.StatusCode.UNAVAILABLE] * 10), []
  policy = client.RetryPolicy(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=3.0)
  with pytest.raises(grpc.RpcError):
    client.call_with_retry(rpc, "request", timeout_s=1.0, retry=policy, sleep_fn=sleeps.append)
  assert len(rpc.timeouts) == 5
  assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_call_needs_a_deadline():
  with pytest.raises(ValueError, match="timeout_s is None"):
    client.call_with_retry(FakeRpc([]), "request", timeout_s=None)


def test_predict_raises_when_the_server_returns_other_keys():
  response = predict_pb2.PredictResponse()
  response.outputs["key"].CopyFrom(tensors.from_numpy(np.array([1, 3], np.int64)))
  response.outputs["scores"].CopyFrom(tensors.from_numpy(np.zeros((2, 10), np.float32)))
  stub = types.SimpleNamespace(Predict=FakeRpc([], answer=response))
  with pytest.raises(client.KeyMismatchError, match=r"returned keys \[1 3\] for keys \[1 2\]"):
    client.predict(stub, [1, 2], np.zeros((2, 784)))


def test_model_spec_builds_version_or_label():
  request = client.make_request([1], np.zeros((1, 784)), client.ModelSpec(
      "m", version_label="stable", signature_name="serving_default"))
  assert request.model_spec.version_label == "stable" and not request.model_spec.HasField(
      "version")
  with pytest.raises(ValueError, match="at most one"):
    client.ModelSpec(version=1, version_label="stable")


def test_predict_and_concurrent_batches_against_the_server(stub, sample_images):
  single = client.predict(stub, [5, 6], sample_images[:2])
  assert single.keys.tolist() == [5, 6] and single.model_version == 1
  images = np.concatenate([sample_images] * 4)
  result = client.predict_batched(stub, images, batch_size=3, concurrency=4)
  assert len(result.latencies_s) == 11 and result.model_versions == {1}
  np.testing.assert_allclose(result.scores[:2], single.scores, atol=1e-6)
  np.testing.assert_allclose(result.scores, np.concatenate([result.scores[:8]] * 4), atol=1e-6)
  example = client.predict(stub, [0, 1], sample_images[:2], spec=client.ModelSpec(
      signature_name=contract.TFS_EXAMPLE_SIGNATURE_NAME))
  np.testing.assert_allclose(example.scores, single.scores, atol=1e-6)


def test_wait_until_serving(channel):
  client.wait_until_serving(channel, timeout_s=10)
  (port,) = processes.pick_free_ports(1)  # Nobody listens there.
  with grpc.insecure_channel(f"{processes.LOCALHOST}:{port}") as nowhere:
    with pytest.raises(client.NotServingError, match="not serving after 0.5s"):
      client.wait_until_serving(nowhere, timeout_s=0.5, poll_s=0.1)
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait(30)
    with pytest.raises(client.NotServingError, match="exited with code 3"):
      client.wait_until_serving(nowhere, timeout_s=30, process=exited)


def test_metadata_and_status(stub, model_stub):
  version, signatures = client.get_model_metadata(stub)
  assert version == 1
  text = client.format_signatures(signatures)
  assert ("serving_default (tensorflow/serving/predict): image float32 [-1,784], key int64 [-1]"
          " -> key int64 [-1], scores float32 [-1,10]") in text
  # TF Serving lists the TF2 init op's signature too, with an output of no dtype.
  assert "__saved_model_init_op ():  -> __saved_model_init_op invalid <unknown rank>" in text
  assert client.get_model_status(model_stub) == [(1, "AVAILABLE", "OK", "")]


def _tls_server(export_dir, certificates, client_verify):
  ssl = config.SslOptions(certificates["server_key"], certificates["server_cert"],
                          certificates["client_cert"] if client_verify else "", client_verify)
  return model_server_lib.ModelServer(config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", os.path.dirname(export_dir)),),
      port=0, file_system_poll_wait_seconds=0, load=config.LoadOptions(enable_model_warmup=False),
      ssl=ssl))


def test_tls_and_mutual_tls(export_dir, certificates, sample_images):
  server_ca = certificates["server_cert"].encode()
  no_retry = client.NO_RETRY
  with _tls_server(export_dir, certificates, client_verify=False) as s:
    target = f"localhost:{s.port}"
    with client.make_channel(target, root_cert=server_ca) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      assert client.predict(stub, [9], sample_images[:1], timeout_s=10).keys.tolist() == [9]
    with client.make_channel(target) as plain:
      with pytest.raises(grpc.RpcError) as info:
        client.predict(prediction_service_pb2_grpc.PredictionServiceStub(plain), [9],
                       sample_images[:1], timeout_s=5, retry=no_retry)
      assert info.value.code() == grpc.StatusCode.UNAVAILABLE

  with _tls_server(export_dir, certificates, client_verify=True) as s:
    target = f"localhost:{s.port}"
    with client.make_channel(target, root_cert=server_ca) as channel:
      with pytest.raises(grpc.RpcError) as info:  # No client certificate: refused.
        client.predict(prediction_service_pb2_grpc.PredictionServiceStub(channel), [9],
                       sample_images[:1], timeout_s=5, retry=no_retry)
      assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with client.make_channel(target, root_cert=server_ca,
                             client_cert=certificates["client_cert"].encode(),
                             client_key=certificates["client_key"].encode()) as channel:
      model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
      assert client.get_model_status(model_stub, timeout_s=10)[0][:2] == (1, "AVAILABLE")


def _config(model_server, **overrides):
  return client.CliConfig(server=f"127.0.0.1:{model_server.port}", num_tests=20, batch_size=7,
                          concurrency=2, **overrides)


def test_cli_predicts_mnist_and_reports_accuracy_and_latency(model_server, capsys):
  assert client.run(_config(model_server)) == 0
  out = capsys.readouterr().out
  assert "Predicted 20 images with model mnist version(s) [1] in 3 requests" in out
  assert "Accuracy: " in out and "images/s" in out and "p99" in out


def test_cli_reads_png_idx_and_npz(model_server, tmp_path, capsys):
  digits = mnist.load_mnist().test_images[:3]
  pngs = []
  for i, digit in enumerate(digits):
    path = tmp_path / f"digit{i}.png"
    path.write_bytes(tf.io.encode_png(digit.reshape(28, 28, 1)).numpy())
    pngs.append(str(path))
  assert client.run(_config(model_server, png_paths=tuple(pngs))) == 0
  out = capsys.readouterr().out
  assert f"{pngs[0]}: " in out and "Accuracy" not in out

  idx = tmp_path / "images.idx.gz"
  header = bytes([0, 0, 8, 3]) + np.array([3, 28, 28], ">u4").tobytes()
  idx.write_bytes(gzip.compress(header + digits.tobytes()))
  npz = tmp_path / "digits.npz"
  np.savez(npz, images=digits.reshape(3, 28, 28), labels=np.array([7, 2, 1]))
  images_idx, _ = client.load_images(num_tests=0, idx_images=str(idx))
  images_npz, labels = client.load_images(num_tests=0, npz=str(npz))
  np.testing.assert_array_equal(images_idx, mnist.to_float(digits))
  np.testing.assert_array_equal(images_npz, images_idx)
  assert labels.tolist() == [7, 2, 1]
  assert client.run(_config(model_server, npz=str(npz))) == 0
  assert "Accuracy: " in capsys.readouterr().out


def test_cli_metadata_and_status_modes(model_server, capsys):
  assert client.run(_config(model_server, mode="metadata")) == 0
  assert "predict_images (tensorflow/serving/predict)" in capsys.readouterr().out
  assert client.run(_config(model_server, mode="status")) == 0
  assert capsys.readouterr().out.strip() == "mnist version 1: AVAILABLE"
