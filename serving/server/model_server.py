"""The embedded model server: TF Serving's gRPC services over a ModelManager, plus REST."""

import os
import signal
import threading
import time
from concurrent import futures

from absl import logging
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from google.protobuf import message_factory
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.server import config
from serving.server import errors
from serving.server import inference
from serving.server import rest
from serving.server.api import Api
from serving.server.manager import ModelManager
from serving.server.metrics import Metrics

_PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
_MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
# The services whose health the gRPC health service reports ("" is the server's).
TF_SERVING_SERVICES = (_PREDICTION_SERVICE.full_name, _MODEL_SERVICE.full_name)
HEALTH_SERVICES = ("", *TF_SERVING_SERVICES)
# Labels of requests for models this server does not serve, so that a flood of
# made-up names cannot grow the metrics without bound.
UNKNOWN_MODEL = "<not served>"


class RequestRunner:
  """Runs one request of any API: errors become statuses, failures are logged (rate-limited)
  and every request is counted in the metrics."""

  def __init__(self, manager: ModelManager, metrics: Metrics, request_log: errors.RequestLog):
    self._manager, self._metrics, self._log = manager, metrics, request_log

  def run(self, api: str, entrypoint: str, model_name: str, call_fn):
    """(answer, None) or (None, ServingError) of call_fn()."""
    start = time.monotonic()
    try:
      answer, error = call_fn(), None
    except Exception as e:  # pylint: disable=broad-except
      answer, error = None, errors.status_from_exception(e)
      if error.code in errors.RequestLog.SERVER_CODES:
        logging.exception("%s %s failed unexpectedly", entrypoint, api)
      else:
        self._log.failed(f"{entrypoint} {api}", error)
    label = model_name if self._manager.is_configured(model_name) else UNKNOWN_MODEL
    self._metrics.record_request(label, api, entrypoint, error.code.name if error else "OK",
                                 time.monotonic() - start)
    return answer, error


class MalformedRequest:
  """What a request message that does not parse becomes (gRPC's own parser would make it
  an INTERNAL error); servicer methods answer it INVALID_ARGUMENT."""

  def __init__(self, message_name: str, error: Exception):
    self.error = errors.invalid_argument(f"the request is not a valid {message_name}: "
                                         f"{errors.printable(error, 300)}")


def _parser(message_cls):
  def parse_fn(data: bytes):
    try:
      return message_cls.FromString(data)
    except Exception as e:  # pylint: disable=broad-except
      return MalformedRequest(message_cls.DESCRIPTOR.full_name, e)
  return parse_fn


def add_service(server, service_descriptor, servicer) -> None:
  """Registers `servicer`'s methods for the service, with requests parsed by _parser."""
  handlers = {}
  for method in service_descriptor.methods:
    handlers[method.name] = grpc.unary_unary_rpc_method_handler(
        getattr(servicer, method.name),
        request_deserializer=_parser(message_factory.GetMessageClass(method.input_type)),
        response_serializer=lambda message: message.SerializeToString())
  server.add_generic_rpc_handlers(
      (grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))


def _rpc(name: str, call: str, model_name_fn=lambda request: request.model_spec.name):
  """A servicer method for RPC `name` that runs Api.`call` through the RequestRunner."""
  def method(self, request, context):
    if isinstance(request, MalformedRequest):
      answer, error = self._runner.run(name, "gRPC", "", lambda: _raise(request.error))
    else:
      answer, error = self._runner.run(name, "gRPC", model_name_fn(request),
                                       lambda: getattr(self._api, call)(request))
    if error is not None:
      context.abort(error.code, error.message)
    return answer
  method.__name__ = name
  return method


def _raise(error):
  raise error


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """TF Serving's PredictionService."""

  def __init__(self, api: Api, runner: RequestRunner):
    self._api, self._runner = api, runner

  Predict = _rpc("Predict", "predict")
  GetModelMetadata = _rpc("GetModelMetadata", "get_model_metadata")
  Classify = _rpc("Classify", "classify")
  Regress = _rpc("Regress", "regress")
  MultiInference = _rpc("MultiInference", "multi_inference", lambda request: (
      request.tasks[0].model_spec.name if request.tasks else ""))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """TF Serving's ModelService: version states and config reloads."""

  def __init__(self, api: Api, runner: RequestRunner):
    self._api, self._runner = api, runner

  GetModelStatus = _rpc("GetModelStatus", "get_model_status")

  def HandleReloadConfigRequest(self, request, context):
    def reload_fn():
      if isinstance(request, MalformedRequest):
        raise request.error
      if request.config.WhichOneof("config") != "model_config_list":
        raise errors.invalid_argument("ReloadConfigRequest has no model_config_list")
      try:
        self._api.manager.reload_config(tuple(request.config.model_config_list.config))
      except ValueError as e:
        raise errors.invalid_argument(str(e)) from e
      return model_management_pb2.ReloadConfigResponse()

    answer, error = self._runner.run("HandleReloadConfigRequest", "gRPC", "", reload_fn)
    if error is not None:  # TF Serving answers the status inside the response.
      answer = model_management_pb2.ReloadConfigResponse()
      answer.status.error_code = error.code.value[0]
      answer.status.error_message = error.message
    return answer


class ModelServer:
  """The embedded model server: gRPC (and optionally REST) over a ModelManager.

  `start()` loads what is on disk before it returns, so a test can predict right
  away; health checking answers SERVING from the first available version on.
  """

  def __init__(self, options: config.ServerOptions):
    self.options = options
    self.metrics = Metrics()
    self.health = health.HealthServicer(experimental_non_blocking=True)
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    self.manager = ModelManager(
        options.model_config_list, options.load,
        inference_options=inference.InferenceOptions(
            options.limits, options.enable_signature_method_name_check),
        allow_version_labels_for_unavailable_models=(
            options.allow_version_labels_for_unavailable_models),
        on_change=self._update_health, on_load=self._record_load,
        on_run=lambda name, seconds: self.metrics.runtime_latency.observe(
            seconds * 1e6, name, "Predict", "TF1"))
    self.api = Api(self.manager, options.limits, options.tensor_content,
                   options.enable_signature_method_name_check)
    self.runner = RequestRunner(self.manager, self.metrics, errors.RequestLog())
    self.port = None
    self.rest_port = None
    self._grpc_server = None
    self._rest_server = None
    self._stop = threading.Event()
    self._config_thread = None

  def _record_load(self, path: str, ok: bool, seconds: float) -> None:
    self.metrics.load_attempt_count.add(path, "success" if ok else "fail")
    if ok:
      self.metrics.load_latency.add(path, amount=round(seconds * 1e6))

  def _update_health(self, manager: ModelManager) -> None:
    serving = manager.has_available_version()
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)

  def start(self) -> "ModelServer":
    self.manager.poll_once(wait=True)
    try:
      self._start_servers()
    except BaseException:
      self.stop(grace_s=0)
      raise
    self.manager.start_polling(self.options.file_system_poll_wait_seconds)
    self._start_config_polling()
    return self

  def _start_servers(self) -> None:
    options = self.options
    channel_options = [
        ("grpc.max_send_message_length", config.MAX_SEND_MESSAGE_BYTES),
        # Set explicitly: gRPC refuses a bigger request before reading it.
        ("grpc.max_receive_message_length", options.limits.max_bytes),
        ("grpc.so_reuseport", 0),
        *options.grpc_channel_arguments]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.grpc_max_threads,
                                   thread_name_prefix="grpc"),
        options=channel_options,
        # Requests beyond the threads wait in a bounded queue, then get RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=4 * options.grpc_max_threads)
    add_service(server, _PREDICTION_SERVICE, PredictionServicer(self.api, self.runner))
    add_service(server, _MODEL_SERVICE, ModelServicer(self.api, self.runner))
    health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
    reflection.enable_server_reflection(
        (*TF_SERVING_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = None
    if options.ssl:
      credentials = grpc.ssl_server_credentials(
          [(options.ssl.server_key.encode(), options.ssl.server_cert.encode())],
          root_certificates=options.ssl.custom_ca.encode() or None,
          require_client_auth=options.ssl.client_verify)
    if options.port is not None:
      self.port = _add_port(server, f"{options.host}:{options.port}", credentials)
    if options.grpc_socket_path:
      _add_port(server, f"unix:{os.path.abspath(options.grpc_socket_path)}", credentials)
    server.start()
    self._grpc_server = server
    security = "TLS" if options.ssl else "plaintext"
    if self.port:
      logging.info("Running gRPC ModelServer (embedded) at %s:%d (%s) ...", options.host,
                   self.port, security)
    if options.grpc_socket_path:
      logging.info("Running gRPC ModelServer (embedded) at UNIX socket %s (%s) ...",
                   options.grpc_socket_path, security)
    if options.rest_api_port and options.rest_api_port == options.port:
      logging.error("--rest_api_port cannot be the same as --port (%d); skipped exporting the "
                    "HTTP/REST API", options.port)
    elif options.rest_api_port:
      self._rest_server = rest.RestServer(self.api, self.runner, self.metrics, rest.RestOptions(
          host=options.host, port=options.rest_api_port, num_threads=options.rest_api_num_threads,
          timeout_s=options.rest_api_timeout_in_ms / 1000, max_body_bytes=options.limits.max_bytes,
          enable_cors=options.enable_cors_support, prometheus_path=options.prometheus_path))
      self.rest_port = self._rest_server.start()
      logging.info("Exporting HTTP/REST API at %s:%d ...", options.host, self.rest_port)

  def _start_config_polling(self) -> None:
    """Re-reads --model_config_file every model_config_file_poll_wait_seconds, as TF Serving:
    a file that does not parse is logged and the running config kept."""
    interval_s = self.options.model_config_file_poll_wait_seconds
    path = self.options.model_config_file
    if not path or interval_s <= 0:
      return

    def poll_fn():
      current = self.options.model_config_list
      while not self._stop.wait(interval_s):
        try:
          configs = config.parse_model_config_file(path)
          if configs != current:
            logging.info("--model_config_file %s changed; reloading", path)
            self.manager.reload_config(configs)
            current = configs
        except (ValueError, errors.ServingError) as e:
          logging.log_every_n_seconds(logging.ERROR, "Failed to reload --model_config_file: %s",
                                      60, e)
        except Exception:  # pylint: disable=broad-except
          logging.exception("Failed to reload --model_config_file %s", path)

    self._config_thread = threading.Thread(target=poll_fn, name="config-poll", daemon=True)
    self._config_thread.start()

  def stop(self, grace_s: float = 5.0) -> None:
    """Stops taking requests, lets those in flight finish (up to grace_s), unloads all."""
    self._stop.set()
    for service in HEALTH_SERVICES:
      self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    if self._rest_server is not None:
      self._rest_server.stop()
    if self._grpc_server is not None:
      self._grpc_server.stop(grace_s).wait()
    if self._config_thread is not None:
      self._config_thread.join()
    self.manager.close()
    if self.options.grpc_socket_path and os.path.exists(self.options.grpc_socket_path):
      os.unlink(self.options.grpc_socket_path)
    logging.info("ModelServer stopped")

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop(grace_s=0)


def _add_port(server, address: str, credentials) -> int:
  try:
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))
  except RuntimeError as e:
    raise OSError(f"cannot listen on {address} ({e}); expected a free port") from e
  if not port:
    raise OSError(f"cannot listen on {address}; expected a free port")
  return port


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
