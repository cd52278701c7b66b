"""Tests for model/layers.py: DenseAtKernel computes what Dense computes, on one device.

tests/train/test_dense_at_kernel.py runs it on parameter servers, kernel sharded.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from model import cnn
from model import layers


def _scores_and_gradients(model, images, labels):
  @tf.function
  def fn():
    with tf.GradientTape() as tape:
      scores = model(images, training=True)
      loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(labels, scores))
    return scores, tape.gradient(loss, model.trainable_variables)
  return fn()


def test_cnn_with_dense_at_kernel_matches_the_plain_cnn():
  tf.random.set_seed(0)
  plain = cnn.build_cnn(dropout_rate=0.0)
  at_kernel = cnn.build_cnn(dropout_rate=0.0, dense_at_kernel=True)
  assert isinstance(at_kernel.get_layer("hidden"), layers.DenseAtKernel)
  assert not isinstance(plain.get_layer("hidden"), layers.DenseAtKernel)
  at_kernel.set_weights(plain.get_weights())
  rng = np.random.default_rng(1)
  images = tf.constant(rng.random((8, cnn.IMAGE_PIXELS), np.float32))
  labels = tf.constant(rng.integers(0, cnn.NUM_CLASSES, 8))
  plain_scores, plain_grads = _scores_and_gradients(plain, images, labels)
  scores, grads = _scores_and_gradients(at_kernel, images, labels)
  np.testing.assert_allclose(scores, plain_scores, rtol=1e-6, atol=1e-7)
  assert [v.name for v in at_kernel.trainable_variables] == \
      [v.name for v in plain.trainable_variables]
  for variable, grad, plain_grad in zip(plain.trainable_variables, grads, plain_grads):
    assert np.abs(plain_grad).max() > 0, variable.name
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5, atol=1e-7,
                               err_msg=variable.name)


def test_checkpoints_are_interchangeable_with_the_plain_cnn(tmp_path):
  tf.random.set_seed(1)
  at_kernel = cnn.build_cnn(dense_at_kernel=True)
  path = tf.train.Checkpoint(model=at_kernel).save(str(tmp_path / "ckpt"))
  plain = cnn.build_cnn()
  tf.train.Checkpoint(model=plain).restore(path).assert_consumed()
  for a, b in zip(plain.get_weights(), at_kernel.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_dense_at_kernel_without_bias_or_activation_is_a_plain_product():
  layer = layers.DenseAtKernel(3, use_bias=False)
  inputs = tf.constant(np.arange(8, dtype=np.float32).reshape(2, 4))
  np.testing.assert_allclose(layer(inputs), inputs.numpy() @ layer.kernel.numpy(),
                             rtol=1e-6)


def test_dense_at_kernel_names_a_wrong_input_rank():
  layer = layers.DenseAtKernel(3, name="hidden")
  with pytest.raises(ValueError, match=r"hidden: DenseAtKernel takes inputs of rank 2"):
    layer(tf.zeros((2, 4, 5)))
