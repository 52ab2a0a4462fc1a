"""store.process: the app's store served by a child process (SQLite in tmp_path)."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from store import NewItem, Store, StoreError
from store.process import StoreProcess
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the store process listens on a Unix socket")

PERSONA = {"name": "Ada", "facts": ["I build clocks."]}


@pytest.fixture
def local(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'labels.db'}", migrate=True) as store:
        store.add_label_items([NewItem("eval", "Ada", PERSONA, [], f"answer {i}", "base") for i in range(3)])
        yield store


@pytest.fixture
def served(local):
    store = StoreProcess(local)
    yield store
    store.close()


def gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_calls_run_in_the_child_and_errors_cross_with_problem_and_fix(local, served):
    assert served.pid not in (None, os.getpid())
    first = served.next_item("kim")
    done = served.label_and_next(first.id, "kim", "good", "clear")
    assert done.next_item is not None and done.next_item.id != first.id
    assert served.progress("kim").done == 1
    assert [(r.item_id, r.rater, r.verdict) for r in local.label_rows()] == [(first.id, "kim", "good")]

    with pytest.raises(StoreError) as err:
        served.label(first.id, "kim", "meh")
    assert err.value.problem == "a verdict must be 'good' or 'bad', not 'meh'"
    assert err.value.fix == "label the answer good or bad"
    with pytest.raises(AttributeError, match="only Store's methods"):
        served.engine  # noqa: B018 -- the engine stays in the child


def test_a_child_killed_mid_write_fails_that_write_and_the_next_call_starts_a_new_one(tmp_path, local, served):
    first = served.next_item("kim")
    served.label(first.id, "kim", "good")
    blocker = sqlite3.connect(tmp_path / "labels.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the child's next write waits for this lock...
    failed = []

    def relabel():
        try:
            served.label(first.id, "kim", "bad")
        except StoreError as err:
            failed.append(err)

    writer = threading.Thread(target=relabel)
    writer.start()
    time.sleep(0.5)
    old = served.pid
    os.kill(old, signal.SIGKILL)  # ...and is killed in the middle of it
    writer.join(timeout=10)
    blocker.rollback()
    blocker.close()
    assert len(failed) == 1, "the write in flight must fail, not hang or pass"
    assert "the store process ended during label (killed, perhaps for memory)" in failed[0].problem
    assert "NOT saved" in failed[0].problem and "try again" in failed[0].fix

    assert served.progress("kim").done == 1  # a new child answers
    assert served.pid != old
    assert [r.verdict for r in local.label_rows()] == ["good"]  # the committed label, not the lost one


def test_the_child_ends_with_the_app_even_on_kill_9(tmp_path, local):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    script = (
        "import sys, time\n"
        "from store import Store\n"
        "from store.process import StoreProcess\n"
        f"served = StoreProcess(Store({url!r}))\n"
        "print(served.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        child = int(app.stdout.readline())
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=10)
        assert gone(child), "the store process outlived the app"
    finally:
        app.kill()
        app.wait()
