"""Request and response tensors: TensorProto <-> numpy, and checks against a SignatureDef."""

import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

# The typed repeated field TF Serving fills for each dtype when it does not use
# tensor_content (tensorflow::Tensor::AsProtoField).
_TYPED_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", np.float32),
    types_pb2.DT_DOUBLE: ("double_val", np.float64),
    types_pb2.DT_INT32: ("int_val", np.int32),
    types_pb2.DT_INT16: ("int_val", np.int16),
    types_pb2.DT_INT8: ("int_val", np.int8),
    types_pb2.DT_UINT8: ("int_val", np.uint8),
    types_pb2.DT_INT64: ("int64_val", np.int64),
    types_pb2.DT_UINT32: ("uint32_val", np.uint32),
    types_pb2.DT_UINT64: ("uint64_val", np.uint64),
    types_pb2.DT_BOOL: ("bool_val", np.bool_),
}


class ServingError(Exception):
  """A request the server answers with a gRPC status other than OK.

  gRPC handlers abort with `code`; the REST endpoint maps it to an HTTP status.
  """

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(f"{code.name}: {message}")
    self.code = code
    self.message = message


def dtype_name(dtype_enum: int) -> str:
  """'float32' for DT_FLOAT: the name TF error messages use."""
  try:
    return tf.dtypes.as_dtype(dtype_enum).name
  except (TypeError, KeyError):
    return f"<dtype enum {dtype_enum}>"


def shape_of(proto: tensor_pb2.TensorProto) -> tuple:
  return tuple(d.size for d in proto.tensor_shape.dim)


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """Decodes a TensorProto, whether it carries tensor_content or typed fields.

  As in tensorflow::Tensor::FromProto, typed values shorter than the shape are
  filled up with the last one. Raises ValueError naming the problem for a proto
  that cannot be decoded (a negative dimension, tensor_content of the wrong size).
  """
  shape = shape_of(proto)
  if any(d < 0 for d in shape):
    raise ValueError(f"tensor shape {list(shape)} has a negative dimension; expected "
                     "a fully defined shape")
  size = math.prod(shape)
  field = _TYPED_FIELDS.get(proto.dtype)
  # Fast paths for the common dtypes; every other case goes through TensorFlow.
  if field is not None and not proto.version_number:
    np_dtype = np.dtype(field[1])
    if proto.tensor_content:
      if len(proto.tensor_content) != size * np_dtype.itemsize:
        raise ValueError(f"tensor_content holds {len(proto.tensor_content)} bytes; "
                         f"expected {size * np_dtype.itemsize} for a {dtype_name(proto.dtype)} "
                         f"tensor of shape {list(shape)}")
      return np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<")
                           ).astype(np_dtype, copy=False).reshape(shape)
    values = getattr(proto, field[0])
    if len(values) == size:
      return np.asarray(values, dtype=np_dtype).reshape(shape)
  try:
    return tf.make_ndarray(proto)
  except (TypeError, ValueError) as e:
    raise ValueError(f"cannot decode a {dtype_name(proto.dtype)} tensor of shape "
                     f"{list(shape)}: {e}") from e


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


def shape_matches(shape: tuple, expected: tensor_shape_pb2.TensorShapeProto) -> bool:
  """Whether `shape` fits a signature's TensorShapeProto (-1 and unknown rank match all)."""
  if expected.unknown_rank:
    return True
  if len(shape) != len(expected.dim):
    return False
  return all(d.size < 0 or d.size == s for d, s in zip(expected.dim, shape))


def format_shape(shape: tensor_shape_pb2.TensorShapeProto) -> str:
  if shape.unknown_rank:
    return "<unknown rank>"
  return "[" + ",".join(str(d.size) for d in shape.dim) + "]"


def decode_inputs(proto_map) -> dict:
  """{name: array} of a request's inputs; an undecodable one is INVALID_ARGUMENT."""
  inputs = {}
  for name, proto in proto_map.items():
    try:
      inputs[name] = to_numpy(proto)
    except ValueError as e:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': {e}") from e
  return inputs


def check_inputs(signature_name: str, signature, inputs: dict) -> None:
  """Raises INVALID_ARGUMENT for missing, unknown, mistyped or misshapen inputs.

  When every input of the signature is batch-major (leading dimension -1), the
  inputs must also agree on that dimension, as TF Serving's batching demands; for
  the key-passthrough signature that means one key per image.
  """
  expected, given = set(signature.inputs), set(inputs)
  if expected != given:
    raise ServingError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"signature '{signature_name}' takes inputs {sorted(expected)}; the request has "
        f"{sorted(given)} (missing {sorted(expected - given)}, unknown {sorted(given - expected)})")
  for name, info in signature.inputs.items():
    array = inputs[name]
    want = tf.dtypes.as_dtype(info.dtype)
    if array.dtype != want.as_numpy_dtype and not (want == tf.string and array.dtype == object):
      raise ServingError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"input '{name}' of signature '{signature_name}' has dtype "
          f"{'string' if array.dtype == object else array.dtype.name}; expected {want.name}")
    if not shape_matches(array.shape, info.tensor_shape):
      raise ServingError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"input '{name}' of signature '{signature_name}' has shape "
          f"[{','.join(map(str, array.shape))}]; expected {format_shape(info.tensor_shape)}")
  if is_batch_major(signature):
    sizes = {name: inputs[name].shape[0] for name in sorted(signature.inputs)}
    if len(set(sizes.values())) > 1:
      raise ServingError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"inputs of signature '{signature_name}' have batch sizes {sizes}; expected "
          "one batch size for all")


def check_output_filter(signature_name: str, signature, output_filter) -> tuple:
  """The output names to fetch, sorted: `output_filter` or all of the signature's."""
  if not output_filter:
    return tuple(sorted(signature.outputs))
  unknown = sorted(set(output_filter) - set(signature.outputs))
  if unknown:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"output_filter names {unknown}, not outputs of signature "
                       f"'{signature_name}'; expected some of {sorted(signature.outputs)}")
  if len(set(output_filter)) != len(output_filter):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"output_filter {list(output_filter)} repeats a name; expected each once")
  return tuple(sorted(output_filter))


def is_batch_major(signature) -> bool:
  infos = list(signature.inputs.values())
  return bool(infos) and all(not i.tensor_shape.unknown_rank and i.tensor_shape.dim
                             and i.tensor_shape.dim[0].size == -1 for i in infos)
