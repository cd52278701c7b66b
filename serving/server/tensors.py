"""Request and response tensors: TensorProto <-> numpy, bounded, and checks against a SignatureDef."""

import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

from serving.server import config
from serving.server.errors import ServingError
from serving.server.errors import invalid_argument
from serving.server.errors import printable

# The typed repeated field TF Serving fills for each dtype when it does not use
# tensor_content (tensorflow::Tensor::AsProtoField).
_TYPED_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", np.float32),
    types_pb2.DT_DOUBLE: ("double_val", np.float64),
    types_pb2.DT_INT32: ("int_val", np.int32),
    types_pb2.DT_INT16: ("int_val", np.int16),
    types_pb2.DT_INT8: ("int_val", np.int8),
    types_pb2.DT_UINT8: ("int_val", np.uint8),
    types_pb2.DT_UINT16: ("int_val", np.uint16),
    types_pb2.DT_INT64: ("int64_val", np.int64),
    types_pb2.DT_UINT32: ("uint32_val", np.uint32),
    types_pb2.DT_UINT64: ("uint64_val", np.uint64),
    types_pb2.DT_BOOL: ("bool_val", np.bool_),
}
# Dtypes whose values need TensorFlow's own decoder; (field, values per element, bytes each).
_OTHER_FIELDS = {
    types_pb2.DT_HALF: ("half_val", 1, 2),
    types_pb2.DT_BFLOAT16: ("half_val", 1, 2),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2, 8),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2, 16),
}
# A string element costs its bytes plus a Python bytes object; counted as this much more.
_STRING_OVERHEAD_BYTES = 40
MAX_RANK = 32


def dtype_name(dtype_enum: int) -> str:
  """'float32' for DT_FLOAT: the name TF error messages use."""
  try:
    return tf.dtypes.as_dtype(dtype_enum).name
  except (TypeError, KeyError):
    return f"<dtype enum {dtype_enum}>"


def shape_of(proto: tensor_pb2.TensorProto) -> tuple:
  return tuple(d.size for d in proto.tensor_shape.dim)


def _format_dims(shape) -> str:
  return "[" + ",".join(map(str, shape)) + "]"


def decoded_size(proto: tensor_pb2.TensorProto) -> tuple:
  """(shape, bytes once decoded) of a request tensor, checked without allocating anything.

  Raises ValueError naming the problem: an unknown rank, a negative dimension, a
  dtype a request cannot carry, or values that do not match the shape (TensorFlow
  would fill missing values with the last one, or with zeros when there are none;
  a server that did so would allocate any size a 50-byte request names).
  """
  if proto.tensor_shape.unknown_rank:
    raise ValueError("its shape has unknown rank; expected a fully defined shape")
  shape = shape_of(proto)
  if len(shape) > MAX_RANK:
    raise ValueError(f"it has {len(shape)} dimensions; expected at most {MAX_RANK}")
  if any(d < 0 for d in shape):
    raise ValueError(f"its shape {_format_dims(shape)} has a negative dimension; expected "
                     "a fully defined shape")
  size = math.prod(shape)
  dtype = proto.dtype
  if dtype == types_pb2.DT_STRING:
    if proto.tensor_content:
      raise ValueError("a string tensor carries tensor_content; expected string_val")
    _check_count(len(proto.string_val), size, shape, dtype)
    return shape, sum(map(len, proto.string_val)) + _STRING_OVERHEAD_BYTES * size
  if dtype in _TYPED_FIELDS:
    field, values_per_element, itemsize = (_TYPED_FIELDS[dtype][0], 1,
                                           np.dtype(_TYPED_FIELDS[dtype][1]).itemsize)
  elif dtype in _OTHER_FIELDS:
    field, values_per_element, itemsize = _OTHER_FIELDS[dtype]
  else:
    raise ValueError(f"its dtype {dtype_name(dtype)} cannot be sent in a request; expected a "
                     "number, bool or string dtype")
  if proto.tensor_content:
    if len(proto.tensor_content) != size * itemsize:
      raise ValueError(f"its tensor_content holds {len(proto.tensor_content)} bytes; expected "
                       f"{size * itemsize} for a {dtype_name(dtype)} tensor of shape "
                       f"{_format_dims(shape)}")
  else:
    _check_count(len(getattr(proto, field)), size * values_per_element, shape, dtype)
  return shape, size * itemsize


def _check_count(count: int, expected: int, shape: tuple, dtype: int) -> None:
  if count != expected:
    raise ValueError(f"it has {count} values; a {dtype_name(dtype)} tensor of shape "
                     f"{_format_dims(shape)} needs exactly {expected}")


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """Decodes a TensorProto whose size decoded_size has checked (tensor_content or typed fields).

  Raises ValueError for values that do not fit the dtype (300 as a uint8).
  """
  shape = shape_of(proto)
  field = _TYPED_FIELDS.get(proto.dtype)
  try:
    if field is None:
      # Strings, halves, complex: TensorFlow's own decoder, on a checked proto.
      return tf.make_ndarray(proto)
    np_dtype = np.dtype(field[1])
    if proto.tensor_content:
      return np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<")
                           ).astype(np_dtype, copy=False).reshape(shape)
    values = getattr(proto, field[0])
    if field[0] == "int_val" and np_dtype != np.int32:
      # int_val carries int8/16 and uint8/16 as int32; a value out of range is an error, not
      # wrapped around.
      wide = np.asarray(values, dtype=np.int64)
      info = np.iinfo(np_dtype)
      if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise ValueError(f"{int(wide.min() if wide.min() < info.min else wide.max())} is out of "
                         f"range [{info.min}, {info.max}]")
      return wide.astype(np_dtype).reshape(shape)
    return np.asarray(values, dtype=np_dtype).reshape(shape)
  except (OverflowError, TypeError, ValueError) as e:
    raise ValueError(f"its values do not fit dtype {dtype_name(proto.dtype)}: {e}") from e


def decode_inputs(proto_map, limits: config.RequestLimits) -> dict:
  """{name: array} of a request's inputs, after checking every one against `limits`.

  Nothing is allocated until all inputs have passed: dimension 0 (the rows) at
  most limits.max_rows, and all inputs together at most limits.max_bytes once
  decoded.
  """
  total_bytes = 0
  for name, proto in proto_map.items():
    try:
      shape, nbytes = decoded_size(proto)
    except ValueError as e:
      raise invalid_argument(f"input '{printable(name)}': {e}") from None
    rows = shape[0] if shape else 1
    if rows > limits.max_rows:
      raise invalid_argument(
          f"input '{printable(name)}' has {rows} rows (dimension 0 of shape "
          f"{_format_dims(shape)}); this server takes at most {limits.max_rows} "
          "(--max_request_rows): send fewer rows per request")
    total_bytes += nbytes
  if total_bytes > limits.max_bytes:
    raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"the request's inputs take {total_bytes} bytes once decoded; this server "
                       f"takes at most {limits.max_bytes} (--max_request_bytes)")
  inputs = {}
  for name, proto in proto_map.items():
    try:
      inputs[name] = to_numpy(proto)
    except ValueError as e:
      raise invalid_argument(f"input '{printable(name)}': {e}") from None
  return inputs


def with_defaults(inputs: dict, signature) -> dict:
  """`inputs` and, for those not sent, the signature's default values (TF2 signatures have them)."""
  missing = {name: tf.make_ndarray(proto) for name, proto in signature.defaults.items()
             if name not in inputs}
  return {**inputs, **missing} if missing else inputs


def from_numpy(array, dtype_enum: int | None = None, *,
               tensor_content: bool = False) -> tensor_pb2.TensorProto:
  """Encodes `array` like TF Serving's responses: typed repeated fields by default.

  With `tensor_content=True` the values go into the packed `tensor_content`
  bytes instead (TF Serving's --enable_serialization_as_tensor_content).
  """
  array = np.asarray(array)
  if dtype_enum is None:
    dtype_enum = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
  field = _TYPED_FIELDS.get(dtype_enum)
  if field is None:
    # Strings, halves, complex: TensorFlow's own encoder knows them all.
    return tf.make_tensor_proto(array, dtype=tf.dtypes.as_dtype(dtype_enum))
  array = array.astype(field[1], copy=False)
  proto = tensor_pb2.TensorProto(
      dtype=dtype_enum,
      tensor_shape=tensor_shape_pb2.TensorShapeProto(
          dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
  if tensor_content:
    proto.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
  else:
    getattr(proto, field[0]).extend(array.ravel().tolist())
  return proto


def format_shape(shape: tensor_shape_pb2.TensorShapeProto) -> str:
  if shape.unknown_rank:
    return "<unknown rank>"
  return _format_dims(d.size for d in shape.dim)


def check_inputs(signature_name: str, signature, inputs: dict) -> None:
  """Raises INVALID_ARGUMENT for missing, unknown or mistyped inputs, as TF Serving does.

  Like TF Serving, the signature's shapes are not enforced: TensorFlow takes a
  tensor of shape [1] for a signature's [-1,1] (the graph decides). Where the
  ranks agree, a fixed dimension that differs is refused here, naming both
  shapes, since the graph would refuse it less clearly. When every input of the
  signature is batch-major (leading dimension -1), the inputs must agree on that
  dimension, as TF Serving's batching demands; for the key-passthrough signature
  that means one key per image.
  """
  expected, given = set(signature.inputs), set(inputs)
  if expected != given:
    # TF Serving's words (predict_util.cc), which clients match on.
    extra, missing = sorted(given - expected), sorted(expected - given)
    raise invalid_argument(
        f"input size does not match signature: {len(given)}!={len(expected)} "
        f"len({{{','.join(map(printable, sorted(given)))}}}) != "
        f"len({{{','.join(sorted(expected))}}}). Sent extra: "
        f"{{{','.join(map(printable, extra))}}}. Missing but required: {{{','.join(missing)}}}.")
  for name, info in signature.inputs.items():
    array = inputs[name]
    want = tf.dtypes.as_dtype(info.dtype)
    if array.dtype != want.as_numpy_dtype and not (want == tf.string and array.dtype == object):
      raise invalid_argument(
          f"input '{name}' of signature '{signature_name}' has dtype "
          f"{'string' if array.dtype == object else array.dtype.name}; expected {want.name}")
    if not shape_matches(array.shape, info.tensor_shape):
      raise invalid_argument(
          f"input '{name}' of signature '{signature_name}' has shape "
          f"{_format_dims(array.shape)}; expected {format_shape(info.tensor_shape)}")
  if is_batch_major(signature):
    sizes = {name: inputs[name].shape[0] for name in sorted(signature.inputs)
             if inputs[name].ndim == len(signature.inputs[name].tensor_shape.dim)}
    if len(set(sizes.values())) > 1:
      raise invalid_argument(f"inputs of signature '{signature_name}' have batch sizes "
                             f"{sizes}; expected one batch size for all")


def shape_matches(shape: tuple, expected: tensor_shape_pb2.TensorShapeProto) -> bool:
  """False only where the ranks agree and a fixed dimension differs (see check_inputs)."""
  if expected.unknown_rank or len(shape) != len(expected.dim):
    return True
  return all(d.size < 0 or d.size == s for d, s in zip(expected.dim, shape))


def check_output_filter(signature, output_filter) -> tuple:
  """The output names to fetch, sorted: `output_filter` or all of the signature's."""
  if not output_filter:
    return tuple(sorted(signature.outputs))
  seen = set()
  for alias in output_filter:
    if alias not in signature.outputs:
      raise invalid_argument(
          f"output tensor alias not found in signature: {printable(alias)} Outputs expected "
          f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if alias in seen:
      raise invalid_argument(f"duplicate output tensor alias: {alias}")
    seen.add(alias)
  return tuple(sorted(output_filter))


def is_batch_major(signature) -> bool:
  infos = list(signature.inputs.values())
  return bool(infos) and all(not i.tensor_shape.unknown_rank and i.tensor_shape.dim
                             and i.tensor_shape.dim[0].size == -1 for i in infos)
