"""Where a task's CPU goes per training step, from a TensorFlow profiler trace.

A trace (`tf.profiler.experimental.client.trace` against a task started with
--profiler_port) is an XSpace protobuf, `*.xplane.pb`: per host thread, the events
TensorFlow recorded, nested by time. An event's self time is its duration minus
its children's; op events are named `name:Type`. The self times are summed per
category of op type (forward, backward, optimizer update, ...), which is what the
per-step breakdown of BUILD.md's performance section prints. An event lasts while
its thread waits for a core too: where tasks share cores, a thread's busy time is
more than the CPU it gets (/proc's CPU time is the measure of that).

oneDNN's kernels (common/onednn.py) rename the ops they replace, `_MklMatMul` for
MatMul, `_MklNativeFusedConv2D` for _FusedConv2D, and fuse the bias gradient into
`_MklNativeConv2DBackpropFilterWithBias`: `op_type` gives them TensorFlow's names,
so that both sets of kernels count in the same categories.

Steps are counted from the trace itself: every trainer runs each convolution's
filter gradient once per step, and whoever applies the updates (a parameter
server, or every trainer without one) runs one Adam kernel per variable.
"""

import collections
import dataclasses
import functools
import glob
import os
import re

# Op types by what they do for the CNN's step, in the order they are printed.
CATEGORIES = (
    ("forward", {"_FusedConv2D", "Conv2D", "_FusedMatMul", "MaxPool", "Relu",
                 "BiasAdd", "Softmax", "SparseSoftmaxCrossEntropyWithLogits",
                 "RandomUniform", "GreaterEqual", "SelectV2", "Reshape", "Log", "Sum",
                 "Mean"}),
    # The forward pass fuses each matmul with its bias (and ReLU): a plain MatMul is
    # a gradient.
    ("backward", {"Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul", "BiasAddGrad",
                  "ReluGrad", "MaxPoolGrad"}),
    ("thread-pool shards of forward/backward", {"ParallelFor"}),
    ("optimizer update", {"ResourceApplyAdam", "ApplyAdam", "AssignAddVariableOp",
                          "AssignSubVariableOp", "AssignVariableOp", "Square", "Sqrt",
                          "Sub", "RealDiv", "AddV2", "Mul", "Pow"}),
    ("variable reads", {"ReadVariableOp"}),
    ("tensor send/recv (RPC)", {"_Send", "_Recv", "_HostSend", "_HostRecv",
                                "RecvTensor", "EagerCopyToDevice"}),
    # "Loop": the ring all-reduce's loop over its chunks, waiting for the peer's
    # included; the gradients are packed into one tensor and split after.
    ("collective all-reduce", {"CollectiveReduceV2", "CollectiveReduce",
                               "CollectiveGatherV2", "CollectiveBcastSendV2",
                               "CollectiveBcastRecvV2", "Loop", "SplitV", "ConcatV2"}),
    ("input pipeline", {"IteratorGetNext", "MultiDeviceIteratorGetNextFromShard",
                        "Prefetch", "BatchV2", "ParallelMapV2", "MapAndBatch",
                        "ShuffleAndRepeat", "TensorSlice", "Shuffle", "Repeat", "Cast",
                        "IteratorGetNextAsOptional"}),
)
RUNTIME = "runtime (executor, function calls, RPC handling, other)"
# A function call's event on the thread that made it spans the whole call, while
# the function's ops run on the executor's threads (their own events): its self
# time is that thread waiting, not work, and is left out.
WAITING = frozenset({"KernelAndDeviceFunc::Run"})
_BACKWARD_MARKER = "Conv2DBackpropFilter"
_UPDATE_MARKERS = ("ResourceApplyAdam", "ApplyAdam")
_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ONEDNN_PREFIX = re.compile(r"_Mkl(Native)?")


@dataclasses.dataclass(frozen=True)
class Breakdown:
  """One task's trace: steps seen and thread busy (self) time per category, in ms."""
  steps: float
  ms_by_category: dict

  @property
  def total_ms(self) -> float:
    return sum(self.ms_by_category.values())

  def per_step(self) -> dict:
    """Category -> ms per step; empty when the trace saw no whole step."""
    if self.steps < 1:
      return {}
    return {name: ms / self.steps for name, ms in self.ms_by_category.items()}


def op_type(event_name: str) -> str:
  """`conv1/Conv2D:Conv2D` -> Conv2D, `conv1/Conv2D:_MklNativeFusedConv2D` ->
  _FusedConv2D; other events keep their name, digits blanked."""
  if ":" in event_name and "::" not in event_name and not event_name.startswith("/"):
    kind = event_name.rpartition(":")[2]
    if _OP_TYPE.fullmatch(kind):
      return _tensorflow_name(kind)
  return re.sub(r"\d+", "#", event_name)


def _tensorflow_name(kind: str) -> str:
  """The op type a oneDNN kernel stands for; other op types unchanged."""
  match = _ONEDNN_PREFIX.match(kind)
  if not match:
    return kind
  base = kind[match.end():].removesuffix("WithBias")
  return f"_{base}" if base.startswith("Fused") else base


def category_of(kind: str) -> str:
  for name, kinds in CATEGORIES:
    if kind in kinds:
      return name
  if kind.startswith("Iterator::"):  # tf.data's own events, one per dataset stage.
    return "input pipeline"
  return RUNTIME


def self_times(events) -> tuple[collections.Counter, collections.Counter]:
  """Self time (ps) and count per op type of one thread's `(offset, duration, name)`
  events, which nest by time."""
  self_ps, count = collections.Counter(), collections.Counter()
  open_events = []  # [end, kind, duration, children's time]
  def close_until(t):
    while open_events and open_events[-1][0] <= t:
      _, kind, duration, children = open_events.pop()
      self_ps[kind] += duration - children
  for offset, duration, name in sorted(events, key=lambda e: (e[0], -e[1])):
    close_until(offset)
    if open_events:
      open_events[-1][3] += duration
    kind = op_type(name)
    open_events.append([offset + duration, kind, duration, 0])
    count[kind] += 1
  close_until(float("inf"))
  return self_ps, count


def steps_in(count: collections.Counter, *, num_conv_layers: int,
             num_variables: int) -> float:
  """Training steps a trace saw: filter gradients on a trainer, else Adam kernels."""
  if count[_BACKWARD_MARKER]:
    return count[_BACKWARD_MARKER] / num_conv_layers
  return sum(count[m] for m in _UPDATE_MARKERS) / num_variables


def breakdown_of_space(space, *, num_conv_layers: int, num_variables: int) -> Breakdown:
  """The Breakdown of an XSpace's host CPU planes."""
  self_ps, count = collections.Counter(), collections.Counter()
  for plane in space.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    names = plane.event_metadata
    for line in plane.lines:
      s, c = self_times((e.offset_ps, e.duration_ps, names[e.metadata_id].name)
                        for e in line.events)
      self_ps.update(s)
      count.update(c)
  ms = collections.Counter()
  for kind, ps in self_ps.items():
    if kind not in WAITING:
      ms[category_of(kind)] += ps / 1e9
  return Breakdown(steps_in(count, num_conv_layers=num_conv_layers,
                            num_variables=num_variables), dict(ms))


@functools.cache
def _cnn_step_markers() -> tuple[int, int]:
  """(convolution layers, trainable variables) of the CNN (imports TensorFlow)."""
  from model import cnn  # pylint: disable=g-import-not-at-top: loads TensorFlow.
  model = cnn.build_cnn()
  conv_layers = sum(type(layer).__name__ == "Conv2D" for layer in model.layers)
  return conv_layers, len(model.trainable_variables)


def read_breakdown(trace_dir: str) -> Breakdown | None:
  """The Breakdown of the CNN's newest trace under `trace_dir`; None if there is none."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # Only where traces are read.
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    return None
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as f:
    space.ParseFromString(f.read())
  num_conv_layers, num_variables = _cnn_step_markers()
  return breakdown_of_space(space, num_conv_layers=num_conv_layers,
                            num_variables=num_variables)


def capture(address: str, trace_dir: str, duration_ms: int) -> None:
  """Traces the task serving the profiler at `address` (host:port) into `trace_dir`."""
  import tensorflow as tf  # Only where traces are taken.
  tf.profiler.experimental.client.trace(f"grpc://{address}", trace_dir, duration_ms)


def table(rows: list[tuple[str, Breakdown]]) -> list[str]:
  """A markdown table: per traced task, busy ms per step of each category and its share."""
  names = [name for name, _ in CATEGORIES] + [RUNTIME]
  lines = ["| task | steps traced | thread ms/step | " + " | ".join(names) + " |",
           "|---|---|---|" + "---|" * len(names)]
  for task, breakdown in rows:
    per_step = breakdown.per_step()
    if not per_step:
      lines.append(f"| {task} | 0 | - | " + " | ".join("-" for _ in names) + " |")
      continue
    total = sum(per_step.values())
    cells = [f"{per_step.get(n, 0.0):.1f} ({100 * per_step.get(n, 0.0) / total:.0f}%)"
             for n in names]
    lines.append(f"| {task} | {breakdown.steps:.0f} | {total:.1f} | " + " | ".join(cells)
                 + " |")
  return lines
