r"""gRPC client for TF Serving's PredictionService and ModelService, and its command line.

Typical usage, against `python -m serving.server --model_name=mnist --model_base_path=/tmp/model`:

  python -m serving.client --server=localhost:8500 --num_tests=1000 \
      --batch_size=1 --concurrency=8

predicts the first 1000 vendored MNIST test images and prints accuracy, images/s
and per-request latency percentiles. Other inputs: --images=a.png,b.png (28x28
grayscale), --idx_images=t10k-images-idx3-ubyte[.gz] [--idx_labels=...],
--npz=digits.npz (arrays `images` [N,784] or [N,28,28], optional `labels`).
--mode=metadata prints the model's signatures, --mode=status its version states.
TLS: --tls [--root_cert=ca.pem] [--client_cert=c.pem --client_key=k.pem].
"""

import concurrent.futures
import dataclasses
import sys
import time

from absl import flags
from absl import logging
import grpc
import numpy as np

from common import runtime
from common import settings

if __name__ == "__main__":
  runtime.import_tensorflow()  # The program: quiet TensorFlow's start-up, before it loads.

from grpc_health.v1 import health_pb2  # noqa: E402
from grpc_health.v1 import health_pb2_grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2  # noqa: E402
from tensorflow_serving.apis import model_service_pb2_grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from model import cnn  # noqa: E402
from model import contract  # noqa: E402

# Only these mean "the call may succeed if tried again": the server was not
# reachable or did not answer in time. Everything else (a bad request, an
# unknown model) fails the same way on every try.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 10.0  # Deadline of each call (each try).
DEFAULT_BATCH_SIZE = 100  # Images per request.
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """Exponential backoff: waits initial_backoff_s * multiplier**(n-1), capped, after try n."""
  max_attempts: int = 4
  initial_backoff_s: float = 0.1
  max_backoff_s: float = 2.0
  multiplier: float = 2.0

  def backoff_s(self, attempt: int) -> float:
    return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which model, version (a number, a label, or the latest) and signature to call."""
  name: str = contract.DEFAULT_MODEL_NAME
  version: int | None = None
  version_label: str | None = None
  signature_name: str = contract.SIGNATURE_NAME

  def __post_init__(self):
    if self.version is not None and self.version_label:
      raise ValueError(f"model spec names version {self.version} and label "
                       f"{self.version_label!r}; expected at most one of them")

  def fill(self, proto) -> None:
    """Sets a request's model_spec (any TF Serving ModelSpec proto)."""
    proto.name = self.name
    if self.version is not None:
      proto.version.value = self.version
    elif self.version_label:
      proto.version_label = self.version_label


@dataclasses.dataclass(frozen=True)
class Prediction:
  keys: np.ndarray  # int64 [N], as the server returned them.
  scores: np.ndarray  # float32 [N, 10].
  model_version: int


@dataclasses.dataclass(frozen=True)
class BatchedPrediction:
  scores: np.ndarray  # float32 [N, 10], in input order.
  latencies_s: np.ndarray  # one per request (batch), retries included.
  elapsed_s: float
  model_versions: frozenset


class KeyMismatchError(ValueError):
  """The server answered with keys other than the ones sent."""


def make_channel(server: str, *, tls: bool = False, root_cert: bytes | None = None,
                 client_cert: bytes | None = None, client_key: bytes | None = None,
                 server_name_override: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
  """A channel to host:port, plain or TLS (mTLS with a client certificate and key).

  `root_cert` (PEM) verifies the server; without it TLS uses the system roots.
  """
  options = [("grpc.max_send_message_length", max_message_bytes),
             ("grpc.max_receive_message_length", max_message_bytes)]
  if server_name_override:
    options.append(("grpc.ssl_target_name_override", server_name_override))
  if bool(client_cert) != bool(client_key):
    raise ValueError("mutual TLS needs both a client certificate and its key; got only "
                     f"the {'certificate' if client_cert else 'key'}")
  if not (tls or root_cert or client_cert):
    return grpc.insecure_channel(server, options=options)
  credentials = grpc.ssl_channel_credentials(
      root_certificates=root_cert, private_key=client_key, certificate_chain=client_cert)
  return grpc.secure_channel(server, credentials, options=options)


class NotServingError(RuntimeError):
  """The server did not report SERVING in time, or its process exited."""


def wait_until_serving(channel: grpc.Channel, timeout_s: float = 60.0, *, process=None,
                       service: str = "", poll_s: float = 0.2) -> None:
  """Waits until gRPC health checking says `service` ("": the whole server) is SERVING.

  `process`, the server's subprocess.Popen when this program started it, ends the
  wait at once if it exits. Raises NotServingError naming what happened.
  """
  stub = health_pb2_grpc.HealthStub(channel)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process is not None and process.poll() is not None:
      raise NotServingError(f"the model server exited with code {process.returncode} "
                            "before it was serving")
    try:
      status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
      if status == health_pb2.HealthCheckResponse.SERVING:
        return
    except grpc.RpcError:
      pass  # Not listening yet, or the service is not known yet.
    time.sleep(poll_s)
  raise NotServingError(f"the model server was not serving after {timeout_s:g}s")


def call_with_retry(rpc, request, *, timeout_s: float, retry: RetryPolicy = RetryPolicy(),
                    sleep_fn=time.sleep):
  """Calls a unary stub method with a deadline; retries UNAVAILABLE and DEADLINE_EXCEEDED only.

  Each try gets the full `timeout_s`. The last error is raised as the grpc.RpcError.
  """
  if timeout_s is None or timeout_s <= 0:
    raise ValueError(f"timeout_s is {timeout_s}; expected a positive deadline in seconds")
  for attempt in range(1, retry.max_attempts + 1):
    try:
      return rpc(request, timeout=timeout_s)
    except grpc.RpcError as e:
      if e.code() not in RETRYABLE_CODES or attempt == retry.max_attempts:
        raise
      delay_s = retry.backoff_s(attempt)
      logging.info("Try %d of %d failed with %s; retrying in %.2f s", attempt,
                   retry.max_attempts, e.code().name, delay_s)
      sleep_fn(delay_s)
  raise AssertionError("unreachable")


def make_request(keys, images, spec: ModelSpec = ModelSpec()) -> predict_pb2.PredictRequest:
  """A PredictRequest; TF Serving's example signature takes images only, without keys."""
  if spec.signature_name == contract.TFS_EXAMPLE_SIGNATURE_NAME:
    images = np.asarray(images, np.float32).reshape(-1, cnn.IMAGE_PIXELS)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = spec.signature_name
    request.inputs[contract.TFS_EXAMPLE_IMAGES].CopyFrom(tf.make_tensor_proto(images))
  else:
    request = contract.make_predict_request(keys, images, signature_name=spec.signature_name)
  spec.fill(request.model_spec)
  return request


def predict(stub, keys, images, *, spec: ModelSpec = ModelSpec(),
            timeout_s: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = RetryPolicy(),
            sleep_fn=time.sleep) -> Prediction:
  """Predicts one request: keys int64 [N] and images float32 [N, 784] in [0, 1].

  Raises KeyMismatchError when the key-passthrough signature returns other keys
  than those sent, and grpc.RpcError for a server error.
  """
  keys = np.asarray(keys, np.int64).reshape(-1)
  request = make_request(keys, images, spec)
  response = call_with_retry(stub.Predict, request, timeout_s=timeout_s, retry=retry,
                             sleep_fn=sleep_fn)
  if contract.SCORES not in response.outputs:
    raise ValueError(f"the response has outputs {sorted(response.outputs)}; expected "
                     f"'{contract.SCORES}'")
  scores = tf.make_ndarray(response.outputs[contract.SCORES])
  if contract.KEY in request.inputs:
    returned = (tf.make_ndarray(response.outputs[contract.KEY])
                if contract.KEY in response.outputs else None)
    if returned is None or not np.array_equal(returned, keys):
      raise KeyMismatchError(f"the server returned keys {returned} for keys {keys} sent; "
                             "expected the same keys in the same order")
    keys = returned
  if scores.shape != (len(keys), cnn.NUM_CLASSES):
    raise ValueError(f"the server returned scores of shape {list(scores.shape)}; expected "
                     f"[{len(keys)}, {cnn.NUM_CLASSES}]")
  return Prediction(keys, scores, response.model_spec.version.value)


def predict_batched(stub, images, *, batch_size: int = DEFAULT_BATCH_SIZE,
                    concurrency: int = 1,
                    spec: ModelSpec = ModelSpec(), timeout_s: float = DEFAULT_TIMEOUT_S,
                    retry: RetryPolicy = RetryPolicy()) -> BatchedPrediction:
  """Predicts many images in requests of batch_size, at most `concurrency` in flight.

  Keys are the images' positions, so every answer is checked against its request.
  """
  if batch_size < 1 or concurrency < 1:
    raise ValueError(f"batch_size {batch_size} and concurrency {concurrency}; expected both >= 1")
  images = np.asarray(images, np.float32).reshape(-1, cnn.IMAGE_PIXELS)
  starts = range(0, len(images), batch_size)
  scores = np.zeros((len(images), cnn.NUM_CLASSES), np.float32)
  latencies = np.zeros(len(starts))
  versions = set()

  def predict_fn(i, start):
    t = time.perf_counter()
    result = predict(stub, np.arange(start, min(start + batch_size, len(images))),
                     images[start:start + batch_size], spec=spec, timeout_s=timeout_s,
                     retry=retry)
    latencies[i] = time.perf_counter() - t
    scores[start:start + len(result.keys)] = result.scores
    versions.add(result.model_version)

  t0 = time.perf_counter()
  # The pool's workers bound the requests in flight, like mnist_client's throttle.
  with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
    jobs = [pool.submit(predict_fn, i, s) for i, s in enumerate(starts)]
    try:
      for job in concurrent.futures.as_completed(jobs):
        job.result()
    except BaseException:
      for job in jobs:
        job.cancel()
      raise
  return BatchedPrediction(scores, latencies, time.perf_counter() - t0, frozenset(versions))


def get_model_metadata(stub, spec: ModelSpec = ModelSpec(), *,
                       timeout_s: float = DEFAULT_TIMEOUT_S,
                       retry: RetryPolicy = RetryPolicy()) -> tuple[int, dict]:
  """(version, {signature name: SignatureDef}) of the model's served version."""
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  spec.fill(request.model_spec)
  response = call_with_retry(stub.GetModelMetadata, request, timeout_s=timeout_s, retry=retry)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  if not response.metadata["signature_def"].Unpack(signature_map):
    raise ValueError("the metadata's signature_def is a "
                     f"{response.metadata['signature_def'].TypeName()}; expected SignatureDefMap")
  return response.model_spec.version.value, dict(signature_map.signature_def)


def get_model_status(model_stub, spec: ModelSpec = ModelSpec(), *,
                     timeout_s: float = DEFAULT_TIMEOUT_S,
                     retry: RetryPolicy = RetryPolicy()) -> list:
  """[(version, state name, error code name, error message)] from ModelService.GetModelStatus."""
  request = get_model_status_pb2.GetModelStatusRequest()
  spec.fill(request.model_spec)
  response = call_with_retry(model_stub.GetModelStatus, request, timeout_s=timeout_s,
                             retry=retry)
  state_name = get_model_status_pb2.ModelVersionStatus.State.Name
  return [(s.version, state_name(s.state),
           _CODE_NAMES.get(s.status.error_code, str(s.status.error_code)),
           s.status.error_message) for s in response.model_version_status]


def format_signatures(signatures: dict) -> str:
  """One line per signature: `name (method): inputs ... -> outputs ...`."""

  def shape(proto):
    if proto.unknown_rank:
      return "<unknown rank>"
    return "[" + ",".join(str(d.size) for d in proto.dim) + "]"

  def dtype(enum):
    # TF Serving lists the TF2 init op's signature too, whose output has no dtype.
    return tf.dtypes.as_dtype(enum).name if enum else "invalid"

  def tensor_list(infos):
    return ", ".join(f"{k} {dtype(v.dtype)} {shape(v.tensor_shape)}"
                     for k, v in sorted(infos.items()))

  return "\n".join(f"{name} ({s.method_name}): {tensor_list(s.inputs)} -> "
                   f"{tensor_list(s.outputs)}" for name, s in sorted(signatures.items()))


def latency_percentiles_ms(latencies_s) -> dict:
  return {p: float(np.percentile(latencies_s, p)) * 1e3 for p in (50, 90, 99)}


# ----------------------------------------------------------------------------
# Inputs for the command line.


def _as_float_images(images: np.ndarray, source: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim not in (2, 3) or images[0].size != cnn.IMAGE_PIXELS:
    raise ValueError(f"{source} holds images of shape {list(images.shape)}; expected "
                     f"[N, {cnn.IMAGE_PIXELS}] or [N, {cnn.IMAGE_SIZE}, {cnn.IMAGE_SIZE}]")
  images = images.reshape(-1, cnn.IMAGE_PIXELS)
  if images.dtype == np.uint8:
    from common import mnist
    return mnist.to_float(images)
  return images.astype(np.float32)


def load_png_images(paths) -> np.ndarray:
  images = []
  for path in paths:
    image = tf.io.decode_png(tf.io.read_file(path), channels=1).numpy()
    if image.shape[:2] != (cnn.IMAGE_SIZE, cnn.IMAGE_SIZE):
      raise ValueError(f"PNG {path} is {image.shape[1]}x{image.shape[0]}; expected "
                       f"{cnn.IMAGE_SIZE}x{cnn.IMAGE_SIZE} grayscale")
    images.append(image.reshape(cnn.IMAGE_PIXELS))
  return _as_float_images(np.stack(images), "the PNG files")


def load_images(*, num_tests: int, data_dir: str | None = None, png_paths=(),
                idx_images: str | None = None, idx_labels: str | None = None,
                npz: str | None = None) -> tuple:
  """(images float32 [N, 784], labels int64 [N] or None) from the chosen source.

  The default is the first num_tests MNIST test images (common.mnist's vendored set,
  or data_dir); PNG files come without labels.
  """
  # common.mnist is imported here, not at the top: only this CLI path reads MNIST.
  from common import mnist
  sources = [bool(png_paths), bool(idx_images), bool(npz)]
  if sum(sources) > 1:
    raise ValueError("more than one input given among PNG files, IDX images and npz; "
                     "expected at most one")
  labels = None
  if png_paths:
    images = load_png_images(png_paths)
  elif idx_images:
    images = _as_float_images(mnist.read_idx(idx_images), idx_images)
    labels = np.asarray(mnist.read_idx(idx_labels), np.int64) if idx_labels else None
  elif npz:
    with np.load(npz) as data:
      if "images" not in data:
        raise ValueError(f"{npz} has arrays {sorted(data.keys())}; expected 'images' "
                         "(and optionally 'labels')")
      images = _as_float_images(data["images"], npz)
      labels = np.asarray(data["labels"], np.int64) if "labels" in data else None
  else:
    data = mnist.load_mnist(data_dir)
    images, labels = mnist.to_float(data.test_images), data.test_labels
  if num_tests:
    images = images[:num_tests]
    labels = labels[:num_tests] if labels is not None else None
  if labels is not None and len(labels) != len(images):
    raise ValueError(f"{len(labels)} labels for {len(images)} images; expected one each")
  return images, labels


# ----------------------------------------------------------------------------
# Command line.


@dataclasses.dataclass(frozen=True)
class CliConfig:
  """What the command line does; `config_from_flags` is the only reader of the flags."""
  server: str = "localhost:8500"
  mode: str = "predict"  # predict, metadata or status.
  spec: ModelSpec = ModelSpec()
  retry: RetryPolicy = RetryPolicy()
  timeout_s: float = DEFAULT_TIMEOUT_S
  num_tests: int = 100
  batch_size: int = DEFAULT_BATCH_SIZE
  concurrency: int = 1
  max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
  tls: bool = False
  root_cert: str | None = None  # PEM file paths.
  client_cert: str | None = None
  client_key: str | None = None
  server_name_override: str | None = None
  data_dir: str | None = None
  png_paths: tuple = ()
  idx_images: str | None = None
  idx_labels: str | None = None
  npz: str | None = None


def _read_file(path: str | None) -> bytes | None:
  if not path:
    return None
  with open(path, "rb") as f:
    return f.read()


def run(config: CliConfig) -> int:
  """The command line's work: prints what it found; returns the exit status."""
  c = config
  channel = make_channel(c.server, tls=c.tls, root_cert=_read_file(c.root_cert),
                         client_cert=_read_file(c.client_cert),
                         client_key=_read_file(c.client_key),
                         server_name_override=c.server_name_override,
                         max_message_bytes=c.max_message_bytes)
  with channel:
    if c.mode == "status":
      for version, state, code, message in get_model_status(
          model_service_pb2_grpc.ModelServiceStub(channel), c.spec, timeout_s=c.timeout_s,
          retry=c.retry):
        print(f"{c.spec.name} version {version}: {state}"
              + (f" ({code}: {message})" if code != "OK" else ""))
      return 0
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    if c.mode == "metadata":
      version, signatures = get_model_metadata(stub, c.spec, timeout_s=c.timeout_s,
                                               retry=c.retry)
      print(f"{c.spec.name} version {version}")
      print(format_signatures(signatures))
      return 0
    images, labels = load_images(num_tests=c.num_tests, data_dir=c.data_dir,
                                 png_paths=c.png_paths, idx_images=c.idx_images,
                                 idx_labels=c.idx_labels, npz=c.npz)
    result = predict_batched(stub, images, batch_size=c.batch_size, concurrency=c.concurrency,
                             spec=c.spec, timeout_s=c.timeout_s, retry=c.retry)
  predictions = result.scores.argmax(axis=1)
  for path, label, score in zip(c.png_paths, predictions, result.scores.max(axis=1)):
    print(f"{path}: {label} (score {score:.3f})")
  p = latency_percentiles_ms(result.latencies_s)
  print(f"Predicted {len(images)} images with model {c.spec.name} version(s) "
        f"{sorted(result.model_versions)} in {len(result.latencies_s)} requests "
        f"(batch_size {c.batch_size}, concurrency {c.concurrency})")
  if labels is not None:
    accuracy = float(np.mean(predictions == labels))
    print(f"Accuracy: {accuracy:.4f} (error rate {1 - accuracy:.4f})")
  print(f"Throughput: {len(images) / result.elapsed_s:.1f} images/s; request latency "
        f"p50 {p[50]:.2f} ms, p90 {p[90]:.2f} ms, p99 {p[99]:.2f} ms")
  return 0


def config_from_flags(flag_values) -> CliConfig:
  f = flag_values
  return CliConfig(
      server=f.server, mode=f.mode,
      spec=ModelSpec(f.model_name, f.model_version, f.version_label, f.signature_name),
      retry=RetryPolicy(max_attempts=f.max_attempts, initial_backoff_s=f.initial_backoff_s),
      timeout_s=f.timeout_s, num_tests=f.num_tests, batch_size=f.batch_size,
      concurrency=f.concurrency, max_message_bytes=f.max_message_bytes, tls=f.tls,
      root_cert=f.root_cert, client_cert=f.client_cert, client_key=f.client_key,
      server_name_override=f.server_name_override, data_dir=f.data_dir,
      png_paths=tuple(p for p in (f.images or ()) if p), idx_images=f.idx_images,
      idx_labels=f.idx_labels, npz=f.npz)


def main(argv):
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  try:
    return run(config_from_flags(FLAGS))
  except grpc.RpcError as e:
    print(f"Server error {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  except (ValueError, OSError) as e:  # Bad input files or flags, mismatched keys.
    print(f"Error: {e}", file=sys.stderr)
    return 1


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The command line's flags; their defaults are CliConfig's, ModelSpec's and RetryPolicy's."""
  c, spec, retry = CliConfig, ModelSpec, RetryPolicy
  f = dict(flag_values=flag_values)
  flags.DEFINE_string("server", c.server, "PredictionService host:port.", **f)
  flags.DEFINE_enum("mode", c.mode, ["predict", "metadata", "status"],
                    "predict images, print the signatures, or print the version states.", **f)
  flags.DEFINE_string("model_name", spec.name, "Model to call.", **f)
  flags.DEFINE_integer("model_version", spec.version, "Version to call; default: the latest.",
                       **f)
  flags.DEFINE_string("version_label", spec.version_label,
                      "Version label to call instead of a number.", **f)
  flags.DEFINE_string("signature_name", spec.signature_name,
                      f"{contract.SIGNATURE_NAME} (keys pass through) or "
                      f"{contract.TFS_EXAMPLE_SIGNATURE_NAME} (TF Serving's example).", **f)
  flags.DEFINE_integer("num_tests", c.num_tests, "Images to predict; 0: all of the input.",
                       **f)
  flags.DEFINE_integer("batch_size", c.batch_size, "Images per request.", **f)
  flags.DEFINE_integer("concurrency", c.concurrency, "Requests in flight at most.", **f)
  flags.DEFINE_float("timeout_s", c.timeout_s, "Deadline of each call (each try), seconds.",
                     **f)
  flags.DEFINE_integer("max_attempts", retry.max_attempts, "Tries per call; only "
                       "UNAVAILABLE and DEADLINE_EXCEEDED are retried.", **f)
  flags.DEFINE_float("initial_backoff_s", retry.initial_backoff_s,
                     "Wait before the first retry; doubles per retry.", **f)
  flags.DEFINE_integer("max_message_bytes", c.max_message_bytes,
                       "Largest gRPC message sent or received.", **f)
  flags.DEFINE_bool("tls", c.tls, "Use TLS (implied by --root_cert or --client_cert).", **f)
  flags.DEFINE_string("root_cert", c.root_cert, "PEM CA certificate to verify the server "
                      "with.", **f)
  flags.DEFINE_string("client_cert", c.client_cert, "PEM client certificate, for mutual "
                      "TLS.", **f)
  flags.DEFINE_string("client_key", c.client_key, "PEM client private key, for mutual TLS.",
                      **f)
  flags.DEFINE_string("server_name_override", c.server_name_override, "TLS name to expect "
                      "in the server certificate, when it differs from --server's host.", **f)
  flags.DEFINE_string("data_dir", c.data_dir, "MNIST directory; default: the vendored "
                      "data/mnist.", **f)
  flags.DEFINE_list("images", None, "PNG files (28x28 grayscale) to predict instead of "
                    "MNIST.", **f)
  flags.DEFINE_string("idx_images", c.idx_images, "IDX image file to predict instead of "
                      "MNIST.", **f)
  flags.DEFINE_string("idx_labels", c.idx_labels, "IDX label file for --idx_images.", **f)
  flags.DEFINE_string("npz", c.npz, "npz with `images` (and optionally `labels`).", **f)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
