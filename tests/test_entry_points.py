"""Every entry point: importing it defines no flag and loads nothing quietly; its
define_flags() defines its flags on the FlagValues it is given; its --help shows its
usage block as written; a mistake in its flags exits 2."""

import ast
import importlib
import json
import os
import subprocess
import sys

from absl import flags
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("train.task", "train.local_cluster", "train.benchmark", "train.export",
                "train.migrate", "serving.client", "serving.benchmark", "serving.load_test", "serving.server.main",
                "demo")
# Those whose flags settings.parse_flags parses: a mistake exits 2, --help exits 0.
PARSED_BY_SETTINGS = ("train.task", "train.local_cluster", "train.benchmark",
                      pytest.param("train.export", marks=pytest.mark.slow),  # Loads
                      pytest.param("train.migrate", marks=pytest.mark.slow),
                      pytest.param("demo", marks=pytest.mark.slow),  # TensorFlow first.
                      *(pytest.param(name, marks=pytest.mark.slow) for name in (
                          "serving.client", "serving.benchmark", "serving.load_test",
                          "serving.server")))

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


def docstring_as_written(name: str) -> str:
  """The module's docstring as its source file spells it, between the quotes."""
  path = os.path.join(REPO, *name.split(".")) + ".py"
  with open(path) as f:
    source = f.read()
  written = ast.get_source_segment(source, ast.parse(source).body[0])
  return written.lstrip("rR")[3:-3]


# The modules run as __main__, whose docstring absl's --help prints as the usage
# (`python -m serving.server` runs serving/server/__main__.py).
USAGE_MODULES = tuple("serving.server.__main__" if name == "serving.server.main" else name
                      for name in ENTRY_POINTS)


@pytest.mark.parametrize("name", USAGE_MODULES)
def test_the_docstring_is_the_usage_block_as_written(name):
  """absl's --help prints the module docstring: in a plain string a backslash that
  continues a command's line would join the lines and be lost, hence raw docstrings."""
  assert importlib.import_module(name).__doc__ == docstring_as_written(name)


def run_entry_point(name: str, *args):
  command = [sys.executable, *(["demo.py"] if name == "demo" else ["-m", name]), *args]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["train.task", "train.local_cluster"])
def test_help_shows_the_usage_block_as_written_and_exits_0(name):
  run = run_entry_point(name, "--help")
  assert run.returncode == 0, run.stderr
  usage = docstring_as_written(name)
  assert "\\\n" in usage  # A command continued on the next line, to be shown as such.
  assert run.stdout.startswith(usage)


@pytest.mark.parametrize("name", PARSED_BY_SETTINGS)
def test_an_unknown_flag_exits_2_naming_it(name):
  run = run_entry_point(name, "--nonexistent_flag")
  assert run.returncode == 2, run.stderr[-2000:]
  assert "error: Unknown command line flag 'nonexistent_flag'" in run.stderr
  assert "Traceback" not in run.stderr
