"""Submits a CustomJobSpec of this folder to Vertex AI, or renders it for gcloud.

Typical usage:

  # Render only (needs PyYAML, no Google Cloud library), e.g. for gcloud:
  python deploy/vertex/submit.py --config=deploy/vertex/pss.yaml \
      --image_uri=us-docker.pkg.dev/my-project/mnist/train:1 \
      --output_dir=gs://my-bucket/mnist/run1 --render > /tmp/pss.yaml
  gcloud ai custom-jobs create --region=us-central1 --display-name=mnist-pss \
      --config=/tmp/pss.yaml

  # Submit with the Vertex AI API client (pip install -e '.[vertex]'), then follow it:
  python deploy/vertex/submit.py --config=deploy/vertex/pss.yaml \
      --image_uri=... --output_dir=gs://... --project=my-project --region=us-central1

The spec files hold ${IMAGE_URI} and ${OUTPUT_DIR}; every one must be given, so a
half-filled spec never reaches Vertex AI. Submitting sends the whole spec, every
CustomJobSpec field in it (scheduling, serviceAccount, network, tensorboard, ...),
as gcloud's --config does, and refuses a file with a field CustomJobSpec lacks.
google-cloud-aiplatform is imported only when submitting, so rendering needs
only PyYAML.
"""

import argparse
import json
import string
import sys
import time

import yaml


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


def parse_job_spec(spec: dict):
  """The whole rendered spec as the API's CustomJobSpec message, every field kept.

  Raises ValueError naming a field that CustomJobSpec (or a message inside it)
  does not have, as `gcloud ai custom-jobs create --config` would refuse it,
  rather than leaving it out of the job.
  """
  from google.cloud import aiplatform_v1  # The optional `vertex` extra.
  from google.protobuf import json_format

  try:
    return aiplatform_v1.CustomJobSpec.from_json(json.dumps(spec))
  except json_format.ParseError as e:
    raise ValueError(f"not a Vertex AI CustomJobSpec: {e}") from None


def make_job_client(region: str, credentials=None):
  """The Vertex AI job service of `region` (the API is regional)."""
  from google.cloud import aiplatform_v1

  return aiplatform_v1.JobServiceClient(
      credentials=credentials,
      client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})


def default_project() -> str:
  """The project of the application default credentials (gcloud's, or the VM's)."""
  import google.auth
  import google.auth.exceptions

  try:
    _, project = google.auth.default()
  except google.auth.exceptions.DefaultCredentialsError as e:
    raise ValueError(f"no --project given and no default credentials: {e}") from None
  if not project:
    raise ValueError("no --project given and the default credentials name none "
                     "(gcloud config set project PROJECT)")
  return project


def submit(spec: dict, *, display_name: str, project: str, region: str,
           service_account: str | None = None, client=None):
  """Creates a CustomJob of the whole spec; returns the job as Vertex AI accepted it.

  `service_account` fills the spec's serviceAccount; a spec that names another
  one is refused rather than silently overridden.
  """
  from google.cloud import aiplatform_v1

  job_spec = parse_job_spec(spec)
  if service_account:
    if job_spec.service_account and job_spec.service_account != service_account:
      raise ValueError(f"--service_account={service_account} but the spec's "
                       f"serviceAccount is {job_spec.service_account}; give one")
    job_spec.service_account = service_account
  client = client or make_job_client(region)
  return client.create_custom_job(
      parent=f"projects/{project}/locations/{region}",
      custom_job=aiplatform_v1.CustomJob(display_name=display_name, job_spec=job_spec))


_FINAL_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                 "JOB_STATE_EXPIRED")


def wait_for_job(client, name: str, *, poll_s: float = 60.0, sleep=time.sleep):
  """Polls the job until it ends, printing each change of state; returns the job."""
  last_state = None
  while True:
    job = client.get_custom_job(name=name)
    state = job.state.name
    if state != last_state:
      print(f"{name}: {state}", file=sys.stderr, flush=True)
      last_state = state
    if state in _FINAL_STATES:
      return job
    sleep(poll_s)


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
  try:
    with open(args.config) as f:
      spec = render_spec(f.read(), {"IMAGE_URI": args.image_uri,
                                    "OUTPUT_DIR": args.output_dir.rstrip("/")})
    if args.render:
      # JSON is YAML: the output keeps the REST field names gcloud expects.
      print(json.dumps(spec, indent=2))
      return 0
    client = make_job_client(args.region)
    job = submit(spec, display_name=args.display_name,
                 project=args.project or default_project(), region=args.region,
                 service_account=args.service_account, client=client)
  except (OSError, KeyError, ValueError, yaml.YAMLError) as e:
    message = e.args[0] if isinstance(e, KeyError) else e
    print(f"error: {args.config}: {message}", file=sys.stderr)
    return 2
  print(job.name)
  if args.no_wait:
    return 0
  job = wait_for_job(client, job.name)
  if job.state.name != "JOB_STATE_SUCCEEDED":
    print(f"error: {job.name} ended {job.state.name}: {job.error.message}",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
