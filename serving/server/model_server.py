"""The embedded model server: TF Serving's gRPC services over a ModelManager, plus REST."""

import signal
import threading
from concurrent import futures

from absl import logging
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import runtime

# Quiet TensorFlow's start-up before anything else imports it (a no-op once loaded).
tf = runtime.import_tensorflow()

from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from serving.server import config
from serving.server import errors
from serving.server import inference
from serving.server import rest
from serving.server import tensors
from serving.server.manager import ModelManager
from serving.server.servable import Servable
from serving.server.tensors import ServingError

REAL_SERVER_BINARY = "tensorflow_model_server"
HEALTH_SERVICES = ("", prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"].full_name, model_service_pb2.DESCRIPTOR.services_by_name[
        "ModelService"].full_name)


# ----------------------------------------------------------------------------
# gRPC services.


def _spec_version(model_spec):
  version = model_spec.version.value if model_spec.HasField("version") else None
  return model_spec.name, version, model_spec.version_label or None


def _require_method(servable: Servable, method: str) -> None:
  # A model without any signature of the method answers like a server without
  # the RPC; one that has such a signature, but not under the requested name,
  # gets the signature-level INVALID_ARGUMENT of run_classify/run_regress.
  if not any(s.method_name == method for s in servable.signatures.values()):
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"model '{servable.name}' version {servable.version} has no "
                       f"{method!r} signature; its signatures are {sorted(servable.signatures)}")


def _abort(context, method: str, error: Exception):
  error = errors.status_from_exception(error)
  if error.code == grpc.StatusCode.INTERNAL:
    logging.exception("%s failed", method)
  else:
    logging.info("%s failed: %s", method, error)
  context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's PredictionService over a ModelManager."""

  def __init__(self, manager: ModelManager, tensor_content: bool = False):
    self._manager = manager
    self._tensor_content = tensor_content

  def Predict(self, request, context):
    try:
      inputs = tensors.decode_inputs(request.inputs)
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        signature_name, outputs = servable.predict(
            request.model_spec.signature_name, inputs, request.output_filter)
        signature = servable.signatures[signature_name]
      response = predict_pb2.PredictResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.model_spec.signature_name = signature_name
      for name, array in outputs.items():
        response.outputs[name].CopyFrom(tensors.from_numpy(
            array, signature.outputs[name].dtype, tensor_content=self._tensor_content))
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "Predict", e)

  def GetModelMetadata(self, request, context):
    try:
      fields = list(request.metadata_field)
      if fields != ["signature_def"]:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"metadata_field is {fields}; expected ['signature_def']")
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signatures.items():
          signature_map.signature_def[name].CopyFrom(signature)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(signature_map)
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "GetModelMetadata", e)

  def Classify(self, request, context):
    return self._run_examples("Classify", request, context, inference.CLASSIFY_METHOD,
                              inference.run_classify, classification_pb2.ClassificationResponse)

  def Regress(self, request, context):
    return self._run_examples("Regress", request, context, inference.REGRESS_METHOD,
                              inference.run_regress, regression_pb2.RegressionResponse)

  def _run_examples(self, rpc: str, request, context, method: str, run_fn, response_cls):
    """Classify or Regress: `run_fn` answers the result that `response_cls` wraps."""
    try:
      with self._manager.servable(*_spec_version(request.model_spec)) as servable:
        _require_method(servable, method)
        result = run_fn(servable, request)
      response = response_cls(result=result)
      response.model_spec.CopyFrom(request.model_spec)
      response.model_spec.version.value = servable.version
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, rpc, e)

  def MultiInference(self, request, context):
    try:
      specs = {(t.model_spec.name, _spec_version(t.model_spec)[1:]) for t in request.tasks}
      if len(specs) != 1:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"MultiInference tasks name {len(specs)} model versions; expected "
                           "all tasks to name the same one")
      with self._manager.servable(*_spec_version(request.tasks[0].model_spec)) as servable:
        return inference.run_multi_inference(servable, request)
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "MultiInference", e)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """TF Serving's ModelService: version states and config reloads."""

  def __init__(self, manager: ModelManager):
    self._manager = manager

  def GetModelStatus(self, request, context):
    try:
      states = self._manager.version_states(*_spec_version(request.model_spec))
      response = get_model_status_pb2.GetModelStatusResponse()
      for version, state, error in states:
        status = response.model_version_status.add(version=version, state=state)
        if error is not None:
          status.status.error_code = error.code.value[0]
          status.status.error_message = error.message
      return response
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, "GetModelStatus", e)

  def HandleReloadConfigRequest(self, request, context):
    response = model_management_pb2.ReloadConfigResponse()
    try:
      if request.config.WhichOneof("config") != "model_config_list":
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "ReloadConfigRequest has no model_config_list")
      try:
        self._manager.reload_config(tuple(request.config.model_config_list.config))
      except ValueError as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
    except Exception as e:  # pylint: disable=broad-except
      error = errors.status_from_exception(e)
      response.status.error_code = error.code.value[0]
      response.status.error_message = error.message
      logging.info("HandleReloadConfigRequest failed: %s", error)
    return response


# ----------------------------------------------------------------------------
# The server.


class ModelServer:
  """The embedded model server: gRPC (and optionally REST) over a ModelManager.

  `start()` loads what is on disk before it returns, so a test can predict right
  away; health checking answers SERVING from the first available version on.
  """

  def __init__(self, options: config.ServerOptions):
    self.options = options
    session_config = None
    if options.session_parallelism:
      session_config = tf.compat.v1.ConfigProto(
          intra_op_parallelism_threads=options.session_parallelism,
          inter_op_parallelism_threads=options.session_parallelism)
    self.health = health.HealthServicer(experimental_non_blocking=True)
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    self.manager = ModelManager(
        options.model_config_list, session_config=session_config, batching=options.batching,
        enable_model_warmup=options.enable_model_warmup,
        warmup_iterations=options.num_request_iterations_for_warmup,
        on_change=self._update_health)
    self.port = None
    self.rest_port = None
    self._grpc_server = None
    self._rest_server = None

  def _update_health(self, manager: ModelManager) -> None:
    serving = manager.has_available_version()
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)

  def start(self) -> "ModelServer":
    self.manager.poll_once()
    try:
      self._start_servers()
    except BaseException:
      self.stop(grace_s=0)
      raise
    self.manager.start_polling(self.options.file_system_poll_wait_seconds)
    return self

  def _start_servers(self) -> None:
    options = self.options
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.grpc_max_threads,
                                   thread_name_prefix="grpc"),
        options=[("grpc.max_send_message_length", options.max_message_bytes),
                 ("grpc.max_receive_message_length", options.max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    predictions = PredictionServicer(self.manager, options.tensor_content)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
    health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
    reflection.enable_server_reflection(HEALTH_SERVICES[1:] + (
        health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{options.host}:{options.port}"
    try:
      if options.ssl:
        credentials = grpc.ssl_server_credentials(
            [(options.ssl.server_key.encode(), options.ssl.server_cert.encode())],
            root_certificates=options.ssl.custom_ca.encode() or None,
            require_client_auth=options.ssl.client_verify)
        self.port = server.add_secure_port(address, credentials)
      else:
        self.port = server.add_insecure_port(address)
    except RuntimeError as e:
      raise OSError(f"cannot listen on {address} ({e}); expected a free port") from e
    if not self.port:
      raise OSError(f"cannot listen on {address}; expected a free port")
    server.start()
    self._grpc_server = server
    logging.info("Running ModelServer (embedded) at %s:%d (%s) ...", options.host, self.port,
                 "TLS" if options.ssl else "plaintext")
    if options.rest_api_port:
      if options.rest_api_port == options.port:
        raise ValueError(f"--rest_api_port {options.rest_api_port} equals --port; expected "
                         "a different port")
      self._rest_server = rest.start_rest_server(
          options.host, options.rest_api_port, self.manager)
      self.rest_port = self._rest_server.server_address[1]
      logging.info("Exporting HTTP/REST API at %s:%d ...", options.host, self.rest_port)

  def stop(self, grace_s: float = 5.0) -> None:
    """Stops taking requests, lets those in flight finish (up to grace_s), unloads all."""
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    if self._rest_server is not None:
      self._rest_server.shutdown()
      self._rest_server.server_close()
    if self._grpc_server is not None:
      self._grpc_server.stop(grace_s).wait()
    self.manager.close()
    logging.info("ModelServer stopped")

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop(grace_s=0)


def run_server(options: config.ServerOptions, stop_event: threading.Event | None = None) -> None:
  """Serves until SIGTERM or SIGINT (or `stop_event`), then stops gracefully."""
  stop_event = stop_event or threading.Event()

  def handle_signal(signum, frame):
    del frame
    logging.info("Received %s; stopping gracefully", signal.Signals(signum).name)
    stop_event.set()

  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, handle_signal)
    signal.signal(signal.SIGINT, handle_signal)
  server = ModelServer(options).start()
  try:
    while not stop_event.wait(1.0):
      pass
  finally:
    server.stop()
