"""Tests for train/task.py: which task a lost RPC names, and the command's --dry_run,
exit codes and messages."""

import json
import os
import re
import subprocess
import sys

import pytest

from train import cluster
from train import task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"], "ps": ["p0:2222"]}


def run_task(*args, tf_config=None, timeout=120, **env):
  environ = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CONFIG", "AIP_"))}
  if tf_config is not None:
    environ["TF_CONFIG"] = tf_config if isinstance(tf_config, str) else json.dumps(tf_config)
  environ.update(env)
  return subprocess.run([sys.executable, "-m", "train.task", *args], cwd=REPO, env=environ,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("message,named", [
    ("Socket closed; peer ipv4:p0:2222 went away", "ps:0 (p0:2222)"),
    ("from /job:worker/replica:0/task:1: connection refused", "worker:1"),
    ("w0:2222 and w1:2222 unreachable", "worker:0 (w0:2222) and worker:1 (w1:2222)"),
    ("Deadline Exceeded", "a task of the cluster"),
])
def test_name_lost_task_from_the_rpc_error(message, named):
  config = cluster.parse_tf_config(json.dumps({"cluster": CLUSTER,
                                               "task": {"type": "chief", "index": 0}}))
  assert task.name_lost_task(message, config) == named


@pytest.mark.parametrize("tf_config,role,task_type,strategy", [
    (None, "standalone", "chief", "one_device"),
    ({"cluster": {"master": ["m:1"], "worker": ["w:1"], "ps": ["p:1"]},
      "task": {"type": "master", "index": 0}, "environment": "cloud"},
     "coordinator", "chief", "parameter_server"),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 1, "trial": "2"},
      "job": {"workerPoolSpecs": []}, "environment": "cloud"},
     "server", "worker", "parameter_server"),
    ({"cluster": {**CLUSTER, "evaluator": ["e:2222"]}, "task": {"type": "evaluator", "index": 0}},
     "evaluator", "evaluator", "parameter_server"),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}},
     "collective", "worker", "multi_worker_mirrored"),
])
def test_dry_run_prints_the_resolved_task(tf_config, role, task_type, strategy):
  run = run_task("--dry_run", tf_config=tf_config, timeout=30)
  assert run.returncode == 0, run.stderr
  described = json.loads(run.stdout)
  assert (described["role"], described["task"]["type"], described["strategy"]) == (
      role, task_type, strategy)
  assert "evaluator" not in described["cluster"]


@pytest.mark.parametrize("tf_config,message", [
    ("{oops", "TF_CONFIG is not valid JSON"),
    ({"cluster": CLUSTER, "task": {"type": "mastr", "index": 0}},
     "task type 'mastr' is not one of chief, master, worker, ps, evaluator"),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}},
     "task index 2 is out of range: cluster has 2 worker"),
    ({"cluster": {"worker": ["w:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}},
     "has 'ps' but no 'chief'"),
    ({"cluster": {"chief": ["c:1"]}, "task": {"type": "worker", "index": 0}},
     "task worker:0 is missing from its cluster"),
])
def test_malformed_tf_config_exits_2_naming_the_problem(tf_config, message):
  run = run_task("--dry_run", tf_config=tf_config, timeout=30)
  assert run.returncode == 2
  assert message in run.stderr
  assert "Traceback" not in run.stderr


def test_forced_strategy_that_does_not_fit_exits_2():
  run = run_task("--dry_run", "--strategy=multi_worker_mirrored",
                 tf_config={"cluster": CLUSTER, "task": {"type": "chief", "index": 0}})
  assert run.returncode == 2 and "cannot use the 'ps' tasks" in run.stderr


def test_help_lists_the_seed_flags_with_their_defaults():
  run = run_task("--help", timeout=60)
  assert run.returncode == 0, run.stderr
  text = " ".join(run.stdout.split())
  for flag, default in (("batch_size", "100"), ("max_steps", "10000"), ("checkpoint", "100"),
                        ("log_dir", "/tmp/logs"), ("model_dir", "/tmp/model")):
    assert re.search(rf"--{flag}: [^-]*?\(default: '{re.escape(default)}'\)", text), flag


@pytest.mark.parametrize("flag,message", [
    ("--batch_size=0", "global_batch_size must be a positive integer"),
    ("--log_every=0", "log_interval must be an integer >= 1 (or None: the "
                      "checkpoint_interval), got 0"),
])
def test_bad_flag_value_exits_2(flag, message):
  run = run_task(flag, "--max_steps=1", timeout=60)
  assert run.returncode == 2 and f"error: {message}" in run.stderr, run.stderr


@pytest.mark.parametrize("args,message", [
    (["--batch_size=abc"], "flag --batch_size=abc: invalid literal for int()"),
    (["--nonexistent_flag"], "Unknown command line flag 'nonexistent_flag'"),
    (["--strategy=fast"], "flag --strategy=fast: value should be one of"),
    (["--dry_run", "stray"], "unexpected arguments ['stray']"),
])
def test_a_flag_the_parser_refuses_exits_2(args, message):
  run = run_task(*args, timeout=60)
  assert run.returncode == 2, run.stderr
  assert f"error: {message}" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("tf_config,line", [
    (None, "Task chief:0 (no TF_CONFIG: one process), role standalone, strategy one_device"),
    ({"cluster": {"master": ["m:1"], "worker": ["w:1"], "ps": ["p:1"]},
      "task": {"type": "master", "index": 0}},
     "Task chief:0 (master in TF_CONFIG), role coordinator, strategy parameter_server"),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}},
     "Task worker:1 (worker in TF_CONFIG), role server, strategy parameter_server"),
])
def test_the_first_line_says_which_task_this_is(tf_config, line):
  config = cluster.parse_tf_config(None if tf_config is None else json.dumps(tf_config))
  strategy = cluster.resolve_strategy(config)
  assert task.describe_task(config, cluster.resolve_role(config, strategy), strategy) == line


def test_a_directory_that_cannot_be_written_exits_2_before_training(tmp_path):
  (tmp_path / "file").write_text("")
  run = run_task("--data_dir=synthetic", "--max_steps=2", "--checkpoint=1",
                 f"--log_dir={tmp_path / 'logs'}", f"--model_dir={tmp_path / 'file' / 'x'}")
  assert run.returncode == 2, run.stderr[-2000:]
  assert (f"error: cannot write the exported model (--model_dir or $AIP_MODEL_DIR) to "
          f"{tmp_path}/file/x: {tmp_path}/file is not a directory") in run.stderr
  assert "Traceback" not in run.stderr
  assert os.listdir(tmp_path / "logs") == []  # Checked, and nothing trained.
  # The first line, without TF_CONFIG, says so.
  assert "Task chief:0 (no TF_CONFIG: one process), role standalone" in run.stderr


@pytest.mark.slow
def test_a_full_disk_exits_2_naming_it_with_no_temp_checkpoint(mount_tmpfs, tmp_path):
  """A real ENOSPC: the log dir is a tmpfs that holds the summaries, not a checkpoint."""
  logs = mount_tmpfs("logs", size=1 << 20)
  run = run_task("--data_dir=synthetic", "--max_steps=4", "--checkpoint=2",
                 "--batch_size=16", f"--log_dir={logs}", f"--model_dir={tmp_path / 'model'}",
                 timeout=300)
  assert run.returncode == 2, run.stderr[-3000:]
  assert (f"error: no space left on device (ENOSPC) in {logs}, where the task writes "
          "checkpoints and TensorBoard summaries (--log_dir)") in run.stderr
  assert "Traceback" not in run.stderr
  assert [n for n in os.listdir(logs) if not n.startswith("events.out")] == []


@pytest.mark.slow
def test_missing_data_exits_2_naming_the_path(tmp_path):
  run = run_task(f"--data_dir={tmp_path / 'nowhere'}", f"--log_dir={tmp_path}",
                 "--max_steps=1")
  assert run.returncode == 2, run.stderr[-2000:]
  assert str(tmp_path / "nowhere") in run.stderr
  assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_vertex_directories_are_the_defaults(tmp_path):
  run = run_task("--data_dir=synthetic", "--max_steps=4", "--checkpoint=2",
                 "--batch_size=16", timeout=300,
                 AIP_MODEL_DIR=str(tmp_path / "model"),
                 AIP_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
                 AIP_TENSORBOARD_LOG_DIR=str(tmp_path / "tb"))
  assert run.returncode == 0, run.stderr[-3000:]
  # Vertex AI's layout: saved_model.pb straight in AIP_MODEL_DIR.
  assert os.path.exists(tmp_path / "model" / "saved_model.pb")
  assert sorted(os.listdir(tmp_path)) == ["ckpt", "model", "tb"]  # No staging left.
  assert os.path.exists(tmp_path / "ckpt" / "checkpoint")
  assert any(n.startswith("events.out") for n in os.listdir(tmp_path / "tb"))
  # Nothing of TensorFlow's C++ start-up noise, one log line per interval.
  assert "cuInit" not in run.stderr and "oneDNN custom operations" not in run.stderr
  assert "CPU kernels: oneDNN's" in run.stderr  # --onednn's default.
  assert sum("step 2/4" in line or "step 4/4" in line for line in run.stderr.splitlines()) == 2
