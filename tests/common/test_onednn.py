"""Tests for common/onednn.py: which CPU kernels TensorFlow loads with, and why."""

import subprocess
import sys
import textwrap

import pytest

from common import onednn

# In a child, which has not loaded TensorFlow: set_onednn(argv[1] == "on"), then
# load TensorFlow and print whether it runs oneDNN's kernels.
_CHILD = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from common import onednn
    assert onednn.set_onednn(sys.argv[1] == "on")
    from tensorflow.python.util import _pywrap_util_port
    print(_pywrap_util_port.IsMklEnabled())
""")


@pytest.mark.parametrize("choice, expected", [("on", "True"), ("off", "False")])
def test_tensorflow_loads_with_the_kernels_chosen(choice, expected):
  env = {"PATH": "/usr/bin:/bin"}
  run = subprocess.run([sys.executable, "-c", _CHILD, choice], capture_output=True,
                       text=True, timeout=120, env=env)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.strip() == expected


def test_set_onednn_writes_the_variable_and_says_whether_it_is_in_time():
  environ = {}
  assert onednn.set_onednn(True, environ) == ("tensorflow" not in sys.modules)
  assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}
  onednn.set_onednn(False, environ)
  assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}


@pytest.mark.parametrize("flags_line, expected", [
    ("flags\t\t: fpu sse2 avx2 fma\n", False),          # AVX2 only: Eigen's.
    ("flags\t\t: fpu avx2 avx512f avx512_vnni\n", True),
    ("flags\t\t: fpu avx2 avx_vnni\n", True),
    ("flags\t\t: fpu avx2 amx_tile amx_bf16\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd\n", None),  # No x86 flags line.
])
def test_tensorflow_default_reads_the_cpu_flags(tmp_path, flags_line, expected):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\n" + flags_line)
  assert onednn.tensorflow_default(str(cpuinfo)) is expected


def test_tensorflow_default_is_unknown_without_cpuinfo(tmp_path):
  assert onednn.tensorflow_default(str(tmp_path / "absent")) is None


def test_describe_names_the_variable_or_the_cpus_default():
  assert onednn.describe({"TF_ENABLE_ONEDNN_OPTS": "1"}) == "TF_ENABLE_ONEDNN_OPTS=1"
  assert onednn.describe({}).startswith(
      "TF_ENABLE_ONEDNN_OPTS unset")
