"""Fixtures for the browser test: Debian's Chromium driven by Playwright, and the whole app
launched in-process on the tiny model with a SQLite store under tmp_path."""

from pathlib import Path

import pytest

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
