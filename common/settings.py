"""Frozen dataclasses as the one source of a command's settings.

A field declared with `setting(default, help)` is a flag with the field's type,
default and help: `define_flags` defines those flags on a FlagValues,
`values_from_flags` reads them back, and `to_argv` writes a dataclass instance out
as the command-line arguments that reproduce it. A program thus writes each of its
settings, and its default, once:

  @dataclasses.dataclass(frozen=True)
  class Config:
    max_steps: int = setting(10000, "Number of training steps.")
    global_batch_size: int = setting(100, "Examples per update.", flag="batch_size")

Every entry point parses its command line with `parse_flags`
(`app.run(main, flags_parser=settings.parse_flags)`): a mistake in it exits 2.
"""

import dataclasses
import os
import sys
import typing
from typing import Callable, Iterable, Mapping

from absl import flags

# A mistake on the command line: the code argparse and the shells exit with, and the
# one every entry point of ours documents. absl's own parser exits 1, the code of a
# program that failed, which a job scheduler would retry.
EXIT_USAGE = 2

_DEFINERS = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def setting(default, help: str, *, flag: str | None = None, choices: tuple = (),
            env: str | None = None):
  """A dataclass field that is also a flag.

  `flag` names the flag when it differs from the field (the seed's names);
  `choices` makes it an enum; `env` names an environment variable that replaces
  the default when the flag is not given (Vertex AI's AIP_* variables), read with
  the flag's own parser (a bool's: 1, 0, true, false).
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "flag": flag, "choices": tuple(choices), "env": env})


def settings_of(config_class, only: Iterable[str] | None = None) -> list:
  """The fields of `config_class` declared with `setting`, all or those named in `only`."""
  fields = [f for f in dataclasses.fields(config_class) if "help" in f.metadata]
  if only is None:
    return fields
  only = tuple(only)
  unknown = set(only) - {f.name for f in fields}
  if unknown:
    raise ValueError(f"{sorted(unknown)} are not settings of {config_class.__name__}; "
                     f"expected some of {[f.name for f in fields]}")
  return [f for f in fields if f.name in only]


def flag_name(field: dataclasses.Field) -> str:
  return field.metadata["flag"] or field.name


def value_type(field: dataclasses.Field) -> type:
  """The field's type without `| None`: bool, int, float or str."""
  types = [t for t in typing.get_args(field.type) if t is not type(None)] or [field.type]
  if len(types) != 1 or types[0] not in _DEFINERS:
    raise TypeError(f"setting {field.name} has type {field.type}; expected bool, int, "
                    "float or str, optionally `| None`")
  return types[0]


def define_flags(config_class, flag_values: flags.FlagValues, *,
                 only: Iterable[str] | None = None,
                 defaults: Mapping[str, object] | None = None) -> None:
  """Defines a flag per setting of `config_class` (or per setting named in `only`).

  `defaults` replaces some fields' defaults, by field name, for a program whose
  own defaults differ (a demo that trains for fewer steps).
  """
  defaults = dict(defaults or {})
  for field in settings_of(config_class, only):
    default = defaults.pop(field.name, field.default)
    kwargs = dict(name=flag_name(field), default=default, help=field.metadata["help"],
                  flag_values=flag_values)
    if field.metadata["choices"]:
      flag = flags.DEFINE_enum(enum_values=list(field.metadata["choices"]), **kwargs)
    else:
      flag = _DEFINERS[value_type(field)](**kwargs)
    # absl's --help lists the program's own flags: those of the module that defined
    # them, which is this one. The program calls define_flags, so they are its own.
    flag_values.register_key_flag_for_module(sys.argv[0], flag_values[flag.name])
  if defaults:
    raise ValueError(f"defaults for {sorted(defaults)}, which are not flags defined here")


def values_from_flags(config_class, flag_values: flags.FlagValues,
                      environ: Mapping[str, str] | None = None) -> dict:
  """{field name: value} for every setting whose flag `flag_values` defines.

  A setting with an `env` variable takes that variable's value when the flag was
  not given on the command line and the variable is set and not empty, parsed as
  the flag would parse it; a value the flag would refuse raises ValueError.
  """
  environ = environ or {}
  values = {}
  for field in settings_of(config_class):
    name = flag_name(field)
    if name not in flag_values:
      continue
    value = flag_values[name].value
    env = field.metadata["env"]
    if env and not flag_values[name].present and environ.get(env):
      try:
        value = flag_values[name].parser.parse(environ[env])
      except ValueError as e:
        raise ValueError(f"{env}={environ[env]!r} (the default of --{name}): {e}") from None
    values[field.name] = value
  return values


def to_argv(config, leave_out: Iterable[str] = ()) -> list[str]:
  """The flags that reproduce `config`: one per setting that differs from its default.

  `leave_out` names fields the receiving program derives by itself.
  """
  argv = []
  for field in settings_of(type(config)):
    value = getattr(config, field.name)
    if field.name in leave_out or value == field.default:
      continue
    name = flag_name(field)
    if value is None:
      raise ValueError(f"{name} is None, which no flag can say; expected a value or the "
                       f"default {field.default!r}")
    if isinstance(value, bool):
      argv.append(f"--{name}" if value else f"--no{name}")
    else:
      argv.append(f"--{name}={value}")
  return argv


def check_choices(config) -> None:
  """Raises ValueError for a setting whose value is not one of its choices."""
  for field in settings_of(type(config)):
    choices = field.metadata["choices"]
    value = getattr(config, field.name)
    if choices and value not in choices:
      raise ValueError(f"{field.name} must be one of {', '.join(choices)}, got {value!r}")


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS, *,
                takes_arguments: bool = False,
                hint: Callable[[flags.Error], str | None] | None = None) -> list[str]:
  """A program's command line parsed, for `app.run(main, flags_parser=parse_flags)`.

  Returns absl's remaining argv: the program name, then the arguments that are not
  flags (those after `--` included), which only a program that `takes_arguments`
  may be given. A bad flag, a bad value or a stray argument prints `error: ...`
  naming it, then what `hint` adds on a line of its own, and exits EXIT_USAGE.
  --help exits 0: the help was asked for and given (absl's help flags exit 1).
  """
  try:
    remaining = flag_values(argv)
  except flags.Error as e:
    extra = hint(e) if hint else None
    _exit_usage(f"{e}\n{extra}" if extra else str(e))
  except SystemExit as e:
    # Raised only by absl's help flags, once the help is printed.
    sys.exit(0 if e.code == 1 else e.code)
  except BrokenPipeError:
    # `--help | head` closed the pipe: stop writing, as Python's documentation advises.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  if len(remaining) > 1 and not takes_arguments:
    _exit_usage(f"unexpected arguments {remaining[1:]}: this program takes only flags")
  return remaining


def _exit_usage(message: str) -> None:
  sys.stderr.write(f"error: {message}\nPass --help to see the flags.\n")
  sys.exit(EXIT_USAGE)
