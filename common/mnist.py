"""MNIST files: IDX and npz readers with content checks, shared by training and serving."""

import dataclasses
import gzip
import hashlib
import io
import math
import os
import pathlib
import re
import time
import zipfile
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from model import cnn

DEFAULT_DATA_DIR = str(pathlib.Path(__file__).resolve().parents[1] / "data" / "mnist")
SYNTHETIC = "synthetic"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
NPZ_NAME = "mnist.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
SHA256SUMS_NAME = "SHA256SUMS.uncompressed"

# The sha256 of each decompressed file, the values public loaders pin for MNIST (and
# those of data/mnist/SHA256SUMS.uncompressed). The content is pinned, not the gzip
# container: mirrors recompress the files, which changes the .gz bytes but not these.
KNOWN_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
# IDX type codes (the third magic byte); multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_SHA256SUMS_LINE_RE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


class DataError(ValueError):
  """A missing, truncated or corrupt input; the message names the path and the problem."""


@dataclasses.dataclass(frozen=True)
class MnistData:
  """Both splits in memory: images uint8 [N, 784] (flattened 28x28), labels int64 [N].

  Images stay uint8 (47 MB for the training set rather than 188 MB as float32);
  the input pipeline, or `to_float`, scales them to the model's float32 [0, 1].
  Arrays from `load_mnist` are read-only, since pipelines and threads share them.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  def __post_init__(self):
    for split, images, labels in (("train", self.train_images, self.train_labels),
                                  ("test", self.test_images, self.test_labels)):
      if images.dtype != np.uint8 or images.shape[1:] != (cnn.IMAGE_PIXELS,):
        raise ValueError(f"MnistData {split}_images are {images.dtype} {images.shape}: "
                         f"expected uint8 [N, {cnn.IMAGE_PIXELS}]")
      if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
        raise ValueError(f"MnistData {split}_labels are {labels.dtype} {labels.shape}: "
                         f"expected int64 [{images.shape[0]}], one per image")


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 images [N, 784] (or [N, 28, 28]) -> the model's float32 [N, 784] in [0, 1].

  Divides by 255 in float32, exactly as the tf.data pipeline does, so that training
  and serving see bit-identical inputs.
  """
  images = np.asarray(images)
  size = cnn.IMAGE_SIZE
  if images.dtype != np.uint8 or images.shape[1:] not in ((cnn.IMAGE_PIXELS,), (size, size)):
    raise ValueError(f"images are {images.dtype} {images.shape}: expected uint8 "
                     f"[N, {cnn.IMAGE_PIXELS}] or [N, {cnn.IMAGE_SIZE}, {cnn.IMAGE_SIZE}]")
  return images.reshape(-1, cnn.IMAGE_PIXELS).astype(np.float32) / np.float32(255)


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file, gzipped or not (told by its magic bytes, not its name).

  The header's magic number, type code and dims are checked, and the byte count must
  match them exactly. Multi-byte values come back in native byte order; uint8 data
  comes back as a read-only view of the file's bytes.
  """
  return _parse_idx(path, _read_content(path))


def load_mnist(data_dir: str | None = None, *,
               synthetic_size: tuple[int, int] = (6000, 1000)) -> MnistData:
  """Loads MNIST from `data_dir`, checking its content.

  `data_dir` is one of:
    - None: the vendored copy, DEFAULT_DATA_DIR;
    - "synthetic" (SYNTHETIC): learnable generated data of `synthetic_size`
      (train, test) examples, for benchmarks and fast tests;
    - a directory, local or any tf.io.gfile URL (gs://...), holding the four IDX
      files (each with or without .gz) or else a Keras-style mnist.npz;
    - the path of an .npz file itself.

  IDX content is checked against the directory's SHA256SUMS.uncompressed if it has
  one, else against KNOWN_SHA256. Raises DataError naming the path and the problem.
  """
  data_dir = DEFAULT_DATA_DIR if data_dir is None else os.fspath(data_dir)
  if data_dir == SYNTHETIC:
    return make_synthetic(*synthetic_size)
  start = time.perf_counter()
  if data_dir.endswith(".npz") and not tf.io.gfile.isdir(data_dir):
    data, checked = _load_npz(data_dir), "no known hash for npz"
  else:
    data, checked = _load_idx_dir(data_dir)
  for array in dataclasses.astuple(data):
    array.flags.writeable = False
  logging.info("Loaded MNIST from %s: %d train and %d test images in %.2f s (%s)",
               data_dir, len(data.train_labels), len(data.test_labels),
               time.perf_counter() - start, checked)
  return data


def make_synthetic(num_train: int, num_test: int, seed: int = 0) -> MnistData:
  """Learnable stand-in for MNIST: a jittered blob whose position encodes the label.

  Class c's blob sits at its own point of a ring around the centre, so a model (even
  a nearest-centroid one) learns it in a few steps. Deterministic for a given seed;
  the test split does not depend on num_train.
  """
  for name, n in (("num_train", num_train), ("num_test", num_test)):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
      raise ValueError(f"synthetic {name} {n!r}: expected a positive integer")
  angles = 2 * np.pi * np.arange(cnn.NUM_CLASSES) / cnn.NUM_CLASSES
  centre = (cnn.IMAGE_SIZE - 1) / 2
  centres = centre + 8.0 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
  grid = np.arange(cnn.IMAGE_SIZE, dtype=np.float32)

  def make_split(n, stream):
    rng = np.random.default_rng([seed, stream])
    labels = rng.integers(0, cnn.NUM_CLASSES, n, dtype=np.int64)
    cy, cx = (centres[labels] + rng.normal(0.0, 1.0, (n, 2))).astype(np.float32).T
    # A Gaussian is separable: the outer product of a row and a column profile.
    gy = np.exp(-0.5 * ((grid - cy[:, None]) / 2.5) ** 2)
    gx = np.exp(-0.5 * ((grid - cx[:, None]) / 2.5) ** 2)
    blob = gy[:, :, None] * gx[:, None, :]
    noise = rng.random((n, cnn.IMAGE_SIZE, cnn.IMAGE_SIZE), dtype=np.float32)
    images = np.clip(255 * (0.8 * blob + 0.25 * noise), 0, 255).astype(np.uint8)
    return images.reshape(n, cnn.IMAGE_PIXELS), labels

  train_images, train_labels = make_split(num_train, 0)
  test_images, test_labels = make_split(num_test, 1)
  data = MnistData(train_images, train_labels, test_images, test_labels)
  for array in dataclasses.astuple(data):
    array.flags.writeable = False
  return data


def _read_bytes(path: str) -> bytes:
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path}: no such file")
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except tf.errors.OpError as e:
    raise DataError(f"{path}: cannot read: {e.message}") from e


def _read_content(path: str) -> bytes:
  """The file's bytes, decompressed if they start with the gzip magic."""
  raw = _read_bytes(path)
  if raw[:2] == _GZIP_MAGIC:
    try:
      return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(f"{path}: bad gzip data ({e}): truncated or corrupt") from e
  if path.endswith(".gz") and raw[:2] != b"\0\0":
    raise DataError(f"{path}: not a gzip file: starts with {raw[:4].hex(' ') or 'nothing'}, "
                    "expected the gzip magic 1f 8b (or IDX data, 00 00 ...)")
  # A .gz name on raw IDX bytes is accepted: browsers and some HTTP clients
  # decompress on download but keep the name.
  return raw


def _parse_idx(path: str, content: bytes) -> np.ndarray:
  if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _IDX_DTYPES:
    codes = ", ".join(f"0x{c:02x} {d.name}" for c, d in _IDX_DTYPES.items())
    raise DataError(f"{path}: not an IDX file: magic number {content[:4].hex(' ') or 'empty'}, "
                    f"expected 00 00, a type code ({codes}) and the number of dims")
  dtype, ndim = _IDX_DTYPES[content[2]], content[3]
  if ndim == 0:
    raise DataError(f"{path}: the IDX header says 0 dims: expected at least 1")
  header_size = 4 + 4 * ndim
  if len(content) < header_size:
    raise DataError(f"{path}: truncated: the IDX header needs {header_size} bytes for "
                    f"{ndim} dims but the content has {len(content)} bytes")
  dims = tuple(int(d) for d in np.frombuffer(content, ">u4", ndim, offset=4))
  count = math.prod(dims)
  expected = header_size + count * dtype.itemsize
  if len(content) != expected:
    problem = "truncated" if len(content) < expected else "trailing bytes"
    raise DataError(
        f"{path}: {problem}: header says {'x'.join(map(str, dims))} {dtype.name} values "
        f"({expected} bytes with the {header_size}-byte header) but the content has "
        f"{len(content)} bytes")
  array = np.frombuffer(content, dtype, count, offset=header_size).reshape(dims)
  return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _load_idx_dir(data_dir: str) -> tuple[MnistData, str]:
  expected_layout = (", ".join(n + "[.gz]" for n in IDX_NAMES) + f" or {NPZ_NAME}")
  if not tf.io.gfile.isdir(data_dir):
    what = "not a directory or .npz file" if tf.io.gfile.exists(data_dir) else "no such directory"
    raise DataError(f"{data_dir}: {what}: expected a directory holding {expected_layout}, "
                    f"an .npz file, or {SYNTHETIC!r}")
  names = {n.rstrip("/") for n in tf.io.gfile.listdir(data_dir)}
  paths = {}
  for name in IDX_NAMES:
    for candidate in (name, name + ".gz"):
      if candidate in names:
        paths[name] = os.path.join(data_dir, candidate)
        break
  if not paths:
    if NPZ_NAME in names:
      return _load_npz(os.path.join(data_dir, NPZ_NAME)), "no known hash for npz"
    raise DataError(f"no MNIST files in {data_dir}: expected {expected_layout}")
  missing = [n + "[.gz]" for n in IDX_NAMES if n not in paths]
  if missing:
    raise DataError(f"{data_dir}: missing {', '.join(missing)}: expected all four MNIST "
                    f"IDX files, found only {', '.join(sorted(paths.values()))}")

  expected_sha256, source = _expected_sha256(data_dir, names)
  arrays = {}
  for name, path in paths.items():
    content = _read_content(path)
    arrays[name] = _parse_idx(path, content)
    # Parsed first, so that a truncated file is reported as truncated.
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256[name]:
      raise DataError(f"{path}: sha256 {digest} of the content does not match the "
                      f"expected {expected_sha256[name]} from {source} (corrupt or a "
                      f"different file; another dataset needs its own {SHA256SUMS_NAME})")
  train = _check_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS],
                       arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS])
  test = _check_split(paths[TEST_IMAGES], paths[TEST_LABELS],
                      arrays[TEST_IMAGES], arrays[TEST_LABELS])
  return MnistData(*train, *test), f"sha256 checked against {source}"


def _expected_sha256(data_dir: str, names: set[str]) -> tuple[dict[str, str], str]:
  """The expected content hashes: the directory's own list, else the published ones."""
  if SHA256SUMS_NAME not in names:
    return KNOWN_SHA256, "the published MNIST hashes (KNOWN_SHA256)"
  sums_path = os.path.join(data_dir, SHA256SUMS_NAME)
  sums = {}
  for number, line in enumerate(_read_bytes(sums_path).decode("utf-8", "replace")
                                .splitlines(), 1):
    if not line.strip() or line.startswith("#"):
      continue
    match = _SHA256SUMS_LINE_RE.fullmatch(line.strip())
    if not match:
      raise DataError(f"{sums_path}: line {number} {line!r}: expected "
                      "'<64 hex digits>  <file name>' as sha256sum writes it")
    name = match.group(2)
    sums[name[:-3] if name.endswith(".gz") else name] = match.group(1).lower()
  missing = [n for n in IDX_NAMES if n not in sums]
  if missing:
    raise DataError(f"{sums_path}: no sha256 for {', '.join(missing)}: expected a line "
                    "'<sha256>  <name>' for each decompressed IDX file")
  return sums, sums_path


def _load_npz(path: str) -> MnistData:
  # An npz has no known hash: its bytes depend on the zip writer and on the array
  # headers numpy wrote, so only its structure and label range are checked here.
  raw = _read_bytes(path)
  if raw[:4] != _ZIP_MAGIC:
    raise DataError(f"{path}: not an npz (zip) file: starts with "
                    f"{raw[:4].hex(' ') or 'nothing'}, expected 50 4b 03 04")
  try:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
      files = list(npz.files)
      arrays = {k: npz[k] for k in NPZ_KEYS if k in files}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{path}: bad npz data ({e})") from e
  missing = [k for k in NPZ_KEYS if k not in arrays]
  if missing:
    raise DataError(f"{path}: no {', '.join(missing)} in the npz (it has "
                    f"{', '.join(files) or 'nothing'}): expected Keras' mnist.npz keys "
                    f"{', '.join(NPZ_KEYS)}")
  train = _check_split(f"{path}[x_train]", f"{path}[y_train]",
                       arrays["x_train"], arrays["y_train"])
  test = _check_split(f"{path}[x_test]", f"{path}[y_test]", arrays["x_test"], arrays["y_test"])
  return MnistData(*train, *test)


def _check_split(images_where: str, labels_where: str, images: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Validates one split; returns images uint8 [N, 784] and labels int64 [N]."""
  size = cnn.IMAGE_SIZE
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
    raise DataError(f"{images_where}: images are {images.dtype} {list(images.shape)}: "
                    f"expected uint8 [N, {size}, {size}]")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{labels_where}: labels are {labels.dtype} {list(labels.shape)}: "
                    "expected integers [N]")
  if len(labels) != len(images):
    raise DataError(f"{labels_where}: {len(labels)} labels for the {len(images)} images of "
                    f"{images_where}: expected one label per image")
  bad = np.flatnonzero((labels < 0) | (labels >= cnn.NUM_CLASSES))
  if bad.size:
    raise DataError(f"{labels_where}: label {labels[bad[0]]} at index {bad[0]} "
                    f"({bad.size} bad in all): expected 0 to {cnn.NUM_CLASSES - 1}")
  return images.reshape(-1, cnn.IMAGE_PIXELS), labels.astype(np.int64)
