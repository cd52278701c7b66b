"""A process that ignores SIGTERM, for tests/common/test_processes.py."""

import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
