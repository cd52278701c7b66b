"""Classify, Regress and MultiInference: tf.Example requests run through a Servable's signatures."""

import grpc
import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import regression_pb2

from serving.server.servable import Servable
from serving.server.tensors import ServingError

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _serialized_examples(input_proto) -> np.ndarray:
  kind = input_proto.WhichOneof("kind")
  if kind == "example_list":
    examples = [e.SerializeToString() for e in input_proto.example_list.examples]
  elif kind == "example_list_with_context":
    # Parsing concatenated serializations merges them: the context's features
    # first, each example's overriding them, as in TF Serving.
    context = input_proto.example_list_with_context.context.SerializeToString()
    examples = [context + e.SerializeToString()
                for e in input_proto.example_list_with_context.examples]
  else:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       "the request's input has no examples; expected example_list or "
                       "example_list_with_context")
  if not examples:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "the request's input has 0 examples")
  return np.array(examples, dtype=object)


def _example_signature(servable: Servable, signature_name: str, method: str):
  signature_name, signature = servable.signature(signature_name)
  if signature.method_name != method:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' has method {signature.method_name!r}; "
                       f"expected {method!r}")
  if len(signature.inputs) != 1:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' has inputs {sorted(signature.inputs)}; "
                       "expected one serialized tf.Example input")
  return signature_name, next(iter(signature.inputs))


def run_classify(servable: Servable, request) -> classification_pb2.ClassificationResult:
  signature_name, input_name = _example_signature(
      servable, request.model_spec.signature_name, CLASSIFY_METHOD)
  examples = _serialized_examples(request.input)
  _, outputs = servable.predict(signature_name, {input_name: examples})
  classes, scores = outputs.get("classes"), outputs.get("scores")
  rows = len(examples)
  result = classification_pb2.ClassificationResult()
  for i in range(rows):
    out = result.classifications.add()
    n = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    for j in range(n):
      c = out.classes.add()
      if classes is not None:
        c.label = classes.reshape(rows, -1)[i, j].decode()
      if scores is not None:
        c.score = float(scores.reshape(rows, -1)[i, j])
  return result


def run_regress(servable: Servable, request) -> regression_pb2.RegressionResult:
  signature_name, input_name = _example_signature(
      servable, request.model_spec.signature_name, REGRESS_METHOD)
  examples = _serialized_examples(request.input)
  _, outputs = servable.predict(signature_name, {input_name: examples})
  values = outputs.get("outputs")
  if values is None or values.size != len(examples):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature '{signature_name}' needs an output 'outputs' with one value "
                       "per example")
  return regression_pb2.RegressionResult(
      regressions=[regression_pb2.Regression(value=float(v)) for v in values.reshape(-1)])


def run_multi_inference(servable: Servable, request) -> inference_pb2.MultiInferenceResponse:
  response = inference_pb2.MultiInferenceResponse()
  for task in request.tasks:
    result = response.results.add()
    result.model_spec.CopyFrom(task.model_spec)
    result.model_spec.version.value = servable.version
    sub_request = classification_pb2.ClassificationRequest(model_spec=task.model_spec,
                                                           input=request.input)
    if task.method_name == CLASSIFY_METHOD:
      result.classification_result.CopyFrom(run_classify(servable, sub_request))
    elif task.method_name == REGRESS_METHOD:
      result.regression_result.CopyFrom(run_regress(servable, regression_pb2.RegressionRequest(
          model_spec=task.model_spec, input=request.input)))
    else:
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f"inference task method {task.method_name!r} is not supported; "
                         f"expected {CLASSIFY_METHOD!r} or {REGRESS_METHOD!r}")
  return response
