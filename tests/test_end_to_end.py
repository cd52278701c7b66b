"""End to end on the real vendored MNIST: train, export, then a fresh process loads it."""

import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_on_real_mnist_then_saved_model_cli_serves_the_contract(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "train.task", "--max_steps=40", "--checkpoint=20",
       f"--log_dir={tmp_path / 'logs'}", f"--model_dir={tmp_path / 'model'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Loaded MNIST from" in run.stderr and "60000 train and 10000 test" in run.stderr
  accuracy = float(re.search(r"test accuracy ([\d.]+) at step 40", run.stdout).group(1))
  assert accuracy > 0.8  # 40 steps of 100 real digits already learn most of them.
  export_dir = tmp_path / "model" / "1"

  # saved_model_cli, TensorFlow's own SavedModel inspector, in fresh processes.
  cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
  show = subprocess.run([cli, "show", "--dir", str(export_dir), "--tag_set", "serve",
                         "--signature_def", "serving_default"],
                        capture_output=True, text=True, timeout=300)
  assert show.returncode == 0, show.stderr[-2000:]
  text = re.sub(r"\s+", " ", show.stdout)
  for expected in ("inputs['image'] tensor_info: dtype: DT_FLOAT shape: (-1, 784)",
                   "inputs['key'] tensor_info: dtype: DT_INT64 shape: (-1)",
                   "outputs['key'] tensor_info: dtype: DT_INT64 shape: (-1)",
                   "outputs['scores'] tensor_info: dtype: DT_FLOAT shape: (-1, 10)",
                   "Method name is: tensorflow/serving/predict"):
    assert expected in text, text
  assert text.count("tensor_info") == 4

  images = tmp_path / "images.npy"
  subprocess.run([sys.executable, "-c", "import numpy as np, sys; "
                  "np.save(sys.argv[1], np.zeros((2, 784), np.float32))", str(images)],
                 check=True, timeout=60)
  # `saved_model_cli run` loads with the TF1 session-based loader, as TF Serving does.
  result = subprocess.run([cli, "run", "--dir", str(export_dir), "--tag_set", "serve",
                           "--signature_def", "serving_default", "--input_exprs", "key=[7,3]",
                           "--inputs", f"image={images}"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert re.search(r"Result for output key key:\s*\[7 3\]", result.stdout), result.stdout
