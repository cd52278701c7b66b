"""The main job (demo.py): its workdir; and end to end, shrunk: a short local cluster run,
serve, predict."""

import os
import re
import subprocess
import sys

import pytest

import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_workdir_of_an_earlier_demo_is_emptied(tmp_path):
  workdir = tmp_path / "demo"
  (workdir / "logs").mkdir(parents=True)
  (workdir / "logs" / "checkpoint").write_text("")
  (workdir / "result.json").write_text("{}")
  demo.prepare_workdir(str(workdir))
  assert os.listdir(workdir) == []


def test_a_workdir_holding_anything_else_is_left_alone(tmp_path):
  (tmp_path / "logs").mkdir()
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=rf"--workdir={tmp_path} holds files the demo did "
                     r"not write \(notes.txt\)"):
    demo.prepare_workdir(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["logs", "notes.txt"]


def test_a_workdir_that_cannot_be_written_is_named(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=f"cannot write --workdir={tmp_path}/file/demo: "
                     f"{tmp_path}/file is not a directory"):
    demo.prepare_workdir(str(tmp_path / "file" / "demo"))


@pytest.mark.slow
def test_demo_serves_the_export_with_the_in_process_accuracy(tmp_path):
  run = subprocess.run(
      [sys.executable, "demo.py", f"--workdir={tmp_path / 'demo'}", "--num_workers=1",
       "--max_steps=60", "--checkpoint=30", "--timeout=400"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  served = re.search(r"test accuracy over gRPC \(10000 images, version \[1\]\): ([\d.]+)",
                     run.stdout)
  local = re.search(r"test accuracy of the same export in process: ([\d.]+)", run.stdout)
  assert served and local, run.stdout
  assert served.group(1) == local.group(1)
  assert float(served.group(1)) > 0.8
  assert "[ps:0]" in run.stdout and "[chief]" in run.stdout  # The PSS cluster trained.
