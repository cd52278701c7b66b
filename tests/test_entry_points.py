"""Every entry point: importing it defines no flag and loads nothing quietly; its
define_flags() defines its flags on the FlagValues it is given."""

import importlib
import json
import os
import subprocess
import sys

from absl import flags
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("train.task", "train.local_cluster", "train.benchmark", "train.export",
                "serving.client", "serving.benchmark", "serving.load_test", "serving.server.main",
                "demo")

# Imports every entry point with TensorFlow's quiet start-up refused (it belongs in a
# program's main), then lists which of their flags absl's FLAGS holds before and
# after train.task's define_flags().
CHECK = """
import importlib, json, sys
from absl import flags
from common import runtime

def refuse():
  raise AssertionError("runtime.import_tensorflow() ran at import")

runtime.import_tensorflow = refuse
modules = [importlib.import_module(name) for name in sys.argv[1:] + ["serving.server"]]
ours = set()
for module in modules:
  if hasattr(module, "define_flags"):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    ours.update(flag_values)
FLAGS = flags.FLAGS
before = sorted(n for n in ours if n in FLAGS and n != "log_dir")
log_dir_before = FLAGS["log_dir"].default
importlib.import_module("train.task").define_flags()
print(json.dumps({"before": before, "log_dir_before": log_dir_before,
                  "log_dir_after": FLAGS["log_dir"].default,
                  "batch_size_after": FLAGS["batch_size"].default}))
"""


def test_importing_entry_points_defines_none_of_their_flags():
  run = subprocess.run([sys.executable, "-c", CHECK, *ENTRY_POINTS], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  found = json.loads(run.stdout.strip().splitlines()[-1])
  assert found["before"] == []
  # absl.logging's own --log_dir (log files, default "") gives way to the seed's.
  assert (found["log_dir_before"], found["log_dir_after"]) == ("", "/tmp/logs")
  assert found["batch_size_after"] == 100


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_define_flags_on_a_flag_values_of_its_own(name):
  flag_values = flags.FlagValues()
  importlib.import_module(name).define_flags(flag_values)
  assert len(flag_values) > 0
  # Nothing went to absl's FLAGS (where only absl.logging's --log_dir is expected).
  assert set(flag_values) & set(flags.FLAGS) <= {"log_dir"}
