"""The set-up commands CI runs: `.ci/run` calls `make test`; the package metadata."""

import re
import shlex
import subprocess
import tomllib

from tests.deploy import platforms

PYPROJECT = tomllib.loads((platforms.REPO / "pyproject.toml").read_text())


def make_test_pytest_argv() -> list[str]:
  """The pytest command line `make test` runs (printed by make, not run)."""
  result = subprocess.run(["make", "-n", "test"], cwd=platforms.REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  (line,) = [l for l in result.stdout.splitlines() if re.search(r"-m pytest\b", l)]
  return shlex.split(line)


def test_ci_runs_make_test():
  lines = (platforms.REPO / ".ci" / "run").read_text().splitlines()
  commands = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]
  assert commands[-1] == "make test"


def test_make_test_names_each_test_as_it_starts_and_lists_the_slowest():
  argv = make_test_pytest_argv()
  # Verbose mode writes a test's id before running it, so a long multi-process
  # test is named on screen while it runs; quiet mode shows only dots.
  verbosity = sum(a.count("v") for a in argv if re.fullmatch(r"-v+", a))
  verbosity += argv.count("--verbose")
  assert verbosity >= 1 and "-q" not in argv and "--quiet" not in argv, argv
  durations = [int(a.split("=", 1)[1]) for a in argv if a.startswith("--durations=")]
  assert durations and durations[0] > 0, f"no --durations=N in {argv}"


def test_license_is_an_spdx_expression():
  """A `license = {text = ...}` table makes setuptools print a deprecation box."""
  assert PYPROJECT["project"]["license"] == "Apache-2.0"
  # setuptools reads an SPDX `license` string from release 77 on.
  (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"]
                   if r.startswith("setuptools")]
  minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
  assert minimum and int(minimum.group(1)) >= 77, setuptools
