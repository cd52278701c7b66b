"""`python -m serving.server`: see serving/server/main.py for the usage."""

from absl import app

from serving.server import main

if __name__ == "__main__":
  main.define_flags()
  app.run(main.main)
