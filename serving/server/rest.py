"""TF Serving's REST API (/v1/models/...) on the standard library's HTTP server, in a thread.

Endpoints, as in https://www.tensorflow.org/tfx/serving/api_rest:

  GET  /v1/models/<name>[/versions/<n>|/labels/<label>]            model status
  GET  /v1/models/<name>[/versions/<n>|/labels/<label>]/metadata   signatures
  POST /v1/models/<name>[/versions/<n>|/labels/<label>]:predict    {"instances": ...}
                                                                   or {"inputs": ...}

Typical usage (via the server): python -m serving.server --model_base_path=/tmp/model \
  --rest_api_port=8501; curl -d '{"instances": [{"key": 1, "image": [0.0, ...]}]}' \
  localhost:8501/v1/models/mnist:predict
"""

import http.server
import json
import re
import threading

from absl import logging
import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2

from serving.server.tensors import ServingError

_PATH_RE = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                      r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                      r"(?P<suffix>/metadata|:predict|:classify|:regress)?/?$")
# TF Serving's mapping of canonical codes to HTTP statuses (http_rest_api_util).
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def _bad_request(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _to_array(value, info, name: str) -> np.ndarray:
  dtype = tf.dtypes.as_dtype(info.dtype)
  if dtype == tf.string:
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"input '{name}' is a string tensor; this REST endpoint takes numbers "
                       "only (use gRPC)")
  try:
    return np.asarray(value, dtype=dtype.as_numpy_dtype)
  except (TypeError, ValueError) as e:
    raise _bad_request(f"input '{name}' is not a {dtype.name} array: {e}") from e


def parse_predict_body(body: dict, signature) -> tuple:
  """(inputs, row_format) from TF Serving's JSON predict body for `signature`.

  Row format ("instances") stacks one entry per instance; with one input the
  entries may be bare values, else they are {input name: value} objects.
  Columnar format ("inputs") is {input name: batch} or, for one input, the batch.
  """
  if ("instances" in body) == ("inputs" in body):
    raise _bad_request("the JSON body needs exactly one of 'instances' or 'inputs'")
  names = sorted(signature.inputs)
  if "instances" in body:
    instances = body["instances"]
    if not isinstance(instances, list):
      raise _bad_request(f"'instances' is a {type(instances).__name__}; expected a list")
    if instances and all(isinstance(i, dict) for i in instances):
      columns = {}
      for n, instance in enumerate(instances):
        if set(instance) != set(columns or instance):
          raise _bad_request(f"instance {n} has inputs {sorted(instance)}; expected the same "
                             f"inputs as instance 0, {sorted(columns)}")
        for key, value in instance.items():
          columns.setdefault(key, []).append(value)
    elif len(names) == 1:
      columns = {names[0]: instances}
    else:
      raise _bad_request(f"the signature takes inputs {names}; expected each instance to be "
                         "an object naming them")
    row_format = True
  else:
    inputs = body["inputs"]
    columns = inputs if isinstance(inputs, dict) else {names[0]: inputs} if len(names) == 1 \
        else None
    if columns is None:
      raise _bad_request(f"the signature takes inputs {names}; expected 'inputs' to be an "
                         "object naming them")
    row_format = False
  arrays = {}
  for key, value in columns.items():
    if key not in signature.inputs:
      raise _bad_request(f"unknown input '{key}'; expected some of {names}")
    arrays[key] = _to_array(value, signature.inputs[key], key)
  return arrays, row_format


def format_predict_outputs(outputs: dict, row_format: bool) -> dict:
  """TF Serving's JSON answer: 'predictions' (per row) or 'outputs' (columns)."""
  as_lists = {k: v.tolist() for k, v in outputs.items()}
  if row_format:
    if len(as_lists) == 1:
      return {"predictions": next(iter(as_lists.values()))}
    rows = len(next(iter(as_lists.values())))
    return {"predictions": [{k: v[i] for k, v in as_lists.items()} for i in range(rows)]}
  if len(as_lists) == 1:
    return {"outputs": next(iter(as_lists.values()))}
  return {"outputs": as_lists}


class _Handler(http.server.BaseHTTPRequestHandler):
  manager = None  # Set on the subclass start_rest_server makes.
  protocol_version = "HTTP/1.1"

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug("REST %s", format % args)

  def do_GET(self):
    self._dispatch(post=False)

  def do_POST(self):
    self._dispatch(post=True)

  def _dispatch(self, post: bool):
    try:
      match = _PATH_RE.match(self.path.split("?")[0])
      if not match:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"no REST endpoint {self.path}; expected /v1/models/<name>[...]")
      spec = (match["name"], int(match["version"]) if match["version"] else None,
              match["label"])
      suffix = match["suffix"] or ""
      if post != suffix.startswith(":"):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{self.command} {self.path}: expected POST for :predict and "
                           "GET for status and /metadata")
      if suffix == ":predict":
        answer = self._predict(spec)
      elif suffix in (":classify", ":regress"):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"{suffix} is not served over REST here; use gRPC")
      elif suffix == "/metadata":
        answer = self._metadata(spec)
      else:
        answer = self._status(spec)
      self._reply(200, answer)
    except ServingError as e:
      self._reply(_HTTP_STATUS.get(e.code, 500), {"error": e.message})
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("REST %s %s failed", self.command, self.path)
      self._reply(500, {"error": f"{type(e).__name__}: {e}"})

  def _read_json(self) -> dict:
    length = int(self.headers.get("Content-Length") or 0)
    try:
      body = json.loads(self.rfile.read(length) or b"null")
    except json.JSONDecodeError as e:
      raise _bad_request(f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
      raise _bad_request("the JSON body is not an object")
    return body

  def _predict(self, spec) -> dict:
    body = self._read_json()
    with self.manager.servable(*spec) as servable:
      _, signature = servable.signature(body.get("signature_name", ""))
      inputs, row_format = parse_predict_body(body, signature)
      _, outputs = servable.predict(body.get("signature_name", ""), inputs)
    return format_predict_outputs(outputs, row_format)

  def _metadata(self, spec) -> dict:
    with self.manager.servable(*spec) as servable:
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for name, signature in servable.signatures.items():
        signature_map.signature_def[name].CopyFrom(signature)
    return {"model_spec": {"name": servable.name, "signature_name": "",
                           "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True)}}

  def _status(self, spec) -> dict:
    states = self.manager.version_states(*spec)
    state_names = get_model_status_pb2.ModelVersionStatus.State.Name
    return {"model_version_status": [
        {"version": str(version), "state": state_names(state),
         "status": {"error_code": error.code.name if error else "OK",
                    "error_message": error.message if error else ""}}
        for version, state, error in states]}

  def _reply(self, status: int, answer: dict) -> None:
    data = json.dumps(answer).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)


def start_rest_server(host: str, port: int, manager) -> http.server.ThreadingHTTPServer:
  """Serves the REST API for `manager` (a manager.ModelManager) in a daemon thread."""
  handler = type("RestHandler", (_Handler,), {"manager": manager})
  server = http.server.ThreadingHTTPServer((host, port), handler)
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, name="rest", daemon=True).start()
  return server
