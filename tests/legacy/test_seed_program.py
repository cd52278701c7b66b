"""Tests for the seed's r0.12 program under tf.compat.v1 and its launcher.

The slow tests run it for real (the `legacy_artifacts` fixture of tests/conftest.py:
1 ps + master) and check what it leaves for a migration tool: the checkpoint holds
exactly the seed graph's variables, and export.meta imports and predicts through
its `inputs`/`outputs` collections. The fast ones check the stand-in for the old
input_data module, the result file and the launcher's watch rules.
"""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common import mnist
from tests.legacy import input_data
from tests.legacy import run as legacy_run
from tests.legacy import timing

MODEL_VARIABLES = {
    "cnn/convolution1/Variable": [5, 5, 1, 32],
    "cnn/convolution1/Variable_1": [32],
    "cnn/convolution2/Variable": [5, 5, 32, 64],
    "cnn/convolution2/Variable_1": [64],
    "cnn/fully-connected/Variable": [3136, 1024],
    "cnn/fully-connected/Variable_1": [1024],
    "cnn/output/Variable": [1024, 10],
    "cnn/output/Variable_1": [10],
}
# The training graph's: the global step (the seed's first tf.Variable), the model,
# Adam's two slots per variable and its two beta powers (made under the seed's
# 'optimizer' name scope).
CHECKPOINT_VARIABLES = {
    "Variable": [],
    **MODEL_VARIABLES,
    **{f"{name}/{slot}": shape for name, shape in MODEL_VARIABLES.items()
       for slot in ("Adam", "Adam_1")},
    "optimizer/beta1_power": [],
    "optimizer/beta2_power": [],
}


# --- The real program (multi-process) -----------------------------------------


@pytest.mark.slow
def test_cluster_checkpoint_holds_exactly_the_seed_graphs_variables(legacy_artifacts):
  run = legacy_artifacts
  final_step = run.result["final_global_step"]
  latest = tf.train.latest_checkpoint(run.log_dir)
  assert os.path.basename(latest) == f"model.ckpt-{final_step}"
  assert dict(tf.train.list_variables(latest)) == CHECKPOINT_VARIABLES
  # The master is the only trainer, so the global step counts its training runs
  # exactly. It may stop one step past --max_steps: the seed fetches the global step
  # in the same sess.run as the update, and on the ps that read can run before the
  # increment, so the loop sees max_steps only after max_steps + 1 updates.
  assert tf.train.load_variable(latest, "Variable") == final_step
  assert final_step == len(run.result["global_step"])
  assert run.max_steps <= final_step <= run.max_steps + 1


@pytest.mark.slow
def test_cluster_writes_the_seeds_test_summaries(legacy_artifacts):
  tags = set()
  for name in os.listdir(legacy_artifacts.log_dir):
    if name.startswith("events.out.tfevents"):
      path = os.path.join(legacy_artifacts.log_dir, name)
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(value.tag for value in event.summary.value)
  assert {"Test_loss", "Test_accuracy"} <= tags
  accuracy = legacy_artifacts.result["test_accuracy"]
  assert 0.0 <= accuracy <= 1.0 and legacy_artifacts.result["test_accuracy_step"] >= 1


@pytest.mark.slow
def test_export_holds_the_final_checkpoints_weights(legacy_artifacts):
  export = os.path.join(legacy_artifacts.model_dir, "export")
  assert dict(tf.train.list_variables(export)) == MODEL_VARIABLES
  latest = tf.train.latest_checkpoint(legacy_artifacts.log_dir)
  for name in MODEL_VARIABLES:
    np.testing.assert_array_equal(tf.train.load_variable(export, name),
                                  tf.train.load_variable(latest, name), err_msg=name)


@pytest.mark.slow
def test_export_meta_imports_and_predicts_through_its_collections(legacy_artifacts):
  model_dir = legacy_artifacts.model_dir
  data = mnist.load_mnist()
  images = np.multiply(data.test_images[:10].astype(np.float32), 1.0 / 255.0)
  keys = np.arange(10, dtype=np.int64) * 7 + 10**12  # Past int32, in no order of theirs.
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    saver = tf.compat.v1.train.import_meta_graph(os.path.join(model_dir, "export.meta"))
    saver.restore(sess, os.path.join(model_dir, "export"))
    inputs = json.loads(tf.compat.v1.get_collection("inputs")[0])
    outputs = json.loads(tf.compat.v1.get_collection("outputs")[0])
    assert set(inputs) == {"key", "image"} and set(outputs) == {"key", "scores"}
    got_keys, scores = sess.run([outputs["key"], outputs["scores"]],
                                {inputs["key"]: keys, inputs["image"]: images})
  np.testing.assert_array_equal(got_keys, keys)
  assert scores.shape == (10, 10) and scores.dtype == np.float32
  np.testing.assert_allclose(scores.sum(axis=1), np.ones(10), atol=1e-5)


def write_small_mnist(path, num_train=5100, num_test=200):
  """A slice of the vendored MNIST as an npz: the seed's validation split (5,000)
  and a short evaluation (num_test // batch size batches) still fit."""
  data = mnist.load_mnist()
  np.savez(path, x_train=data.train_images[:num_train].reshape(-1, 28, 28),
           y_train=data.train_labels[:num_train],
           x_test=data.test_images[:num_test].reshape(-1, 28, 28),
           y_test=data.test_labels[:num_test])
  return str(path)


@pytest.mark.slow
def test_one_process_cli_writes_monotonic_step_times(tmp_path):
  max_steps = 12
  data = write_small_mnist(tmp_path / "small.npz")
  work_dir = tmp_path / "run"
  command = [sys.executable, "-m", "tests.legacy.run", f"--work_dir={work_dir}",
             "--one_process", f"--max_steps={max_steps}", "--checkpoint=1000",
             f"--data={data}", "--rate_window=2,10", "--timeout=240"]
  done = subprocess.run(command, cwd=legacy_run.REPO_ROOT, capture_output=True, text=True,
                        timeout=270)
  assert done.returncode == 0, done.stderr[-3000:]
  printed = json.loads(done.stdout)
  assert sorted(os.listdir(work_dir)) == ["logs", "model", "one_process.log", "result.json"]
  log = (work_dir / "one_process.log").read_text()
  assert "Start job: no TF_CONFIG, one process" in log and "Loaded MNIST from " + data in log
  assert printed["examples_per_second"] > 0
  with open(printed["result_json"]) as f:
    result = json.load(f)
  steps = result["global_step"]
  start, end = np.array(result["run_start_s"]), np.array(result["run_end_s"])
  assert len(steps) == len(start) == len(end) == result["final_global_step"]
  assert all(b > a for a, b in zip(steps, steps[1:])), steps
  assert max_steps <= result["final_global_step"] <= max_steps + 1
  assert np.all(start < end) and np.all(end[:-1] <= start[1:])
  # The seed evaluates once the step it fetched passes 0 (step > checkpoint * 0),
  # and with this --checkpoint never again.
  assert result["test_accuracy_step"] == 1 and printed["test_accuracy"] is not None
  assert os.path.exists(os.path.join(printed["model_dir"], "export.meta"))


@pytest.mark.slow
def test_a_master_whose_cluster_never_comes_up_is_ended_by_the_timeout(tmp_path):
  tasks = legacy_run.make_tasks(str(tmp_path))
  master = [t for t in tasks if t.name == "master"]  # Its ps is never started.
  args = legacy_run.seed_args(str(tmp_path), max_steps=5, checkpoint=10, batch_size=100,
                              recovery_wait_secs=1)
  with pytest.raises(legacy_run.LegacyRunError,
                     match=r"legacy master did not finish within 20 s") as raised:
    with legacy_run.LegacyCluster(master, args) as cluster:
      cluster.wait(20)
  assert "master.log" in str(raised.value)
  assert master[0].process.poll() is not None
  assert not os.path.exists(tmp_path / "result.json")


# --- Fast: the stand-in data module, the result file, the launcher's rules ------


def test_read_data_sets_splits_and_scales_the_vendored_mnist():
  data = mnist.load_mnist()
  sets = input_data.read_data_sets("/tmp/data/", one_hot=True)
  assert [s.num_examples for s in sets] == [55000, 5000, 10000]
  train = sets.train
  assert train.images.dtype == np.float32 and train.images.shape == (55000, 784)
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  np.testing.assert_array_equal(train.images[0], data.train_images[5000] * np.float32(1 / 255))
  assert train.labels.shape == (55000, 10)
  np.testing.assert_array_equal(train.labels.argmax(1), data.train_labels[5000:])
  np.testing.assert_array_equal(train.labels.sum(1), np.ones(55000))


def test_next_batch_walks_in_order_then_reshuffles_each_epoch():
  images = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 784), np.float32)
  data = input_data.DataSet(images, np.arange(10))
  first, _ = data.next_batch(4)
  second, labels = data.next_batch(4)
  np.testing.assert_array_equal(labels, [4, 5, 6, 7])
  np.testing.assert_array_equal(second[:, 0], labels)
  assert data.epochs_completed == 0
  # Two examples are left, fewer than a batch: r0.12 dropped them and reshuffled.
  np.random.seed(3)
  batches = [data.next_batch(4)[1] for _ in range(2)]
  assert data.epochs_completed == 1
  assert len(set(np.concatenate(batches))) == 8
  assert not np.array_equal(np.concatenate(batches), np.arange(8))
  np.testing.assert_array_equal(data.images[:, 0], data.labels)  # Shuffled together.
  with pytest.raises(ValueError, match="batch_size 11: expected 1 to 10"):
    data.next_batch(11)


def test_read_data_sets_honours_the_data_environment_variable(monkeypatch):
  monkeypatch.setenv(input_data.DATA_ENV, "/nonexistent/mnist")
  with pytest.raises(mnist.DataError, match="/nonexistent/mnist: no such directory"):
    input_data.read_data_sets("/tmp/data/", one_hot=True)


def test_step_times_file_schema(tmp_path):
  times = timing.StepTimes()
  times.add_step(np.int64(1), 10.0, 10.5)
  times.add_step(2, 10.6, 11.0)
  times.add_evaluation(np.int32(1), np.float32(0.25))
  path = tmp_path / "sub" / "result.json"
  times.write(str(path), np.int64(2), 100)
  assert json.loads(path.read_text()) == {
      "schema_version": 1, "clock": "time.monotonic", "batch_size": 100,
      "global_step": [1, 2], "run_start_s": [10.0, 10.6], "run_end_s": [10.5, 11.0],
      "final_global_step": 2, "test_accuracy": 0.25, "test_accuracy_step": 1}
  assert os.listdir(path.parent) == ["result.json"]


def test_tasks_of_a_run():
  tasks = legacy_run.make_tasks("/w", num_workers=2)
  assert [t.name for t in tasks] == ["master", "worker:0", "worker:1", "ps:0"]
  configs = [json.loads(t.tf_config) for t in tasks]
  assert [c["task"] for c in configs] == [
      {"type": "master", "index": 0}, {"type": "worker", "index": 0},
      {"type": "worker", "index": 1}, {"type": "ps", "index": 0}]
  cluster = configs[0]["cluster"]
  addresses = [a for v in cluster.values() for a in v]
  assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
  assert tasks[3].log_path == "/w/ps-0.log"
  assert set(json.loads(legacy_run.make_tasks("/w")[0].tf_config)["cluster"]) == {
      "master", "ps"}
  alone = legacy_run.make_tasks("/w", one_process=True)
  assert [(t.name, t.tf_config) for t in alone] == [("one_process", None)]


def test_run_legacy_refuses_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="max_steps 0: expected a positive integer"):
    legacy_run.run_legacy(str(tmp_path), max_steps=0)
  with pytest.raises(ValueError, match="num_workers -1: expected 0 or more"):
    legacy_run.run_legacy(str(tmp_path), num_workers=-1)
  (tmp_path / "logs").mkdir()
  (tmp_path / "logs" / "checkpoint").write_text("")
  with pytest.raises(ValueError, match="already holds checkpoints"):
    legacy_run.run_legacy(str(tmp_path))


# Acts out a task without TensorFlow: $BEHAVIOUR is JSON {task type: [exit code, s]}.
FAKE_PYTHON = """#!{python}
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]["type"]
code, seconds = json.loads(os.environ["BEHAVIOUR"]).get(task, [0, 600])
time.sleep(seconds)
sys.exit(code)
"""


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "python"
  path.write_text(FAKE_PYTHON.format(python=sys.executable))
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def watch(fake_python, tmp_path, behaviour):
  tasks = legacy_run.make_tasks(str(tmp_path), num_workers=1)
  env = dict(os.environ, BEHAVIOUR=json.dumps(behaviour))
  try:
    with legacy_run.LegacyCluster(tasks, [], env=env, python=fake_python) as cluster:
      cluster.wait(20, poll_s=0.05)
  finally:
    assert all(t.process.poll() is not None for t in tasks), "a task outlived the run"


@pytest.mark.parametrize("behaviour", [
    {"master": [0, 0.5]},                          # The ps and the worker are ended.
    {"master": [0, 0.8], "worker": [0, 0.1]},      # A worker may stop first.
])
def test_the_run_is_over_when_the_master_succeeds(fake_python, tmp_path, behaviour):
  watch(fake_python, tmp_path, behaviour)


@pytest.mark.parametrize("behaviour,message", [
    ({"master": [1, 0.1]}, "legacy master exited with code 1"),
    ({"worker": [3, 0.1]}, "legacy worker:0 exited with code 3 before the master finished"),
    ({"ps": [0, 0.1]}, "legacy ps:0 exited with code 0 before the master finished"),
])
def test_any_failure_ends_the_run_naming_the_task(fake_python, tmp_path, behaviour, message):
  with pytest.raises(legacy_run.LegacyRunError, match=message):
    watch(fake_python, tmp_path, behaviour)


def test_examples_per_second_counts_every_trainers_global_steps():
  # A master that sees the global step move by 2 per run: a worker trains beside it.
  result = {"batch_size": 100, "global_step": [0, 2, 4, 6, 8, 10],
            "run_start_s": [0, 1, 2, 3, 4, 5], "run_end_s": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]}
  assert timing.examples_per_second(result, 3, 8) == pytest.approx((8 - 4) * 100 / 2.0)
  with pytest.raises(ValueError, match="global steps 4 to 20 are not both in the result"):
    timing.examples_per_second(result, 4, 20)
  with pytest.raises(ValueError, match="fall in one recorded step"):
    timing.examples_per_second(result, 5, 6)
