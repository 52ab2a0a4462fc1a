"""Fixtures for the browser test: Debian's Chromium driven by Playwright, and the whole app
launched in-process on the tiny model with a SQLite store under tmp_path."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import serving, studio_context

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shipped_app(tiny_model_dir, tmp_path_factory):
    """`python app.py` as it starts by default (the store in `python -m store.process`, the
    model in its child process), on the tiny model, a SQLite store and three personas under tmp:
    yields a `Shipped` (url, database_url, personas_dir). One app for the session: tests use
    their own rater names and conversations. Ended (with its children) after the session."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    from types import SimpleNamespace

    from tests.conftest import REPO

    tmp = tmp_path_factory.mktemp("shipped")
    personas = tmp / "personas"
    personas.mkdir()
    # Short personas (the tiny model reads 512 tokens) without a `scope:` (no classifier to train).
    for key, fields in SHORT_PERSONAS.items():
        (personas / f"{key}.yaml").write_text(yaml.safe_dump(fields, allow_unicode=True), encoding="utf-8")
    database_url = f"sqlite:///{tmp / 'labels.db'}"
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=database_url, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    env.pop("SPACE_ID", None)
    # 200 greedy tokens: long enough for a person to type ahead while it streams.
    args = ["--port", str(port), "--model", str(tiny_model_dir), "--personas_dir", str(personas), "--runs_dir",
            str(tmp / "runs"), "--generation.temperature", "0", "--generation.max_new_tokens", "200"]  # fmt: skip
    log = open(tmp / "app.log", "w")  # noqa: SIM115 (closed below)
    app = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if app.poll() is not None:
                raise RuntimeError(f"app.py exited with {app.returncode}:\n{(tmp / 'app.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    tail = (tmp / "app.log").read_text()[-3000:]
                    raise TimeoutError(f"app.py did not answer in 180 s:\n{tail}") from None
                time.sleep(0.5)
        yield SimpleNamespace(url=url, database_url=database_url, personas_dir=personas, log=tmp / "app.log")
    finally:
        os.killpg(app.pid, signal.SIGTERM)  # the app and its store and model processes
        try:
            app.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        log.close()
