"""TF Serving's REST JSON: request bodies to arrays and tf.Examples, answers to JSON values.

The rules and error words follow TF Serving's util/json_tensor.cc: a JSON value
must already be of the input's type (1.7 or true for an int64 input is an error,
as is "1.5" for a float), lists must be dense, "instances" is the row format
(one entry per row, objects when the signature has several inputs) and "inputs"
the columnar one; strings may come as {"b64": "..."}.
"""

import base64
import binascii

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2

from serving.server import config
from serving.server import tensors
from serving.server.errors import invalid_argument
from serving.server.errors import printable

B64_KEY = "b64"
# An output whose name ends so is bytes, answered as {"b64": ...} (TF Serving's rule).
BYTES_SUFFIX = "_bytes"

_INT_RANGES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
               for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                         np.uint64)}


def describe(value, limit: int = 80) -> str:
  """A JSON value for an error message, cut short."""
  import json
  try:
    text = json.dumps(value)
  except (TypeError, ValueError, RecursionError):
    text = repr(value)
  return printable(text, limit)


def _json_type(value) -> str:
  if value is None:
    return "NULL"
  if isinstance(value, bool):
    return "BOOL"
  if isinstance(value, (int, float)):
    return "NUMBER"
  if isinstance(value, str):
    return "STRING"
  if isinstance(value, list):
    return "ARRAY"
  return "OBJECT"


def _is_b64(value) -> bool:
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _type_error(value, dtype: tf.DType):
  return invalid_argument(f"JSON Value: {describe(value)} Type: {_json_type(value)} is not of "
                          f"expected type: {dtype.name}")


def dense_shape(value) -> list:
  """The shape of a nested list, read along the first elements (TF Serving's GetDenseTensorShape)."""
  shape = []
  while isinstance(value, list):
    if len(shape) >= tensors.MAX_RANK:
      raise invalid_argument(f"a JSON value is nested more than {tensors.MAX_RANK} lists deep")
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _flatten(value, shape: list, out: list) -> None:
  """Appends the leaves of `value` to `out`, checking that every list has the size of `shape`."""
  stack = [(value, 0)]
  while stack:
    item, level = stack.pop()
    if isinstance(item, list):
      if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < "
                               f"{len(shape)}")
      if len(item) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(item)} at level: "
                               f"{level} expected size: {shape[level]}")
      stack.extend((v, level + 1) for v in reversed(item))
    else:
      if level != len(shape):
        raise invalid_argument(f"JSON Value: {describe(item)} found at incorrect level: "
                               f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
      out.append(item)


def _leaves_to_array(leaves: list, dtype: tf.DType, shape: list) -> np.ndarray:
  """Checks each leaf's JSON type against `dtype` (no coercion) and builds the array."""
  if dtype == tf.string:
    values = []
    for leaf in leaves:
      if isinstance(leaf, str):
        values.append(leaf.encode())
      elif _is_b64(leaf):
        try:
          values.append(base64.b64decode(leaf[B64_KEY], validate=True))
        except (binascii.Error, ValueError):
          raise invalid_argument("Unable to base64 decode") from None
      else:
        raise _type_error(leaf, dtype)
    return np.array(values, dtype=object).reshape(shape)
  if dtype == tf.bool:
    allowed = (bool,)
  elif dtype.is_floating:
    allowed = (int, float)
  elif dtype.is_integer:
    allowed = (int,)
  else:
    raise invalid_argument(f"Conversion of JSON values to type: {dtype.name} is not supported")
  for leaf in leaves:
    # bool is an int to Python, not to JSON: true is no number.
    if type(leaf) not in allowed:  # pylint: disable=unidiomatic-typecheck
      raise _type_error(leaf, dtype)
  np_dtype = np.dtype(dtype.as_numpy_dtype)
  if np_dtype in _INT_RANGES and leaves:
    low, high = _INT_RANGES[np_dtype]
    smallest, largest = min(leaves), max(leaves)
    if smallest < low or largest > high:
      raise _type_error(smallest if smallest < low else largest, dtype)
  try:
    return np.array(leaves, dtype=np_dtype).reshape(shape)
  except (OverflowError, ValueError) as e:
    raise invalid_argument(f"JSON values do not fit type {dtype.name}: {e}") from None


def to_array(value, dtype: tf.DType) -> np.ndarray:
  """One JSON value (a nested list or a scalar) as an array of `dtype`."""
  if isinstance(value, dict) and not _is_b64(value):
    raise _type_error(value, dtype)
  shape = dense_shape(value)
  leaves = []
  _flatten(value, shape, leaves)
  return _leaves_to_array(leaves, dtype, shape)


def _nonempty_list(body: dict, key: str, limits: config.RequestLimits, empty_words: str) -> list:
  """body[key], checked to be a list of 1 to limits.max_rows entries (TF Serving's words)."""
  value = body[key]
  if not isinstance(value, list):
    raise invalid_argument(f"JSON Value: {describe(body)} Expecting '{key}' to be an list/array")
  if not value:
    raise invalid_argument(f"JSON Value: {describe(body)} {empty_words}")
  _check_rows(len(value), limits)
  return value


def _check_rows(rows: int, limits: config.RequestLimits) -> None:
  if rows > limits.max_rows:
    raise invalid_argument(f"the request has {rows} instances; this server takes at most "
                           f"{limits.max_rows} (--max_request_rows): send fewer per request")


def predict_inputs(body: dict, signature, limits: config.RequestLimits) -> tuple:
  """({input name: array}, row format?) of a :predict body for `signature`."""
  infos = {name: tf.dtypes.as_dtype(info.dtype) for name, info in signature.inputs.items()}
  if not infos:
    raise invalid_argument("Failed to get input map for signature")
  if "instances" in body and "inputs" in body:
    raise invalid_argument(f"JSON Value: {describe(body)} Not formatted correctly expecting "
                           "only one of 'inputs' or 'instances' keys to exist ")
  if "instances" in body:
    instances = _nonempty_list(body, "instances", limits, "No values in 'instances' array")
    return _instances_to_arrays(instances, infos), True
  if "inputs" in body:
    return _inputs_to_arrays(body["inputs"], infos, limits), False
  raise invalid_argument("Missing 'inputs' or 'instances' key")


def _instances_to_arrays(instances: list, infos: dict) -> dict:
  named = isinstance(instances[0], dict) and not _is_b64(instances[0])
  if not named and len(infos) > 1:
    raise invalid_argument("instances is a plain list, but expecting list of objects as "
                           "multiple input tensors required as per tensorinfo_map")
  columns = {name: [] for name in infos} if named else {next(iter(infos)): []}
  for i, instance in enumerate(instances):
    is_object = isinstance(instance, dict) and not _is_b64(instance)
    if named != is_object:
      raise invalid_argument(f"Expecting {'object' if named else 'value/list'} but got "
                             f"{'list' if named else 'object'} at item {i} of input list")
    if named:
      if set(instance) != set(infos):
        unknown = sorted(set(instance) - set(infos))
        if unknown:
          raise invalid_argument(f"Failed to process element: {i} key: "
                                 f"{printable(unknown[0])} of 'instances' list. Error: "
                                 f"JSON object: does not have named input: "
                                 f"{printable(unknown[0])}")
        raise invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON "
                               f"object: {describe(instance)} keys must be equal to: "
                               f"{','.join(sorted(infos))}")
      for name, value in instance.items():
        columns[name].append(value)
    else:
      next(iter(columns.values())).append(instance)
  arrays = {}
  for name, values in columns.items():
    item_shape = dense_shape(values[0])
    for i, value in enumerate(values):
      if dense_shape(value) != item_shape:
        raise invalid_argument(f"Failed to process element: {i} key: {name} of 'instances' "
                               f"list. Error: Expecting shape {item_shape} but got: "
                               f"{dense_shape(value)}")
    leaves = []
    _flatten(values, [len(values), *item_shape], leaves)
    arrays[name] = _leaves_to_array(leaves, infos[name], [len(values), *item_shape])
  return arrays


def _inputs_to_arrays(inputs, infos: dict, limits: config.RequestLimits) -> dict:
  if not isinstance(inputs, dict) or _is_b64(inputs):
    if len(infos) > 1:
      raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                             "multiple input tensors required as per tensorinfo_map")
    inputs = {next(iter(infos)): inputs}
  arrays = {}
  for name, dtype in infos.items():
    if name not in inputs:
      raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    shape = dense_shape(inputs[name])
    if shape:
      _check_rows(shape[0], limits)
    arrays[name] = to_array(inputs[name], dtype)
  return arrays


def to_json_value(array: np.ndarray, name: str):
  """An output array as nested JSON lists (float32 with its shortest decimal text)."""
  if array.dtype == object or array.dtype.kind in "SU":
    as_b64 = name.endswith(BYTES_SUFFIX)

    def convert(v):
      v = v if isinstance(v, bytes) else str(v).encode()
      return {B64_KEY: base64.b64encode(v).decode()} if as_b64 else v.decode(errors="replace")
    return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else \
        array.tolist()
  if array.dtype == np.float32:
    # float(str(x)) of a float32 is the double nearest its shortest decimal text, so
    # json writes 0.2, not 0.20000000298023224, as TF Serving does. Non-finite values
    # come out as NaN and Infinity, as TF Serving's writer also puts them.
    return np.vectorize(lambda v: float(str(v)), otypes=[object])(array).tolist() \
        if array.size else array.tolist()
  return array.tolist()


def predict_answer(outputs: dict, row_format: bool) -> dict:
  """TF Serving's JSON answer: 'predictions' (one entry per row) or 'outputs' (columns)."""
  if not outputs:
    raise invalid_argument("Cannot convert empty tensor map to JSON")
  values = {name: to_json_value(array, name) for name, array in outputs.items()}
  if not row_format:
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
  rows = None
  for name, array in outputs.items():
    if array.ndim == 0:
      raise invalid_argument(f"Tensor name: {name} has no shape information ")
    if rows is not None and array.shape[0] != rows:
      raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                             f"{array.shape[0]} expecting: {rows}")
    rows = array.shape[0]
  if len(values) == 1:
    return {"predictions": next(iter(values.values()))}
  return {"predictions": [{name: v[i] for name, v in values.items()} for i in range(rows)]}


def _add_to_feature(value, name: str, feature: feature_pb2.Feature) -> None:
  kind = feature.WhichOneof("kind")

  def need(wanted):
    if kind not in (None, wanted):
      raise invalid_argument(f"Unexpected element type in feature: {printable(name)} expecting "
                             f"type: {kind.split('_')[0]}")

  if isinstance(value, bool):
    need("int64_list")
    feature.int64_list.value.append(int(value))
  elif isinstance(value, int):
    need("int64_list")
    if not -2**63 <= value < 2**63:
      raise invalid_argument(f"Feature: {printable(name)} has element {describe(value)} out of "
                             "the int64 range")
    feature.int64_list.value.append(value)
  elif isinstance(value, float):
    need("float_list")
    feature.float_list.value.append(value)
  elif isinstance(value, str):
    need("bytes_list")
    feature.bytes_list.value.append(value.encode())
  elif _is_b64(value):
    need("bytes_list")
    try:
      feature.bytes_list.value.append(base64.b64decode(value[B64_KEY], validate=True))
    except (binascii.Error, ValueError):
      raise invalid_argument("Unable to base64 decode") from None
  else:
    raise invalid_argument(f"Feature: {printable(name)} has element with unexpected JSON type: "
                           f"{_json_type(value)}")


def to_example(value, into: example_pb2.Example) -> None:
  """A JSON object {feature: value or list} as a tf.Example (TF Serving's MakeExampleFromJsonObject)."""
  if not isinstance(value, dict):
    raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
  for name, content in value.items():
    feature = into.features.feature[name]
    for item in content if isinstance(content, list) else [content]:
      _add_to_feature(item, name, feature)


def fill_examples_request(body: dict, request, limits: config.RequestLimits) -> None:
  """A :classify or :regress body into a ClassificationRequest/RegressionRequest."""
  target = request.input.example_list
  if "context" in body:
    to_example(body["context"], request.input.example_list_with_context.context)
    target = request.input.example_list_with_context
  if "examples" not in body:
    raise invalid_argument(f"JSON Value: {describe(body)} When method is classify, key "
                           "'examples' is expected and was not found")
  examples = _nonempty_list(body, "examples", limits, "'examples' value is an empty array")
  for example in examples:
    to_example(example, target.examples.add())


def classify_answer(result) -> dict:
  if not result.classifications:
    raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
  return {"results": [[[c.label, float(str(np.float32(c.score)))]
                       for c in classifications.classes]
                      for classifications in result.classifications]}


def regress_answer(result) -> dict:
  if not result.regressions:
    raise invalid_argument("Cannot convert empty RegressionResults to JSON")
  return {"results": [float(str(np.float32(r.value))) for r in result.regressions]}
