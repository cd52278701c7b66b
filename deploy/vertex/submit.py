"""Submits a CustomJobSpec of this folder to Vertex AI, or renders it for gcloud.

Typical usage:

  # Render only (needs PyYAML, no Google Cloud library), e.g. for gcloud:
  python deploy/vertex/submit.py --config=deploy/vertex/pss.yaml \
      --image_uri=us-docker.pkg.dev/my-project/mnist/train:1 \
      --output_dir=gs://my-bucket/mnist/run1 --render > /tmp/pss.yaml
  gcloud ai custom-jobs create --region=us-central1 --display-name=mnist-pss \
      --config=/tmp/pss.yaml

  # Submit with the Vertex AI SDK (pip install -e '.[vertex]'), then follow it:
  python deploy/vertex/submit.py --config=deploy/vertex/pss.yaml \
      --image_uri=... --output_dir=gs://... --project=my-project --region=us-central1

The spec files hold ${IMAGE_URI} and ${OUTPUT_DIR}; every one must be given, so a
half-filled spec never reaches Vertex AI. google-cloud-aiplatform is imported only
when submitting, so rendering and the tests need only PyYAML.
"""

import argparse
import json
import re
import string
import sys

import yaml

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


def render_spec(template_text: str, values: dict[str, str]) -> dict:
  """Parses a spec and fills the ${NAME} placeholders of its string values.

  Comments are left alone. Raises KeyError naming a placeholder without a value,
  and ValueError naming a value given for a placeholder the spec does not have
  (a misspelt flag).
  """
  spec = yaml.safe_load(template_text)
  wanted = set()

  def collect(text: str) -> str:
    wanted.update(string.Template(text).get_identifiers())
    return text

  _visit_strings(spec, collect)
  missing = sorted(wanted - set(values))
  if missing:
    raise KeyError(f"no value for {', '.join('${' + m + '}' for m in missing)}")
  unused = sorted(set(values) - wanted)
  if unused:
    raise ValueError(f"the spec has no placeholder {', '.join(unused)}; "
                     f"it has {', '.join(sorted(wanted)) or 'none'}")
  return _visit_strings(spec, lambda s: string.Template(s).substitute(values))


def _visit_strings(value, fn):
  """Returns `value` with `fn` applied to every string inside it."""
  if isinstance(value, dict):
    return {k: _visit_strings(v, fn) for k, v in value.items()}
  if isinstance(value, list):
    return [_visit_strings(v, fn) for v in value]
  return fn(value) if isinstance(value, str) else value


def to_snake_case(value):
  """Turns the REST (camelCase) keys of a spec into the SDK's proto field names."""
  if isinstance(value, dict):
    return {_CAMEL_HUMP.sub(r"_\1", k).lower(): to_snake_case(v) for k, v in value.items()}
  if isinstance(value, list):
    return [to_snake_case(v) for v in value]
  return value


def build_custom_job(spec: dict, *, display_name: str, project: str | None,
                     region: str, credentials=None):
  """The SDK's CustomJob for a rendered spec; nothing is sent until it runs."""
  from google.cloud import aiplatform  # The optional `vertex` extra.

  output_dir = spec["baseOutputDirectory"]["outputUriPrefix"]
  return aiplatform.CustomJob(
      display_name=display_name,
      worker_pool_specs=to_snake_case(spec["workerPoolSpecs"]),
      base_output_dir=output_dir,
      # The SDK insists on a staging bucket even for a prebuilt image, where it
      # stages nothing; the output directory's bucket will do.
      staging_bucket=output_dir,
      project=project, location=region, credentials=credentials)


def submit(spec: dict, *, display_name: str, project: str | None, region: str,
           service_account: str | None = None, sync: bool = True):
  """Creates and runs a CustomJob from a rendered spec; returns the SDK's job."""
  job = build_custom_job(spec, display_name=display_name, project=project, region=region)
  # run() blocks, logging the job's state, until the chief (pool 0) ends the job;
  # submit() returns once Vertex AI has accepted it.
  if sync:
    job.run(service_account=service_account)
  else:
    job.submit(service_account=service_account)
  return job


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="A spec of deploy/vertex/.")
  parser.add_argument("--image_uri", required=True, help="The training image, pushed.")
  parser.add_argument("--output_dir", required=True,
                      help="gs:// base of checkpoints (checkpoints/), TensorBoard "
                           "logs (logs/) and the export (model/saved_model.pb).")
  parser.add_argument("--render", action="store_true",
                      help="Print the filled spec as YAML for gcloud and exit.")
  parser.add_argument("--display_name", default="mnist")
  parser.add_argument("--project", default=None, help="Default: gcloud's project.")
  parser.add_argument("--region", default="us-central1")
  parser.add_argument("--service_account", default=None)
  parser.add_argument("--no_wait", action="store_true",
                      help="Return once the job is created instead of following it.")
  args = parser.parse_args(argv)
  if not args.output_dir.startswith("gs://"):
    parser.error(f"--output_dir must be a gs:// URI, got {args.output_dir!r}")
  with open(args.config) as f:
    spec = render_spec(f.read(), {"IMAGE_URI": args.image_uri,
                                  "OUTPUT_DIR": args.output_dir.rstrip("/")})
  if args.render:
    # JSON is YAML: the output keeps the REST field names gcloud expects.
    print(json.dumps(spec, indent=2))
    return 0
  job = submit(spec, display_name=args.display_name, project=args.project,
               region=args.region, service_account=args.service_account,
               sync=not args.no_wait)
  print(job.resource_name)
  return 0


if __name__ == "__main__":
  sys.exit(main())
