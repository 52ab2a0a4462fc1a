"""core.child: one way to start a child process, hear it is ready, know why it died, and start it
again; the model's and the store's children use it (tests/engines/test_child.py,
tests/store/test_store_process.py test what they add)."""

import os
import signal
import subprocess
import sys

import psutil
import pytest

from core.child import Child, Restarting, exit_reason
from core.errors import ConfigError, GenerationError
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="children get a socket pair's fd")


def start(settings: str, timeout_s: float = 30) -> Child:
    return Child.start("tests.core.child_stub", settings, "the stub", lambda p: GenerationError(p, "look"), timeout_s)


def test_exit_reasons_in_words():
    assert exit_reason(-signal.SIGKILL) == "killed, perhaps for memory"
    assert exit_reason(-signal.SIGTERM) == "killed by SIGTERM"
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(0) == "it exited"
    assert exit_reason(None) == "its connection closed"


def test_a_child_gets_its_settings_and_answers_ready_then_stops():
    child = start("ready")
    assert child.info == child.process.pid and child.alive  # what the child sent back
    child.stop()
    assert child.process.returncode == 0 and not child.alive  # it saw its connection close and left


def test_a_child_that_cannot_start_says_why():
    with pytest.raises(ConfigError, match="told to fail"):  # its own error, kind and fix kept
        start("fail")
    with pytest.raises(GenerationError, match=r"the stub ended while starting \(exit code 3\)"):
        start("crash")
    with pytest.raises(GenerationError, match=r"\(killed, perhaps for memory\)"):
        start("oom")
    with pytest.raises(GenerationError, match=r"\(it had not started after 2 s\)"):
        start("hang", timeout_s=2)


def test_a_dead_child_is_replaced_on_the_next_call_and_stops_with_its_owner():
    children = Restarting(lambda: start("ready"), "the stub")
    first = children.current()
    assert children.current() is first
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    assert first.ended() == "killed, perhaps for memory"
    second = children.current()
    assert second is not first and second.alive
    del children  # the owner dropped (an engine the pool lets go)
    assert second.process.wait(timeout=5) == 0


def test_a_child_ends_with_the_app_even_on_kill_9():
    script = (
        "import time\n"
        "from core.child import Child\n"
        "child = Child.start('tests.core.child_stub', 'ready', 'the stub', RuntimeError)\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(app.stdout.readline()))
        os.kill(app.pid, signal.SIGKILL)  # no finalizers run: only the kernel closing the app's end
        app.wait(timeout=10)
        assert not psutil.wait_procs([child], timeout=5)[1], "the child outlived the app"
    finally:
        app.kill()
        app.wait()
