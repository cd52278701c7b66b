"""TF Serving's REST API (/v1/models/...) and its Prometheus page, on a bounded HTTP/1.1 server.

Endpoints, as in https://www.tensorflow.org/tfx/serving/api_rest:

  GET  /v1/models/<name>[/versions/<n>|/labels/<label>]            model status
  GET  /v1/models/<name>[/versions/<n>|/labels/<label>]/metadata   signatures
  POST /v1/models/<name>[/versions/<n>|/labels/<label>]:predict    {"instances": ...}
                                                                   or {"inputs": ...}
  POST ...:classify, ...:regress                                   {"examples": [...]}
  GET  <prometheus path of --monitoring_config_file>               metrics

Typical usage (via the server): python -m serving.server --model_base_path=/tmp/model \
  --rest_api_port=8501; curl -d '{"instances": [{"key": 1, "image": [0.0, ...]}]}' \
  localhost:8501/v1/models/default:predict

One event-loop thread reads requests (a slow or stalled client holds no worker
thread) and a pool of --rest_api_num_threads threads answers them. Each request
has --rest_api_timeout_in_ms from its first byte to its answer; the body must
have a Content-Length of at most --max_request_bytes. Errors are answered with
TF Serving's HTTP statuses and JSON body {"error": "..."}.
"""

import asyncio
import concurrent.futures
import dataclasses
import json
import re
import resource
import socket
import threading
import urllib.parse

from absl import logging
import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import regression_pb2

from serving.server import errors
from serving.server import json_codec
from serving.server import tensors
from serving.server.api import SIGNATURE_DEF
from serving.server.api import Api
from serving.server.errors import ServingError

# TF Serving's two path patterns (http_rest_api_util.cc), case-insensitive as there.
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_CORS_HEADERS = (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                 ("Access-Control-Allow-Headers", "Content-Type"))
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 499: "Client Closed Request",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100


@dataclasses.dataclass(frozen=True)
class RestOptions:
  host: str = "127.0.0.1"
  port: int = 0  # 0 picks a free port.
  num_threads: int = 4
  timeout_s: float = 30.0
  max_body_bytes: int = 64 * 1024 * 1024
  enable_cors: bool = False
  prometheus_path: str | None = None
  max_connections: int = 1000


class HttpError(Exception):
  """A request that cannot be read as HTTP; answered with `status` and the connection closed."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


@dataclasses.dataclass
class Request:
  method: str
  path: str
  headers: dict
  body: bytes = b""
  keep_alive: bool = True


@dataclasses.dataclass
class Answer:
  status: int
  body: bytes
  content_type: str = "application/json"
  cors: bool = False  # With TF Serving's CORS headers (--rest_api_enable_cors_support).


def _json_answer(status: int, value) -> Answer:
  return Answer(status, json.dumps(value).encode())


def error_answer(error: ServingError) -> Answer:
  """TF Serving's error answer: the HTTP status of the code, and {"error": message}."""
  return _json_answer(errors.HTTP_STATUS.get(error.code, 500), {"error": error.message})


class RestHandler:
  """Answers one parsed request (runs in a worker thread)."""

  def __init__(self, api: Api, runner, metrics, options: RestOptions):
    self._api, self._runner, self._metrics, self._options = api, runner, metrics, options

  def handle(self, request: Request) -> Answer:
    path = urllib.parse.urlsplit(request.path).path
    if self._options.prometheus_path and path == self._options.prometheus_path:
      if request.method != "GET":
        return error_answer(errors.invalid_argument(f"Malformed request: {request.method} {path}"))
      return Answer(200, self._metrics.render().encode(), "text/plain")
    if request.method == "OPTIONS":
      # TF Serving answers a CORS preflight whatever the path.
      if re.search(r"https?://", request.headers.get("origin", "")):
        return Answer(200, b"")
      return error_answer(ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       "Origin header is missing in CORS preflight"))
    route = self._route(request.method, path)
    if route is None:
      return error_answer(ServingError(
          grpc.StatusCode.NOT_FOUND if not path.lower().startswith("/v1/models")
          else grpc.StatusCode.INVALID_ARGUMENT,
          f"Malformed request: {request.method} {errors.printable(path, 200)}"))
    api_name, model_name, call_fn = route
    answer, error = self._runner.run(api_name, "REST", model_name,
                                     lambda: call_fn(request.body))
    return error_answer(error) if error is not None else _json_answer(200, answer)

  def _route(self, method: str, path: str):
    """(API name, model name, body -> JSON value) for the path, or None if malformed."""
    prediction = _PREDICTION_PATH.fullmatch(path) if method == "POST" else None
    status = _STATUS_PATH.fullmatch(path) if method == "GET" else None
    match = prediction or status
    if match is None:
      return None
    name, version, label = _unquote(match[1]), match[2], _unquote(match[3])
    if version is not None:
      version = int(version)
      if version >= 2**63:
        return "Malformed", name, _failing(errors.invalid_argument(
            f"Failed to convert version: {version} to numeric."))
    spec = (name, version, label)
    if prediction:
      method_name = match[4].lower()
      handler = {"predict": self._predict, "classify": self._classify,
                 "regress": self._regress}[method_name]
      return method_name.capitalize(), name, lambda body: handler(spec, body)
    if not name:
      return "GetModelStatus", "", _failing(errors.invalid_argument(
          "Missing model name in request."))
    if match[4]:
      return "GetModelMetadata", name, lambda body: self._metadata(spec)
    return "GetModelStatus", name, lambda body: self._status(spec)

  def _predict(self, spec, body: bytes) -> dict:
    document = _parse_json(body)
    signature_name = _signature_name(document)
    with self._api.manager.servable(*spec) as servable:
      resolved, signature = servable.find_signature(signature_name)
      if signature is None:
        raise errors.invalid_argument(f'Serving signature name: "{errors.printable(resolved)}" '
                                      "not found in signature def")
      inputs, row_format = json_codec.predict_inputs(document, signature, self._api.limits)
      _, outputs = servable.predict(signature_name, tensors.with_defaults(inputs, signature))
    return json_codec.predict_answer(outputs, row_format)

  def _examples_request(self, spec, body: bytes, request):
    document = _parse_json(body)
    name, version, label = spec
    request.model_spec.name = name
    if version is not None:
      request.model_spec.version.value = version
    if label is not None:
      request.model_spec.version_label = label
    request.model_spec.signature_name = _signature_name(document)
    json_codec.fill_examples_request(document, request, self._api.limits)
    return request

  def _classify(self, spec, body: bytes) -> dict:
    request = self._examples_request(spec, body, classification_pb2.ClassificationRequest())
    return json_codec.classify_answer(self._api.classify(request).result)

  def _regress(self, spec, body: bytes) -> dict:
    request = self._examples_request(spec, body, regression_pb2.RegressionRequest())
    return json_codec.regress_answer(self._api.regress(request).result)

  def _metadata(self, spec) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF])
    _fill_spec(request.model_spec, spec)
    response = self._api.get_model_metadata(request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF].Unpack(signature_map)
    # As TF Serving prints it: proto field names, fields at their defaults included.
    return {"model_spec": _to_dict(response.model_spec),
            "metadata": {SIGNATURE_DEF: _to_dict(signature_map)}}

  def _status(self, spec) -> dict:
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_spec(request.model_spec, spec)
    return _to_dict(self._api.get_model_status(request))


def _failing(error: ServingError):
  """A route whose call raises `error`."""
  def call_fn(body):
    del body
    raise error
  return call_fn


def _unquote(text):
  if text is None:
    return None
  try:
    return urllib.parse.unquote(text, errors="strict")
  except UnicodeDecodeError:
    return text  # Kept as sent; a name that does not decode matches no model.


def _fill_spec(model_spec, spec) -> None:
  name, version, label = spec
  model_spec.name = name
  if version is not None:
    model_spec.version.value = version
  if label is not None:
    model_spec.version_label = label


def _to_dict(message) -> dict:
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)


def _parse_json(body: bytes) -> dict:
  if not body:
    raise errors.invalid_argument("JSON Parse error: The document is empty")
  try:
    document = json.loads(body)
  except UnicodeDecodeError as e:
    raise errors.invalid_argument(f"JSON Parse error: the body is not UTF-8: {e}") from None
  except json.JSONDecodeError as e:
    raise errors.invalid_argument(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
  except RecursionError:
    raise errors.invalid_argument("JSON Parse error: the document is nested too deeply") from None
  if not isinstance(document, dict):
    raise errors.invalid_argument(f"JSON Value: {json_codec.describe(document)} Is not object")
  return document


def _signature_name(document: dict) -> str:
  name = document.get("signature_name", "")
  if not isinstance(name, str):
    raise errors.invalid_argument(
        f"JSON Value: {json_codec.describe(document)} not formatted correctly. "
        "'signature_name' key must be a string value.")
  return name


async def _readline(reader: asyncio.StreamReader) -> bytes:
  """One line of the request head; a line longer than the reader's limit is a 431."""
  try:
    return await reader.readline()
  except (ValueError, asyncio.LimitOverrunError):
    raise HttpError(431, f"a request line or header exceeds {MAX_HEADER_BYTES} bytes") from None


class RestServer:
  """The HTTP/1.1 server: an asyncio loop in a thread reads, a bounded pool answers."""

  def __init__(self, api: Api, runner, metrics, options: RestOptions):
    self._options = options
    self._handler = RestHandler(api, runner, metrics, options)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=options.num_threads,
                                                       thread_name_prefix="rest")
    self._loop = None
    self._thread = None
    self._server = None
    self._connections = 0
    self._pending = 0
    # Connections beyond this are closed at once: each holds a file descriptor, and the
    # process must keep some for gRPC and model files.
    self._max_connections = min(options.max_connections,
                                resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)

  def start(self) -> int:
    """Listens (raising OSError if it cannot) and serves in a thread; returns the port."""
    sock = socket.create_server((self._options.host, self._options.port), backlog=1024)
    self._loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve():
      self._server = await asyncio.start_server(self._connection, sock=sock,
                                                limit=MAX_HEADER_BYTES)
      ready.set()

    def run_fn():
      asyncio.set_event_loop(self._loop)
      self._loop.run_until_complete(serve())
      self._loop.run_forever()

    self._thread = threading.Thread(target=run_fn, name="rest-loop", daemon=True)
    self._thread.start()
    ready.wait(30)
    return sock.getsockname()[1]

  def stop(self) -> None:
    if self._loop is None:
      return

    async def shutdown():
      self._server.close()
      for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
        task.cancel()

    asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(10)
    self._pool.shutdown(wait=False, cancel_futures=True)

  async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    if self._connections >= self._max_connections:
      writer.close()
      return
    self._connections += 1
    try:
      while True:
        deadline = self._loop.time() + self._options.timeout_s
        try:
          request = await asyncio.wait_for(self._read_request(reader, writer),
                                           self._options.timeout_s)
        except asyncio.TimeoutError:
          return  # Idle, or too slow to send a request: the connection is closed.
        except HttpError as e:
          await self._write(writer, _json_answer(e.status, {"error": e.message}), False)
          return
        if request is None:
          return
        answer = await self._answer(request, deadline)
        if not await self._write(writer, answer, request.keep_alive):
          return
        if not request.keep_alive:
          return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
      return  # The client went away or broke the framing: nothing to answer.
    finally:
      self._connections -= 1
      writer.close()

  async def _answer(self, request: Request, deadline: float) -> Answer:
    if self._pending >= 4 * self._options.num_threads:
      return error_answer(ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"the REST server is busy ({self._pending} requests "
                                       "waiting); try again later"))
    self._pending += 1
    future = self._loop.run_in_executor(self._pool, self._handle, request)
    try:
      return await asyncio.wait_for(asyncio.shield(future),
                                    max(0.0, deadline - self._loop.time()))
    except asyncio.TimeoutError:
      return error_answer(ServingError(
          grpc.StatusCode.DEADLINE_EXCEEDED,
          f"the request took longer than {self._options.timeout_s * 1000:.0f} ms "
          "(--rest_api_timeout_in_ms)"))
    finally:
      future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._done))

  def _done(self) -> None:
    self._pending -= 1

  def _handle(self, request: Request) -> Answer:
    try:
      answer = self._handler.handle(request)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("REST %s %s failed unexpectedly", request.method,
                        errors.printable(request.path, 200))
      answer = error_answer(errors.status_from_exception(e))
    answer.cors = self._options.enable_cors
    return answer

  async def _read_request(self, reader, writer) -> Request | None:
    line = await _readline(reader)
    if not line:
      return None
    try:
      method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError:
      raise HttpError(400, "the request line is not 'METHOD PATH HTTP/1.x'") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
      raise HttpError(505, f"HTTP version {errors.printable(version)} is not supported; "
                      "expected HTTP/1.1 or HTTP/1.0")
    headers, size = {}, 0
    while True:
      line = await _readline(reader)
      size += len(line)
      if size > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
        raise HttpError(431, f"the request headers exceed {MAX_HEADER_BYTES} bytes or "
                        f"{MAX_HEADERS} fields")
      if line in (b"\r\n", b"\n"):
        break
      if not line:
        raise asyncio.IncompleteReadError(line, None)
      name, sep, value = line.decode("latin-1").partition(":")
      if not sep or not name.strip() or name != name.strip():
        raise HttpError(400, f"malformed header line {errors.printable(line.decode('latin-1'))}")
      name, value = name.lower(), value.strip()
      if name == "content-length" and name in headers and headers[name] != value:
        raise HttpError(400, "the request has two different Content-Length headers")
      headers[name] = value
    keep_alive = (headers.get("connection", "").lower() != "close" if version == "HTTP/1.1"
                  else headers.get("connection", "").lower() == "keep-alive")
    if "transfer-encoding" in headers:
      raise HttpError(501, f"Transfer-Encoding {errors.printable(headers['transfer-encoding'])} "
                      "is not supported; send the body with a Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or not length_text.isascii():
      raise HttpError(400, f"Content-Length {errors.printable(length_text)} is not a "
                      "non-negative integer")
    length = int(length_text)
    if length > self._options.max_body_bytes:
      raise HttpError(413, f"the body has {length} bytes; this server takes at most "
                      f"{self._options.max_body_bytes} (--max_request_bytes)")
    if length and headers.get("expect", "").lower() == "100-continue":
      writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body, keep_alive)

  async def _write(self, writer, answer: Answer, keep_alive: bool) -> bool:
    """Writes the answer; False if the client has gone (not worth a log line)."""
    head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
            f"Content-Type: {answer.content_type}", f"Content-Length: {len(answer.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    if answer.cors:
      head += [f"{k}: {v}" for k, v in _CORS_HEADERS]
    try:
      writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
      await asyncio.wait_for(writer.drain(), self._options.timeout_s)
      return True
    except (ConnectionError, asyncio.TimeoutError):
      return False
