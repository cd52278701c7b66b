"""The seed's MNIST convolutional network, on tf_keras (Keras 2)."""

import tf_keras

from model import layers

IMAGE_SIZE = 28
IMAGE_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10

# Initial weights: the seed's own distributions, or Keras's defaults (Glorot uniform
# kernels, zero biases).
SEED_INITIALIZERS = "seed"
KERAS_INITIALIZERS = "keras"
INITIALIZERS = (SEED_INITIALIZERS, KERAS_INITIALIZERS)


def _seed_initializers(kernel_stddev: float | None) -> dict:
  """The seed's tf.truncated_normal(stddev) kernel and tf.constant(0.1) bias.

  `kernel_stddev` None: the seed's output layer, tf.zeros for both. TF1's
  truncated_normal and Keras's TruncatedNormal draw from the same TruncatedNormal
  kernel: a normal of that stddev, redrawn beyond two of them.
  """
  if kernel_stddev is None:
    return dict(kernel_initializer="zeros", bias_initializer="zeros")
  return dict(kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=kernel_stddev),
              bias_initializer=tf_keras.initializers.Constant(0.1))


def build_cnn(dropout_rate: float = 0.5,
              initializers: str = KERAS_INITIALIZERS,
              dense_at_kernel: bool = False) -> tf_keras.Model:
  """Returns the r0.12 article's CNN: flat [N, 784] images in, softmax scores out.

  conv 5x5x32 -> max-pool 2x2 -> conv 5x5x64 -> max-pool 2x2 -> dense 1024
  -> dropout -> dense 10 softmax, with SAME padding and ReLU as in the seed.
  `initializers`: SEED_INITIALIZERS draws the first weights as the seed did
  (truncated normal of stddev 0.1 for the convolutions and 1.0 for the 1024-unit
  layer, biases 0.1, the output layer zeros); KERAS_INITIALIZERS keeps Keras's.
  `dense_at_kernel`: the 1024-unit layer, whose kernel holds all but 2% of the
  weights, computes its products where its kernel is (model/layers.py's
  DenseAtKernel: on the parameter servers that hold it); the same variables,
  checkpoints and values either way.
  """
  if initializers not in INITIALIZERS:
    raise ValueError(f"initializers {initializers!r}: expected one of {', '.join(INITIALIZERS)}")
  # One initializer object per layer: an unseeded Keras initializer called twice
  # draws the same values twice.
  def init(kernel_stddev):
    return _seed_initializers(kernel_stddev) if initializers == SEED_INITIALIZERS else {}

  image = tf_keras.Input(shape=(IMAGE_PIXELS,), dtype="float32", name="image")
  x = tf_keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1))(image)
  x = tf_keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1",
                             **init(0.1))(x)
  x = tf_keras.layers.MaxPooling2D(2, padding="same")(x)
  x = tf_keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2",
                             **init(0.1))(x)
  x = tf_keras.layers.MaxPooling2D(2, padding="same")(x)
  x = tf_keras.layers.Flatten()(x)
  hidden = layers.DenseAtKernel if dense_at_kernel else tf_keras.layers.Dense
  x = hidden(1024, activation="relu", name="hidden", **init(1.0))(x)
  x = tf_keras.layers.Dropout(dropout_rate)(x)
  scores = tf_keras.layers.Dense(NUM_CLASSES, activation="softmax", name="scores",
                                 **init(None))(x)
  return tf_keras.Model(inputs=image, outputs=scores, name="mnist_cnn")
