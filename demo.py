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

Exit codes: 0 the served accuracy equals the in-process one; 1 it does not, or
training or serving failed; 2 a bad flag, or a --workdir that cannot be used.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from common import runtime

if __name__ == "__main__":
  runtime.import_tensorflow()  # The program: quiet TensorFlow's start-up, before it loads.

import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from common import mnist  # noqa: E402
from common import processes  # noqa: E402
from common import settings  # noqa: E402
from model import contract  # noqa: E402
from serving import client  # noqa: E402
from train import config as config_lib  # noqa: E402
from train import local_cluster  # noqa: E402
from train import storage  # noqa: E402

# The launcher's and the trainer's settings the demo takes, with the demo's defaults.
LAUNCH_SETTINGS = ("num_ps", "num_workers", "timeout_s")
LAUNCH_DEFAULTS = {"timeout_s": 1200.0}
TRAIN_SETTINGS = ("global_batch_size", "max_steps", "checkpoint_interval")
# Steps enough for the asynchronous cluster to end above 0.993 test accuracy from run
# to run: at 3,000 its last accuracy varied around 0.993 on either side.
TRAIN_DEFAULTS = {"max_steps": 4000, "checkpoint_interval": 500}

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("workdir", "runs/demo", "Checkpoints, logs and exports go here; "
                      "emptied first (a new directory, or an earlier demo's).",
                      flag_values=flag_values)
  flags.DEFINE_integer("predict_batch_size", client.DEFAULT_BATCH_SIZE,
                       "Images per gRPC request.", lower_bound=1, flag_values=flag_values)
  settings.define_flags(local_cluster.LaunchConfig, flag_values, only=LAUNCH_SETTINGS,
                        defaults=LAUNCH_DEFAULTS)
  settings.define_flags(config_lib.TrainConfig, flag_values, only=TRAIN_SETTINGS,
                        defaults=TRAIN_DEFAULTS)


def configs_from_flags(flag_values: flags.FlagValues, workdir: str):
  """(LaunchConfig, TrainConfig) of the demo's flags, training into `workdir`."""
  launch = local_cluster.LaunchConfig(
      **settings.values_from_flags(local_cluster.LaunchConfig, flag_values))
  train_config = config_lib.train_config_from_flags(flag_values).with_log_dir(
      os.path.join(workdir, "logs"))
  return launch, dataclasses.replace(train_config, model_dir=os.path.join(workdir, "model"))


# What the demo writes in its workdir, and so may delete there.
WORKDIR_ENTRIES = ("logs", "model", "result.json")


def prepare_workdir(workdir: str) -> None:
  """Empties `workdir`, or creates it; raises ValueError if it is not the demo's.

  Only a directory holding nothing but what an earlier demo wrote is emptied: a
  mistyped --workdir (`.`, a home directory) must not lose anyone's files.
  """
  if os.path.isdir(workdir):
    foreign = sorted(set(os.listdir(workdir)) - set(WORKDIR_ENTRIES))
    if foreign:
      raise ValueError(f"--workdir={workdir} holds files the demo did not write "
                       f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): "
                       "expected a new directory or an earlier demo's, which is emptied")
    shutil.rmtree(workdir)
  problem = storage.check_writable(workdir)
  if problem:
    raise ValueError(f"cannot write --workdir={workdir}: {problem}")


def run_training(launch: local_cluster.LaunchConfig, train_config: config_lib.TrainConfig,
                 workdir: str) -> dict:
  result_json = os.path.join(workdir, "result.json")
  options = config_lib.TaskOptions(result_json=result_json)
  command = [sys.executable, "-m", "train.local_cluster", *settings.to_argv(launch), "--",
             *config_lib.task_argv(train_config, options)]
  logging.info("1/3 training: %s", " ".join(command))
  code = subprocess.call(command)
  if code != 0:
    raise SystemExit(f"training failed with exit code {code}")
  with open(result_json) as f:
    return json.load(f)


def in_process_scores(export_dir: str, images: np.ndarray, batch_size: int) -> np.ndarray:
  serve = tf.saved_model.load(export_dir).signatures[contract.SIGNATURE_NAME]
  return np.concatenate([
      serve(key=tf.range(start, start + len(chunk), dtype=tf.int64),
            image=tf.constant(chunk))[contract.SCORES].numpy()
      for start in range(0, len(images), batch_size)
      for chunk in [images[start:start + batch_size]]])


def predict_over_grpc(export_dir: str, images: np.ndarray) -> client.BatchedPrediction:
  """Serves the export's base with `python -m serving.server`; predicts `images` over gRPC."""
  (port,) = processes.pick_free_ports(1)
  args = [f"--port={port}", f"--model_name={contract.DEFAULT_MODEL_NAME}",
          f"--model_base_path={os.path.dirname(export_dir)}"]
  logging.info("2/3 serving: python -m serving.server %s", " ".join(args))
  server = processes.start_module("serving.server", args)
  try:
    with client.make_channel(f"{processes.LOCALHOST}:{port}") as channel:
      client.wait_until_serving(channel, timeout_s=120, process=server)
      logging.info("3/3 predicting the %d test images over gRPC", len(images))
      return client.predict_batched(
          prediction_service_pb2_grpc.PredictionServiceStub(channel), images,
          batch_size=FLAGS.predict_batch_size, concurrency=4)
  except client.NotServingError as e:
    raise SystemExit(str(e)) from None
  finally:
    processes.stop_process(server, grace_s=10)


def main(argv):
  del argv
  workdir = os.path.abspath(FLAGS.workdir)
  try:
    launch, train_config = configs_from_flags(FLAGS, workdir)
    prepare_workdir(workdir)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return settings.EXIT_USAGE
  start = time.monotonic()
  trained = run_training(launch, train_config, workdir)
  export_dir = trained["export_dir"]
  logging.info("trained to step %d in %.0fs: test accuracy %.4f; export %s",
               trained["step"], time.monotonic() - start, trained["test_accuracy"], export_dir)

  data = mnist.load_mnist()
  images, labels = mnist.to_float(data.test_images), data.test_labels
  served = predict_over_grpc(export_dir, images)
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
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
