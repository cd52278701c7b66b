"""The serving contract: signature names, tensor keys, dtypes and shapes, defined once.

The exporter (train/export.py) builds its signatures from these constants and the
client (serving/client.py) builds its requests from them, so the two cannot drift.
"""

import dataclasses
import os
import re

import tensorflow as tf

from model import cnn

# The seed's online/batch prediction API: `key` passes through unchanged.
SIGNATURE_NAME = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
KEY = "key"
IMAGE = "image"
SCORES = "scores"

# TensorFlow Serving's own MNIST example (tensorflow_serving/example/mnist_client.py)
# calls model `mnist`, signature `predict_images` with input `images`, and reads
# output `scores`.
TFS_EXAMPLE_SIGNATURE_NAME = "predict_images"
TFS_EXAMPLE_IMAGES = "images"

DEFAULT_MODEL_NAME = "mnist"

# TF Serving's warmup records inside a version: TFRecords of PredictionLog.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

_VERSION_RE = re.compile(r"^\d+$")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One named tensor of a signature."""
  name: str
  dtype: tf.DType
  shape: tuple  # None marks the batch dimension.


INPUTS = (
    TensorSpec(KEY, tf.int64, (None,)),
    TensorSpec(IMAGE, tf.float32, (None, cnn.IMAGE_PIXELS)),
)
OUTPUTS = (
    TensorSpec(KEY, tf.int64, (None,)),
    TensorSpec(SCORES, tf.float32, (None, cnn.NUM_CLASSES)),
)
TFS_EXAMPLE_INPUTS = (TensorSpec(TFS_EXAMPLE_IMAGES, tf.float32, (None, cnn.IMAGE_PIXELS)),)


def list_version_dirs(base_path: str) -> dict[int, str]:
  """{version: folder name} in TF Serving's layout, <base_path>/<version>/.

  Only folders with a numeric name count: the exporter's hidden `.staging-*`
  folders and stray files do not, as in TF Serving's own file-system source.
  Leading zeros are allowed ("00000123" is version 123), as TF Serving reads them.
  """
  if not tf.io.gfile.isdir(base_path):
    return {}
  versions = {}
  for name in sorted(n.rstrip("/") for n in tf.io.gfile.listdir(base_path)):
    if _VERSION_RE.match(name) and tf.io.gfile.isdir(os.path.join(base_path, name)):
      versions.setdefault(int(name), name)
  return versions


def list_versions(base_path: str) -> list[int]:
  """The versions under base_path (see list_version_dirs), ascending."""
  return sorted(list_version_dirs(base_path))


def to_tf_tensor_spec(spec: TensorSpec) -> tf.TensorSpec:
  return tf.TensorSpec(spec.shape, spec.dtype, name=spec.name)


def make_predict_request(keys, images, model_name: str = DEFAULT_MODEL_NAME,
                         signature_name: str = SIGNATURE_NAME,
                         version: int | None = None,
                         version_label: str | None = None):
  """Builds a TF Serving PredictRequest for the key-passthrough signature.

  `keys` is int64-like of shape [N]; `images` float32-like of shape [N, 784] in [0, 1].
  """
  import numpy as np
  from tensorflow_serving.apis import predict_pb2

  keys = np.asarray(keys, dtype=np.int64).reshape(-1)
  images = np.asarray(images, dtype=np.float32).reshape(-1, cnn.IMAGE_PIXELS)
  if keys.shape[0] != images.shape[0]:
    raise ValueError(f"{keys.shape[0]} keys for {images.shape[0]} images: "
                     "expected one key per image")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = version
  elif version_label:
    request.model_spec.version_label = version_label
  request.inputs[KEY].CopyFrom(tf.make_tensor_proto(keys, dtype=tf.int64))
  request.inputs[IMAGE].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
  return request
