"""Tests of serving/tensors.py: TensorProto conversion and request checks against a signature."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.server import tensors


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


def test_to_numpy_rejects_short_tensor_content():
  proto = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
  proto.tensor_content = proto.tensor_content[:-4]
  with pytest.raises(ValueError, match="holds 20 bytes; expected 24"):
    tensors.to_numpy(proto)


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
    ({"key": np.zeros(1, np.int64)}, r"missing \['image'\]"),
    ({**_inputs(), "extra": np.zeros(1)}, r"unknown \['extra'\]"),
    (_inputs(image_dtype=np.float64), "has dtype float64; expected float32"),
    (_inputs(width=100), r"has shape \[2,100\]; expected \[-1,784\]"),
    ({"key": np.zeros((2, 1), np.int64), "image": np.zeros((2, 784), np.float32)},
     r"input 'key' .* has shape \[2,1\]; expected \[-1\]"),
    (_inputs(image_batch=3), "batch sizes .*'image': 3, 'key': 2"),
])
def test_check_inputs_rejects_bad_inputs_as_invalid_argument(inputs, message):
  with pytest.raises(tensors.ServingError, match=message) as info:
    tensors.check_inputs("serving_default", _signature(), inputs)
  assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_check_inputs_accepts_a_good_request():
  tensors.check_inputs("serving_default", _signature(), _inputs())
  assert tensors.is_batch_major(_signature())


def test_check_output_filter():
  assert tensors.check_output_filter("s", _signature(), []) == ("scores",)
  with pytest.raises(tensors.ServingError, match=r"\['nope'\], not outputs"):
    tensors.check_output_filter("s", _signature(), ["nope"])
