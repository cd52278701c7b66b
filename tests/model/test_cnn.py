"""Tests for model/cnn.py: the seed's architecture, exactly."""

import numpy as np
import pytest
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


# --- The first weights ------------------------------------------------------------

# A truncated normal of stddev s, cut at 2 s, has stddev s * 0.8796 (Φ and φ of 2).
TRUNCATED_STDDEV_RATIO = 0.87962566


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the ECDFs."""
  a, b = np.sort(a.ravel()), np.sort(b.ravel())
  points = np.concatenate([a, b])
  return float(np.max(np.abs(np.searchsorted(a, points, side="right") / len(a)
                             - np.searchsorted(b, points, side="right") / len(b))))


def test_seed_initializers_draw_the_seeds_distributions():
  tf.random.set_seed(3)
  model = cnn.build_cnn(initializers=cnn.SEED_INITIALIZERS)
  for layer, stddev in (("conv1", 0.1), ("conv2", 0.1), ("hidden", 1.0)):
    kernel = model.get_layer(layer).kernel.numpy()
    assert np.abs(kernel).max() <= 2 * stddev, layer  # Redrawn beyond two stddevs.
    np.testing.assert_allclose(kernel.std(), stddev * TRUNCATED_STDDEV_RATIO,
                               rtol=0.15 if layer == "conv1" else 0.02, err_msg=layer)
    np.testing.assert_array_equal(model.get_layer(layer).bias.numpy(), np.float32(0.1))
  assert not model.get_layer("scores").kernel.numpy().any()
  assert not model.get_layer("scores").bias.numpy().any()
  # Each layer draws its own values, not another's.
  conv2 = model.get_layer("conv2").kernel.numpy()
  assert not np.array_equal(conv2.ravel()[:800], model.get_layer("conv1").kernel.numpy().ravel())


def test_seed_initializers_match_tf1_truncated_normal():
  """The 1024-unit kernel against r0.12's tf.truncated_normal run in a TF1 graph: the
  same distribution by a two-sample Kolmogorov-Smirnov test on 500,000 values of each."""
  tf.random.set_seed(4)
  ours = cnn.build_cnn(initializers=cnn.SEED_INITIALIZERS).get_layer("hidden").kernel.numpy()
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    tf.compat.v1.set_random_seed(5)
    theirs = sess.run(tf.compat.v1.truncated_normal([3136, 1024], stddev=1.0))
  n = 500_000
  ours, theirs = ours.ravel()[:n], theirs.ravel()[:n]
  # The 0.1% critical distance is 1.95 * sqrt(2 / n) (0.0039 here); one of twice
  # that fails. Keras's default (Glorot uniform) is far off, which the test must see.
  assert _ks_distance(ours, theirs) < 2 * 1.95 * np.sqrt(2 / n)
  keras_default = cnn.build_cnn().get_layer("hidden").kernel.numpy().ravel()[:n]
  assert _ks_distance(keras_default, theirs) > 0.1


def test_keras_initializers_are_keras_defaults_and_unknown_ones_are_refused():
  model = cnn.build_cnn(initializers=cnn.KERAS_INITIALIZERS)
  limit = np.sqrt(6 / (3136 + 1024))  # Glorot uniform.
  assert np.abs(model.get_layer("hidden").kernel.numpy()).max() <= limit
  assert not model.get_layer("hidden").bias.numpy().any()
  with pytest.raises(ValueError, match="initializers 'glorot': expected one of seed, keras"):
    cnn.build_cnn(initializers="glorot")
