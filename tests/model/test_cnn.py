"""Tests for model/cnn.py: the seed's architecture, exactly."""

import numpy as np
import tensorflow as tf

from model import cnn


def test_parameter_count_is_the_seeds():
  # conv1 5*5*1*32+32, conv2 5*5*32*64+64, dense 3136*1024+1024, out 1024*10+10.
  expected = (5 * 5 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) \
      + (1024 * 10 + 10)
  assert expected == 3_274_634
  assert cnn.build_cnn().count_params() == expected


def test_layers_follow_the_seed():
  model = cnn.build_cnn()
  assert model.get_layer("conv1").kernel.shape == (5, 5, 1, 32)
  assert model.get_layer("conv2").kernel.shape == (5, 5, 32, 64)
  assert model.get_layer("hidden").kernel.shape == (7 * 7 * 64, 1024)
  assert model.get_layer("scores").kernel.shape == (1024, 10)
  assert [layer.__class__.__name__ for layer in model.layers].count("Dropout") == 1


def test_output_is_a_softmax_over_ten_classes():
  model = cnn.build_cnn()
  images = np.random.default_rng(0).random((3, cnn.IMAGE_PIXELS), np.float32)
  scores = model(images, training=False).numpy()
  assert scores.shape == (3, cnn.NUM_CLASSES)
  np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
  assert (scores >= 0).all()


def test_dropout_is_active_only_in_training():
  model = cnn.build_cnn()
  images = tf.random.uniform((4, cnn.IMAGE_PIXELS), seed=1)
  np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
  assert not np.allclose(model(images, training=True), model(images, training=False))
