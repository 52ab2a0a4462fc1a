"""Fixtures for the browser tests: Debian's Chromium driven by Playwright; the whole app launched
in-process on the tiny model with a SQLite store under tmp_path (`studio`), or started as
`python app.py` starts it, store and model in their child processes (`app_as_shipped`)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
    from engines.engine import GenerationSettings
    from store import NewItem

    items = [
        NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": f"Question {i}?"}], f"Answer number {i}.", "base")
        for i in range(3)
    ]
    store.add_label_items(items)
    ctx = studio_context(tmp_path, store, {"base": tiny_engine}, GenerationSettings(temperature=0, max_new_tokens=16))
    with serving(ctx) as url:
        yield url, store


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def shipped_app(folder: Path, *args: str, timeout: float = 240) -> Iterator[tuple[str, str]]:
    """`python app.py` as it starts by default (the store in `python -m store.process`, the
    model in `python -m engines.child`), on a SQLite file and a runs folder under `folder`;
    yields (url, database url). `args` are more flags (`--model`, `--personas_dir`, ...)."""
    import httpx

    port, database = free_port(), f"sqlite:///{folder / 'labels.db'}"
    env = os.environ | {"DATABASE_URL": database, "PERSONA_STUDIO_RUNS": str(folder / "runs")}
    for name in ("SPACE_ID", "OAUTH_CLIENT_ID", "PERSONA_STUDIO_AUTH", "PERSONA_STUDIO_MODEL"):
        env.pop(name, None)
    log_path = folder / "app.log"
    with log_path.open("w") as log:
        app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if app.poll() is not None:
                raise RuntimeError(f"app.py exited with {app.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer in {timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, database
    finally:
        os.killpg(app.pid, signal.SIGTERM)  # the app and its store and model children
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()


@pytest.fixture
def app_as_shipped(tmp_path, tiny_model_dir):
    """(url, store) of `python app.py` in its default process layout on the tiny model (the
    layout is the point; tests that need the default model's replies pass --model themselves)."""
    from store import Store

    with shipped_app(tmp_path, "--model", str(tiny_model_dir)) as (url, database), Store(database) as store:
        yield url, store
