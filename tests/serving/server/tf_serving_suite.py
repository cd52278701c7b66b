"""Runs TensorFlow Serving's own model-server tests against `python -m serving.server`.

Typical usage:

  python -m tests.serving.server.tf_serving_suite --tfs_source=/path/to/tensorflow/serving

--tfs_source (or the TFS_SOURCE environment variable) is a checkout of the
tensorflow/serving repository or its bare git directory; the default is the
snapshot at DEFAULT_SOURCE when it exists. Nothing of that repository is kept
here: at run time its tensorflow_model_server_test.py, the test base and the test
data those tests read are extracted into a temporary TEST_SRCDIR, next to an
executable `tensorflow_model_server` that runs `python -m serving.server "$@"`
with this interpreter. The suite then runs as TF Serving runs it, one test
process that starts (and caches) the servers it needs, and this runner reports
each test's outcome. Tests of features the embedded server does not have are
left out, each with its reason (OUT_OF_SCOPE).
"""

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ElementTree

from absl import flags

DEFAULT_SOURCE = "/work/.mirror/tensorflow+serving/repo"
SOURCE_ENV = "TFS_SOURCE"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
TEST_FILE = "tensorflow_serving/model_servers/tensorflow_model_server_test.py"
TEST_CLASS = "TensorflowModelServerTest"
_TESTDATA = "tensorflow_serving/servables/tensorflow/testdata/"
# What the applicable tests read, as in the py_test's `data` of model_servers/BUILD.
NEEDED_PATHS = (
    TEST_FILE,
    "tensorflow_serving/model_servers/test_util/tensorflow_model_server_test_base.py",
    *(_TESTDATA + name for name in (
        "bad_half_plus_two", "bad_model_config.txt", "batching_config.txt",
        "good_model_config.txt", "half_plus_two_model_metadata.json", "monitoring_config.txt",
        "saved_model_half_plus_three", "saved_model_half_plus_two_cpu",
        "saved_model_half_plus_two_tf2_cpu")),
)
_TFLITE = ("a TensorFlow Lite model (--prefer_tflite_model): the embedded server runs "
           "SavedModels only, and says so naming the flag")
OUT_OF_SCOPE = {
    "testPredictOnTfLite": _TFLITE,
    "testPredictWithSignatureDefOnTfLite": _TFLITE,
    "test_profiler_service_with_valid_trace_request": (
        "the TensorFlow profiler service (--enable_profiler) is tensorflow_model_server's own"),
    "test_tf_text": ("a model with tensorflow-text ops: that package is not installed here "
                     "(and the snapshot lacks the model's saved_model.pb)"),
}
# The tests run in unittest's own (alphabetical) order, which the suite relies on:
# its MirroredStrategy test must set up virtual CPUs before another test starts
# TensorFlow in the test process. One exception: the suite binds every server to
# one unix socket path, and the last server started owns it. testPredictUDS
# expects a server of model 'default' there; in TF Serving's order a TFLite test
# started one just before it. With those left out, it runs first, so the server
# it starts is the socket's owner.
FIRST = ("testPredictUDS",)


@dataclasses.dataclass(frozen=True)
class Outcome:
  name: str
  status: str  # passed, failed, error, skipped
  message: str = ""


@dataclasses.dataclass(frozen=True)
class SuiteResult:
  outcomes: tuple
  out_of_scope: dict
  seconds: float
  log_path: str

  @property
  def passed(self) -> list:
    return [o.name for o in self.outcomes if o.status == "passed"]

  @property
  def not_passed(self) -> list:
    return [o for o in self.outcomes if o.status != "passed"]


def find_source(flag_value: str | None = None) -> str | None:
  """The tensorflow/serving checkout or git directory to use, or None if there is none."""
  source = flag_value or os.environ.get(SOURCE_ENV) or (
      DEFAULT_SOURCE if os.path.exists(DEFAULT_SOURCE) else None)
  if source and not os.path.exists(source):
    raise FileNotFoundError(f"tensorflow/serving source {source} does not exist; expected a "
                            f"checkout or its git directory (--tfs_source or ${SOURCE_ENV})")
  return source


def extract(source: str, destination: str) -> None:
  """Copies NEEDED_PATHS from a checkout, or `git archive`s them from a git directory."""
  if os.path.exists(os.path.join(source, TEST_FILE)):
    for path in NEEDED_PATHS:
      src, dst = os.path.join(source, path), os.path.join(destination, path)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
    return
  # git archive also complains about blobs missing from a partial snapshot that
  # it was not asked for; only its exit status and the files count.
  archive = subprocess.run(["git", f"--git-dir={source}", "archive", "HEAD", "--",
                            *NEEDED_PATHS], capture_output=True, timeout=120)
  if archive.returncode:
    raise RuntimeError(f"git archive of {source} failed: {archive.stderr.decode()[-2000:]}")
  subprocess.run(["tar", "-x", "-C", destination], input=archive.stdout, check=True,
                 timeout=120)
  missing = [p for p in NEEDED_PATHS if not os.path.exists(os.path.join(destination, p))]
  if missing:
    raise RuntimeError(f"{source} lacks {missing}; expected a tensorflow/serving tree")


def write_shim(path: str) -> None:
  """`tensorflow_model_server` that runs this repository's server with this interpreter."""
  with open(path, "w") as f:
    f.write(textwrap.dedent(f"""\
        #!/bin/sh
        # Stands in for TF Serving's binary in its own tests: the embedded server.
        PYTHONPATH="{REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" \\
          exec "{sys.executable}" -m serving.server --use_real_server=never "$@"
        """))
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def write_bootstrap(path: str, tensorflow_serving_dir: str, test_file: str) -> None:
  """A script that makes the extracted test modules importable next to the installed
  tensorflow_serving package (which only has apis/ and config/), then runs the suite."""
  with open(path, "w") as f:
    f.write(textwrap.dedent(f"""\
        import runpy
        import sys
        import tensorflow_serving
        tensorflow_serving.__path__.append({tensorflow_serving_dir!r})
        sys.argv[0] = {test_file!r}
        runpy.run_path({test_file!r}, run_name="__main__")
        """))


def list_tests(test_file: str) -> list:
  """The test methods of the suite's class, read from its source without importing it."""
  import ast
  with open(test_file) as f:
    tree = ast.parse(f.read())
  suite = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == TEST_CLASS)
  return [n.name for n in suite.body
          if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]


def read_outcomes(xml_path: str) -> list:
  outcomes = []
  for case in ElementTree.parse(xml_path).iter("testcase"):
    status, message = "passed", ""
    for kind in ("failure", "error", "skipped"):
      element = case.find(kind)
      if element is not None:
        status = "failed" if kind == "failure" else kind
        message = (element.get("message") or "") + "\n" + (element.text or "")
        break
    if case.get("result") == "suppressed":
      status = "skipped"
    outcomes.append(Outcome(case.get("name"), status, message.strip()[-3000:]))
  return outcomes


def run_suite(source: str, work_dir: str, timeout_s: float = 900) -> SuiteResult:
  """Extracts the suite from `source` into work_dir, runs it, returns each test's outcome."""
  src_dir = os.path.join(work_dir, "srcdir")
  tree = os.path.join(src_dir, "tf_serving")
  os.makedirs(tree)
  extract(source, tree)
  write_shim(os.path.join(tree, "tensorflow_serving/model_servers/tensorflow_model_server"))
  test_file = os.path.join(tree, TEST_FILE)
  bootstrap = os.path.join(work_dir, "run_suite.py")
  write_bootstrap(bootstrap, os.path.join(tree, "tensorflow_serving"), test_file)
  names = list_tests(test_file)
  applicable = [n for n in names if n not in OUT_OF_SCOPE]
  ordered = [n for n in FIRST if n in applicable] + sorted(n for n in applicable
                                                          if n not in FIRST)
  xml_path = os.path.join(work_dir, "results.xml")
  log_path = os.path.join(work_dir, "suite.log")
  test_tmpdir = os.path.join(work_dir, "tmp")
  os.makedirs(test_tmpdir)
  env = {**os.environ, "TEST_SRCDIR": src_dir, "TEST_TMPDIR": test_tmpdir,
         "XML_OUTPUT_FILE": xml_path,
         # The suite's Keras tests build models with tf.keras: Keras 2 (tf_keras), whose
         # SavedModels TF Serving loads, rather than TF 2.21's Keras 3.
         "TF_USE_LEGACY_KERAS": "1",
         "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  start = time.monotonic()
  with open(log_path, "w") as log:
    # A session of its own: the suite's servers are ended with it, whatever happens.
    process = subprocess.Popen(
        [sys.executable, bootstrap, *(f"{TEST_CLASS}.{n}" for n in ordered)],
        cwd=work_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
      process.wait(timeout_s)
    except subprocess.TimeoutExpired:
      pass
    finally:
      _end_group(process)
  seconds = time.monotonic() - start
  outcomes = read_outcomes(xml_path) if os.path.exists(xml_path) else []
  seen = {o.name for o in outcomes}
  outcomes += [Outcome(n, "error", f"did not run (suite exited {process.returncode} after "
                       f"{seconds:.0f} s; see {log_path})") for n in ordered if n not in seen]
  return SuiteResult(tuple(outcomes), {n: OUT_OF_SCOPE[n] for n in names if n in OUT_OF_SCOPE},
                     seconds, log_path)


def _end_group(process: subprocess.Popen) -> None:
  """Ends the suite's process group: the test process and every server it started."""
  for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
    try:
      os.killpg(process.pid, sig)
    except ProcessLookupError:
      return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
      try:
        os.killpg(process.pid, 0)
      except ProcessLookupError:
        process.poll()
        return
      process.poll()
      time.sleep(0.2)


def format_result(result: SuiteResult) -> str:
  lines = [f"{len(result.passed)} of {len(result.outcomes)} applicable tests passed in "
           f"{result.seconds:.0f} s (log: {result.log_path})"]
  for outcome in result.not_passed:
    lines.append(f"  {outcome.status.upper()} {outcome.name}: {outcome.message[-800:]}")
  lines.append(f"{len(result.out_of_scope)} out of scope:")
  lines += [f"  {name}: {reason}" for name, reason in result.out_of_scope.items()]
  return "\n".join(lines)


def main(argv):
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only flags")
  f = FLAGS
  source = find_source(f.tfs_source)
  if source is None:
    raise app.UsageError(f"no tensorflow/serving source: pass --tfs_source or set "
                         f"${SOURCE_ENV} (a checkout or its git directory)")
  work_dir = tempfile.mkdtemp(prefix="tf_serving_suite_")
  try:
    result = run_suite(source, work_dir, f.timeout_s)
    print(format_result(result))
    if f.keep_work_dir:
      print(f"work dir kept: {work_dir}")
  finally:
    if not f.keep_work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  return 0 if result.outcomes and not result.not_passed else 1


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  f = dict(flag_values=flag_values)
  flags.DEFINE_string("tfs_source", None, f"A tensorflow/serving checkout or git directory; "
                      f"default: ${SOURCE_ENV}, else {DEFAULT_SOURCE} if it exists.", **f)
  flags.DEFINE_float("timeout_s", 900, "Time the whole suite may take.", **f)
  flags.DEFINE_bool("keep_work_dir", False, "Keep the extracted suite and its log.", **f)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
