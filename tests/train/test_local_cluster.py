"""Tests for train/local_cluster.py: cluster layout, and how the launcher watches tasks.

The watching tests run a stand-in for `python` that acts out a role from TF_CONFIG,
so they check the launcher's rules in about a second without TensorFlow.
"""

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from train import cluster as cluster_lib
from train import config as config_lib
from train import local_cluster

# Acts out a task: `$BEHAVIOUR` is JSON {task name: [exit code or null, seconds]}.
FAKE_PYTHON = """#!{python}
import json, os, sys, time
config = json.loads(os.environ["TF_CONFIG"])
task = config["task"]
name = task["type"] if task["type"] in ("chief", "master", "evaluator") else f"{{task['type']}}:{{task['index']}}"
code, seconds = json.loads(os.environ["BEHAVIOUR"]).get(name, [None, 600])
print(f"{{name}} args {{sys.argv[1:]}}", flush=True)
time.sleep(seconds)
sys.exit(code or 0)
"""


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "python"
  path.write_text(FAKE_PYTHON.format(python=sys.executable))
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def launch(fake_python, behaviour, num_ps=1, num_workers=2, evaluator=False, timeout=20):
  cluster = local_cluster.make_cluster(num_ps, num_workers)
  output = io.StringIO()
  env = dict(os.environ, BEHAVIOUR=json.dumps(behaviour))
  with local_cluster.LocalCluster(cluster, config_lib.TrainConfig(max_steps=5),
                                  evaluator=evaluator, env=env, output=output,
                                  python=fake_python) as local:
    code = local.wait(timeout, poll_s=0.05)
  assert all(t.process.poll() is not None for t in local.tasks), "a task outlived the launcher"
  return code, output.getvalue()


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_launcher(*args):
  return subprocess.run([sys.executable, "-m", "train.local_cluster", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,message", [
    (["--num_workers=abc"], "flag --num_workers=abc: invalid literal for int()"),
    (["--nonexistent_flag"], "Unknown command line flag 'nonexistent_flag'"),
    (["--max_steps=5"],
     "Unknown command line flag 'max_steps'\n--max_steps is train.task's: give it after `--`"),
    (["--num_workers=0"], "num_workers must be at least 1, got 0"),
    (["--", "--batch_size=abc"], "flag --batch_size=abc: invalid literal for int()"),
    (["--", "--nonexistent_flag"], "Unknown command line flag 'nonexistent_flag'"),
    (["--", "--max_steps=5", "stray"], "unexpected arguments ['stray']"),
])
def test_a_bad_flag_of_the_launcher_or_the_tasks_exits_2_before_any_task(args, message):
  run = run_launcher(*args)
  assert run.returncode == 2, run.stderr
  assert f"error: {message}" in run.stderr and "Traceback" not in run.stderr
  assert "Local cluster:" not in run.stderr  # Nothing was started.


def test_cluster_layout_with_and_without_ps():
  ps = local_cluster.make_cluster(num_ps=2, num_workers=3)
  assert [len(ps[k]) for k in ("chief", "worker", "ps")] == [1, 3, 2]
  addresses = [a for v in ps.values() for a in v]
  assert len(set(addresses)) == 6 and all(a.startswith("127.0.0.1:") for a in addresses)
  assert set(local_cluster.make_cluster(num_ps=0, num_workers=2)) == {"worker"}
  assert set(local_cluster.make_cluster(1, 1, legacy_master=True)) == {"master", "worker", "ps"}
  with pytest.raises(ValueError, match="num_workers must be at least 1"):
    local_cluster.make_cluster(1, 0)


def test_each_task_gets_its_own_tf_config():
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=2)
  local = local_cluster.LocalCluster(cluster, evaluator=True)
  parsed = {t.name: cluster_lib.parse_tf_config(t.tf_config) for t in local.tasks}
  assert sorted(parsed) == ["chief", "evaluator", "ps:0", "worker:0", "worker:1"]
  assert parsed["worker:1"].task_index == 1 and parsed["evaluator"].task_type == "evaluator"
  assert [t.name for t in local.tasks if t.is_chief] == ["chief"]


def test_chief_success_ends_the_servers_and_prefixes_lines(fake_python):
  code, output = launch(fake_python, {"chief": [0, 0.5]})
  assert code == 0
  for name in ("chief", "ps:0", "worker:0", "worker:1"):
    assert f"[{name}] {name} args ['-m', 'train.task', '--max_steps=5']" in output


def test_with_profilers_each_task_serves_its_profiler_on_a_port_of_its_own(fake_python):
  cluster = local_cluster.make_cluster(num_ps=1, num_workers=2)
  output = io.StringIO()
  env = dict(os.environ, BEHAVIOUR=json.dumps({"chief": [0, 0.5]}))
  with local_cluster.LocalCluster(cluster, config_lib.TrainConfig(max_steps=5),
                                  profilers=True, env=env, output=output,
                                  python=fake_python) as local:
    assert local.wait(20, poll_s=0.05) == 0
  ports = {t.name: t.profiler_port for t in local.tasks}
  assert len(set(ports.values())) == 4 and all(ports.values())
  for name, port in ports.items():
    assert (f"[{name}] {name} args ['-m', 'train.task', '--max_steps=5', "
            f"'--profiler_port={port}']") in output.getvalue()


def test_a_failed_task_stops_the_cluster_with_its_code(fake_python):
  code, _ = launch(fake_python, {"chief": [0, 30], "worker:1": [7, 0.2]})
  assert code == 7


def test_the_chief_failing_is_the_launchers_exit_code(fake_python):
  assert launch(fake_python, {"chief": [2, 0.2]})[0] == 2


def test_workers_finishing_cleanly_is_not_a_failure(fake_python):
  # MultiWorkerMirrored workers end on their own when training ends.
  code, _ = launch(fake_python, {"worker:0": [0, 1.0], "worker:1": [0, 0.2]}, num_ps=0)
  assert code == 0


def test_the_evaluator_is_waited_for_after_the_chief(fake_python):
  code, _ = launch(fake_python, {"chief": [0, 0.2], "evaluator": [5, 1.0]}, evaluator=True)
  assert code == 5


def test_timeout_ends_everything(fake_python):
  code, _ = launch(fake_python, {}, timeout=1)
  assert code == local_cluster.EXIT_TIMEOUT


def test_a_task_dies_with_its_launcher(tmp_path):
  """A task started by a launcher that is then SIGKILLed does not outlive it."""
  script = (
      "import os, subprocess, sys, time\n"
      "from common import processes\n"
      "env = dict(os.environ, **{processes.PARENT_PID_ENV: str(os.getpid())})\n"
      "child = subprocess.Popen([sys.executable, '-c', 'from common import processes; "
      "processes.die_with_parent(); import time; time.sleep(60)'], env=env)\n"
      "print(child.pid, flush=True)\n"
      "time.sleep(60)\n")
  launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, cwd=os.path.dirname(os.path.dirname(
                                  os.path.dirname(os.path.abspath(__file__)))))
  try:
    child_pid = int(launcher.stdout.readline())
    time.sleep(1.0)  # Let the child reach its prctl call.
    launcher.kill()
    launcher.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child_pid):
      time.sleep(0.1)
    assert not _alive(child_pid), "the task outlived its launcher"
  finally:
    if launcher.poll() is None:
      launcher.kill()
    if _alive(child_pid):
      os.kill(child_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split()[2] != "Z"
  except FileNotFoundError:
    return False
