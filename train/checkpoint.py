"""Reading training checkpoints: the latest one, and its weights into a plain CNN.

Training writes checkpoints of `tf.train.Checkpoint(model=..., optimizer=...,
step=...)` through a CheckpointManager (train/loop.py); the loop's evaluation, the
side-car evaluator and the exporter read them back here.
"""

import tensorflow as tf
import tf_keras

from model import cnn


def latest_checkpoint(checkpoint_dir: str) -> str | None:
  """The prefix of the newest checkpoint in `checkpoint_dir`, or None if there is none."""
  return tf.train.latest_checkpoint(checkpoint_dir)


def restore_weights(model: tf_keras.Model, checkpoint: str) -> int:
  """Restores a training checkpoint's weights into `model`; returns its global step.

  `checkpoint` is a checkpoint prefix or a directory holding checkpoints. Works for
  any strategy's checkpoint, sharded variables included: each is saved whole.
  """
  path = latest_checkpoint(checkpoint) if tf.io.gfile.isdir(checkpoint) else checkpoint
  if not path or not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"no checkpoint found in {checkpoint}: expected a directory "
                            "with a 'checkpoint' file, or a checkpoint prefix")
  step = tf.Variable(0, dtype=tf.int64)
  # Optimizer slots and other training state in the checkpoint are left unread.
  tf.train.Checkpoint(model=model, step=step).restore(path).expect_partial()
  return int(step.numpy())


def restore_model(checkpoint: str) -> tuple[tf_keras.Model, int]:
  """A plain (unsharded, unreplicated) CNN with a training checkpoint's weights, and its step."""
  model = cnn.build_cnn()
  return model, restore_weights(model, checkpoint)
