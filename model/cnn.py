"""The seed's MNIST convolutional network, on tf_keras (Keras 2)."""

import tf_keras

IMAGE_SIZE = 28
IMAGE_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10


def build_cnn(dropout_rate: float = 0.5) -> tf_keras.Model:
  """Returns the r0.12 article's CNN: flat [N, 784] images in, softmax scores out.

  conv 5x5x32 -> max-pool 2x2 -> conv 5x5x64 -> max-pool 2x2 -> dense 1024
  -> dropout -> dense 10 softmax, with SAME padding and ReLU as in the seed.
  """
  image = tf_keras.Input(shape=(IMAGE_PIXELS,), dtype="float32", name="image")
  x = tf_keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1))(image)
  x = tf_keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(x)
  x = tf_keras.layers.MaxPooling2D(2, padding="same")(x)
  x = tf_keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2")(x)
  x = tf_keras.layers.MaxPooling2D(2, padding="same")(x)
  x = tf_keras.layers.Flatten()(x)
  x = tf_keras.layers.Dense(1024, activation="relu", name="hidden")(x)
  x = tf_keras.layers.Dropout(dropout_rate)(x)
  scores = tf_keras.layers.Dense(NUM_CLASSES, activation="softmax", name="scores")(x)
  return tf_keras.Model(inputs=image, outputs=scores, name="mnist_cnn")
