"""The imports point one way: model/ <- common/ <- train/, serving/ <- demo.py.

model/ imports nothing of ours but itself; common/ imports only model/; train/ and
serving/ import model/ and common/ and never each other. Parsed from the source
(ast), so a violation fails here before it can be imported by accident.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
OURS = {"model", "common", "train", "serving", "demo"}
# The packages of ours each package may import, besides itself.
ALLOWED = {
    "model": set(),
    "common": {"model"},
    "train": {"model", "common"},
    "serving": {"model", "common"},
}


def imported_packages(source: str) -> set[str]:
  """The top-level names of ours that `source` imports, wherever the import stands."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split(".")[0])
  return names & OURS


def violations(package: str, source: str) -> set[str]:
  return imported_packages(source) - ALLOWED[package] - {package}


def test_the_checker_sees_every_form_of_import():
  source = ("import train.task\nfrom serving import client\n"
            "def f():\n  from common.mnist import load_mnist\n  import numpy\n")
  assert imported_packages(source) == {"train", "serving", "common"}
  assert violations("serving", source) == {"train"}
  assert violations("model", source) == {"train", "serving", "common"}
  assert violations("train", "from . import loop\nimport train.cluster\n") == set()


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_lies_below_it(package):
  files = sorted((REPO / package).rglob("*.py"))
  assert files, f"{package}/ has no Python files"
  found = {str(path.relative_to(REPO)): sorted(violations(package, path.read_text()))
           for path in files}
  assert {path: bad for path, bad in found.items() if bad} == {}
