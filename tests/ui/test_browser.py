"""The app in a real browser, as a person uses it: chat, switch persona, compare, label with the
keyboard, read the results. Chromium from Debian, driven by Playwright; the tiny model answers.

Full-page screenshots of each tab land in tmp_path and in /tmp/persona-shots/ for a look.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.ui.conftest import CHROMIUM

pytestmark = pytest.mark.slow  # a real browser and a real app: seconds per step

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make browser)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -r requirements-dev.txt")
from playwright.sync_api import Locator, Page, expect  # noqa: E402

SHOTS = Path("/tmp/persona-shots")
STREAM_MS = 30_000  # a reply, streamed token by token
BUSY = '[data-testid="status-tracker"]:is(.generating, .pending)'


def panel(page: Page) -> Locator:
    """The tab on screen (Gradio renders one tab panel at a time)."""
    return page.get_by_role("tabpanel")


def open_tab(page: Page, name: str) -> Locator:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")
    return panel(page)


def bot(where: Locator) -> Locator:
    return where.locator('[data-testid="bot"]')


def user(where: Locator) -> Locator:
    return where.locator('[data-testid="user"]')


def send(box: Locator, text: str, where: Locator, users_after: int) -> None:
    """Type `text`, press Enter, wait until the reply has finished streaming."""
    box.fill(text)
    box.press("Enter")
    expect(user(where)).to_have_count(users_after, timeout=STREAM_MS)  # the turn is on screen
    expect(box).to_have_value("")
    # The reply is saved: Chat's Send button is back; Compare asks for the vote.
    if where.locator("#chat-send").count():
        expect(where.locator("#chat-send")).to_have_text("Send", timeout=STREAM_MS)
        expect(where.locator("#chat-send")).to_be_enabled()
    else:
        expect(where.locator("#compare-status")).to_contain_text("Which reply is better?", timeout=STREAM_MS)
    expect(where.locator(BUSY)).to_have_count(0, timeout=STREAM_MS)


def shoot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def test_a_person_chats_compares_labels_and_reads_the_results(browser, studio, tmp_path):
    url, store = studio
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(url, wait_until="domcontentloaded")  # "networkidle" never settles on a Gradio page

    page.locator("#rater-name").get_by_role("textbox").fill("rita")

    # Chat: two turns with the first persona; a thumbs-up on the second reply; undo it and ask
    # again; then a switch to Nova and a third turn.
    chat = panel(page)
    box = page.locator("#chat-input").get_by_role("textbox")
    expect(bot(chat)).to_have_count(1)  # the persona's greeting
    send(box, "Hello! What are you making today?", chat, users_after=1)
    send(box, "And how are the bees?", chat, users_after=2)
    expect(bot(chat)).to_have_count(3)
    # Thumbs only under the model's replies (none under the greeting): the second is the second reply's.
    chat.get_by_role("button", name="Like", exact=True).nth(1).click()
    expect(page.get_by_text("Saved: good (by rita).")).to_be_visible()
    chat.get_by_role("button", name="Undo", exact=True).click()
    expect(user(chat)).to_have_count(1)
    expect(bot(chat)).to_have_count(2)
    send(box, "And how are the bees?", chat, users_after=2)
    chat.get_by_role("combobox", name="Persona").click()
    page.get_by_role("option", name=re.compile(r"^Nova\b")).click()
    expect(chat.get_by_role("combobox", name="Persona")).to_have_value(re.compile(r"^Nova\b"))
    send(box, "Who are you now?", chat, users_after=3)
    expect(bot(chat)).to_have_count(5)  # greeting, 2 replies, the switch notice, the reply
    expect(bot(chat).nth(3)).to_contain_text("Persona switched to Nova")
    for reply in (1, 2, 4):
        expect(bot(chat).nth(reply)).not_to_have_text("")
    expect(user(chat)).to_have_text(["Hello! What are you making today?", "And how are the bees?", "Who are you now?"])
    shoot(page, shots, "1-chat")

    # Compare: one message, a reply in each pane.
    compare = open_tab(page, "Compare")
    expect(compare.get_by_role("log")).to_have_count(2)
    send(compare.get_by_role("textbox"), "Hi both of you", compare, users_after=2)
    for pane in compare.get_by_role("log").all():
        expect(user(pane)).to_have_text(["Hi both of you"])
        expect(bot(pane)).to_have_count(2)  # greeting, reply
        expect(bot(pane).last).not_to_have_text("")
    shoot(page, shots, "2-compare")

    # Label: the first answer loads when the tab opens; G, B, G label all three.
    label = open_tab(page, "Label")
    progress = label.get_by_text(re.compile(r"of 4 labelled"))
    expect(progress).to_have_text("1 of 4 labelled")  # the thumbs-up in Chat counts
    answer = label.get_by_role("textbox", name=re.compile("Answer to judge"))
    expect(answer).to_have_value("Answer number 0.")
    shoot(page, shots, "3-label")
    for done, key in enumerate("gbg", start=1):  # good, bad, good
        page.keyboard.press(key)
        expect(progress).to_contain_text(f"{done + 1} of 4 labelled")
        if done < 3:
            expect(answer).to_have_value(f"Answer number {done}.")
    expect(progress).to_contain_text("Nothing left to label")
    expect(answer).to_have_value("")
    shoot(page, shots, "4-label-done")

    # Results: the table shows the four labels for `base`.
    results = open_tab(page, "Results").locator("#results-table")  # the leaderboard's tables are below it
    row = results.get_by_role("row").filter(has_text=re.compile(r"^\s*base\b"))
    expect(row).to_contain_text("75")  # 3 of 4 good
    columns = [re.sub(r"[\s⋮]+$", "", text).strip() for text in results.get_by_role("columnheader").all_inner_texts()]
    shown = dict(zip(columns, (text.strip() for text in row.get_by_role("gridcell").all_inner_texts()), strict=True))
    assert shown["model version"] == "base" and shown["human accuracy (%)"] == "75"
    assert re.fullmatch(r"\d+\.\d–\d+\.\d", shown["95 % interval (%)"])  # the Wilson interval, e.g. 20.8–93.9
    assert (shown["labels"], shown["items"], shown["raters"]) == ("4", "4", "1")
    expect(results.get_by_role("img")).not_to_have_count(0)  # the accuracy plot
    shoot(page, shots, "5-results")
    page.close()

    labels = sorted(store.label_rows(), key=lambda r: r.item_id)
    assert [(r.rater, r.verdict, r.model_version, r.source) for r in labels] == [
        ("rita", "good", "base", "eval"),
        ("rita", "bad", "base", "eval"),
        ("rita", "good", "base", "eval"),
        ("rita", "good", "base", "chat"),
    ]
    with store.engine.connect() as conn:
        conv_ids = dict(conn.execute(sa.text("SELECT source, id FROM conversations")).all())
    chat_turns = store.conversation(conv_ids["chat"])
    # The greeting opens the stored conversation; the undone exchange is kept, marked; the
    # switch notice is kept too, as a notice.
    assert [t.withdrawn for t in chat_turns[3:5]] == ["undo", "undo"]
    shown_turns = [t for t in chat_turns if t.withdrawn is None]
    assert [t.role for t in shown_turns] == ["assistant"] + ["user", "assistant"] * 2 + ["notice", "user", "assistant"]
    assert shown_turns[-2].content == "Who are you now?" and shown_turns[-1].persona_name == "Nova"
    liked = store.item(labels[-1].item_id)
    assert liked.answer == chat_turns[4].content and liked.context[-1]["content"] == "And how are the bees?"
    assert [t.role for t in store.conversation(conv_ids["compare"])] == ["assistant", "user", "assistant"]


def test_a_rater_votes_blind_between_two_versions_and_then_sees_their_names(browser, tiny_engine, store, tmp_path):
    from engines.config import GenerationSettings
    from tests.conftest import serving, studio_context

    ctx = studio_context(tmp_path, store, {"base": tiny_engine, "tuned": tiny_engine},
                         GenerationSettings(temperature=0, max_new_tokens=16))  # fmt: skip
    with serving(ctx) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#rater-name").get_by_role("textbox").fill("rita")
        compare = open_tab(page, "Compare")
        version_2 = compare.get_by_role("combobox", name="Version 2")
        version_2.fill("tuned")
        version_2.press("Enter")
        expect(version_2).to_have_value("tuned")
        votes = {vote: page.locator(f"#compare-vote-{vote}") for vote in ("a", "b", "tie", "both_bad")}
        for button in votes.values():
            expect(button).to_be_disabled()  # nothing to vote on yet

        send(compare.get_by_role("textbox"), "What do you build?", compare, users_after=2)
        panes = [page.locator("#compare-a"), page.locator("#compare-b")]
        for pane, side in zip(panes, "AB", strict=True):
            expect(pane.locator('[data-testid="block-label"]')).to_have_text(side)  # no name before the vote
            expect(pane).not_to_contain_text("tuned")
            expect(user(pane)).to_have_text(["What do you build?"])
            expect(bot(pane).last).not_to_have_text("")
        expect(page.locator("#compare-status")).to_contain_text("Which reply is better?")
        shoot(page, tmp_path, "6-compare-blind")

        page.locator("#compare-status").click()  # out of the message box: keys are shortcuts again
        page.keyboard.press("a")
        status = page.locator("#compare-status")
        expect(status).to_contain_text("Saved: A is better.")
        revealed = re.search(r"A was (\w+), B was (\w+)", status.inner_text())
        assert revealed and set(revealed.groups()) == {"base", "tuned"}
        version_a, version_b = revealed.groups()
        expect(panes[0].locator('[data-testid="block-label"]')).to_have_text(f"A — {version_a}")
        expect(panes[1].locator('[data-testid="block-label"]')).to_have_text(f"B — {version_b}")
        for button in votes.values():
            expect(button).to_be_disabled()  # one vote per pair
        shoot(page, tmp_path, "7-compare-revealed")

        # The next message continues from the preferred reply, blind again (a new draw of A).
        send(compare.get_by_role("textbox"), "And the bees?", compare, users_after=4)
        for pane, side in zip(panes, "AB", strict=True):
            expect(pane.locator('[data-testid="block-label"]')).to_have_text(side)
            expect(user(pane)).to_have_text(["What do you build?", "And the bees?"])
        status.click()
        page.keyboard.press("n")
        expect(status).to_contain_text("Saved: Both are bad.")
        page.close()

    first, second = store.preferences()
    assert (first.rater, first.vote, first.version_a, first.version_b) == ("rita", "a", version_a, version_b)
    assert first.context[-1] == {"role": "user", "content": "What do you build?"} and first.reply_a
    assert (second.rater, second.vote, {second.version_a, second.version_b}) == ("rita", "both_bad", {"base", "tuned"})
    assert second.context == first.context + [
        {"role": "assistant", "content": first.reply_a},  # A was preferred
        {"role": "user", "content": "And the bees?"},
    ]


def test_an_organiser_queues_answers_and_watches_the_job_and_the_session(browser, tiny_engine, store, tmp_path):
    from tests.conftest import serving, studio_context
    from tests.ui.test_organise import GatedEngine, write_spc

    data, slow = write_spc(tmp_path / "chats.csv"), GatedEngine(tiny_engine)  # slow: each batch waits for us
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(15_000)
    with serving(studio_context(tmp_path, store, {"base": tiny_engine, "slow": slow})) as url:
        page.goto(url, wait_until="domcontentloaded")
        organise = open_tab(page, "Organise")
        status = page.locator("#organise-status")
        expect(status).to_contain_text("No job has run")
        version = organise.get_by_role("combobox", name="Model version")
        version.fill("slow")
        version.press("Enter")
        organise.get_by_label("Upload a CSV / JSONL").check()
        page.locator("#organise-upload input[type=file]").set_input_files(str(data))
        expect(organise.get_by_text("chats.csv")).to_be_visible()
        organise.get_by_role("combobox", name="Split of the file").click()
        page.get_by_role("option", name="all", exact=True).click()
        organise.get_by_label("Turns").fill("3")
        organise.get_by_label("Max new tokens (greedy)").fill("8")
        organise.get_by_role("button", name="Queue answers").click()
        expect(status).to_contain_text("running: slow on upload, 0/3 replies")
        assert slow.started.wait(15)
        shoot(page, tmp_path, "6-organise-running")
        slow.release.set()
        # The timer polls the job until it ends, then shows the session's new items.
        expect(status).to_contain_text("done: slow on upload, 3/3 replies", timeout=30_000)
        expect(status).to_contain_text("3 queued")
        expect(organise.get_by_role("row").filter(has_text="eval")).to_contain_text("slow")
        shoot(page, tmp_path, "7-organise-done")
    page.close()
    assert store.next_item("rita").progress.total == 3 and {store.item(i).model_version for i in (1, 2, 3)} == {"slow"}
