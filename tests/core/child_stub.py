"""A child for tests/core/test_child_process.py (`python -m tests.core.child_stub FD`): does what its
settings say, through core/child.py's child side."""

import os
import signal
import time

from core.child import connect, exit_when_closed, fail, ready
from core.errors import ConfigError

conn, settings = connect()
if settings == "ready":
    exit_when_closed(conn)
    ready(conn, os.getpid())
    time.sleep(600)
elif settings == "fail":
    fail(conn, ConfigError("the stub was told to fail", "tell it something else"))
elif settings == "crash":
    os._exit(3)
elif settings == "oom":
    os.kill(os.getpid(), signal.SIGKILL)
else:  # "hang": never answers
    time.sleep(600)
