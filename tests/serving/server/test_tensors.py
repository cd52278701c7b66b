"""Tests of serving/server/tensors.py: bounded TensorProto decoding, and checks against a signature."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.server import config
from serving.server import tensors
from serving.server.errors import ServingError


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array([3, -1, 2**40], np.int64),
    np.array([[1, 2]], np.int32),
    np.array([True, False]),
    np.zeros((0, 10), np.float32),
])
@pytest.mark.parametrize("tensor_content", [False, True])
def test_from_numpy_round_trips_and_matches_tensorflow(array, tensor_content):
  proto = tensors.from_numpy(array, tensor_content=tensor_content)
  np.testing.assert_array_equal(tensors.to_numpy(proto), array)
  np.testing.assert_array_equal(tf.make_ndarray(proto), array)
  assert tensors.shape_of(proto) == array.shape
  assert bool(proto.tensor_content) == (tensor_content and array.size > 0)


def test_from_numpy_uses_typed_fields_like_tf_serving():
  proto = tensors.from_numpy(np.array([[0.25, 0.75]], np.float32))
  assert list(proto.float_val) == [0.25, 0.75]
  assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
  assert proto.tensor_content == b""
  keys = tensors.from_numpy(np.array([7, 9]), tf.int64.as_datatype_enum)
  assert list(keys.int64_val) == [7, 9] and keys.dtype == tf.int64.as_datatype_enum


def test_to_numpy_reads_make_tensor_proto_and_strings():
  images = np.random.default_rng(0).random((2, 784), dtype=np.float32)
  np.testing.assert_array_equal(tensors.to_numpy(tf.make_tensor_proto(images)), images)
  strings = tensors.to_numpy(tf.make_tensor_proto([b"a", b"bc"]))
  assert strings.tolist() == [b"a", b"bc"]


def test_decoded_size_rejects_short_tensor_content():
  proto = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
  proto.tensor_content = proto.tensor_content[:-4]
  with pytest.raises(ValueError, match="holds 20 bytes; expected 24"):
    tensors.decoded_size(proto)


def _declared(shape, dtype=tf.float32, values=()):
  """A TensorProto that declares `shape` and carries `values` (typed), whatever they add up to."""
  proto = tf.make_tensor_proto(np.zeros(0, dtype.as_numpy_dtype))
  proto.tensor_shape.Clear()
  proto.tensor_shape.dim.extend([proto.tensor_shape.Dim(size=d) for d in shape])
  proto.tensor_content = b""
  {tf.float32: proto.float_val, tf.int64: proto.int64_val, tf.uint8: proto.int_val}[dtype] \
      .extend(values)
  return proto


LIMITS = config.RequestLimits(max_rows=100, max_bytes=1 << 20)


@pytest.mark.parametrize("proto,code,message", [
    # 54 bytes that declare 300 MB: refused before anything is allocated.
    (_declared([100_000, 784]), grpc.StatusCode.INVALID_ARGUMENT, "needs exactly 78400000"),
    (_declared([1, 2**40]), grpc.StatusCode.INVALID_ARGUMENT, "has 0 values"),
    (_declared([2**40, 784]), grpc.StatusCode.INVALID_ARGUMENT, "has 0 values"),
    (_declared([101, 1], values=[0.5] * 101), grpc.StatusCode.INVALID_ARGUMENT,
     r"101 rows .* at most 100 \(--max_request_rows\)"),
    (_declared([3], values=[1.0]), grpc.StatusCode.INVALID_ARGUMENT, "needs exactly 3"),
    (_declared([2, -1]), grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"),
    (_declared([1] * 40), grpc.StatusCode.INVALID_ARGUMENT, "40 dimensions"),
    (_declared([2], tf.uint8, [1, 300]), grpc.StatusCode.INVALID_ARGUMENT, "do not fit dtype uint8"),
    (tf.make_tensor_proto(np.zeros((100, 4096), np.float32)), grpc.StatusCode.RESOURCE_EXHAUSTED,
     r"1638400 bytes .* at most 1048576 \(--max_request_bytes\)"),
])
def test_decode_inputs_refuses_what_the_limits_or_the_shape_do_not_allow(proto, code, message):
  with pytest.raises(ServingError, match=message) as info:
    tensors.decode_inputs({"x": proto}, LIMITS)
  assert info.value.code == code


def test_decode_inputs_refuses_a_dtype_a_request_cannot_carry():
  proto = tf.make_tensor_proto(np.zeros(1, np.float32))
  proto.dtype = tf.resource.as_datatype_enum
  with pytest.raises(ServingError, match="dtype resource cannot be sent"):
    tensors.decode_inputs({"x": proto}, LIMITS)


def test_decode_inputs_decodes_typed_fields_content_and_strings():
  inputs = tensors.decode_inputs({
      "a": _declared([2, 2], values=[1, 2, 3, 4]),
      "b": tf.make_tensor_proto(np.arange(3, dtype=np.int64)),
      "s": tf.make_tensor_proto([b"x", b"yz"])}, LIMITS)
  assert inputs["a"].tolist() == [[1, 2], [3, 4]] and inputs["a"].dtype == np.float32
  assert inputs["b"].tolist() == [0, 1, 2]
  assert inputs["s"].tolist() == [b"x", b"yz"]


def _signature() -> meta_graph_pb2.SignatureDef:
  signature = meta_graph_pb2.SignatureDef()
  for name, dtype, shape in (("key", tf.int64, [-1]), ("image", tf.float32, [-1, 784])):
    info = signature.inputs[name]
    info.dtype = dtype.as_datatype_enum
    info.tensor_shape.dim.extend([info.tensor_shape.Dim(size=d) for d in shape])
  signature.outputs["scores"].dtype = tf.float32.as_datatype_enum
  return signature


def _inputs(batch=2, image_batch=None, width=784, image_dtype=np.float32):
  return {"key": np.arange(batch, dtype=np.int64),
          "image": np.zeros((batch if image_batch is None else image_batch, width), image_dtype)}


@pytest.mark.parametrize("inputs,message", [
    # TF Serving's words for the inputs that do not match the signature.
    ({"key": np.zeros(1, np.int64)},
     r"input size does not match signature: 1!=2 .* Missing but required: \{image\}\."),
    ({**_inputs(), "extra": np.zeros(1)}, r"Sent extra: \{extra\}\. Missing but required: \{\}"),
    (_inputs(image_dtype=np.float64), "has dtype float64; expected float32"),
    (_inputs(width=100), r"has shape \[2,100\]; expected \[-1,784\]"),
    (_inputs(image_batch=3), "batch sizes .*'image': 3, 'key': 2"),
])
def test_check_inputs_rejects_bad_inputs_as_invalid_argument(inputs, message):
  with pytest.raises(ServingError, match=message) as info:
    tensors.check_inputs("serving_default", _signature(), inputs)
  assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_check_inputs_accepts_a_good_request():
  tensors.check_inputs("serving_default", _signature(), _inputs())
  assert tensors.is_batch_major(_signature())


def test_check_inputs_leaves_another_rank_to_the_graph():
  # As in TF Serving, which feeds [1] to a [-1,1] signature: the graph decides.
  tensors.check_inputs("serving_default", _signature(),
                       {"key": np.zeros((2, 1), np.int64), "image": np.zeros(784, np.float32)})


def test_check_output_filter():
  assert tensors.check_output_filter(_signature(), []) == ("scores",)
  with pytest.raises(ServingError, match="output tensor alias not found in signature: nope"):
    tensors.check_output_filter(_signature(), ["nope"])
  with pytest.raises(ServingError, match="duplicate output tensor alias: scores"):
    tensors.check_output_filter(_signature(), ["scores", "scores"])
