"""Warm starts from a legacy r0.12 checkpoint on real local clusters (slow).

Under ParameterServerStrategy the chief alone loads the legacy weights, onto
variables split over two parameter servers; under MultiWorkerMirroredStrategy every
worker loads them and the replicas are checked to hold the same values. Either way
the job's first checkpoint, written before any training step, holds exactly the
legacy weights, Adam slots and global step.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.legacy import seed_checkpoint
from train import config as config_lib
from train import legacy
from train import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

LEGACY_STEP = 3
# Our checkpoint's keys of the legacy variables, by the CNN's layer order.
OUR_KEYS = {name: f"model/layer_with_weights-{i // 2}/{'kernel' if i % 2 == 0 else 'bias'}"
                  "/.ATTRIBUTES/VARIABLE_VALUE"
            for i, (name, _, _) in enumerate(legacy.MODEL_VARIABLES)}


@pytest.mark.parametrize("num_ps,num_workers,num_ps_shards,warm_starters", [
    (2, 1, 2, ["chief"]),                   # The 1024-unit kernel split over both ps.
    (0, 2, 1, ["worker:0", "worker:1"]),
], ids=["parameter_server", "multi_worker_mirrored"])
def test_the_first_checkpoint_holds_the_legacy_state(tmp_path, num_ps, num_workers,
                                                     num_ps_shards, warm_starters):
  prefix = str(tmp_path / "legacy" / f"model.ckpt-{LEGACY_STEP}")
  values = seed_checkpoint.write_seed_checkpoint(prefix, steps=LEGACY_STEP)
  max_steps = LEGACY_STEP + 6
  train_config = config_lib.TrainConfig(
      log_dir=str(tmp_path / "logs"), model_dir=str(tmp_path / "model"), max_steps=max_steps,
      checkpoint_interval=5, global_batch_size=16, steps_per_execution=2, eval_batch_size=100,
      data_dir="synthetic", export=False, num_ps_shards=num_ps_shards,
      warm_start_from=str(tmp_path / "legacy"), warm_start_optimizer=True)
  options = config_lib.TaskOptions(cluster_timeout_s=60)
  cluster = local_cluster.make_cluster(num_ps=num_ps, num_workers=num_workers)
  log_path = tmp_path / "cluster.log"
  with open(log_path, "w") as log, local_cluster.LocalCluster(
      cluster, train_config, options, output=log,
      env=dict(os.environ, TMPDIR=str(tmp_path))) as local:
    code = local.wait(300)
  output = log_path.read_text()
  assert code == 0, output[-4000:]
  started = sorted(line.split("]")[0][1:] for line in output.splitlines()
                   if "Warm-started from the r0.12 checkpoint" in line)
  assert started == warm_starters, output[-4000:]
  assert f"step {LEGACY_STEP}/{max_steps} (warm start, before training)" in output
  reader = tf.train.load_checkpoint(str(tmp_path / "logs" / f"ckpt-{LEGACY_STEP}"))
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == LEGACY_STEP
  for name, key in OUR_KEYS.items():
    np.testing.assert_array_equal(reader.get_tensor(key), values[name], err_msg=name)
  # Adam's slots, wherever the optimizer keeps them in its checkpoint (which slot is
  # which is for tests/train/test_legacy.py's step-by-step comparison).
  saved = [reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
           if key.startswith("optimizer/")]
  for name, _, _ in legacy.MODEL_VARIABLES:
    for slot in (legacy.ADAM_M, legacy.ADAM_V):
      value = values[f"{name}/{slot}"]
      assert any(s.shape == value.shape and np.array_equal(s, value) for s in saved), \
          f"{name}/{slot} is not in our first checkpoint"
  final = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "logs")))
  assert int(final.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == max_steps
