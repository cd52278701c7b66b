"""A stand-in for r0.12's `tensorflow.examples.tutorials.mnist.input_data`.

TensorFlow no longer ships that module, and this machine cannot download. This one
keeps what the seed relies on, written from r0.12's behaviour:
`read_data_sets(train_dir, one_hot=True)` returns `.train` (55,000 images, the
first 5,000 of the training file held out as `.validation`) and `.test` (10,000);
each split's images are float32 [N, 784] in [0, 1] (multiplied by 1/255, as r0.12
did) and its labels one-hot float64 [N, 10]; `DataSet.next_batch(n)` walks the
split in file order for the first epoch, then, each time fewer than n examples are
left, drops them, shuffles the split with numpy's global generator and starts the
next epoch.

The images come from `common.mnist.load_mnist`, not from `train_dir` (the seed's
download cache): the vendored data/mnist by default, or whatever the environment
variable LEGACY_MNIST_DATA names (a directory, an .npz file, or "synthetic").
"""

import collections
import os

import numpy as np

from common import mnist

DATA_ENV = "LEGACY_MNIST_DATA"
NUM_CLASSES = 10
VALIDATION_SIZE = 5000
# MNIST's own split sizes, so that the seed's validation split and its evaluation
# loop (10,000 // batch size batches) behave on synthetic data as on the real one.
SYNTHETIC_SIZE = (60000, 10000)

Datasets = collections.namedtuple("Datasets", ["train", "validation", "test"])


class DataSet:
  """One split in memory, served in batches as r0.12's DataSet did."""

  def __init__(self, images, labels):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels: expected one "
                       "label per image")
    self._images = images
    self._labels = labels
    self._num_examples = len(images)
    self._epochs_completed = 0
    self._index_in_epoch = 0

  @property
  def images(self):
    return self._images

  @property
  def labels(self):
    return self._labels

  @property
  def num_examples(self):
    return self._num_examples

  @property
  def epochs_completed(self):
    return self._epochs_completed

  def next_batch(self, batch_size):
    """The next `batch_size` examples: (images, labels)."""
    if not 0 < batch_size <= self._num_examples:
      raise ValueError(f"batch_size {batch_size}: expected 1 to {self._num_examples}, "
                       "the examples in this split")
    start = self._index_in_epoch
    self._index_in_epoch += batch_size
    if self._index_in_epoch > self._num_examples:
      self._epochs_completed += 1
      perm = np.arange(self._num_examples)
      np.random.shuffle(perm)
      self._images = self._images[perm]
      self._labels = self._labels[perm]
      start = 0
      self._index_in_epoch = batch_size
    end = self._index_in_epoch
    return self._images[start:end], self._labels[start:end]


def dense_to_one_hot(labels, num_classes=NUM_CLASSES):
  """int labels [N] -> float64 one-hot [N, num_classes], as r0.12 built them."""
  one_hot = np.zeros((len(labels), num_classes))
  one_hot[np.arange(len(labels)), labels] = 1
  return one_hot


def read_data_sets(train_dir, one_hot=False, validation_size=VALIDATION_SIZE):
  """The three splits; `train_dir` is accepted for the seed's call and not read."""
  del train_dir  # The seed's download cache; see the module docstring.
  data_dir = os.environ.get(DATA_ENV) or None
  data = mnist.load_mnist(data_dir, synthetic_size=SYNTHETIC_SIZE)
  if not 0 <= validation_size <= len(data.train_labels):
    raise ValueError(f"validation_size {validation_size}: expected 0 to "
                     f"{len(data.train_labels)}, the training examples")

  def make(images, labels):
    images = np.multiply(images.astype(np.float32), 1.0 / 255.0)
    return DataSet(images, dense_to_one_hot(labels) if one_hot else labels.copy())

  train_images, train_labels = data.train_images, data.train_labels
  return Datasets(
      train=make(train_images[validation_size:], train_labels[validation_size:]),
      validation=make(train_images[:validation_size], train_labels[:validation_size]),
      test=make(data.test_images, data.test_labels))
