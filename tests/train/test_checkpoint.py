"""Tests for train/checkpoint.py: a checkpoint saved whole or not at all; its weights and
step, read back."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from model import cnn
from train import checkpoint


def test_restore_model_matches_the_trained_model_and_step(tmp_path):
  tf_keras.utils.set_random_seed(1)
  trained = cnn.build_cnn()
  optimizer = tf_keras.optimizers.Adam()
  optimizer.build(trained.trainable_variables)
  saved = tf.train.Checkpoint(model=trained, optimizer=optimizer, step=optimizer.iterations)
  optimizer.iterations.assign(42)
  prefix = saved.save(str(tmp_path / "ckpt" / "ckpt"))
  assert checkpoint.latest_checkpoint(str(tmp_path / "ckpt")) == prefix
  model, step = checkpoint.restore_model(str(tmp_path / "ckpt"))
  assert step == 42
  images = np.random.default_rng(0).random((4, cnn.IMAGE_PIXELS), np.float32)
  np.testing.assert_allclose(model(images, training=False), trained(images, training=False),
                             atol=1e-6)
  # A prefix works as well as its directory.
  assert checkpoint.restore_weights(cnn.build_cnn(), prefix) == 42


def test_no_checkpoint_is_an_error_naming_the_directory(tmp_path):
  assert checkpoint.latest_checkpoint(str(tmp_path)) is None
  with pytest.raises(FileNotFoundError, match=f"no checkpoint found in {tmp_path}/empty"):
    checkpoint.restore_model(str(tmp_path / "empty"))


def _manager(directory: str) -> tf.train.CheckpointManager:
  model = cnn.build_cnn()
  optimizer = tf_keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  return tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, optimizer=optimizer), directory, max_to_keep=2)


def test_a_save_that_fails_leaves_nothing_behind(tmp_path, monkeypatch):
  """The failure injected where the checkpoint is written: half of it on disk, then
  the error TensorFlow raises for ENOSPC."""
  directory = str(tmp_path)
  manager = _manager(directory)
  kept = checkpoint.save(manager, 5)

  def write_half_then_fail(prefix, **kwargs):
    os.makedirs(prefix + "_temp")
    open(f"{prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate1", "w").close()
    open(f"{prefix}.data-00000-of-00001", "w").close()
    raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}; No space left on device")

  monkeypatch.setattr(manager.checkpoint, "_write", write_half_then_fail)
  with pytest.raises(tf.errors.ResourceExhaustedError, match="No space left on device"):
    checkpoint.save(manager, 7)
  assert sorted(os.listdir(directory)) == [
      "checkpoint", "ckpt-5.data-00000-of-00001", "ckpt-5.index"]
  assert checkpoint.latest_checkpoint(directory) == kept


def test_a_full_disk_leaves_no_temp_checkpoint(mount_tmpfs):
  """A real ENOSPC: a tmpfs far smaller than one checkpoint of the CNN."""
  directory = mount_tmpfs("full", size=256 << 10)
  manager = _manager(directory)
  with pytest.raises(tf.errors.ResourceExhaustedError, match="No space left on device"):
    checkpoint.save(manager, 7)
  assert os.listdir(directory) == []
  assert checkpoint.latest_checkpoint(directory) is None
