"""Chat and Compare in real Chromium against `python app.py` as it starts by default (store and
model in their own processes; the tiny model answers): typing ahead while a reply streams,
thumbs that show exactly what the store holds, errors that keep what is on screen, the persona
list re-read on page load, and a phone's screen (390×844).

Screenshots land in /tmp/persona-shots/ for a look.
"""

import os
import re
from pathlib import Path

import pytest

from store import Store
from tests.ui.conftest import CHROMIUM

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make browser)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -r requirements-dev.txt")
from playwright.sync_api import Locator, Page, expect  # noqa: E402

SHOTS = Path("/tmp/persona-shots")
STREAM_MS = 30_000
BUSY_TEXT = "A reply is still being written"


@pytest.fixture
def page(browser, shipped_app):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(shipped_app.url, wait_until="domcontentloaded")  # "networkidle" never settles on Gradio
    expect(page.locator("#chat-box")).to_be_visible()
    yield page
    page.close()


@pytest.fixture
def store(shipped_app):
    with Store(shipped_app.database_url) as opened:
        yield opened


def bot(where: Locator) -> Locator:
    return where.locator('[data-testid="bot"]')


def user(where: Locator) -> Locator:
    return where.locator('[data-testid="user"]')


def toast(page: Page, text: str) -> Locator:
    return page.locator(".toast-body").filter(has_text=text)


def name_rater(page: Page, name: str) -> None:
    page.locator("#rater-name").get_by_role("textbox").fill(name)


def chat_box(page: Page) -> Locator:
    return page.locator("#chat-input").get_by_role("textbox")


def wait_reply(page: Page, where: Locator, users: int, greeting: int = 1) -> None:
    """Until the chat shows `users` user messages and the last one's reply is saved: only a
    stored reply has thumbs."""
    expect(user(where)).to_have_count(users, timeout=STREAM_MS)
    expect(bot(where)).to_have_count(users + greeting, timeout=STREAM_MS)
    expect(thumbs(bot(where).last)["like"]).to_be_visible(timeout=STREAM_MS)


def conversation_of(store: Store, first_message: str) -> list:
    """The active turns of the stored chat whose first user message is `first_message`."""
    with store.engine.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM conversations ORDER BY id").all()]
    for conv in ids:
        turns = [t for t in store.conversation(conv) if t.withdrawn is None]
        if any(t.role == "user" and t.content == first_message for t in turns[:2]):
            return turns
    raise AssertionError(f"no stored conversation starts with {first_message!r}")


def test_text_typed_while_a_reply_streams_stays_and_an_early_send_is_refused_aloud(page, store):
    chat, box = page.locator("#chat-box"), chat_box(page)
    box.fill("Tell me a long story about clocks")
    box.press("Enter")
    expect(user(chat)).to_have_count(1)  # the message shows at once
    expect(box).to_have_value("")
    box.type("And bees?")  # typed while the reply streams
    box.press("Enter")
    expect(toast(page, BUSY_TEXT)).to_be_visible()
    expect(box).to_have_value("And bees?")  # kept, not wiped by the stream
    wait_reply(page, chat, 1)
    expect(box).to_have_value("And bees?")
    box.press("Enter")  # now it goes
    wait_reply(page, chat, 2)
    expect(box).to_have_value("")
    turns = conversation_of(store, "Tell me a long story about clocks")
    assert [t.content for t in turns if t.role == "user"] == ["Tell me a long story about clocks", "And bees?"]
    assert turns[-1].role == "assistant" and turns[-1].model_version == "base"


def thumbs(message: Locator) -> dict[str, Locator]:
    """The thumbs under a message: their labels say whether each is selected."""
    under = message.locator("xpath=ancestor::div[contains(@class, 'message-row')][1]/following-sibling::div[1]")
    return {"like": under.get_by_role("button", name=re.compile("^Liked?$")),
            "dislike": under.get_by_role("button", name=re.compile("^Disliked?$"))}  # fmt: skip


def test_chat_thumbs_show_exactly_what_the_store_holds(page, store):
    chat, box = page.locator("#chat-box"), chat_box(page)
    expect(bot(chat)).to_have_count(1)
    greeting = thumbs(bot(chat).first)
    expect(greeting["like"]).to_be_hidden()  # a greeting is the persona file's: nothing to label
    box.fill("What are you building?")
    box.press("Enter")
    wait_reply(page, chat, 1)
    reply = thumbs(bot(chat).nth(1))
    [turn] = [t for t in conversation_of(store, "What are you building?") if t.role == "assistant"][1:]

    def rows(rater):
        return [(r.verdict, r.source) for r in store.label_rows() if r.rater == rater]

    reply["like"].click()  # no rater name yet: refused, and the thumb says so
    expect(toast(page, "Enter your name")).to_be_visible()
    expect(reply["like"]).to_have_attribute("aria-label", "Like")
    name_rater(page, "thumbs-tess")
    reply["like"].click()
    expect(toast(page, "Saved: good (by thumbs-tess)")).to_be_visible()
    expect(reply["like"]).to_have_attribute("aria-label", "Liked")
    assert rows("thumbs-tess") == [("good", "chat")]
    reply["like"].click()  # clicked off: no verdict at all, not "bad"
    expect(toast(page, "Label taken back")).to_be_visible()
    expect(reply["like"]).to_have_attribute("aria-label", "Like")
    assert rows("thumbs-tess") == []
    reply["dislike"].click()
    expect(toast(page, "Saved: bad (by thumbs-tess)")).to_be_visible()
    expect(reply["dislike"]).to_have_attribute("aria-label", "Disliked")
    assert rows("thumbs-tess") == [("bad", "chat")]
    assert store.item(store.label_rows()[-1].item_id).answer == turn.content
