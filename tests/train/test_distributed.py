"""Real clusters on 127.0.0.1: both strategies, the legacy TF_CONFIG, and failures.

Every process has a hard timeout and is ended by the test that started it
(LocalCluster's context manager), whatever happens.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from train import config as config_lib
from train import export
from train import local_cluster

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_TIMEOUT_S = 240


def start(cluster, workdir, max_steps, **kwargs):
  """A LocalCluster training on synthetic data into `workdir` to `max_steps`."""
  train_config = config_lib.TrainConfig(
      log_dir=str(workdir / "logs"), model_dir=str(workdir / "model"), max_steps=max_steps,
      checkpoint_interval=20, global_batch_size=32, steps_per_execution=5,
      data_dir="synthetic")
  options = config_lib.TaskOptions(cluster_timeout_s=60,
                                   result_json=str(workdir / "result.json"))
  log = open(workdir / "cluster.log", "a")
  env = dict(os.environ, TMPDIR=str(workdir / "tmp"))
  os.makedirs(workdir / "tmp", exist_ok=True)
  return local_cluster.LocalCluster(cluster, train_config, options, output=log, env=env,
                                    **kwargs)


def log_tail(workdir, n=4000):
  with open(workdir / "cluster.log") as f:
    return f.read()[-n:]


def checkpoint_step(log_dir):
  path = tf.train.latest_checkpoint(str(log_dir))
  if not path:
    return None
  return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def wait_for_checkpoint(log_dir, cluster, timeout_s=CLUSTER_TIMEOUT_S):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    step = checkpoint_step(log_dir)
    if step:
      return step
    chief = next(t for t in cluster.tasks if t.is_chief)
    assert chief.process.poll() is None, "chief exited before its first checkpoint"
    time.sleep(0.5)
  raise AssertionError(f"no checkpoint in {log_dir} after {timeout_s}s")


def assert_trained_and_exported_once(workdir, max_steps):
  assert checkpoint_step(workdir / "logs") == max_steps
  assert os.listdir(workdir / "model") == ["1"]
  assert_valid_export(str(workdir / "model" / "1"))


def assert_valid_export(export_dir):
  out = export.run_session_loader(export_dir, np.array([7, 3]), np.zeros((2, 784), np.float32))
  assert out["key"].tolist() == [7, 3]
  np.testing.assert_allclose(out["scores"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", ["parameter_server", "multi_worker_mirrored"])
def test_in_process_cluster(kind, tmp_path):
  run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "train",
                                                     "inprocess_cluster.py"), kind,
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert (result["step"], result["checkpoint_step"], result["keys"]) == (24, 24, [7, 3])
  # Under parameter servers the 1024-unit layer's kernel is split over both ps.
  assert result["num_shards_of_hidden_kernel"] == (2 if kind == "parameter_server" else 1)


def test_legacy_master_cluster_trains_to_completion(tmp_path):
  """TF_CONFIG in the r0.12 / AI Platform form: master, worker, ps."""
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=2, legacy_master=True)
  assert "master" in cluster and "chief" not in cluster
  with start(cluster, tmp_path, 60) as local:
    code = local.wait(CLUSTER_TIMEOUT_S)
  assert code == 0, log_tail(tmp_path)
  assert_trained_and_exported_once(tmp_path, 60)
  assert "role coordinator" in log_tail(tmp_path, 10**7)
  assert all(t.process.poll() is not None for t in local.tasks)


def test_multi_worker_mirrored_only_the_chief_writes(tmp_path):
  cluster = local_cluster.make_cluster(num_ps=0, num_workers=2)
  with start(cluster, tmp_path, 40) as local:
    code = local.wait(CLUSTER_TIMEOUT_S)
  assert code == 0, log_tail(tmp_path)
  assert_trained_and_exported_once(tmp_path, 40)
  assert json.load(open(tmp_path / "result.json"))["test_accuracy"] > 0  # The chief's, only.
  assert "test accuracy" not in "".join(  # ... and prints the result line.
      line for line in log_tail(tmp_path, 10**7).splitlines() if line.startswith("[worker:1]"))
  assert os.listdir(tmp_path / "tmp") == []  # worker 1's scratch checkpoints removed.
  # Resumes after a restart of the whole job.
  cluster = local_cluster.make_cluster(num_ps=0, num_workers=2)
  with start(cluster, tmp_path, 60) as local:
    assert local.wait(CLUSTER_TIMEOUT_S) == 0, log_tail(tmp_path)
  assert "Resumed from" in log_tail(tmp_path, 10**7)
  assert json.load(open(tmp_path / "result.json"))["history"][0]["step"] == 60


def test_worker_killed_mid_run_job_still_finishes(tmp_path):
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=2)
  with start(cluster, tmp_path, 200) as local:
    wait_for_checkpoint(tmp_path / "logs", local)
    victim = local.task("worker:1")
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    # The worker comes back (as a restarted pod would) and rejoins.
    local.start_task(victim)
    chief = next(t for t in local.tasks if t.is_chief)
    code = chief.process.wait(CLUSTER_TIMEOUT_S)
    rejoined_alive = victim.process.poll() is None
  assert code == 0, log_tail(tmp_path)
  assert rejoined_alive
  assert "Worker /job:worker/replica:0/task:1 has been recovered" in log_tail(tmp_path, 10**7)
  # A function cut short by the kill is run again elsewhere: steps >= max_steps.
  assert checkpoint_step(tmp_path / "logs") >= 200
  assert_valid_export(str(tmp_path / "model" / "1"))


def test_ps_killed_fails_clearly_and_restart_resumes(tmp_path):
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=1)
  with start(cluster, tmp_path, 400) as local:
    wait_for_checkpoint(tmp_path / "logs", local)
    local.task("ps:0").process.send_signal(signal.SIGKILL)
    chief = next(t for t in local.tasks if t.is_chief)
    code = chief.process.wait(CLUSTER_TIMEOUT_S)
  assert code == 4, log_tail(tmp_path)
  assert f"lost ps:0 ({cluster['ps'][0]}) during training" in log_tail(tmp_path)
  saved = checkpoint_step(tmp_path / "logs")
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=1)
  with start(cluster, tmp_path, saved + 20) as local:
    assert local.wait(CLUSTER_TIMEOUT_S) == 0, log_tail(tmp_path)
  assert f"at step {saved}" in log_tail(tmp_path)
  assert checkpoint_step(tmp_path / "logs") == saved + 20


def test_chief_killed_restart_resumes_and_exports_are_whole(tmp_path):
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=1)
  with start(cluster, tmp_path, 400) as local:
    wait_for_checkpoint(tmp_path / "logs", local)
    next(t for t in local.tasks if t.is_chief).process.send_signal(signal.SIGKILL)
    assert local.wait(30) != 0
  saved = checkpoint_step(tmp_path / "logs")
  assert not os.path.exists(tmp_path / "model") or not [
      n for n in os.listdir(tmp_path / "model") if n.isdigit()]
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=1)
  with start(cluster, tmp_path, saved + 20, evaluator=True) as local:
    assert local.wait(CLUSTER_TIMEOUT_S) == 0, log_tail(tmp_path)
  assert f"at step {saved}" in log_tail(tmp_path, 10**7)
  for name in os.listdir(tmp_path / "model"):
    assert name.isdigit(), f"half-written export visible: {name}"
    assert_valid_export(str(tmp_path / "model" / name))
  # The side-car evaluator followed the checkpoints up to the final one.
  assert f"step {saved + 20} evaluator test_loss" in log_tail(tmp_path, 10**7)
  assert os.listdir(tmp_path / "logs" / "eval")


def test_chief_fails_when_the_cluster_never_comes_up(tmp_path):
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=1)  # Nobody listens there.
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["TF_CONFIG"] = local_cluster.tf_config_for(cluster, "chief", 0)
  start_time = time.monotonic()
  run = subprocess.run([sys.executable, "-m", "train.task", "--cluster_timeout=3",
                        "--data_dir=synthetic", f"--log_dir={tmp_path}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 3, run.stderr[-3000:]
  assert "did not come up within 3s" in run.stderr
  assert f"worker:0 at {cluster['worker'][0]}" in run.stderr
  assert f"ps:0 at {cluster['ps'][0]}" in run.stderr
  assert time.monotonic() - start_time < 60


def test_launcher_stops_every_task_when_one_fails(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "train.local_cluster", "--num_ps=1", "--num_workers=1",
       "--timeout=120", "--", f"--data_dir={tmp_path / 'missing'}", f"--log_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=180)
  assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
  assert "[chief] error: " in run.stdout and str(tmp_path / "missing") in run.stdout
  assert "[ps:0]" in run.stdout and "[worker:0]" in run.stdout
