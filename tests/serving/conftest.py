"""Fixtures of the serving tests: one untrained export and one in-process server per session."""

import os
import shutil
import subprocess

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from common import processes
from model import cnn
from serving.server import config
from serving.server import model_server as model_server_lib
from train import export


def copy_version(export_dir: str, base_path: str, version: int) -> str:
  """Publishes a copy of `export_dir` as base_path/<version> the way train.export does:
  written under a .staging name, then renamed into place."""
  staging = os.path.join(base_path, f".staging-{version}")
  shutil.copytree(export_dir, staging)
  final = os.path.join(base_path, str(version))
  os.rename(staging, final)
  return final


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> str:
  """Version 1 of an untrained CNN, with train.export's two signatures and warmup records."""
  base = tmp_path_factory.mktemp("export")
  return export.export_model(cnn.build_cnn(), str(base / "mnist"))


@pytest.fixture(scope="session")
def sample_images() -> np.ndarray:
  return np.random.default_rng(1).random((8, cnn.IMAGE_PIXELS), dtype=np.float32)


@pytest.fixture(scope="session")
def model_server(export_dir):
  """The embedded server on free ports (gRPC and REST), loading once (no polling)."""
  options = config.ServerOptions(
      model_config_list=(config.make_model_config("mnist", os.path.dirname(export_dir)),),
      port=0, rest_api_port=processes.pick_free_ports(1)[0], file_system_poll_wait_seconds=0)
  s = model_server_lib.ModelServer(options).start()
  try:
    yield s
  finally:
    s.stop(grace_s=0)


@pytest.fixture(scope="session")
def channel(model_server):
  with grpc.insecure_channel(f"127.0.0.1:{model_server.port}") as ch:
    yield ch


@pytest.fixture(scope="session")
def stub(channel):
  return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel):
  return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> dict:
  """Self-signed EC certificates from the openssl CLI (the venv has no `cryptography`):
  a server one for localhost/127.0.0.1 and a client one; PEM text by name."""
  directory = tmp_path_factory.mktemp("certs")
  pems = {}
  for name, subject, san in (("server", "/CN=localhost", "DNS:localhost,IP:127.0.0.1"),
                             ("client", "/CN=mnist-client", "DNS:mnist-client")):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", subject, "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    pems[f"{name}_key"], pems[f"{name}_cert"] = key.read_text(), cert.read_text()
  return pems
