"""Training checkpoints: saving one whole or not at all, the latest one, its weights.

Training writes checkpoints of `tf.train.Checkpoint(model=..., optimizer=...,
step=...)` through a CheckpointManager (train/loop.py) with `save`; the loop's
evaluation, the side-car evaluator and the exporter read them back here.
"""

import os

import tensorflow as tf
import tf_keras

from model import cnn


def latest_checkpoint(checkpoint_dir: str) -> str | None:
  """The prefix of the newest checkpoint in `checkpoint_dir`, or None if there is none."""
  return tf.train.latest_checkpoint(checkpoint_dir)


def save(manager: tf.train.CheckpointManager, step: int) -> str:
  """Saves checkpoint number `step` through `manager`; returns its prefix.

  If the save fails (a full disk), what it left behind is removed before the error
  is raised again: TensorFlow writes into `<prefix>_temp/` and then moves the files
  to `<prefix>.index` and `<prefix>.data-*`, and leaves either half-written.
  Nothing reads them, but they hold the space a restart needs. A checkpoint
  already recorded as the latest is complete, and kept.
  """
  try:
    return manager.save(checkpoint_number=step)
  except Exception:
    recorded = manager.latest_checkpoint or ""
    pattern = os.path.join(manager.directory, f"*-{step}")
    for path in tf.io.gfile.glob(pattern + "_temp"):
      tf.io.gfile.rmtree(path)
    for path in tf.io.gfile.glob(pattern + ".*"):
      if not (recorded and path.startswith(recorded + ".")):
        tf.io.gfile.remove(path)
    raise


def restore_weights(model: tf_keras.Model, checkpoint: str) -> int:
  """Restores a training checkpoint's weights into `model`; returns its global step.

  `checkpoint` is a checkpoint prefix or a directory holding checkpoints. Works for
  any strategy's checkpoint, sharded variables included: each is saved whole.
  """
  path = latest_checkpoint(checkpoint) if tf.io.gfile.isdir(checkpoint) else checkpoint
  if not path or not tf.io.gfile.exists(path + ".index"):
    missing = "" if tf.io.gfile.exists(checkpoint) else ", which does not exist"
    raise FileNotFoundError(f"no checkpoint found in {checkpoint}{missing}: expected a "
                            "directory with a 'checkpoint' file (the trainer's "
                            "--checkpoint_dir, by default its --log_dir), or a "
                            "checkpoint prefix")
  step = tf.Variable(0, dtype=tf.int64)
  # Optimizer slots and other training state in the checkpoint are left unread.
  tf.train.Checkpoint(model=model, step=step).restore(path).expect_partial()
  return int(step.numpy())


def restore_model(checkpoint: str) -> tuple[tf_keras.Model, int]:
  """A plain (unsharded, unreplicated) CNN with a training checkpoint's weights, and its step."""
  model = cnn.build_cnn()
  return model, restore_weights(model, checkpoint)
