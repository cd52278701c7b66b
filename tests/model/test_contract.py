"""Tests for model/contract.py: requests built from the contract."""

import numpy as np
import pytest
import tensorflow as tf

from model import contract


def test_predict_request_carries_keys_and_images():
  images = np.random.default_rng(0).random((2, 784), np.float32)
  request = contract.make_predict_request([7, 3], images, "mnist", version=4)
  assert request.model_spec.name == "mnist"
  assert request.model_spec.signature_name == "serving_default"
  assert request.model_spec.version.value == 4
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["key"]), [7, 3])
  assert request.inputs["key"].dtype == tf.int64.as_datatype_enum
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["image"]), images)


def test_predict_request_accepts_a_version_label_and_an_empty_batch():
  request = contract.make_predict_request([], np.zeros((0, 784)), version_label="stable")
  assert request.model_spec.version_label == "stable"
  assert tf.make_ndarray(request.inputs["image"]).shape == (0, 784)


def test_predict_request_rejects_mismatched_keys():
  with pytest.raises(ValueError, match="3 keys for 2 images"):
    contract.make_predict_request([1, 2, 3], np.zeros((2, 784)))


def test_contract_specs_match_the_seed():
  assert [(s.name, s.dtype, s.shape) for s in contract.INPUTS] == [
      ("key", tf.int64, (None,)), ("image", tf.float32, (None, 784))]
  assert [(s.name, s.dtype, s.shape) for s in contract.OUTPUTS] == [
      ("key", tf.int64, (None,)), ("scores", tf.float32, (None, 10))]


def test_list_versions_skips_staging_and_files(tmp_path):
  for name in ("1", "12", ".staging-13-abc", "tmp"):
    (tmp_path / name).mkdir()
  (tmp_path / "2").write_text("a file, not a version")
  assert contract.list_versions(str(tmp_path)) == [1, 12]
