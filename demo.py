"""The main job, end to end: local cluster training on real MNIST, export, serve, predict.

Typical usage (what `make demo` runs):

  python demo.py                 # into runs/demo/, started afresh
  python demo.py --max_steps=500 --num_workers=1 --workdir=/tmp/quick

1. `python -m train.local_cluster`: 1 ps, 2 workers and a chief (ParameterServerStrategy)
   train the seed's CNN on the vendored MNIST; the chief checkpoints, evaluates and
   exports <workdir>/model/<version>/.
2. `python -m serving.server` serves that export over TF Serving's gRPC API (the real
   tensorflow_model_server instead, when it is on the PATH).
3. The gRPC client predicts the whole test set; its accuracy must equal, exactly, the
   accuracy of the same export run in this process.

The demo sits above train/ and serving/ (which never import each other): it runs the
trainer and the server as commands, and uses the client as a library.
"""

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

from common import runtime

tf = runtime.import_tensorflow()

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from grpc_health.v1 import health_pb2_grpc  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from model import contract  # noqa: E402
from common import mnist  # noqa: E402
from serving import client  # noqa: E402
from train import local_cluster  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Checkpoints, logs and exports go here; "
                    "emptied first.")
flags.DEFINE_integer("num_ps", 1, "Parameter servers.")
flags.DEFINE_integer("num_workers", 2, "Workers.")
flags.DEFINE_integer("max_steps", 2000, "Training steps of global batch --batch_size.")
flags.DEFINE_integer("batch_size", 100, "Global batch size.")
flags.DEFINE_integer("checkpoint", 500, "Steps between checkpoints and evaluations.")
flags.DEFINE_integer("predict_batch_size", 100, "Images per gRPC request.")
flags.DEFINE_float("timeout", 1200.0, "Seconds before the training cluster is ended.")


def run_training(workdir: str) -> dict:
  result_json = os.path.join(workdir, "result.json")
  command = [sys.executable, "-m", "train.local_cluster", f"--num_ps={FLAGS.num_ps}",
             f"--num_workers={FLAGS.num_workers}", f"--timeout={FLAGS.timeout}", "--",
             f"--max_steps={FLAGS.max_steps}", f"--batch_size={FLAGS.batch_size}",
             f"--checkpoint={FLAGS.checkpoint}", f"--log_dir={workdir}/logs",
             f"--model_dir={workdir}/model", f"--result_json={result_json}"]
  logging.info("1/3 training: %s", " ".join(command))
  code = subprocess.call(command)
  if code != 0:
    raise SystemExit(f"training failed with exit code {code}")
  with open(result_json) as f:
    return json.load(f)


def wait_until_serving(channel, process, timeout_s: float = 120.0) -> None:
  stub = health_pb2_grpc.HealthStub(channel)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise SystemExit(f"the model server exited with code {process.returncode}")
    try:
      status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
      if status == health_pb2.HealthCheckResponse.SERVING:
        return
    except grpc.RpcError:
      pass
    time.sleep(0.5)
  raise SystemExit(f"the model server was not serving after {timeout_s:g}s")


def in_process_scores(export_dir: str, images: np.ndarray, batch_size: int) -> np.ndarray:
  serve = tf.saved_model.load(export_dir).signatures[contract.SIGNATURE_NAME]
  return np.concatenate([
      serve(key=tf.range(start, start + len(chunk), dtype=tf.int64),
            image=tf.constant(chunk))[contract.SCORES].numpy()
      for start in range(0, len(images), batch_size)
      for chunk in [images[start:start + batch_size]]])


def main(argv):
  del argv
  workdir = os.path.abspath(FLAGS.workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  start = time.monotonic()
  trained = run_training(workdir)
  export_dir = trained["export_dir"]
  logging.info("trained to step %d in %.0fs: test accuracy %.4f; export %s",
               trained["step"], time.monotonic() - start, trained["test_accuracy"], export_dir)

  data = mnist.load_mnist()
  images, labels = mnist.to_float(data.test_images), data.test_labels
  port = local_cluster.pick_free_ports(1)[0]
  command = [sys.executable, "-m", "serving.server", f"--port={port}",
             f"--model_name={contract.DEFAULT_MODEL_NAME}",
             f"--model_base_path={os.path.dirname(export_dir)}"]
  logging.info("2/3 serving: %s", " ".join(command))
  server = subprocess.Popen(command)
  try:
    channel = client.make_channel(f"127.0.0.1:{port}")
    wait_until_serving(channel, server)
    logging.info("3/3 predicting the %d test images over gRPC", len(images))
    served = client.predict_batched(
        prediction_service_pb2_grpc.PredictionServiceStub(channel), images,
        batch_size=FLAGS.predict_batch_size, concurrency=4)
  finally:
    server.terminate()
    try:
      server.wait(10)
    except subprocess.TimeoutExpired:
      server.kill()
  grpc_accuracy = float(np.mean(served.scores.argmax(axis=1) == labels))
  local_accuracy = float(np.mean(
      in_process_scores(export_dir, images, FLAGS.predict_batch_size).argmax(axis=1) == labels))
  print(f"test accuracy over gRPC ({len(images)} images, version "
        f"{sorted(served.model_versions)}): {grpc_accuracy:.4f}")
  print(f"test accuracy of the same export in process: {local_accuracy:.4f}")
  print(f"training: {trained['examples_per_sec']:.0f} examples/s; whole demo "
        f"{time.monotonic() - start:.0f}s")
  if grpc_accuracy != local_accuracy:
    print("error: the served accuracy differs from the in-process accuracy", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
