"""Tests of the embedded server in process: Predict, metadata, errors, versions, batching."""

import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

from google.protobuf import text_format
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import file_system_storage_path_source_pb2

from model import contract
from serving.server import batching
from serving.server import config
from serving.server import errors
from serving.server import manager
from serving.server import model_server as model_server_lib
from common import processes
from tests.serving.conftest import copy_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_State = get_model_status_pb2.ModelVersionStatus.State


def raw_request(keys, images, model="mnist", signature="serving_default", version=None):
  """A PredictRequest built with TensorFlow only, as any TF Serving client would."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  request.inputs["key"].CopyFrom(tf.make_tensor_proto(np.asarray(keys, np.int64)))
  request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.asarray(images, np.float32)))
  return request


def wait_for(condition_fn, timeout_s: float, interval_s: float = 0.05):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    value = condition_fn()
    if value:
      return value
    time.sleep(interval_s)
  return condition_fn()


def version_states(model_stub, name="mnist") -> dict:
  response = model_stub.GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name}), timeout=5)
  return {s.version: s.state for s in response.model_version_status}


# ---- Predict ----


def test_predict_passes_keys_through_and_scores_sum_to_one(stub, sample_images):
  keys = [42, 7, 1000, 3]
  response = stub.Predict(raw_request(keys, sample_images[:4]), timeout=10)
  assert response.model_spec.name == "mnist"
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == "serving_default"
  assert tf.make_ndarray(response.outputs["key"]).tolist() == keys
  scores = tf.make_ndarray(response.outputs["scores"])
  assert scores.shape == (4, 10)
  np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_matches_the_savedmodel_in_process(stub, export_dir, sample_images):
  expected = tf.saved_model.load(export_dir).signatures["serving_default"](
      key=tf.constant(np.arange(8, dtype=np.int64)), image=tf.constant(sample_images))
  response = stub.Predict(raw_request(np.arange(8), sample_images), timeout=10)
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]),
                             expected["scores"].numpy(), atol=1e-6)


def test_responses_use_typed_fields_not_tensor_content(stub, sample_images):
  response = stub.Predict(raw_request([5, 6], sample_images[:2]), timeout=10)
  scores, keys = response.outputs["scores"], response.outputs["key"]
  assert scores.tensor_content == b"" and keys.tensor_content == b""
  assert len(scores.float_val) == 20 and list(keys.int64_val) == [5, 6]
  assert [d.size for d in scores.tensor_shape.dim] == [2, 10]
  assert scores.dtype == tf.float32.as_datatype_enum


def test_tf_serving_example_client_request(stub, sample_images):
  # The request of tensorflow_serving/example/mnist_client.py, field for field.
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "mnist"
  request.model_spec.signature_name = "predict_images"
  image = sample_images[0]
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
  response = stub.Predict(request, timeout=10)
  scores = np.array(response.outputs["scores"].float_val)
  assert scores.shape == (10,)
  np.testing.assert_allclose(scores.sum(), 1.0, rtol=1e-5)


def test_output_filter_and_empty_batch(stub, sample_images):
  request = raw_request([1], sample_images[:1])
  request.output_filter.append("scores")
  assert sorted(stub.Predict(request, timeout=10).outputs) == ["scores"]
  empty = stub.Predict(raw_request(np.zeros(0), np.zeros((0, 784))), timeout=10)
  assert tf.make_ndarray(empty.outputs["scores"]).shape == (0, 10)


def _wrong_shape(r):
  r.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 100), np.float32)))


def _wrong_dtype(r):
  r.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 784), np.float64)))


def _missing_input(r):
  del r.inputs["key"]


def _unknown_input(r):
  r.inputs["label"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.int64)))


def _keys_for_other_batch(r):
  r.inputs["key"].CopyFrom(tf.make_tensor_proto(np.zeros(3, np.int64)))


def _model(r):
  r.model_spec.name = "nope"


def _version(r):
  r.model_spec.version.value = 99


def _label(r):
  r.model_spec.version_label = "canary"


def _signature(r):
  r.model_spec.signature_name = "nope"


def _filter(r):
  r.output_filter.append("logits")


@pytest.mark.parametrize("spoil_fn,code,message", [
    (_wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, r"shape \[1,100\]; expected \[-1,784\]"),
    (_wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT, "dtype float64; expected float32"),
    (_missing_input, grpc.StatusCode.INVALID_ARGUMENT, r"Missing but required: \{key\}"),
    (_unknown_input, grpc.StatusCode.INVALID_ARGUMENT, r"Sent extra: \{label\}"),
    (_keys_for_other_batch, grpc.StatusCode.INVALID_ARGUMENT, "batch sizes"),
    (_filter, grpc.StatusCode.INVALID_ARGUMENT, "logits"),
    # TF Serving's statuses and words, which its clients and probes match on.
    (_model, grpc.StatusCode.NOT_FOUND, r"Servable not found for request: Latest\(nope\)"),
    (_version, grpc.StatusCode.NOT_FOUND,
     r"Servable not found for request: Specific\(mnist, 99\)"),
    (_label, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary"),
    (_signature, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found'),
])
def test_bad_request_gets_its_status_and_the_next_good_one_succeeds(
    stub, sample_images, spoil_fn, code, message):
  request = raw_request([1], sample_images[:1])
  spoil_fn(request)
  with pytest.raises(grpc.RpcError) as info:
    stub.Predict(request, timeout=10)
  assert info.value.code() == code
  assert re.search(message, info.value.details())
  good = stub.Predict(raw_request([2], sample_images[:1]), timeout=10)
  assert list(good.outputs["key"].int64_val) == [2]


def test_classify_on_a_predict_signature_is_invalid(stub):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = "mnist"
  request.input.example_list.examples.add()
  with pytest.raises(grpc.RpcError) as info:
    stub.Classify(request, timeout=10)
  # TF Serving's check of a classification signature: one input, named `inputs`.
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "Expected one input Tensor." in info.value.details()


# ---- Metadata, status, health, reflection ----


def test_metadata_lists_both_signatures(stub):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = "mnist"
  response = stub.GetModelMetadata(request, timeout=10)
  assert response.model_spec.version.value == 1
  signatures = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata["signature_def"].Unpack(signatures)
  # All of the SavedModel's, the TF2 init op's included, as TF Serving lists them.
  assert sorted(signatures.signature_def) == ["__saved_model_init_op", "predict_images",
                                              "serving_default"]

  def describe(infos):
    return {k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim])
            for k, v in infos.items()}

  default = signatures.signature_def["serving_default"]
  assert describe(default.inputs) == {"key": ("int64", [-1]), "image": ("float32", [-1, 784])}
  assert describe(default.outputs) == {"key": ("int64", [-1]), "scores": ("float32", [-1, 10])}
  assert default.method_name == "tensorflow/serving/predict"
  assert describe(signatures.signature_def["predict_images"].inputs) == {
      "images": ("float32", [-1, 784])}


def test_metadata_needs_the_signature_def_field(stub):
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = "mnist"
  with pytest.raises(grpc.RpcError) as info:
    stub.GetModelMetadata(request, timeout=10)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status(model_stub):
  assert version_states(model_stub) == {1: _State.AVAILABLE}
  with pytest.raises(grpc.RpcError) as info:
    version_states(model_stub, "nope")
  assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(channel):
  health = health_pb2_grpc.HealthStub(channel)
  for service in ("", "tensorflow.serving.PredictionService"):
    assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
  reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
  answers = reflection.ServerReflectionInfo(
      iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
  services = {s.name for a in answers for s in a.list_services_response.service}
  assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
          "grpc.health.v1.Health"} <= services


# ---- REST ----


def _rest(model_server, path, body=None):
  url = f"http://127.0.0.1:{model_server.rest_port}{path}"
  data = json.dumps(body).encode() if body is not None else None
  try:
    with urllib.request.urlopen(url, data=data, timeout=10) as reply:
      return reply.status, json.load(reply)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def test_rest_predict_metadata_and_status(model_server, sample_images):
  status, answer = _rest(model_server, "/v1/models/mnist:predict", {
      "instances": [{"key": 11, "image": sample_images[0].tolist()},
                    {"key": 12, "image": sample_images[1].tolist()}]})
  assert status == 200, answer
  assert [p["key"] for p in answer["predictions"]] == [11, 12]
  assert np.allclose([sum(p["scores"]) for p in answer["predictions"]], 1.0, rtol=1e-5)
  status, answer = _rest(model_server, "/v1/models/mnist/versions/1:predict", {
      "signature_name": "predict_images", "inputs": sample_images[:3].tolist()})
  assert status == 200 and np.array(answer["outputs"]).shape == (3, 10)
  status, answer = _rest(model_server, "/v1/models/mnist/metadata")
  assert status == 200
  assert "serving_default" in answer["metadata"]["signature_def"]["signature_def"]
  assert _rest(model_server, "/v1/models/mnist")[1]["model_version_status"][0]["state"] == \
      "AVAILABLE"
  status, answer = _rest(model_server, "/v1/models/mnist:predict",
                         {"instances": [{"key": 1, "image": [0.0] * 5}]})
  assert status == 400 and "expected [-1,784]" in answer["error"]
  assert _rest(model_server, "/v1/models/nope:predict", {"instances": []})[0] == 404


def test_rest_cors_prometheus_and_classify_words(export_dir):
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", os.path.dirname(export_dir)),),
      port=0, rest_api_port=processes.pick_free_ports(1)[0], file_system_poll_wait_seconds=0,
      load=config.LoadOptions(enable_model_warmup=False), enable_cors_support=True,
      prometheus_path="/metrics")
  with model_server_lib.ModelServer(options) as s:
    base = f"http://127.0.0.1:{s.rest_port}"
    preflight = urllib.request.Request(f"{base}/v1/models/mnist:predict", method="OPTIONS",
                                       headers={"Origin": "https://example.com"})
    with urllib.request.urlopen(preflight, timeout=10) as reply:
      assert reply.status == 200
      assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert _rest(s, "/v1/models/mnist")[0] == 200
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
      page = reply.read().decode()
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 1' in page
    status, answer = _rest(s, "/v1/models/mnist:classify", {"examples": [{"x": 1.0}]})
    assert status == 400 and answer == {"error": "Expected one input Tensor."}


# ---- Versions: warmup, hot swap, policies, config ----


def test_warmup_records_run_at_load(model_server, export_dir):
  records = list(tf.data.TFRecordDataset(
      os.path.join(export_dir, contract.WARMUP_FILE)).as_numpy_iterator())
  assert len(records) == 2  # train.export writes batch 1 and batch 8.
  with model_server.manager.servable("mnist") as servable:
    assert servable.warmup_requests_run == len(records)


def test_failing_warmup_record_fails_the_load(export_dir, tmp_path, sample_images):
  version_dir = copy_version(export_dir, str(tmp_path), 1)
  bad = raw_request([1], sample_images[:1])
  bad.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 3), np.float32)))
  with tf.io.TFRecordWriter(os.path.join(version_dir, contract.WARMUP_FILE)) as writer:
    writer.write(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=bad)).SerializeToString())
  model_manager = manager.ModelManager((config.make_model_config("m", str(tmp_path)),),
                                       config.LoadOptions(max_num_load_retries=0))
  model_manager.poll_once(wait=True)
  try:
    [(version, state, error)] = model_manager.version_states("m")
    assert (version, state) == (1, _State.END)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "shape [1,3]" in error.message
    assert not model_manager.has_available_version()
    model_manager.poll_once(wait=True)  # A failed version is not retried in place...
    assert model_manager.version_states("m")[0][1] == _State.END
    shutil.rmtree(version_dir)  # ...but loads once it is published again, fixed.
    model_manager.poll_once(wait=True)
    copy_version(export_dir, str(tmp_path), 1)
    model_manager.poll_once(wait=True)
    assert model_manager.version_states("m") == [(1, _State.AVAILABLE, None)]
  finally:
    model_manager.close()


def _partial_copy(export_dir: str, version_dir: str) -> None:
  """A version as a copy that is not a rename leaves it for a while: no variables yet."""
  shutil.copytree(export_dir, version_dir, ignore=shutil.ignore_patterns("variables"))


def test_a_version_still_being_copied_loads_on_a_retry(export_dir, tmp_path):
  version_dir = str(tmp_path / "1")
  _partial_copy(export_dir, version_dir)
  model_manager = manager.ModelManager(
      (config.make_model_config("m", str(tmp_path)),),
      config.LoadOptions(max_num_load_retries=5, load_retry_interval_s=0.3))
  try:
    model_manager.poll_once()
    assert wait_for(lambda: model_manager.version_states("m")[0][2] is not None, 30)
    [(version, state, error)] = model_manager.version_states("m")
    assert (version, state) == (1, _State.LOADING), "retrying: still LOADING, last error kept"
    shutil.copytree(os.path.join(export_dir, "variables"), os.path.join(version_dir, "variables"))
    assert wait_for(lambda: model_manager.version_states("m") == [(1, _State.AVAILABLE, None)],
                    30), model_manager.version_states("m")
  finally:
    model_manager.close()


def test_a_version_that_never_loads_is_reported_and_the_last_good_one_serves(
    export_dir, tmp_path, sample_images):
  base = str(tmp_path / "m")
  os.makedirs(base)
  copy_version(export_dir, base, 1)
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("m", base),), port=0,
      file_system_poll_wait_seconds=0.2,
      load=config.LoadOptions(max_num_load_retries=2, load_retry_interval_s=0.1))
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    model_stub = model_service_pb2_grpc.ModelServiceStub(ch)
    _partial_copy(export_dir, os.path.join(base, "2"))
    assert wait_for(lambda: version_states(model_stub, "m").get(2) == _State.END, 60)
    response = model_stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=5)
    [failed] = [v for v in response.model_version_status if v.version == 2]
    assert failed.status.error_code != 0 and "variables" in failed.status.error_message
    assert stub.Predict(raw_request([1], sample_images[:1], model="m"), timeout=10) \
        .model_spec.version.value == 1


def test_a_missing_base_path_or_a_version_folder_is_explained_once(export_dir, tmp_path,
                                                                   caplog):
  version_dir = copy_version(export_dir, str(tmp_path), 2)
  model_manager = manager.ModelManager(
      (config.make_model_config("as_version", version_dir),
       config.make_model_config("missing", str(tmp_path / "nope"))),
      config.LoadOptions(max_num_load_retries=0))
  try:
    with caplog.at_level(logging.WARNING):
      for _ in range(3):
        model_manager.poll_once(wait=True)
  finally:
    model_manager.close()
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert sum("is itself a version folder" in w and f"--model_base_path={tmp_path}" in w
             for w in warnings) == 1, warnings
  assert sum(f"base path {tmp_path / 'nope'} does not exist" in w for w in warnings) == 1, \
      warnings


def test_start_on_a_busy_port_fails_clearly(export_dir):
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    options = config.ServerOptions(
        model_config_list=(config.make_model_config("m", os.path.dirname(export_dir)),),
        port=busy.getsockname()[1], file_system_poll_wait_seconds=0,
        load=config.LoadOptions(enable_model_warmup=False))
    model_server = model_server_lib.ModelServer(options)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{options.port}"):
      model_server.start()
  assert not model_server.manager.has_available_version()  # Unloaded again.


def test_new_version_is_served_within_the_poll_interval_and_old_unloaded(
    export_dir, tmp_path, sample_images):
  base = str(tmp_path / "mnist")
  os.makedirs(base)
  copy_version(export_dir, base, 1)
  poll_s = 0.2
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", base),), port=0,
      file_system_poll_wait_seconds=poll_s)
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    model_stub = model_service_pb2_grpc.ModelServiceStub(ch)
    assert stub.Predict(raw_request([1], sample_images[:1]), timeout=10) \
        .model_spec.version.value == 1
    shutil.copytree(export_dir, os.path.join(base, ".staging-7"))  # Never a version.
    start = time.monotonic()
    copy_version(export_dir, base, 2)
    states = wait_for(lambda: version_states(model_stub) == {1: _State.END,
                                                             2: _State.AVAILABLE}, 20)
    elapsed = time.monotonic() - start
    assert states, version_states(model_stub)
    # One poll interval plus the load (session, warmup) of a small model.
    assert elapsed < poll_s + 10
    assert stub.Predict(raw_request([1], sample_images[:1]), timeout=10) \
        .model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as info:
      stub.Predict(raw_request([1], sample_images[:1], version=1), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # Deleting the newest version rolls back: version 1 loads again, 2 goes.
    shutil.rmtree(os.path.join(base, "2"))
    # (Version 2 shows as END until the next poll forgets the deleted directory.)
    assert wait_for(lambda: version_states(model_stub) in (
        {1: _State.AVAILABLE, 2: _State.END}, {1: _State.AVAILABLE}), 20)
    assert stub.Predict(raw_request([1], sample_images[:1]), timeout=10) \
        .model_spec.version.value == 1


def _policy(text):
  policy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig \
      .ServableVersionPolicy()
  text_format.Parse(text, policy)
  return policy


def test_select_versions_follows_the_policy():
  on_disk = [1, 3, 4, 10]
  assert manager.select_versions(on_disk, _policy("")) == {10}
  assert manager.select_versions(on_disk, _policy("latest { num_versions: 2 }")) == {4, 10}
  assert manager.select_versions(on_disk, _policy("all {}")) == {1, 3, 4, 10}
  assert manager.select_versions(on_disk, _policy("specific { versions: 3 versions: 7 }")) == {3}


def test_all_versions_policy_and_labels_from_a_config_file(export_dir, tmp_path, sample_images):
  base = str(tmp_path / "m")
  os.makedirs(base)
  copy_version(export_dir, base, 1)
  copy_version(export_dir, base, 2)
  config_file = tmp_path / "models.config"
  config_file.write_text(f"""
      model_config_list {{
        config {{
          name: "digits" base_path: "{base}" model_platform: "tensorflow"
          model_version_policy {{ all {{}} }}
          version_labels {{ key: "stable" value: 1 }}
        }}
      }}""")
  configs = config.parse_model_config_file(str(config_file))
  # As in TF Serving, a label may only name a version that is available: at start
  # none is, unless --allow_version_labels_for_unavailable_models.
  with pytest.raises(errors.ServingError,
                     match="allow_version_labels_for_unavailable_models") as info:
    model_server_lib.ModelServer(config.ServerOptions(model_config_list=configs, port=0))
  assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
  options = config.ServerOptions(model_config_list=configs, port=0,
                                 file_system_poll_wait_seconds=0,
                                 allow_version_labels_for_unavailable_models=True)
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    request = raw_request([1], sample_images[:1], model="digits")
    assert stub.Predict(request, timeout=10).model_spec.version.value == 2
    request.model_spec.version_label = "stable"
    assert stub.Predict(request, timeout=10).model_spec.version.value == 1
    # ModelService.HandleReloadConfigRequest: serve it under a second name too.
    reload = model_management_pb2.ReloadConfigRequest()
    reload.config.model_config_list.config.extend(
        [options.model_config_list[0], config.make_model_config("mnist", base)])
    response = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(
        reload, timeout=30)
    assert response.status.error_code == 0, response.status.error_message
    assert stub.Predict(raw_request([1], sample_images[:1]), timeout=10) \
        .model_spec.version.value == 2


@pytest.mark.parametrize("text,message", [
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }',
     "model_platform 'pytorch'; expected 'tensorflow'"),
    ('model_config_list { config { name: "a" base_path: "/x" } '
     'config { name: "a" base_path: "/y" } }', "appears twice"),
    ("model_config_list { config { name: 3 } }", "Error parsing text-format "
     "tensorflow.serving.ModelServerConfig"),
])
def test_bad_model_config_files(tmp_path, text, message):
  path = tmp_path / "bad.config"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    config.parse_model_config_file(str(path))


def test_deploy_configs_parse():
  # The files deploy/serving hands to the real tensorflow_model_server.
  configs = config.parse_model_config_file(os.path.join(ROOT, "deploy/serving/models.config"))
  assert [c.name for c in configs] == ["mnist"]
  batching_options = config.parse_batching_parameters_file(
      os.path.join(ROOT, "deploy/serving/batching_parameters.txt"))
  assert batching_options.max_batch_size == batching_options.allowed_batch_sizes[-1]


def test_batching_and_ssl_text_protos(tmp_path):
  path = tmp_path / "batching.txt"
  path.write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 500 }\n"
                  "num_batch_threads { value: 3 } allowed_batch_sizes: 4 "
                  "allowed_batch_sizes: 16")
  assert config.parse_batching_parameters_file(str(path)) == config.BatchingOptions(
      max_batch_size=16, batch_timeout_micros=500, num_batch_threads=3,
      allowed_batch_sizes=(4, 16))
  path.write_text("max_batch_size { value: 16 } allowed_batch_sizes: 8")
  with pytest.raises(ValueError, match="must increase and end with max_batch_size 16"):
    config.parse_batching_parameters_file(str(path))
  ssl_cls = config.config_message_class("SSLConfig")
  path.write_text(text_format.MessageToString(ssl_cls(
      server_key="KEY\n", server_cert="CERT\n", custom_ca="CA\n", client_verify=True)))
  assert config.parse_ssl_config_file(str(path)) == config.SslOptions(
      "KEY\n", "CERT\n", "CA\n", True)


# ---- Batching ----


def test_batch_scheduler_merges_queued_requests_and_pads():
  calls, release = [], threading.Event()

  def run_fn(feeds):
    calls.append([f.shape[0] for f in feeds])
    if len(calls) == 1:
      release.wait(10)
    return [feeds[0] * 10, feeds[1].sum(axis=1)]

  scheduler = batching.BatchScheduler(run_fn, config.BatchingOptions(
      max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=(4, 8)), "test")
  results = {}

  def request_fn(i, rows):
    keys = np.arange(rows) + 100 * i
    results[i] = (keys, scheduler.run([keys, np.ones((rows, 3))], rows))

  threads = [threading.Thread(target=request_fn, args=(0, 1))]
  threads[0].start()
  assert wait_for(lambda: calls, 10)  # The first request runs alone, and blocks.
  threads += [threading.Thread(target=request_fn, args=(i, 2)) for i in (1, 2, 3)]
  for t in threads[1:]:
    t.start()
  assert wait_for(lambda: scheduler._queued_rows == 6, 10)  # pylint: disable=protected-access
  release.set()
  for t in threads:
    t.join(10)
  scheduler.close()
  # 1 row padded to 4, then the three queued 2-row requests in one batch of 6 padded to 8.
  assert calls == [[4, 4], [8, 8]]
  assert (scheduler.num_batches, scheduler.num_requests) == (2, 4)
  for keys, (scaled, sums) in results.values():
    np.testing.assert_array_equal(scaled, keys * 10)
    np.testing.assert_array_equal(sums, np.full(len(keys), 3.0))


def test_enable_batching_merges_concurrent_requests(export_dir, sample_images, stub):
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", os.path.dirname(export_dir)),),
      port=0, file_system_poll_wait_seconds=0, load=config.LoadOptions(
          enable_model_warmup=False,
          batching=config.BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000,
                                          num_batch_threads=1)))
  expected = tf.make_ndarray(stub.Predict(raw_request(np.arange(8), sample_images),
                                          timeout=10).outputs["scores"])
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    batched_stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    barrier, answers = threading.Barrier(8), {}

    def predict_fn(i):
      barrier.wait(10)
      answers[i] = batched_stub.Predict(raw_request([i], sample_images[i:i + 1]), timeout=20)

    threads = [threading.Thread(target=predict_fn, args=(i,)) for i in range(8)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(30)
    with s.manager.servable("mnist") as servable:
      [scheduler] = servable._batchers.values()  # pylint: disable=protected-access
  assert sorted(answers) == list(range(8))
  for i, response in answers.items():
    assert list(response.outputs["key"].int64_val) == [i]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"])[0], expected[i],
                               atol=1e-5)
  assert scheduler.num_requests == 8 and scheduler.num_batches < 8


def test_tensor_content_responses_when_enabled(export_dir, sample_images):
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", os.path.dirname(export_dir)),),
      port=0, file_system_poll_wait_seconds=0, load=config.LoadOptions(enable_model_warmup=False),
      tensor_content=True)
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
        raw_request([3, 4], sample_images[:2]), timeout=10)
  assert len(response.outputs["scores"].tensor_content) == 2 * 10 * 4
  assert not response.outputs["scores"].float_val
  assert tf.make_ndarray(response.outputs["key"]).tolist() == [3, 4]

