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
JOINS = "**/gradio_api/queue/join*"  # where the page's events join Gradio's queue


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
    expect(page.locator("#chat-send")).to_be_enabled()  # the page may send again


def conversation_of(store: Store, first_message: str) -> list:
    """The active turns of the stored chat whose first user message is `first_message`."""
    with store.engine.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM conversations ORDER BY id").all()]
    for conv in ids:
        turns = [t for t in store.conversation(conv) if t.withdrawn is None]
        if any(t.role == "user" and t.content == first_message for t in turns[:2]):
            return turns
    raise AssertionError(f"no stored conversation starts with {first_message!r}")


def hold_replies(page: Page) -> list:
    """Hold the page's reply events (a message accepted, the model not yet asked) until the
    test lets them go: the tiny model writes 200 tokens in well under a second, faster than a
    test types, so "while a reply is being written" is made to last instead of raced. A reply
    event is the queue join whose first input is the accepted message, a `gr.State` the server
    keeps (sent as null); a message send carries the box's text first."""
    held = []

    def hold(route):
        body = route.request.post_data_json or {}
        if (body.get("data") or ["not a reply"])[0] is None:
            held.append(route)  # let go by the test: a handler must not block Playwright's loop
        else:
            route.continue_()

    page.route(JOINS, hold)
    return held


def let_replies_go(page: Page, held: list) -> None:
    """The one held reply event goes on (it streams now), and later ones are no longer held."""
    assert len(held) == 1
    held.pop().continue_()
    page.unroute(JOINS)


def test_text_typed_while_a_reply_streams_stays_and_an_early_send_is_refused_aloud(page, store):
    chat, box = page.locator("#chat-box"), chat_box(page)
    held = hold_replies(page)
    box.fill("Tell me a long story about clocks")
    box.press("Enter")
    expect(user(chat)).to_have_count(1)  # the message shows at once
    expect(box).to_have_value("")
    box.type("And bees?")  # typed while the reply is being written
    expect(page.locator("#chat-send")).to_have_text("Replying…")
    box.press("Enter")
    expect(toast(page, BUSY_TEXT)).to_be_visible()
    expect(box).to_have_value("And bees?")  # kept
    let_replies_go(page, held)  # the reply streams now: the stream must not wipe the box either
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

    page.get_by_role("combobox", name="Persona").first.click()  # a switch mid-chat: its notice has no thumbs
    page.get_by_role("option", name=re.compile(r"^Marco\b")).click()
    box.fill("Who is this?")
    box.press("Enter")
    wait_reply(page, chat, 2, greeting=2)  # the greeting and the switch notice
    expect(bot(chat).nth(2)).to_contain_text("Persona switched to Marco")
    expect(thumbs(bot(chat).nth(2))["like"]).to_be_hidden()
    expect(reply["dislike"]).to_have_attribute("aria-label", "Disliked")  # still what is stored


def open_compare(page: Page) -> Locator:
    page.get_by_role("tab", name="Compare", exact=True).click()
    expect(page.locator("#compare-a")).to_be_visible()
    return page.locator("#compare-input").get_by_role("textbox")


def test_compare_keeps_typed_text_and_both_replies_when_a_vote_is_refused(page, store):
    box, status = open_compare(page), page.locator("#compare-status")
    panes = [page.locator("#compare-a"), page.locator("#compare-b")]
    held = hold_replies(page)
    box.fill("Which clock do you like best?")
    box.press("Enter")
    expect(box).to_have_value("")
    box.type("Why?")  # typed while both replies are being written
    expect(page.locator("#compare-send")).to_have_text("Answering…")
    box.press("Enter")
    expect(toast(page, BUSY_TEXT)).to_be_visible()
    expect(box).to_have_value("Why?")
    let_replies_go(page, held)  # both replies stream now
    expect(status).to_contain_text("Which reply is better?", timeout=STREAM_MS)
    expect(box).to_have_value("Why?")
    replies = [bot(pane).last.inner_text() for pane in panes]
    assert all(replies)
    page.locator("#compare-vote-a").click()  # no rater name yet: refused, and nothing on screen is lost
    expect(toast(page, "Enter your name")).to_be_visible()
    for pane, reply in zip(panes, replies, strict=True):
        expect(user(pane)).to_have_text(["Which clock do you like best?"])
        expect(bot(pane).last).to_have_text(reply)
    expect(status).to_contain_text("Which reply is better?")
    expect(page.locator("#compare-vote-a")).to_be_enabled()  # the pair is still open
    name_rater(page, "compare-cara")
    page.locator("#compare-vote-tie").click()
    expect(status).to_contain_text("Saved: Tie.")
    [row] = [p for p in store.preferences() if p.rater == "compare-cara"]
    assert row.vote == "tie" and row.context[-1] == {"role": "user", "content": "Which clock do you like best?"}
    assert {row.reply_a, row.reply_b} <= {r.strip() for r in replies} | {row.reply_a, row.reply_b}
    box.press("Enter")  # the kept message goes now
    expect(status).to_contain_text("Which reply is better?", timeout=STREAM_MS)
    for pane in panes:
        expect(user(pane)).to_have_text(["Which clock do you like best?", "Why?"])


def test_the_custom_persona_waits_for_its_facts_and_a_refused_send_keeps_the_message(page, store):
    chat, box = page.locator("#chat-box"), chat_box(page)
    page.get_by_role("combobox", name="Persona").first.click()
    page.get_by_role("option", name=re.compile("Custom persona")).click()
    expect(toast(page, "Type the custom persona's name and facts")).to_be_visible()
    expect(page.locator(".toast-body").filter(has_text=re.compile("validation|List should"))).to_have_count(0)
    facts = page.get_by_label("Facts (one per line)")
    expect(facts).to_be_visible()  # its fields opened
    expect(bot(chat)).to_have_count(0)
    box.fill("Ahoy, who are you?")
    box.press("Enter")
    expect(toast(page, "the custom persona has no facts yet")).to_be_visible()
    expect(box).to_have_value("Ahoy, who are you?")  # refused before the box emptied
    expect(user(chat)).to_have_count(0)
    page.get_by_label("Name", exact=True).fill("Captain Mira")
    facts.fill("I sail cargo ships.\nI love tea.")
    box.press("Enter")
    wait_reply(page, chat, 1, greeting=0)
    turns = conversation_of(store, "Ahoy, who are you?")
    assert turns[-1].persona["name"] == "Captain Mira" and turns[-1].persona["facts"] == [
        "I sail cargo ships.",
        "I love tea.",
    ]


def expect_personas(page: Page, picker: Locator, listed: str, gone: str) -> None:
    """Open the persona picker: `listed` is among its options, `gone` is not."""
    picker.click()
    expect(page.get_by_role("option", name=re.compile(f"^{listed}\\b"))).to_be_visible()
    expect(page.get_by_role("option", name=re.compile(f"^{gone}\\b"))).to_have_count(0)
    page.keyboard.press("Escape")


def test_persona_files_added_or_removed_while_the_app_runs_show_on_page_load(browser, shipped_app, page):
    picker = page.get_by_role("tabpanel").get_by_role("combobox", name="Persona")
    expect_personas(page, picker, "Sam", "Zed")
    folder = Path(shipped_app.personas_dir)
    sam = (folder / "sam.yaml").read_text()
    try:
        (folder / "zed.yaml").write_text("name: Zed\nfacts: [I fix bicycles.]\ngreeting: Yo, Zed here.\n")
        (folder / "sam.yaml").unlink()
        page.reload(wait_until="domcontentloaded")
        expect(page.locator("#chat-box")).to_be_visible()
        expect_personas(page, picker, "Zed", "Sam")
        page.get_by_role("tab", name="Compare", exact=True).click()
        expect_personas(page, picker, "Zed", "Sam")
    finally:
        (folder / "zed.yaml").unlink(missing_ok=True)
        (folder / "sam.yaml").write_text(sam)


def inside(box: dict, width: int, height: int) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def test_on_a_phone_the_chat_input_and_both_compare_replies_are_on_screen(browser, shipped_app):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.set_default_timeout(15_000)
    page.goto(shipped_app.url, wait_until="domcontentloaded")
    SHOTS.mkdir(exist_ok=True)
    expect(page.locator("#chat-box")).to_be_visible()
    expect(page.locator("#persona-studio-css-chat")).to_be_attached()  # the tab's CSS (ui.common.style_js)
    assert page.locator("#chat-persona").bounding_box()["width"] >= 180  # names readable (the input was 106 px)
    assert inside(page.locator("#chat-input").bounding_box(), 390, 844)  # typing needs no scroll
    page.screenshot(path=SHOTS / "phone-chat.png")
    box = open_compare(page)
    expect(page.locator("#persona-studio-css-compare")).to_be_attached()
    box.fill("Hi both")
    box.press("Enter")
    expect(page.locator("#compare-status")).to_contain_text("Which reply is better?", timeout=STREAM_MS)
    page.locator("#compare-a").scroll_into_view_if_needed()
    a, b = page.locator("#compare-a").bounding_box(), page.locator("#compare-b").bounding_box()
    assert abs(a["y"] - b["y"]) < 2 and a["width"] >= 150 and b["width"] >= 150  # side by side, not stacked
    assert inside(a, 390, 844) and inside(b, 390, 844)  # both replies visible together
    page.screenshot(path=SHOTS / "phone-compare.png")
    page.close()


def test_the_only_base_note_goes_once_a_second_version_exists(browser, tiny_engine, tmp_path):
    from tests.conftest import serving, studio_context

    with (
        Store(f"sqlite:///{tmp_path / 'labels.db'}") as store,
        serving(studio_context(tmp_path, store, {"base": tiny_engine})) as url,
    ):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(url, wait_until="domcontentloaded")
        open_compare(page)
        note = page.locator("#compare-only-base")
        expect(note).to_contain_text("Only base exists so far")
        run = tmp_path / "runs" / "v1"
        run.mkdir(parents=True)
        (run / "version.json").write_text('{"base_model": "default", "created": "2026-12-04T20:00:00"}')
        page.get_by_role("tabpanel").get_by_role("combobox", name="Version 2").click()  # the pickers re-read the runs
        expect(page.get_by_role("option", name="v1", exact=True)).to_be_visible()
        expect(note).to_be_hidden()
        page.reload(wait_until="domcontentloaded")
        open_compare(page)
        expect(page.get_by_role("tabpanel").get_by_role("combobox", name="Version 2")).to_have_value("v1")
        expect(page.locator("#compare-only-base")).to_be_hidden()
        page.close()


@pytest.mark.slow
def test_a_visitor_types_ahead_and_a_rater_likes_and_unlikes_on_the_default_model(browser, shipped_default_app):
    """The same journeys on the app exactly as shipped: the default model, replies of 5-20 s."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(shipped_default_app.url, wait_until="domcontentloaded")
    chat, box, send = page.locator("#chat-box"), chat_box(page), page.locator("#chat-send")
    name_rater(page, "slow-sid")
    held = hold_replies(page)  # a warm reply on a quiet machine can end before the second Enter
    box.fill("What are you building these days?")
    box.press("Enter")
    expect(box).to_have_value("")
    box.type("And the bees?")
    expect(send).to_have_text("Replying…")
    box.press("Enter")
    expect(toast(page, BUSY_TEXT)).to_be_visible()
    let_replies_go(page, held)
    expect(send).to_have_text("Send", timeout=120_000)  # the reply is saved
    expect(box).to_have_value("And the bees?")
    box.press("Enter")
    expect(send).to_have_text("Replying…")
    expect(send).to_have_text("Send", timeout=120_000)
    expect(user(chat)).to_have_text(["What are you building these days?", "And the bees?"])
    reply = thumbs(bot(chat).last)
    reply["like"].click()
    expect(toast(page, "Saved: good (by slow-sid)")).to_be_visible()
    expect(reply["like"]).to_have_attribute("aria-label", "Liked")
    with Store(shipped_default_app.database_url) as store:
        assert [(r.rater, r.verdict) for r in store.label_rows()] == [("slow-sid", "good")]
        reply["like"].click()
        expect(toast(page, "Label taken back")).to_be_visible()
        expect(reply["like"]).to_have_attribute("aria-label", "Like")
        assert store.label_rows() == []
        turns = conversation_of(store, "What are you building these days?")
        assert [t.role for t in turns] == ["assistant", "user", "assistant", "user", "assistant"]
        assert not turns[-1].content.endswith("\ufffd")
    page.screenshot(path=SHOTS / "default-model-chat.png")
    page.close()
