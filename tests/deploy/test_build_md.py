"""BUILD.md: its commands name things that exist, and its migration guide is complete."""

import re

import pytest

from tests.deploy import platforms

BUILD_MD = platforms.REPO / "BUILD.md"
TEXT = BUILD_MD.read_text()

# Every r0.12 construct the seed program uses.
SEED_CONSTRUCTS = (
    "tf.train.Server", "ClusterSpec", "replica_device_setter", "Supervisor",
    "managed_session", "global_step", "placeholder", "feed_dict", "tf.summary",
    "summary_computed", "Saver", "export_meta_graph", "collections", "tf.app.flags",
    "input_data", "tensorflow.examples.tutorials.mnist",
)
# Those that are code the seed runs, so the guide shows them in a "before" snippet.
SEED_CODE = tuple(c for c in SEED_CONSTRUCTS
                  if c not in ("collections", "tensorflow.examples.tutorials.mnist"))
BEHAVIOUR_CHANGES = ("Asynchronous", "Step counting", "Chief and master", "Evaluation",
                     "Export layout")
OUR_PACKAGES = ("model", "train", "serving", "tests")
THIRD_PARTY_MODULES = ("pytest", "pip", "venv")

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def section(text: str, heading: str) -> str:
  """The body under a `## heading`, up to the next heading of that level."""
  match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
  assert match, f"BUILD.md has no section '## {heading}'"
  return match.group(1)


def prose(text: str) -> str:
  """`text` without fenced code blocks and inline code."""
  return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


MIGRATION = section(TEXT, "Migrating from r0.12")


@pytest.mark.parametrize("construct", SEED_CONSTRUCTS)
def test_migration_guide_maps_every_seed_construct(construct):
  assert construct in MIGRATION


@pytest.mark.parametrize("construct", SEED_CODE)
def test_migration_guide_shows_each_construct_before_and_after(construct):
  snippets = [block for block in _FENCE.findall(MIGRATION) if construct in block]
  assert snippets, f"no snippet shows {construct}"
  assert any("# after" in block for block in snippets), (
      f"the snippet with {construct} has no '# after' part")


def test_migration_guide_lists_behaviour_changes_and_a_checklist():
  changes = section(MIGRATION.replace("### ", "## "), "What behaves differently")
  for topic in BEHAVIOUR_CHANGES:
    assert re.search(rf"^- {topic}\b", changes, re.M), f"no bullet on {topic}"
  checklist = section(MIGRATION.replace("### ", "## "),
                      "Checklist for your own TF1 distributed program")
  assert len(re.findall(r"^\d+\. ", checklist, re.M)) >= 8


def test_python_snippets_compile():
  for block in re.findall(r"^```python\n(.*?)^```", TEXT, re.M | re.S):
    compile(block, str(BUILD_MD), "exec")


def test_every_python_module_named_exists():
  modules = sorted(set(re.findall(r"python -m ([A-Za-z_][\w.]*)", TEXT)))
  assert "train.task" in modules
  missing = []
  for module in modules:
    top = module.split(".")[0]
    if top not in OUR_PACKAGES:
      assert top in THIRD_PARTY_MODULES, f"python -m {module}: not one of ours, unknown"
      continue
    path = platforms.REPO.joinpath(*module.split("."))
    if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
      missing.append(module)
  assert not missing, f"BUILD.md runs modules that do not exist: {missing}"


def test_every_repository_path_named_exists():
  paths = set(re.findall(r"(?<![\w/.$-])((?:deploy|data|tests)/[\w./-]*[\w/])", TEXT))
  assert "deploy/vertex/pss.yaml" in paths
  missing = sorted(p for p in paths if not (platforms.REPO / p).exists())
  assert not missing, f"BUILD.md names paths that do not exist: {missing}"


def test_every_make_target_named_exists():
  makefile = (platforms.REPO / "Makefile").read_text()
  targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
  named = set(re.findall(r"\bmake ([a-z][\w-]*)", TEXT))
  assert named and named <= targets, f"unknown make targets: {named - targets}"


def test_no_hand_typed_measurements():
  """Accuracy, throughput and latency come from commands, never from the prose."""
  measurement = re.compile(
      r"\b\d+(?:\.\d+)?\s?(?:%|ms\b|seconds?\b|minutes?\b|hours?\b|examples/s|"
      r"images/s|steps/s|steps per second|QPS\b|accuracy)", re.I)
  found = measurement.findall(prose(TEXT))
  assert not found, f"numbers typed into BUILD.md: {found}"
