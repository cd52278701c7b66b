"""Tests for common/settings.py: flags generated from a dataclass, read back, written out."""

import dataclasses
import sys

from absl import flags
import pytest

from common import settings
from common.settings import setting


@dataclasses.dataclass(frozen=True)
class Example:
  steps: int = setting(10, "Steps.")
  global_batch_size: int = setting(32, "Examples per update.", flag="batch_size")
  rate: float = setting(0.5, "A rate.")
  name: str | None = setting(None, "A name.", env="EXAMPLE_NAME")
  mode: str = setting("fast", "How.", choices=("fast", "slow"))
  verbose: bool = setting(False, "Say more.", env="EXAMPLE_VERBOSE")
  not_a_flag: int = 3


def parsed(*argv, only=None, defaults=None):
  flag_values = flags.FlagValues()
  settings.define_flags(Example, flag_values, only=only, defaults=defaults)
  flag_values(["prog", *argv])
  return flag_values


def test_flags_have_the_fields_types_defaults_and_help():
  flag_values = parsed()
  assert sorted(flag_values) == ["batch_size", "mode", "name", "rate", "steps", "verbose"]
  for field in settings.settings_of(Example):
    flag = flag_values[settings.flag_name(field)]
    assert flag.default == field.default
    assert flag.help.endswith(field.metadata["help"])  # An enum's starts with its choices.
  assert parsed("--steps=7", "--rate=0.25", "--verbose").steps == 7
  with pytest.raises(flags.IllegalFlagValueError):
    parsed("--steps=seven")
  with pytest.raises(flags.IllegalFlagValueError):
    parsed("--mode=medium")


def test_the_flags_are_the_programs_own_for_help():
  flag_values = parsed()
  listed = {f.name for f in flag_values.get_key_flags_for_module(sys.argv[0])}
  assert listed == set(flag_values)


def test_values_read_back_with_the_environment_under_the_flag():
  values = settings.values_from_flags(Example, parsed("--batch_size=8"), {"EXAMPLE_NAME": "e"})
  assert Example(**values) == Example(global_batch_size=8, name="e")
  given = settings.values_from_flags(Example, parsed("--name=flag"), {"EXAMPLE_NAME": "e"})
  assert given["name"] == "flag"


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("0", False),
                                         ("false", False)])
def test_an_environment_value_is_parsed_as_the_flag_would(text, value):
  values = settings.values_from_flags(Example, parsed(), {"EXAMPLE_VERBOSE": text})
  assert values["verbose"] is value
  assert settings.values_from_flags(Example, parsed("--noverbose"),
                                    {"EXAMPLE_VERBOSE": text})["verbose"] is False


def test_an_environment_value_the_flag_refuses_names_the_variable():
  with pytest.raises(ValueError, match=r"EXAMPLE_VERBOSE='maybe' \(the default of --verbose\)"):
    settings.values_from_flags(Example, parsed(), {"EXAMPLE_VERBOSE": "maybe"})


def test_a_subset_with_other_defaults():
  flag_values = parsed(only=("steps", "rate"), defaults={"steps": 99})
  assert sorted(flag_values) == ["rate", "steps"]
  assert settings.values_from_flags(Example, flag_values) == {"steps": 99, "rate": 0.5}
  with pytest.raises(ValueError, match=r"\['nope'\] are not settings of Example"):
    parsed(only=("nope",))


@pytest.mark.parametrize("example", [
    Example(), Example(steps=1, global_batch_size=2, rate=1e-5, name="n", mode="slow",
                       verbose=True)])
def test_argv_reproduces_the_instance(example):
  argv = settings.to_argv(example)
  assert Example(**settings.values_from_flags(Example, parsed(*argv))) == example
  assert settings.to_argv(Example()) == []
  assert settings.to_argv(Example(verbose=True, steps=3), leave_out=("steps",)) == ["--verbose"]


def test_choices_are_checked():
  settings.check_choices(Example(mode="slow"))
  with pytest.raises(ValueError, match="mode must be one of fast, slow, got 'medium'"):
    settings.check_choices(Example(mode="medium"))


def test_parse_flags_exits_2_naming_the_mistake(capsys):
  def parse(*argv, **kwargs):
    flag_values = flags.FlagValues()
    settings.define_flags(Example, flag_values)
    with pytest.raises(SystemExit) as exit_:
      settings.parse_flags(["prog", *argv], flag_values, **kwargs)
    return exit_.value.code, capsys.readouterr().err

  assert parse("--steps=abc") == (settings.EXIT_USAGE, (
      "error: flag --steps=abc: invalid literal for int() with base 10: 'abc'\n"
      "Pass --help to see the flags.\n"))
  assert parse("--mode=medium")[1].startswith(
      "error: flag --mode=medium: value should be one of <fast|slow>")
  assert parse("stray")[1].startswith(
      "error: unexpected arguments ['stray']: this program takes only flags")
  code, err = parse("--max_steps=1", hint=lambda e: f"--{e.flagname} goes elsewhere")
  assert code == 2 and err.startswith("error: Unknown command line flag 'max_steps'")
  assert "\n--max_steps goes elsewhere\nPass --help to see the flags.\n" in err


def test_parse_flags_returns_the_arguments_a_program_takes():
  flag_values = flags.FlagValues()
  settings.define_flags(Example, flag_values)
  assert settings.parse_flags(["prog", "--steps=3", "--", "--other=1"], flag_values,
                              takes_arguments=True) == ["prog", "--other=1"]
  assert flag_values.steps == 3
