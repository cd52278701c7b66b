"""Tests for train/checkpoint.py: a training checkpoint's weights and step, read back."""

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
