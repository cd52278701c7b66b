"""Errors a request is answered with: the gRPC status, its HTTP mapping, and how they are logged."""

import threading
import time

from absl import logging
import grpc

CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

# TF Serving's mapping of canonical codes to HTTP statuses (http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# How much of a name taken from a request goes into an answer or a log line.
MAX_NAME_CHARS = 128


class ServingError(Exception):
  """A request the server answers with a gRPC status other than OK.

  gRPC handlers abort with `code`; the REST endpoint maps it to an HTTP status.
  """

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(f"{code.name}: {message}")
    self.code = code
    self.message = message


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def printable(text, limit: int = MAX_NAME_CHARS) -> str:
  """`text` from a request made safe to echo: control characters escaped, long text cut.

  A newline in a model name must not start a forged log line, and a 100 KB name
  must not come back 100 KB long.
  """
  if not isinstance(text, str):
    text = str(text)
  head = text[:limit]
  escaped = head.encode("unicode_escape").decode("ascii") if not head.isprintable() else head
  if len(text) > limit:
    escaped += f"...({len(text)} chars)"
  return escaped


def servable_not_found(name: str, version: int | None = None) -> ServingError:
  """TF Serving's answer for a model or version it does not serve; clients match its words."""
  request = f"Specific({printable(name)}, {version})" if version is not None \
      else f"Latest({printable(name)})"
  return ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")


def status_from_exception(e: Exception) -> ServingError:
  """Maps an error raised while serving to the status TF Serving would answer."""
  if isinstance(e, ServingError):
    return e
  # TensorFlow is imported by then (a session raised the error); importing it here
  # keeps this module free of TensorFlow for the code that only formats errors.
  import tensorflow as tf
  if isinstance(e, tf.errors.OpError):
    return ServingError(CODE_BY_VALUE.get(e.error_code, grpc.StatusCode.INTERNAL), e.message)
  if isinstance(e, MemoryError):
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "the server ran out of memory for this request; send fewer rows")
  return ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


class RequestLog:
  """Logs failed requests without letting a flood of bad requests flood the log.

  Client mistakes are logged at INFO, at most once per `interval_s` for each
  (entry point, status), with the number left out since the last line; errors
  of the server itself (INTERNAL, UNKNOWN, DATA_LOSS) at ERROR, rate-limited alike.
  """

  SERVER_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                            grpc.StatusCode.DATA_LOSS})

  def __init__(self, interval_s: float = 10.0, clock=time.monotonic):
    self._interval_s = interval_s
    self._clock = clock
    self._lock = threading.Lock()
    self._last = {}  # (entry point, code) -> (time of the last line, number left out)

  def failed(self, entry_point: str, error: ServingError) -> bool:
    """Logs one failed request, unless one like it was logged lately; True if logged."""
    key = (entry_point, error.code)
    now = self._clock()
    with self._lock:
      last, left_out = self._last.get(key, (None, 0))
      if last is not None and now - last < self._interval_s:
        self._last[key] = (last, left_out + 1)
        return False
      self._last[key] = (now, 0)
    level = logging.ERROR if error.code in self.SERVER_CODES else logging.INFO
    more = f" ({left_out} more like it in the last {self._interval_s:g} s)" if left_out else ""
    logging.log(level, "%s failed: %s: %s%s", entry_point, error.code.name,
                printable(error.message, 500), more)
    return True
