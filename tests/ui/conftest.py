"""Fixtures for the browser test: Debian's Chromium driven by Playwright, and the whole app
launched in-process on the tiny model with a SQLite store under tmp_path."""

from pathlib import Path

import pytest

from tests.conftest import REPO

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
def studio(tiny_engine, tmp_path):
    """(url, store) of the full app on the tiny model, with 3 eval answers waiting for raters."""
    from app import build_demo
    from chatbot.engine import GenerationSettings
    from chatbot.loading import EngineConfig
    from chatbot.pool import EnginePool
    from store import NewItem, Store
    from ui.context import AppContext
    from ui.label import LABEL_SHORTCUTS_JS

    pool = EnginePool(EngineConfig(runs_dir=str(tmp_path / "runs")))
    pool.put("base", tiny_engine)
    store = Store(f"sqlite:///{tmp_path / 'labels.db'}")
    items = [
        NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": f"Question {i}?"}], f"Answer number {i}.", "base")
        for i in range(3)
    ]
    store.add_label_items(items)
    settings = GenerationSettings(temperature=0, max_new_tokens=16)
    demo = build_demo(AppContext(pool, store, str(REPO / "personas"), settings))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, js=LABEL_SHORTCUTS_JS)
    yield demo.local_url, store
    demo.close()
    store.close()
