"""The main job (demo.py) end to end, shrunk: a short local cluster run, serve, predict."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
