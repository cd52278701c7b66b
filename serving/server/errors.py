"""The gRPC status TF Serving answers for an error raised while serving a request."""

import grpc
import tensorflow as tf

from serving.server.tensors import ServingError

_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def status_from_exception(e: Exception) -> ServingError:
  """Maps errors from a session run to the gRPC status TF Serving would answer."""
  if isinstance(e, ServingError):
    return e
  if isinstance(e, tf.errors.OpError):
    return ServingError(_CODE_BY_VALUE.get(e.error_code, grpc.StatusCode.INTERNAL), e.message)
  return ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
