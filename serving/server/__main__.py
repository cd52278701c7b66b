"""`python -m serving.server`: see serving/server/main.py for the usage."""

from absl import app

from common import settings
from serving.server import main

if __name__ == "__main__":
  # absl's --help prints the docstring of the module run as __main__: this one's
  # would only point elsewhere.
  __doc__ = main.__doc__  # pylint: disable=redefined-builtin
  main.define_flags()
  app.run(main.main, flags_parser=settings.parse_flags)
