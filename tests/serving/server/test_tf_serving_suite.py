"""TensorFlow Serving's own model-server tests, run against the embedded server (slow)."""

import tempfile

import pytest

from tests.serving.server import tf_serving_suite

SOURCE = tf_serving_suite.find_source()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(
    SOURCE is None,
    reason=f"no tensorflow/serving source: set ${tf_serving_suite.SOURCE_ENV} to a checkout of "
           f"the tensorflow/serving repository or its git directory (default "
           f"{tf_serving_suite.DEFAULT_SOURCE}, absent here)")
def test_tf_serving_model_server_suite_passes():
  with tempfile.TemporaryDirectory(prefix="tf_serving_suite_") as work_dir:
    result = tf_serving_suite.run_suite(SOURCE, work_dir, timeout_s=900)
    report = tf_serving_suite.format_result(result)
    print(report)
    # Every test of the suite is run, except those named out of scope, each with its reason.
    names = {o.name for o in result.outcomes} | set(result.out_of_scope)
    assert len(names) == len(result.outcomes) + len(result.out_of_scope)
    assert len(result.outcomes) >= 26, report
    assert not result.not_passed, report
