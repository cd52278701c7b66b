"""The Prometheus page: TF Serving's metric names and the text format."""

from serving.server import metrics


def test_render_uses_tf_servings_names_and_prometheus_text():
  m = metrics.Metrics()
  m.record_request("mnist", "Predict", "gRPC", "OK", 0.002)
  m.record_request("mnist", "Predict", "REST", "INVALID_ARGUMENT", 0.001)
  m.load_attempt_count.add("/m/1", "success")
  page = m.render()
  assert "# TYPE :tensorflow:serving:request_count counter" in page
  assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 1' in page
  assert ':tensorflow:serving:request_count{model_name="mnist",status="INVALID_ARGUMENT"} 1' in page
  # Latency of the successful request only, in microseconds, in cumulative buckets.
  assert ('# TYPE :tensorflow:serving:request_latency histogram' in page)
  assert (':tensorflow:serving:request_latency_count{model_name="mnist",API="Predict",'
          'entrypoint="gRPC"} 1') in page
  assert ':tensorflow:serving:request_latency_bucket{model_name="mnist",API="Predict",' \
         'entrypoint="gRPC",le="+Inf"} 1' in page
  assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/1",status="success"} 1' \
      in page


def test_label_values_are_escaped():
  counter = metrics.Counter("/x", "", ("model_name",))
  counter.add('a"b\\c\nd')
  assert counter.render()[1] == ':x{model_name="a\\"b\\\\c\\nd"} 1'
