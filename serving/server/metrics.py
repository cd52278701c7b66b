"""The server's counters and latency histograms, as TF Serving exports them to Prometheus.

Names follow TF Serving's monitoring (util.cc, saved_model_warmup_util.cc) with its
Prometheus exporter's rewrite of "/" to ":" (":tensorflow:serving:request_count").
"""

import bisect
import threading

# TF Serving's latency buckets: 10 us * 1.8^i, 33 of them (up to about 20 minutes).
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
# Examples per request: 1, 2, 4, ... 2^14.
EXAMPLE_BUCKETS = tuple(2.0**i for i in range(15))


def _prometheus_name(name: str) -> str:
  return "".join(c if c.isalnum() or c == "_" else ":" for c in name)


def _label_text(names: tuple, values: tuple) -> str:
  def escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
  return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values))


class Counter:
  def __init__(self, name: str, help_text: str, labels: tuple):
    self.name, self.help, self.labels = _prometheus_name(name), help_text, labels
    self._values = {}
    self._lock = threading.Lock()

  def add(self, *label_values, amount: int = 1) -> None:
    with self._lock:
      self._values[label_values] = self._values.get(label_values, 0) + amount

  def value(self, *label_values) -> int:
    with self._lock:
      return self._values.get(label_values, 0)

  def render(self) -> list:
    with self._lock:
      items = sorted(self._values.items())
    return [f"# TYPE {self.name} counter"] + [
        f"{self.name}{{{_label_text(self.labels, k)}}} {v}" for k, v in items]


class Histogram:
  def __init__(self, name: str, help_text: str, labels: tuple, buckets: tuple):
    self.name, self.help, self.labels, self.buckets = (_prometheus_name(name), help_text,
                                                       labels, buckets)
    self._cells = {}  # label values -> [counts per bucket + overflow, sum]
    self._lock = threading.Lock()

  def observe(self, value: float, *label_values) -> None:
    with self._lock:
      cell = self._cells.setdefault(label_values, [[0] * (len(self.buckets) + 1), 0.0])
      cell[0][bisect.bisect_left(self.buckets, value)] += 1
      cell[1] += value

  def render(self) -> list:
    with self._lock:
      items = sorted((k, (list(c[0]), c[1])) for k, c in self._cells.items())
    lines = [f"# TYPE {self.name} histogram"]
    for label_values, (counts, total) in items:
      labels = _label_text(self.labels, label_values)
      prefix = f"{labels}," if labels else ""
      cumulative = 0
      for limit, count in zip([*map(lambda b: f"{b:g}", self.buckets), "+Inf"], counts):
        cumulative += count
        lines.append(f'{self.name}_bucket{{{prefix}le="{limit}"}} {cumulative}')
      lines.append(f"{self.name}_sum{{{labels}}} {total:g}")
      lines.append(f"{self.name}_count{{{labels}}} {cumulative}")
    return lines


class Metrics:
  """The metrics of one server; `render()` is the Prometheus text page."""

  def __init__(self):
    self.request_count = Counter("/tensorflow/serving/request_count",
                                 "The total number of requests.", ("model_name", "status"))
    self.request_latency = Histogram(
        "/tensorflow/serving/request_latency",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
        ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
    self.runtime_latency = Histogram(
        "/tensorflow/serving/runtime_latency",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
        ("model_name", "API", "runtime"), LATENCY_BUCKETS_US)
    self.example_counts = Histogram(
        "/tensorflow/serving/request_example_counts",
        "The number of tensorflow.Examples per request.", ("model",), EXAMPLE_BUCKETS)
    self.example_count_total = Counter("/tensorflow/serving/request_example_count_total",
                                       "The total number of tensorflow.Examples.", ("model",))
    # TensorFlow's own SavedModel loader metrics, which TF Serving exports too.
    self.load_attempt_count = Counter("/tensorflow/cc/saved_model/load_attempt_count",
                                      "The number of times a SavedModel was successfully "
                                      "loaded.", ("model_path", "status"))
    self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency",
                                "Latency in microseconds for SavedModels that were "
                                "successfully loaded.", ("model_path",))
    self._all = (self.request_count, self.request_latency, self.runtime_latency,
                 self.example_counts, self.example_count_total, self.load_attempt_count,
                 self.load_latency)

  def record_request(self, model_name: str, api: str, entrypoint: str, status: str,
                     seconds: float) -> None:
    self.request_count.add(model_name, status)
    if status == "OK":
      self.request_latency.observe(seconds * 1e6, model_name, api, entrypoint)

  def render(self) -> str:
    return "\n".join(line for metric in self._all for line in metric.render()) + "\n"
