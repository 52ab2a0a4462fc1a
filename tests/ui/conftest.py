"""Fixtures for the browser tests: Debian's Chromium driven by Playwright; the whole app launched
in-process on the tiny model with a SQLite store under tmp_path (`studio`), or started as
`python app.py` starts it, store and model in their child processes (`app_as_shipped`)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from corpus.formats import SHARED_VALID_CSV
from tests.conftest import REPO, serving, studio_context

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright cannot download a browser here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PERSONA = {"name": "Ada", "facts": ["I build clocks.", "I keep bees."], "style": "short and warm"}
SHORT_PERSONAS = {
    "ada": PERSONA | {"description": "clockmaker", "greeting": "Hello! Mind the sawdust."},
    "marco": {"name": "Marco", "facts": ["I am a night nurse.", "I cook risotto."], "greeting": "Ciao, I'm Marco."},
    "sam": {"name": "Sam", "facts": ["I work at a cafe.", "I paint."]},  # no greeting
}


@pytest.fixture(scope="module")
def browser():
    """Chromium under Playwright; test_browser.py skips itself when either is missing."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def studio(tiny_engine, store, tmp_path):
    """(url, store) of the full app on the tiny model, with 3 eval answers waiting for raters."""
    from engines.config import GenerationSettings
    from store import NewItem

    items = [
        NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": f"Question {i}?"}], f"Answer number {i}.", "base")
        for i in range(3)
    ]
    store.add_label_items(items)
    ctx = studio_context(tmp_path, store, {"base": tiny_engine}, GenerationSettings(temperature=0, max_new_tokens=16))
    with serving(ctx) as url:
        yield url, store


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(tmp: Path, *args: str, short_personas: bool = True):
    """`python app.py *args` as it starts by default (the store in `python -m store.process`, the
    model in its child process) with a SQLite store under `tmp` and, with `short_personas`, three
    short personas there (else the repo's `personas/`): yields (url, database_url, personas_dir,
    log). Ended with its child processes on exit."""
    personas = tmp / "personas" if short_personas else REPO / "personas"
    if short_personas:
        personas.mkdir()
        # Short personas (the tiny model reads 512 tokens) without a `scope:` (no classifier to train).
        for key, fields in SHORT_PERSONAS.items():
            (personas / f"{key}.yaml").write_text(yaml.safe_dump(fields, allow_unicode=True), encoding="utf-8")
    database_url = f"sqlite:///{tmp / 'labels.db'}"
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=database_url, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    env.pop("SPACE_ID", None)
    # The shared split Organise reads (a test fixture: the product reads the hub dataset, offline here).
    args = ["--port", str(port), "--personas_dir", str(personas), "--runs_dir", str(tmp / "runs"),
            "--dataset", str(SHARED_VALID_CSV), *args]  # fmt: skip
    log_path = tmp / "app.log"
    with open(log_path, "w") as log:
        app = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 300
            while True:
                if app.poll() is not None:
                    raise RuntimeError(f"app.py exited with {app.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"app.py did not answer in 300 s:\n{log_path.read_text()[-3000:]}") from None
                    time.sleep(0.5)
            yield SimpleNamespace(url=url, database_url=database_url, personas_dir=personas, log=log_path)
        finally:
            os.killpg(app.pid, signal.SIGTERM)  # the app and its store and model processes
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(app.pid, signal.SIGKILL)
                app.wait()


@pytest.fixture(scope="session")
def shipped_app(tiny_model_dir, tmp_path_factory):
    """The app as `python app.py` starts it by default, on the tiny model (greedy, 200 tokens a
    reply: long enough to type ahead while it streams). One app for the session: tests use their
    own rater names and conversations."""
    args = ["--model", str(tiny_model_dir), "--generation.temperature", "0", "--generation.max_new_tokens", "200"]
    with launched(tmp_path_factory.mktemp("shipped"), *args) as app:
        yield app


@pytest.fixture(scope="session")
def shipped_default_app(default_model_dir, tmp_path_factory):
    """The app exactly as `python app.py` starts it: the default model too (for `slow` tests)."""
    with launched(tmp_path_factory.mktemp("shipped-default")) as app:
        yield app


@pytest.fixture
def app_as_shipped(tmp_path, tiny_model_dir):
    """(url, store) of `python app.py` in its default process layout on the tiny model, with the
    repo's personas and a store of its own (the layout is the point)."""
    from store import Store

    with (
        launched(tmp_path, "--model", str(tiny_model_dir), short_personas=False) as app,
        Store(app.database_url) as store,
    ):
        yield app.url, store
