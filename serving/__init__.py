"""TensorFlow Serving: gRPC client, a TF Serving-compatible server, request helpers."""
