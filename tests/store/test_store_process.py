"""store.process: the app's store served by a child process (SQLite in tmp_path)."""

import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from store import CheckedStore, NewItem, Store, StoreAPI, StoreError
from store.boundary import METHODS
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
    first = served.next_item("kim").item
    done = served.label(first.id, "kim", "good", "clear", and_next=True)
    assert done.next.item is not None and done.next.item.id != first.id and done.next.progress.done == 1
    assert served.rater_progress()["kim"].done == 1
    assert [(r.item_id, r.rater, r.verdict) for r in local.label_rows()] == [(first.id, "kim", "good")]

    with pytest.raises(StoreError) as err:
        served.label(first.id, "kim", "meh")
    assert err.value.problem == "a verdict must be 'good' or 'bad', not 'meh'"
    assert err.value.fix == "label the answer good or bad"
    assert not hasattr(served, "engine")  # the engine stays in the child; only StoreAPI's methods cross


def test_a_child_killed_mid_write_fails_that_write_and_the_next_call_starts_a_new_one(tmp_path, local, served):
    first = served.next_item("kim").item
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

    assert served.rater_progress()["kim"].done == 1  # a new child answers
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


def test_store_api_is_stores_own_signatures():
    """`StoreAPI` (what the app calls, typed) declares each method as `Store` has it, and both sides
    of the boundary implement every one."""
    for name in METHODS:
        declared, actual = inspect.signature(getattr(StoreAPI, name)), inspect.signature(getattr(Store, name))
        assert list(declared.parameters) == list(actual.parameters), name
        assert [p.default for p in declared.parameters.values()] == [p.default for p in actual.parameters.values()]
        assert getattr(StoreProcess, name) is not getattr(StoreAPI, name), f"StoreProcess lacks {name}"
    assert {"label", "items", "next_item", "rater_progress", "add_turns"} <= set(METHODS)


def test_what_cannot_cross_is_refused_by_name_in_the_process_and_in_tests(local, served):
    """The served store and the checked in-process one (tests' `studio_context`) refuse the same
    calls with the same message; neither is harmed by it."""
    ids = [item.id for item in local.items([1, 2, 3]).values()]
    for store in (served, CheckedStore(local)):
        with pytest.raises(StoreError) as err:
            store.items(i for i in ids)
        assert err.value.problem.startswith("store.items: its argument item_ids is a generator, which cannot cross")
        assert "a list, not a generator" in err.value.fix
        with pytest.raises(StoreError, match="store.add_eval_run: its argument summary is a function"):
            store.add_eval_run("base", "runs/x", {}, summary=lambda: 1)
        assert sorted(store.items(ids)) == ids  # a list crosses; the store is fine
    assert [r.model_version for r in local.eval_runs()] == []  # nothing was written by the refused call
