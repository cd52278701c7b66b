"""Classify, Regress and MultiInference: tf.Example requests run through a Servable's signatures.

The checks and their words follow TF Serving's classifier.cc, regressor.cc and
multi_inference.cc: the signature's one input is `inputs` (serialized
tf.Examples), classification outputs are `classes` and/or `scores` of shape
[batch, classes], the regression output is `outputs` of shape [batch] or [batch, 1].
The method name of a signature is only checked with
--enable_signature_method_name_check, as in TF Serving, so TF2 models (whose
signatures all say "predict") classify and regress too.
"""

import dataclasses

import grpc
import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import regression_pb2

from serving.server import config
from serving.server.errors import ServingError
from serving.server.errors import invalid_argument
from serving.server.errors import printable
from serving.server.servable import DEFAULT_SIGNATURE
from serving.server.servable import Servable

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY = "classify"
REGRESS = "regress"
_METHODS = {CLASSIFY_METHOD: CLASSIFY, REGRESS_METHOD: REGRESS}


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
  limits: config.RequestLimits = config.RequestLimits()
  check_method_name: bool = False  # --enable_signature_method_name_check


def serialized_examples(input_proto, limits: config.RequestLimits) -> np.ndarray:
  """The request's tf.Examples as a [N] string array, at most limits.max_rows of them."""
  kind = input_proto.WhichOneof("kind")
  if kind == "example_list":
    examples = input_proto.example_list.examples
  elif kind == "example_list_with_context":
    examples = input_proto.example_list_with_context.examples
  else:
    raise invalid_argument("Input is empty.")
  if len(examples) > limits.max_rows:
    raise invalid_argument(f"the request has {len(examples)} examples; this server takes at "
                           f"most {limits.max_rows} (--max_request_rows)")
  if not examples:
    raise invalid_argument("Input is empty.")
  if kind == "example_list_with_context":
    # Parsing concatenated serializations merges them: the context's features
    # first, each example's overriding them, as in TF Serving.
    context = input_proto.example_list_with_context.context.SerializeToString()
    serialized = [context + e.SerializeToString() for e in examples]
  else:
    serialized = [e.SerializeToString() for e in examples]
  return np.array(serialized, dtype=object)


def _check_signature(signature_name: str, signature, method: str) -> None:
  """TF Serving's PreProcessClassification / PreProcessRegression."""
  if len(signature.inputs) != 1:
    raise invalid_argument("Expected one input Tensor.")
  if method == CLASSIFY:
    if len(signature.outputs) not in (1, 2):
      raise invalid_argument(f"Expected one or two output Tensors, found "
                             f"{len(signature.outputs)}")
    if "inputs" not in signature.inputs:
      raise invalid_argument(f"No classification inputs found in SignatureDef "
                             f"'{signature_name}'")
    if not {"classes", "scores"} & set(signature.outputs):
      raise invalid_argument(
          'Expected classification signature outputs to contain at least one of "classes" '
          f"or \"scores\". Signature '{signature_name}' has {sorted(signature.outputs)}")
  else:
    if len(signature.outputs) != 1:
      raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
      raise invalid_argument(f"No regression inputs found in SignatureDef '{signature_name}'")
    if "outputs" not in signature.outputs:
      raise invalid_argument(f"No regression outputs found in SignatureDef '{signature_name}'")


def _signature(servable: Servable, signature_name: str, method: str,
               options: InferenceOptions, not_found_words: str):
  signature_name, signature = servable.find_signature(signature_name)
  if signature is None:
    raise invalid_argument(f"{not_found_words}{printable(signature_name)}")
  method_name = CLASSIFY_METHOD if method == CLASSIFY else REGRESS_METHOD
  if options.check_method_name and signature.method_name != method_name:
    raise invalid_argument(f"Expected {'classification' if method == CLASSIFY else 'regression'}"
                           f" signature method_name to be {method_name}. Was: "
                           f"{signature.method_name}")
  _check_signature(signature_name, signature, method)
  return signature_name, signature


def _output_names(signature, method: str) -> list:
  wanted = ("classes", "scores") if method == CLASSIFY else ("outputs",)
  return [alias for alias in wanted if alias in signature.outputs]


def _classification_result(outputs: dict, rows: int) -> classification_pb2.ClassificationResult:
  classes, scores = outputs.get("classes"), outputs.get("scores")
  for name, array, dtype in (("classes", classes, np.object_), ("scores", scores, np.float32)):
    if array is None:
      continue
    if array.ndim != 2:
      raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got "
                             f"{list(array.shape)} for {name}")
    if array.dtype != dtype:
      raise invalid_argument(f"Expected {name} Tensor of "
                             f"{'DT_STRING' if name == 'classes' else 'DT_FLOAT'}. Got: "
                             f"{array.dtype}")
    if array.shape[0] != rows:
      raise invalid_argument(f"Expected {name} output batch size of {rows}. Got: "
                             f"{array.shape[0]}")
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got "
                           f"{classes.shape[1]} vs. {scores.shape[1]}")
  num_classes = (classes if classes is not None else scores).shape[1]
  result = classification_pb2.ClassificationResult()
  for i in range(rows):
    classifications = result.classifications.add()
    for j in range(num_classes):
      c = classifications.classes.add()
      if classes is not None:
        c.label = classes[i, j].decode(errors="replace")
      if scores is not None:
        c.score = float(scores[i, j])
  return result


def _regression_result(outputs: dict, rows: int) -> regression_pb2.RegressionResult:
  values = outputs["outputs"]
  if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
    raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or "
                           f"[batch_size, 1] but got {list(values.shape)}")
  if values.shape[0] != rows:
    raise invalid_argument(f"Input batch size did not match output batch size: {rows} vs. "
                           f"{values.shape[0]}")
  return regression_pb2.RegressionResult(
      regressions=[regression_pb2.Regression(value=float(v)) for v in values.reshape(-1)])


def _run(servable: Servable, signatures: list, input_proto, options: InferenceOptions) -> tuple:
  """Runs [(signature, method)] on one set of examples in one session run, feeding the
  examples to every signature's input tensor as TF Serving does; ({alias: array} per
  signature, rows)."""
  examples = serialized_examples(input_proto, options.limits)
  feeds = {s.inputs["inputs"].name: examples for s, _ in signatures}
  fetches = sorted({s.outputs[a].name for s, method in signatures
                    for a in _output_names(s, method)})
  arrays = dict(zip(fetches, servable.run(feeds, tuple(fetches), batchable=True)))
  return [{a: arrays[s.outputs[a].name] for a in _output_names(s, method)}
          for s, method in signatures], len(examples)


def run_examples(servable: Servable, method: str, request,
                 options: InferenceOptions = InferenceOptions()):
  """Classify (method CLASSIFY) or Regress (REGRESS): the ClassificationResult or
  RegressionResult of a request's tf.Examples."""
  _, signature = _signature(servable, request.model_spec.signature_name, method, options,
                            "No signature was found with the name: ")
  [outputs], rows = _run(servable, [(signature, method)], request.input, options)
  return (_classification_result if method == CLASSIFY else _regression_result)(outputs, rows)


def check_multi_inference_tasks(request) -> str:
  """The one model name all tasks of a MultiInferenceRequest name (TF Serving's checks)."""
  if not request.tasks:
    raise invalid_argument("the MultiInferenceRequest has no tasks; expected at least one")
  names = set()
  for task in request.tasks:
    if not task.model_spec.name:
      raise invalid_argument("Found ModelSpec with an empty model name.")
    names.add(task.model_spec.name)
  if len(names) > 1:
    raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same "
                           "model name.")
  return names.pop()


def run_multi_inference(servable: Servable, request,
                        options: InferenceOptions = InferenceOptions()
                        ) -> inference_pb2.MultiInferenceResponse:
  check_multi_inference_tasks(request)
  signatures, seen = [], set()
  for task in request.tasks:
    name = task.model_spec.signature_name or DEFAULT_SIGNATURE
    if name in seen:
      raise invalid_argument(f"Duplicate evaluation of signature: {printable(name)}")
    seen.add(name)
    method = _METHODS.get(task.method_name)
    if method is None:
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f"Unsupported signature method_name: {printable(task.method_name)}")
    _, signature = _signature(servable, name, method, options,
                              "Requested signature not found in model graph: ")
    signatures.append((signature, method))
  outputs, rows = _run(servable, signatures, request.input, options)
  response = inference_pb2.MultiInferenceResponse()
  for task, (_, method), task_outputs in zip(request.tasks, signatures, outputs):
    result = response.results.add()
    if method == CLASSIFY:
      result.classification_result.CopyFrom(_classification_result(task_outputs, rows))
    else:
      result.regression_result.CopyFrom(_regression_result(task_outputs, rows))
    result.model_spec.name = task.model_spec.name
    result.model_spec.signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
    result.model_spec.version.value = servable.version
  return response
