"""Tests for common/mnist.py: the vendored set, IDX and npz parsing, content checks."""

import gzip
import hashlib
import io
import os
import pathlib
import shutil
import uuid

import numpy as np
import pytest
import tensorflow as tf

from common import mnist

# The first ten training labels and the per-class counts of the real training set.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
  header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  return header + array.tobytes()


def write(path: str, content: bytes) -> str:
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(content)
  return path


def small_split(n: int, seed: int):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = (np.arange(n) % 10).astype(np.uint8)
  return images, labels


def write_idx_dir(data_dir: str, *, gz: bool = True, sums: bool = True) -> dict:
  """Writes a small four-file IDX set (and its SHA256SUMS); returns the arrays by name."""
  tf.io.gfile.makedirs(data_dir)
  train_images, train_labels = small_split(30, 0)
  test_images, test_labels = small_split(12, 1)
  arrays = {mnist.TRAIN_IMAGES: train_images, mnist.TRAIN_LABELS: train_labels,
            mnist.TEST_IMAGES: test_images, mnist.TEST_LABELS: test_labels}
  lines = []
  for name, array in arrays.items():
    content = idx_bytes(array)
    write(os.path.join(data_dir, name + (".gz" if gz else "")),
          gzip.compress(content) if gz else content)
    lines.append(f"{hashlib.sha256(content).hexdigest()}  {name}\n")
  if sums:
    write(os.path.join(data_dir, mnist.SHA256SUMS_NAME), "".join(lines).encode())
  return arrays


def assert_loaded(data: mnist.MnistData, arrays: dict):
  np.testing.assert_array_equal(data.train_images,
                                arrays[mnist.TRAIN_IMAGES].reshape(-1, 784))
  np.testing.assert_array_equal(data.train_labels, arrays[mnist.TRAIN_LABELS])
  np.testing.assert_array_equal(data.test_images, arrays[mnist.TEST_IMAGES].reshape(-1, 784))
  np.testing.assert_array_equal(data.test_labels, arrays[mnist.TEST_LABELS])
  assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64


@pytest.fixture(scope="module")
def vendored():
  return mnist.load_mnist()


def test_vendored_data_loads_with_mnist_shapes_and_labels(vendored):
  assert vendored.train_images.shape == (60000, 784)
  assert vendored.test_images.shape == (10000, 784)
  assert vendored.train_labels.shape == (60000,)
  assert vendored.test_labels.shape == (10000,)
  assert vendored.train_images.dtype == np.uint8 and vendored.test_images.dtype == np.uint8
  assert vendored.train_labels.dtype == np.int64 and vendored.test_labels.dtype == np.int64
  assert vendored.train_labels[:10].tolist() == FIRST_TRAIN_LABELS
  assert np.bincount(vendored.train_labels).tolist() == TRAIN_CLASS_COUNTS
  assert set(vendored.test_labels.tolist()) == set(range(10))
  assert vendored.train_images.max() == 255 and vendored.train_images.min() == 0
  assert not vendored.train_images.flags.writeable


def test_default_data_dir_is_the_vendored_copy():
  assert os.path.isabs(mnist.DEFAULT_DATA_DIR)
  assert os.path.isfile(os.path.join(mnist.DEFAULT_DATA_DIR, "train-images-idx3-ubyte.gz"))


def test_known_sha256_are_the_vendored_sums():
  with open(os.path.join(mnist.DEFAULT_DATA_DIR, mnist.SHA256SUMS_NAME)) as f:
    sums = {name: digest for digest, name in (line.split() for line in f if line.strip())}
  assert sums == mnist.KNOWN_SHA256


def test_real_file_with_changed_content_fails_the_known_sha256(tmp_path):
  # No SHA256SUMS here, so the published hashes apply. One label changed (to another
  # valid label) keeps the file well-formed: only the hash can catch it.
  for name in (mnist.TRAIN_IMAGES, mnist.TEST_IMAGES, mnist.TEST_LABELS):
    shutil.copy(os.path.join(mnist.DEFAULT_DATA_DIR, name + ".gz"), tmp_path)
  real = pathlib.Path(mnist.DEFAULT_DATA_DIR) / (mnist.TRAIN_LABELS + ".gz")
  content = bytearray(gzip.decompress(real.read_bytes()))
  content[8] = (content[8] + 1) % 10
  bad = write(str(tmp_path / mnist.TRAIN_LABELS), bytes(content))
  with pytest.raises(mnist.DataError, match="sha256") as error:
    mnist.load_mnist(str(tmp_path))
  message = str(error.value)
  assert message.startswith(bad + ": ")
  assert mnist.KNOWN_SHA256[mnist.TRAIN_LABELS] in message and "KNOWN_SHA256" in message


def test_sums_file_mismatch_names_the_file_and_the_sums_file(tmp_path):
  arrays = write_idx_dir(str(tmp_path))
  sums_path = tmp_path / mnist.SHA256SUMS_NAME
  sums_path.write_text(sums_path.read_text().replace(
      hashlib.sha256(idx_bytes(arrays[mnist.TEST_LABELS])).hexdigest(), "0" * 64))
  with pytest.raises(mnist.DataError, match=r"t10k-labels-idx1-ubyte\.gz: sha256 \w+ .*"
                     r"expected 0{64} from .*SHA256SUMS\.uncompressed"):
    mnist.load_mnist(str(tmp_path))


def test_small_set_without_sums_fails_the_known_hashes(tmp_path):
  write_idx_dir(str(tmp_path), sums=False)
  with pytest.raises(mnist.DataError, match="train-images-idx3-ubyte.gz: sha256 .*different file"):
    mnist.load_mnist(str(tmp_path))


def test_sums_file_without_an_entry_is_an_error(tmp_path):
  write_idx_dir(str(tmp_path))
  sums_path = tmp_path / mnist.SHA256SUMS_NAME
  sums_path.write_text("".join(sums_path.read_text().splitlines(True)[:3]))
  with pytest.raises(mnist.DataError, match="no sha256 for t10k-labels-idx1-ubyte"):
    mnist.load_mnist(str(tmp_path))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gz_or_plain(tmp_path, gz):
  arrays = write_idx_dir(str(tmp_path), gz=gz)
  assert_loaded(mnist.load_mnist(str(tmp_path)), arrays)


def test_read_idx_tells_gzip_by_magic_not_name(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  gz_named_plain = write(str(tmp_path / "plain.gz"), idx_bytes(array))
  plain_named_gz = write(str(tmp_path / "gz.idx"), gzip.compress(idx_bytes(array)))
  np.testing.assert_array_equal(mnist.read_idx(gz_named_plain), array)
  np.testing.assert_array_equal(mnist.read_idx(plain_named_gz), array)


def test_read_idx_multibyte_types_come_back_native():
  path = f"ram://idx-{uuid.uuid4().hex}/int32"
  array = np.array([[1, -2], [70000, 3]], dtype=">i4")
  write(path, idx_bytes(array, type_code=0x0C))
  result = mnist.read_idx(path)
  np.testing.assert_array_equal(result, array)
  assert result.dtype == np.int32 and result.dtype.isnative


def test_ram_directory_and_ram_npz():
  base = f"ram://mnist-{uuid.uuid4().hex}"
  arrays = write_idx_dir(base + "/idx")
  assert_loaded(mnist.load_mnist(base + "/idx"), arrays)
  npz_path = write_npz(base + "/npz/mnist.npz", arrays)
  assert_loaded(mnist.load_mnist(npz_path), arrays)
  assert_loaded(mnist.load_mnist(base + "/npz"), arrays)


def write_npz(path: str, arrays: dict, **overrides) -> str:
  tf.io.gfile.makedirs(os.path.dirname(path))
  keys = dict(x_train=arrays[mnist.TRAIN_IMAGES], y_train=arrays[mnist.TRAIN_LABELS],
              x_test=arrays[mnist.TEST_IMAGES], y_test=arrays[mnist.TEST_LABELS])
  keys.update(overrides)
  buffer = io.BytesIO()  # A zip writer seeks, which a gfile opened for writing cannot.
  np.savez_compressed(buffer, **{k: v for k, v in keys.items() if v is not None})
  return write(path, buffer.getvalue())


def test_npz_slice_of_the_real_data(tmp_path, vendored):
  arrays = {mnist.TRAIN_IMAGES: vendored.train_images[:50].reshape(-1, 28, 28),
            mnist.TRAIN_LABELS: vendored.train_labels[:50],
            mnist.TEST_IMAGES: vendored.test_images[:20].reshape(-1, 28, 28),
            mnist.TEST_LABELS: vendored.test_labels[:20]}
  path = write_npz(str(tmp_path / "mnist.npz"), arrays)
  assert_loaded(mnist.load_mnist(path), arrays)
  assert_loaded(mnist.load_mnist(str(tmp_path)), arrays)


def test_npz_with_missing_key_or_bad_dtype(tmp_path):
  arrays = write_idx_dir(str(tmp_path / "idx"), sums=False)
  path = write_npz(str(tmp_path / "a.npz"), arrays, y_test=None)
  with pytest.raises(mnist.DataError, match=r"a\.npz: no y_test in the npz"):
    mnist.load_mnist(path)
  path = write_npz(str(tmp_path / "b.npz"), arrays,
                   x_train=arrays[mnist.TRAIN_IMAGES].astype(np.float32))
  with pytest.raises(mnist.DataError, match=r"b\.npz\[x_train\]: images are float32 .*uint8"):
    mnist.load_mnist(path)
  not_zip = write(str(tmp_path / "c.npz"), b"\x93NUMPY not a zip")
  with pytest.raises(mnist.DataError, match=r"c\.npz: not an npz \(zip\) file"):
    mnist.load_mnist(not_zip)
  corrupt = write(str(tmp_path / "d.npz"), b"PK\x03\x04" + bytes(100))
  with pytest.raises(mnist.DataError, match=r"d\.npz: bad npz data"):
    mnist.load_mnist(corrupt)


def test_truncated_idx(tmp_path):
  array = np.zeros((100, 28, 28), np.uint8)
  path = write(str(tmp_path / "images.gz"), gzip.compress(idx_bytes(array)[:1000]))
  with pytest.raises(mnist.DataError) as error:
    mnist.read_idx(path)
  assert str(error.value) == (
      f"{path}: truncated: header says 100x28x28 uint8 values (78416 bytes with the "
      "16-byte header) but the content has 1000 bytes")


def test_trailing_bytes_are_an_error(tmp_path):
  path = write(str(tmp_path / "labels"), idx_bytes(np.zeros(5, np.uint8)) + b"\0")
  with pytest.raises(mnist.DataError, match="labels: trailing bytes: header says 5 uint8"):
    mnist.read_idx(path)


def test_truncated_gzip_stream(tmp_path):
  compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 10))
  path = write(str(tmp_path / "labels.gz"), compressed[:len(compressed) // 2])
  with pytest.raises(mnist.DataError, match=r"labels\.gz: bad gzip data"):
    mnist.read_idx(path)


def test_non_gzip_garbage(tmp_path):
  path = write(str(tmp_path / "train-images-idx3-ubyte.gz"), b"<html>Not Found</html>")
  with pytest.raises(mnist.DataError, match=r"ubyte\.gz: not a gzip file: starts with 3c 68 74 6d"):
    mnist.read_idx(path)


@pytest.mark.parametrize("magic", [b"\x00\x00\x99\x01", b"\x01\x02\x08\x01"])
def test_bad_magic_number(tmp_path, magic):
  path = write(str(tmp_path / "labels"), magic + (3).to_bytes(4, "big") + b"\x01\x02\x03")
  expected = f"labels: not an IDX file: magic number {magic.hex(' ')}, expected 00 00"
  with pytest.raises(mnist.DataError, match=expected):
    mnist.read_idx(path)


def test_missing_directory(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(mnist.DataError, match=f"^{missing}: no such directory: expected .*mnist.npz"):
    mnist.load_mnist(missing)


def test_empty_directory(tmp_path):
  with pytest.raises(mnist.DataError, match=f"^no MNIST files in {tmp_path}: expected "
                     r"train-images-idx3-ubyte\[\.gz\], .* or mnist\.npz"):
    mnist.load_mnist(str(tmp_path))


def test_directory_missing_one_file(tmp_path):
  write_idx_dir(str(tmp_path))
  os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
  with pytest.raises(mnist.DataError,
                     match=r"missing t10k-images-idx3-ubyte\[\.gz\]: expected all four"):
    mnist.load_mnist(str(tmp_path))


def test_label_out_of_range_and_count_mismatch(tmp_path):
  arrays = write_idx_dir(str(tmp_path / "idx"), sums=False)
  labels = arrays[mnist.TRAIN_LABELS].copy()
  labels[7] = 10
  path = write_npz(str(tmp_path / "range.npz"), arrays, y_train=labels)
  with pytest.raises(mnist.DataError, match=r"\[y_train\]: label 10 at index 7"):
    mnist.load_mnist(path)
  path = write_npz(str(tmp_path / "count.npz"), arrays, y_test=arrays[mnist.TEST_LABELS][:-1])
  with pytest.raises(mnist.DataError, match=r"\[y_test\]: 11 labels for the 12 images"):
    mnist.load_mnist(path)


def test_synthetic_is_deterministic_and_learnable():
  data = mnist.load_mnist(mnist.SYNTHETIC, synthetic_size=(500, 200))
  assert data.train_images.shape == (500, 784) and data.train_images.dtype == np.uint8
  assert data.test_images.shape == (200, 784) and data.test_labels.dtype == np.int64
  assert set(data.train_labels.tolist()) == set(range(10))
  again = mnist.load_mnist(mnist.SYNTHETIC, synthetic_size=(100, 200))
  np.testing.assert_array_equal(again.test_images, data.test_images)
  # A nearest-centroid classifier fitted on train must do well on test.
  images = mnist.to_float(data.train_images)
  centroids = np.stack([images[data.train_labels == c].mean(0) for c in range(10)])
  test = mnist.to_float(data.test_images)
  predicted = np.argmin(((test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (predicted == data.test_labels).mean() > 0.95


def test_synthetic_size_must_be_positive():
  with pytest.raises(ValueError, match="synthetic num_test 0: expected a positive integer"):
    mnist.load_mnist(mnist.SYNTHETIC, synthetic_size=(10, 0))


def test_to_float():
  images = np.array([[0] * 783 + [255], [51] * 784], np.uint8)
  result = mnist.to_float(images)
  assert result.dtype == np.float32 and result.shape == (2, 784)
  assert result[0, -1] == 1.0 and result[0, 0] == 0.0 and result[1, 0] == np.float32(0.2)
  assert mnist.to_float(images.reshape(2, 28, 28)).shape == (2, 784)
  with pytest.raises(ValueError, match="float32 .*expected uint8"):
    mnist.to_float(result)


def test_mnist_data_rejects_float_images():
  with pytest.raises(ValueError, match="train_images are float32"):
    mnist.MnistData(np.zeros((2, 784), np.float32), np.zeros(2, np.int64),
                    np.zeros((1, 784), np.uint8), np.zeros(1, np.int64))
