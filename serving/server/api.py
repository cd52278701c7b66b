"""TF Serving's API over a ModelManager, one function per RPC, shared by gRPC and REST."""

import dataclasses

from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from serving.server import config
from serving.server import errors
from serving.server import inference
from serving.server import tensors
from serving.server.manager import ModelManager
from serving.server.servable import DEFAULT_SIGNATURE

SIGNATURE_DEF = "signature_def"


def model_spec_key(model_spec) -> tuple:
  """(name, version or None, label or None) of a ModelSpec."""
  version = model_spec.version.value if model_spec.HasField("version") else None
  return model_spec.name, version, model_spec.version_label or None


@dataclasses.dataclass(frozen=True)
class Api:
  """What each RPC needs: the models, request limits, and how answers are encoded."""
  manager: ModelManager
  limits: config.RequestLimits = config.RequestLimits()
  tensor_content: bool = False
  check_method_name: bool = False

  @property
  def inference_options(self) -> inference.InferenceOptions:
    return inference.InferenceOptions(self.limits, self.check_method_name)

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    with self.manager.servable(*model_spec_key(request.model_spec)) as servable:
      signature_name, outputs = servable.predict_request(request, self.limits)
    signature = servable.signatures[signature_name]
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for name, array in outputs.items():
      response.outputs[name].CopyFrom(tensors.from_numpy(
          array, signature.outputs[name].dtype, tensor_content=self.tensor_content))
    return response

  def classify(self, request) -> classification_pb2.ClassificationResponse:
    return self._run_examples(inference.CLASSIFY, request,
                              classification_pb2.ClassificationResponse)

  def regress(self, request) -> regression_pb2.RegressionResponse:
    return self._run_examples(inference.REGRESS, request, regression_pb2.RegressionResponse)

  def _run_examples(self, method: str, request, response_cls):
    with self.manager.servable(*model_spec_key(request.model_spec)) as servable:
      result = inference.run_examples(servable, method, request, self.inference_options)
    # The answer's ModelSpec: name, signature (defaulted) and the version that ran.
    model_spec = type(request.model_spec)(
        name=request.model_spec.name,
        signature_name=request.model_spec.signature_name or DEFAULT_SIGNATURE)
    model_spec.version.value = servable.version
    return response_cls(model_spec=model_spec, result=result)

  def multi_inference(self, request):
    inference.check_multi_inference_tasks(request)
    with self.manager.servable(*model_spec_key(request.tasks[0].model_spec)) as servable:
      return inference.run_multi_inference(servable, request, self.inference_options)

  def get_model_metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.metadata_field:
      raise errors.invalid_argument(
          "GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF:
        raise errors.invalid_argument(f"Metadata field {errors.printable(field)} is not "
                                      f"supported; expected {SIGNATURE_DEF}")
    with self.manager.servable(*model_spec_key(request.model_spec)) as servable:
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for name, signature in servable.signatures.items():
        signature_map.signature_def[name].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF].Pack(signature_map)
    return response

  def get_model_status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField("model_spec"):
      raise errors.invalid_argument("Missing ModelSpec")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state, error in self.manager.version_states(
        *model_spec_key(request.model_spec)):
      status = response.model_version_status.add(version=version, state=state)
      status.status.SetInParent()  # TF Serving always sets it; OK is printed as such.
      if error is not None:
        status.status.error_code = error.code.value[0]
        status.status.error_message = error.message
    return response
