"""Classify, Regress and MultiInference on a small TF1 SavedModel with tf.Example signatures."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from serving.server import config
from serving.server import model_server as model_server_lib


def _save_example_model(path: str) -> None:
  """Reads float feature `x`; classifies into ("pos", "neg") by sigmoid(x); regresses 2x + 1."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
    x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
    scores = tf.concat([tf.sigmoid(x), 1 - tf.sigmoid(x)], axis=1)
    classes = tf.tile(tf.constant([["pos", "neg"]]), [tf.shape(x)[0], 1])
    builder = tf.compat.v1.saved_model.Builder(path)
    builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING], signature_def_map={
        "serving_default": tf.compat.v1.saved_model.classification_signature_def(
            serialized, classes, scores),
        "regress_x": tf.compat.v1.saved_model.regression_signature_def(
            serialized, 2 * x + 1),
    })
    builder.save()


def _example(x: float) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(
      feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))


@pytest.fixture(scope="module")
def example_stub(tmp_path_factory):
  base = tmp_path_factory.mktemp("examples")
  _save_example_model(str(base / "1"))
  options = config.ServerOptions(model_config_list=(config.make_model_config("ex", str(base)),),
                                 port=0, file_system_poll_wait_seconds=0)
  with model_server_lib.ModelServer(options) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
    yield prediction_service_pb2_grpc.PredictionServiceStub(ch)


def test_classify(example_stub):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = "ex"
  request.input.example_list.examples.extend([_example(0.0), _example(100.0)])
  response = example_stub.Classify(request, timeout=10)
  assert response.model_spec.version.value == 1
  first, second = response.result.classifications
  assert [c.label for c in first.classes] == ["pos", "neg"]
  assert [c.score for c in first.classes] == pytest.approx([0.5, 0.5])
  assert [c.score for c in second.classes] == pytest.approx([1.0, 0.0])


def test_regress_with_context_and_multi_inference(example_stub):
  request = regression_pb2.RegressionRequest()
  request.model_spec.name = "ex"
  request.model_spec.signature_name = "regress_x"
  request.input.example_list_with_context.context.CopyFrom(_example(3.0))
  request.input.example_list_with_context.examples.extend([tf.train.Example(), _example(1.0)])
  values = [r.value for r in example_stub.Regress(request, timeout=10).result.regressions]
  assert values == pytest.approx([7.0, 3.0])  # The example's own x overrides the context's.

  multi = inference_pb2.MultiInferenceRequest()
  multi.input.example_list.examples.append(_example(2.0))
  for signature, method in (("serving_default", "tensorflow/serving/classify"),
                            ("regress_x", "tensorflow/serving/regress")):
    task = multi.tasks.add(method_name=method)
    task.model_spec.name, task.model_spec.signature_name = "ex", signature
  classified, regressed = example_stub.MultiInference(multi, timeout=10).results
  assert classified.classification_result.classifications[0].classes[0].score == \
      pytest.approx(1 / (1 + np.exp(-2.0)))
  assert regressed.regression_result.regressions[0].value == pytest.approx(5.0)


def test_regress_on_a_classify_signature_is_invalid(example_stub):
  request = regression_pb2.RegressionRequest()
  request.model_spec.name = "ex"
  request.input.example_list.examples.append(_example(1.0))
  with pytest.raises(grpc.RpcError) as info:
    example_stub.Regress(request, timeout=10)
  # The model has a regress signature, just not this one: the request is wrong
  # (TF Serving's check of a regression signature: one output, `outputs`).
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "Expected one output Tensor." in info.value.details()
