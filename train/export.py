"""Exports the trained CNN as a SavedModel that TensorFlow Serving loads.

Typical usage, from an existing checkpoint:

  python -m train.export --checkpoint_dir=/tmp/logs --model_dir=/tmp/model

writes /tmp/model/<version>/ with `serving_default` (key + image in, key + scores
out) and TF Serving's MNIST-example signature `predict_images`, plus warmup records,
and prints its path. Exit codes: 0 exported; 2 a bad flag, no checkpoint at
--checkpoint_dir, a --model_dir that cannot be written, a --version that exists,
or no space left on the device.
"""

import os
import sys
import uuid

from absl import flags
from absl import logging
import numpy as np

from common import runtime
from common import settings

if __name__ == "__main__":
  runtime.import_tensorflow()  # The program: quiet TensorFlow's start-up, before it loads.

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from model import cnn  # noqa: E402
from model import contract  # noqa: E402
from train import checkpoint  # noqa: E402
from train import storage  # noqa: E402
from train.config import FLAT  # noqa: E402
from train.config import VERSIONED  # noqa: E402


class ServingModule(tf.Module):
  """Wraps the Keras model with the serving signatures of model/contract.py."""

  def __init__(self, model: tf_keras.Model):
    super().__init__()
    self.model = model

  @tf.function(input_signature=[contract.to_tf_tensor_spec(s) for s in contract.INPUTS])
  def serve(self, key, image):
    # tf.identity gives the output its own tensor, so the key comes back under
    # the output name `key` in the same order as it came in.
    return {contract.KEY: tf.identity(key), contract.SCORES: self._scores(image)}

  @tf.function(input_signature=[contract.to_tf_tensor_spec(s)
                                for s in contract.TFS_EXAMPLE_INPUTS])
  def predict_images(self, images):
    return {contract.SCORES: self._scores(images)}

  def _scores(self, images):
    # oneDNN's CPU convolution rejects an empty batch ("input depth must be evenly
    # divisible by filter depth"), so a request of zero images skips the network.
    return tf.cond(tf.shape(images)[0] > 0,
                   lambda: self.model(images, training=False),
                   lambda: tf.zeros([0, cnn.NUM_CLASSES], tf.float32))


def next_version(export_base: str) -> int:
  versions = contract.list_versions(export_base)
  return versions[-1] + 1 if versions else 1


def write_warmup_requests(export_dir: str, images: np.ndarray,
                          model_name: str = contract.DEFAULT_MODEL_NAME) -> str:
  """Writes TF Serving warmup records: PredictionLogs at batch 1 and the full batch."""
  from tensorflow_serving.apis import prediction_log_pb2

  path = os.path.join(export_dir, contract.WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for n in sorted({1, len(images)}):
      request = contract.make_predict_request(np.arange(n), images[:n], model_name)
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def run_session_loader(export_dir: str, keys: np.ndarray, images: np.ndarray) -> dict:
  """Runs `serving_default` through the TF1 session-based loader TF Serving uses."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta = tf.compat.v1.saved_model.loader.load(
        sess, [tf.saved_model.SERVING], export_dir)
    signature = meta.signature_def[contract.SIGNATURE_NAME]
    feeds = {signature.inputs[contract.KEY].name: keys,
             signature.inputs[contract.IMAGE].name: images}
    names = {k: v.name for k, v in signature.outputs.items()}
    return sess.run(names, feed_dict=feeds)


def verify_export(export_dir: str, model: tf_keras.Model, images: np.ndarray) -> None:
  """Checks the written SavedModel against the in-memory model, with both loaders.

  Raises ValueError naming the mismatch; an export that fails is never published.
  """
  keys = np.arange(len(images), dtype=np.int64)[::-1].copy()
  expected = model(images, training=False).numpy()
  loaded = tf.saved_model.load(export_dir)
  outputs = {k: v.numpy() for k, v in loaded.signatures[contract.SIGNATURE_NAME](
      key=tf.constant(keys), image=tf.constant(images)).items()}
  session_outputs = run_session_loader(export_dir, keys, images)
  for loader, out in (("tf.saved_model.load", outputs), ("session loader", session_outputs)):
    if not np.array_equal(out[contract.KEY], keys):
      raise ValueError(f"export {export_dir}: {loader} returned keys {out[contract.KEY]}, "
                       f"expected {keys}")
    if not np.allclose(out[contract.SCORES], expected, atol=1e-5):
      raise ValueError(f"export {export_dir}: {loader} scores differ from the in-memory "
                       f"model by {np.abs(out[contract.SCORES] - expected).max():g}")
  empty = run_session_loader(export_dir, keys[:0], images[:0])
  if empty[contract.SCORES].shape != (0, cnn.NUM_CLASSES):
    raise ValueError(f"export {export_dir}: an empty batch returned scores of shape "
                     f"{empty[contract.SCORES].shape}, expected (0, {cnn.NUM_CLASSES})")


def export_model(model: tf_keras.Model, export_base: str, *,
                 version: int | None = None,
                 sample_images: np.ndarray | None = None,
                 layout: str = VERSIONED) -> str:
  """Writes, verifies and publishes the SavedModel; returns where it was published.

  VERSIONED publishes `<export_base>/<version>/`, FLAT `<export_base>/` itself. The
  SavedModel is written to a hidden staging folder first and moved into place only
  after it verified, so a TF Serving that polls `export_base` never sees half a
  version (TF Serving ignores non-numeric names). On a local disk the move is an
  atomic rename; on object stores (gs://) it is a copy.
  """
  if layout not in (VERSIONED, FLAT):
    raise ValueError(f"export layout {layout!r} is not {VERSIONED!r} or {FLAT!r}")
  if sample_images is None:
    sample_images = np.random.default_rng(0).random((8, cnn.IMAGE_PIXELS), np.float32)
  sample_images = np.asarray(sample_images, np.float32)
  tf.io.gfile.makedirs(export_base)
  suffix = uuid.uuid4().hex[:8]
  if layout == FLAT:
    final_dir = export_base
    staging_dir = f"{export_base.rstrip('/')}.staging-{suffix}"
  else:
    version = next_version(export_base) if version is None else int(version)
    final_dir = os.path.join(export_base, str(version))
    if tf.io.gfile.exists(final_dir):
      raise FileExistsError(f"export version {final_dir} already exists")
    staging_dir = os.path.join(export_base, f".staging-{version}-{suffix}")
  module = ServingModule(model)
  signatures = {
      contract.SIGNATURE_NAME: module.serve,
      contract.TFS_EXAMPLE_SIGNATURE_NAME: module.predict_images,
  }
  try:
    tf.saved_model.save(module, staging_dir, signatures=signatures)
    write_warmup_requests(staging_dir, sample_images[:8])
    verify_export(staging_dir, model, sample_images)
    if layout == FLAT:
      _replace_contents(staging_dir, final_dir)
    else:
      tf.io.gfile.rename(staging_dir, final_dir)
  finally:
    if tf.io.gfile.exists(staging_dir):
      tf.io.gfile.rmtree(staging_dir)
  logging.info("Exported SavedModel (%s) to %s", layout, final_dir)
  return final_dir


def _replace_contents(source_dir: str, target_dir: str) -> None:
  """Moves every entry of `source_dir` into `target_dir`, replacing what was there."""
  for name in tf.io.gfile.listdir(source_dir):
    name = name.rstrip("/")
    target = os.path.join(target_dir, name)
    if tf.io.gfile.isdir(target):
      tf.io.gfile.rmtree(target)
    elif tf.io.gfile.exists(target):
      tf.io.gfile.remove(target)
    tf.io.gfile.rename(os.path.join(source_dir, name), target)


def export_from_checkpoint(checkpoint_path: str, export_base: str, **kwargs) -> str:
  """Exports a training checkpoint; raises FileNotFoundError if there is none, and
  storage.UnwritableError, before anything is written, if `export_base` cannot be."""
  model, step = checkpoint.restore_model(checkpoint_path)
  logging.info("Restored step %d from %s", step, checkpoint_path)
  storage.check_outputs([_as_output(export_base)])
  return export_model(model, export_base, **kwargs)


def _as_output(export_base: str) -> storage.Output:
  return storage.Output(export_base, "the exported model (--model_dir)")


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("checkpoint_dir", None, "Checkpoint directory (the trainer's "
                      "--log_dir) or a checkpoint prefix.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_string("model_dir", None, "Export base directory; the SavedModel goes "
                      "to <model_dir>/<version>/.", required=True, flag_values=flag_values)
  flags.DEFINE_integer("version", None, "Version number; default: one above the highest.",
                       flag_values=flag_values)


def export_kwargs_from_flags(flag_values: flags.FlagValues) -> dict:
  """export_from_checkpoint's arguments, from the parsed flags."""
  return dict(checkpoint_path=flag_values.checkpoint_dir,
              export_base=flag_values.model_dir, version=flag_values.version)


def main(argv):
  del argv
  kwargs = export_kwargs_from_flags(FLAGS)
  try:
    print(export_from_checkpoint(**kwargs))
  except (FileNotFoundError, FileExistsError, storage.UnwritableError) as e:
    print(f"error: {e}", file=sys.stderr)
    return settings.EXIT_USAGE
  except (tf.errors.OpError, OSError) as e:
    if not storage.is_disk_full(e):
      raise
    full = storage.describe_disk_full(e, [_as_output(kwargs["export_base"])])
    print(f"error: {full}; free space there or choose "
          "another --model_dir", file=sys.stderr)
    return settings.EXIT_USAGE
  return 0


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
