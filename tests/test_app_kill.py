"""`python app.py` as a real process: labels survive a SIGKILL, bad start-up settings exit 2
with a message instead of a traceback. The tiny model answers; the store is SQLite in tmp_path."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from gradio_client import Client

from store import NewItem, Store
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # real app processes: ~10 s of imports each

START_S = 120  # imports (torch, gradio) take ~10 s on 2 cores; more when the machine is busy
PERSONA = {"name": "Ada", "facts": ["I build clocks.", "I keep bees."]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSONA_STUDIO_", "GRADIO_SERVER_"))}
    env.pop("DATABASE_URL", None)
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def start_app(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # a file, not a pipe: a full pipe would block the server
        return subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=app_env(), stdout=out, stderr=out)


def wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode} before answering:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    proc.kill()
    pytest.fail(f"the app did not answer on {url} within {START_S} s:\n{log.read_text()}")


@pytest.fixture
def launch(tmp_path):
    """launch(*flags) -> (process, url): app.py on the tiny model, up and answering."""
    procs = []

    def run(*flags: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        log = tmp_path / f"app-{port}.log"
        proc = start_app("--port", str(port), "--host", "127.0.0.1", *flags, log=log)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(proc, url, log)
        return proc, url

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_labels_survive_a_sigkill(launch, tiny_model_dir, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'labels.db'}"
    flags = ["--database_url", db_url, "--model", str(tiny_model_dir), "--runs_dir", str(tmp_path / "runs")]
    proc, url = launch(*flags)
    with Store(db_url) as store:  # the app's database, opened beside it
        items = [
            NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": f"q{i}"}], f"a{i}", "base") for i in range(3)
        ]
        ids = store.add_label_items(items)

    client = Client(url, verbose=False)
    item_id = client.predict("rita", api_name="/next_item")[0]
    for verdict in ("good", "bad", "good"):
        item_id = client.predict(item_id, verdict, f"{verdict}!", "rita", api_name="/label")[0]
    assert item_id is None  # all three labelled

    # The labels went through the app's store process (store/process.py), which must not outlive it.
    served = [c for c in psutil.Process(proc.pid).children() if "store.process" in " ".join(c.cmdline())]
    assert len(served) == 1
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown hooks, no flush: what is on disk is all there is
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not psutil.wait_procs(served, timeout=10)[1], "the store process outlived the killed app"

    _, url = launch(*flags)
    with Store(db_url) as store:
        rows = sorted(store.label_rows(), key=lambda r: r.item_id)
    assert [(r.item_id, r.rater, r.verdict, r.comment) for r in rows] == [
        (ids[0], "rita", "good", "good!"),
        (ids[1], "rita", "bad", "bad!"),
        (ids[2], "rita", "good", "good!"),
    ]
    results = {row["model version"]: row for row in Client(url, verbose=False).predict(api_name="/results")}
    assert results["base"]["labels"] == 3 and results["base"]["human accuracy (%)"] == 66.7


def test_a_bad_database_or_model_exits_2_with_a_clear_message(tmp_path):
    cases = {
        "database": ["--database_url", "postgresql://nobody:pw@127.0.0.1:1/none"],
        "model": ["--database_url", f"sqlite:///{tmp_path / 'labels.db'}", "--model", "/no/such/model"],
    }
    procs = {  # both at once: each spends ~10 s importing
        name: subprocess.Popen(
            [sys.executable, "app.py", "--port", str(free_port()), *flags],
            cwd=REPO,
            env=app_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, flags in cases.items()
    }
    outputs = {name: proc.communicate(timeout=START_S) for name, proc in procs.items()}
    for name, proc in procs.items():
        stdout, stderr = outputs[name]
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{stdout}\n{stderr}"
        assert "Traceback" not in stdout + stderr
        assert any(line.startswith("error: ") for line in stderr.splitlines()) and "fix: " in stderr

    database_error = outputs["database"][1]
    assert "nobody:***@127.0.0.1:1/none" in database_error
    assert ":pw@" not in database_error
    assert "/no/such/model" in outputs["model"][1]
