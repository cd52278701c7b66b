"""Tests for train/profile.py: self times, steps and categories of a profiler trace."""

import collections

import pytest

from train import profile


def test_op_events_are_grouped_by_their_type_and_others_by_their_name():
  assert profile.op_type("cnn/conv1/Conv2D:_FusedConv2D") == "_FusedConv2D"
  # oneDNN's kernels under TensorFlow's names.
  assert profile.op_type("cnn/conv1/Conv2D:_MklNativeFusedConv2D") == "_FusedConv2D"
  assert profile.op_type("grad/MatMul:_MklMatMul") == "MatMul"
  assert profile.op_type(
      "grad/Conv2DBackpropFilter:_MklNativeConv2DBackpropFilterWithBias") == \
      "Conv2DBackpropFilter"
  assert profile.op_type("pool/MaxPoolGrad:_MklNativeMaxPoolGrad") == "MaxPoolGrad"
  assert profile.op_type("ExecutorState::Process") == "ExecutorState::Process"
  assert profile.op_type("RunGraph #123") == "RunGraph ##"
  assert profile.op_type("/job:ps/replica:0/task:0/device:CPU:0") == (
      "/job:ps/replica:#/task:#/device:CPU:#")


def test_self_time_is_duration_less_the_children_nested_in_it():
  events = [  # (offset, duration, name) on one thread, out of order.
      (10, 5, "g/Conv2DBackpropFilter:Conv2DBackpropFilter"),
      (0, 100, "FunctionRun"),
      (20, 30, "u/ResourceApplyAdam:ResourceApplyAdam"),
      (25, 10, "ParallelFor"),
      (60, 4, "g/Conv2DBackpropFilter:Conv2DBackpropFilter"),
  ]
  self_ps, count = profile.self_times(events)
  assert self_ps == {"FunctionRun": 100 - 5 - 30 - 4, "Conv2DBackpropFilter": 9,
                     "ResourceApplyAdam": 20, "ParallelFor": 10}
  assert count["Conv2DBackpropFilter"] == 2 and count["FunctionRun"] == 1


def test_steps_come_from_filter_gradients_on_a_trainer_else_from_adam_kernels():
  trainer = collections.Counter(Conv2DBackpropFilter=12, ResourceApplyAdam=0)
  ps = collections.Counter(ResourceApplyAdam=40)
  assert profile.steps_in(trainer, num_conv_layers=2, num_variables=8) == 6
  assert profile.steps_in(ps, num_conv_layers=2, num_variables=8) == 5
  assert profile.steps_in(collections.Counter(), num_conv_layers=2, num_variables=8) == 0


@pytest.mark.parametrize("kind,category", [
    ("_FusedConv2D", "forward"), ("MatMul", "backward"),
    ("ResourceApplyAdam", "optimizer update"), ("_Recv", "tensor send/recv (RPC)"),
    ("CollectiveReduceV2", "collective all-reduce"), ("IteratorGetNext", "input pipeline"),
    ("ExecutorState::Process", profile.RUNTIME),
    ("Iterator::Root::Prefetch::ParallelMapV#", "input pipeline"),
])
def test_categories(kind, category):
  assert profile.category_of(kind) == category


def test_a_callers_wait_for_its_function_is_left_out():
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  space = xplane_pb2.XSpace()
  plane = space.planes.add(name="/host:CPU")
  names = ["KernelAndDeviceFunc::Run", "grad/conv1:Conv2DBackpropFilter",
           "Iterator::Root::Prefetch"]
  for i, name in enumerate(names):
    plane.event_metadata[i].name = name
  line = plane.lines.add()
  # (offset, duration) in ms: the call spans 100, its thread runs two ops in it.
  for metadata_id, (offset, duration) in enumerate([(0, 100), (10, 30), (50, 10)]):
    line.events.add(metadata_id=metadata_id, offset_ps=offset * 10**9,
                    duration_ps=duration * 10**9)
  breakdown = profile.breakdown_of_space(space, num_conv_layers=1, num_variables=8)
  assert breakdown.steps == 1
  assert breakdown.ms_by_category == {"backward": 30.0, "input pipeline": 10.0}


def test_every_op_type_has_one_category():
  kinds = [kind for _, kinds in profile.CATEGORIES for kind in kinds]
  assert len(kinds) == len(set(kinds))


def test_table_gives_ms_per_step_and_shares_and_marks_a_trace_without_steps():
  rows = [("one process", profile.Breakdown(4, {"forward": 40.0, "backward": 120.0,
                                                profile.RUNTIME: 40.0})),
          ("chief", profile.Breakdown(0, {profile.RUNTIME: 3.0}))]
  lines = profile.table(rows)
  assert lines[0].startswith("| task | steps traced | thread ms/step | forward | backward |")
  assert lines[2].startswith("| one process | 4 | 50.0 | 10.0 (20%) | 30.0 (60%) | 0.0 (0%)")
  assert lines[2].endswith("| 10.0 (20%) |")
  assert lines[3].startswith("| chief | 0 | - | - |")
