"""A rater in a real browser against the app as `python app.py` starts it (store and model in
their child processes): name -> Label -> ten answers by keys -> undo -> progress, at desktop
and phone width; what the screen shows is what the store holds.

Screenshots land in /tmp/persona-shots/ for a look.
"""

import os
import re
from pathlib import Path

import pytest

from store import NewItem
from tests.ui.conftest import CHROMIUM

pytestmark = pytest.mark.slow  # a real browser and the app's three processes: seconds per step

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make browser)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -r requirements-dev.txt")
from playwright.sync_api import Page, expect  # noqa: E402

SHOTS = Path("/tmp/persona-shots")
PERSONA = {
    "name": "Ada",
    "description": "clockmaker and beekeeper",
    "facts": ["I build clocks.", "I keep bees.", "I live by the sea.", "I drink green tea."],
    "style": "short and warm",
}
# A conversation long enough to fill the box: the answer must still be on the first screen.
CONTEXT = [
    {"role": m, "content": f"{'Question' if m == 'user' else 'Reply'} {i}: " + "words " * 12}
    for i, m in enumerate(["user", "assistant"] * 3 + ["user"])
]


def seed(store, n: int) -> list[int]:
    items = [NewItem("eval", "Ada", PERSONA, CONTEXT, f"Answer number {i}.", "base") for i in range(n)]
    return store.add_label_items(items)


def open_label(page: Page, url: str, rater: str):
    page.goto(url, wait_until="domcontentloaded")  # "networkidle" never settles on a Gradio page
    good = page.locator("#label-good")
    page.get_by_role("tab", name="Label", exact=True).click()
    expect(good).to_be_disabled()  # no name yet: nothing on screen to judge
    name = page.locator("#rater-name").get_by_role("textbox")
    name.fill(rater)
    name.press("Enter")
    expect(good).to_be_enabled()
    page.locator("#label-progress").click()  # out of the name box: keys are shortcuts again
    return page.get_by_role("tabpanel")


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")


def test_a_rater_labels_ten_by_keys_undoes_and_the_store_holds_what_the_screen_showed(browser, app_as_shipped):
    url, store = app_as_shipped
    ids = seed(store, 12)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    label = open_label(page, url, "rita")
    progress, answer = page.locator("#label-progress"), page.locator("#label-answer textarea")
    comment = label.get_by_role("textbox", name="Comment (optional)")
    expect(progress).to_have_text("0 of 12 labelled")
    expect(label).to_contain_text("Keys: G or 1 good · B or 2 bad")
    expect(page.locator("#label-context").get_by_role("button", name="Clear")).to_be_hidden()  # no trash
    shoot(page, "label-desktop")

    keys = "gb12gbgg1b"  # 1 and 2 are good and bad too
    verdicts = ["good" if key in "g1" else "bad" for key in keys]
    for done, key in enumerate(keys, start=1):
        expect(answer).to_have_value(f"Answer number {done - 1}.")
        if done == 10:  # the last one with a comment; out of the box again, so keys work
            comment.fill("too <b>short</b>")
            progress.click()
        page.keyboard.press(key)
        expect(progress).to_have_text(f"{done} of 12 labelled")

    page.keyboard.press("u")
    expect(progress).to_contain_text("Undone: you had labelled this answer 👎 Bad")
    expect(progress).to_contain_text("9 of 12 labelled")
    expect(answer).to_have_value("Answer number 9.")
    expect(comment).to_have_value("too <b>short</b>")  # the comment is back, as typed
    shoot(page, "label-undone")

    rows = sorted(store.label_rows(), key=lambda r: r.item_id)
    assert [(r.item_id, r.rater, r.verdict) for r in rows] == list(
        zip(ids[:9], ["rita"] * 9, verdicts[:9], strict=True)
    )

    # Another name typed mid-item: that rater's own item and progress, nothing saved under it
    # for the answer shown to rita.
    name = page.locator("#rater-name").get_by_role("textbox")
    name.fill("sam")
    progress.click()  # leaves the box
    expect(progress).to_have_text(re.compile(r"\b0 of \d+ labelled"))
    expect(answer).not_to_have_value("Answer number 9.")  # rita holds that one
    page.keyboard.press("g")
    expect(progress).to_have_text(re.compile(r"\b1 of \d+ labelled"))
    page.close()
    raters = [(r.rater, r.verdict) for r in store.label_rows()]
    assert raters.count(("sam", "good")) == 1 and len(raters) == 10


def test_on_a_phone_the_answer_and_the_verdict_buttons_are_on_the_first_screen(browser, app_as_shipped):
    url, store = app_as_shipped
    seed(store, 2)
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.set_default_timeout(15_000)
    open_label(page, url, "rita")
    expect(page.locator("#label-answer textarea")).to_have_value("Answer number 0.")
    persona = page.locator("#label-persona")
    expect(persona.get_by_role("button").first).to_contain_text("Persona: Ada — clockmaker and beekeeper")
    expect(persona.get_by_role("textbox")).to_be_hidden()  # folded on a phone; a tap opens it
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, "label-phone")
    for element in ("#label-answer textarea", "#label-good", "#label-bad"):
        box = page.locator(element).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844 and box["x"] + box["width"] <= 390, (
            element,
            box,
        )
    page.locator("#label-good").click()
    expect(page.locator("#label-progress")).to_have_text("1 of 2 labelled")
    page.close()
    assert [r.verdict for r in store.label_rows()] == ["good"]


def test_a_label_that_was_not_saved_says_so_beside_the_answer_it_keeps(browser, studio, monkeypatch):
    """Label events skip the queue (one POST on /run), and Gradio's page shows no toast for such
    an event's error: the progress line says it, the answer stays to be judged again."""
    from store import StoreError

    url, store = studio

    def down(*args, **kwargs):
        raise StoreError("database is locked", "try again")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    routes = []
    page.on("request", lambda request: routes.append(request.url.split("/gradio_api/")[-1]))
    open_label(page, url, "rita")
    monkeypatch.setattr(store, "label", down)
    page.keyboard.press("g")
    progress = page.locator("#label-progress")
    expect(progress).to_contain_text("Your label was NOT saved: database is locked. try again")
    expect(page.locator("#label-answer textarea")).to_have_value("Answer number 0.")
    expect(page.locator("#label-good")).to_be_enabled()
    page.close()
    assert store.label_rows() == [] and "run/predict" in routes  # the route of events that do not queue


def test_a_researcher_evaluates_a_version_from_organise_and_results_shows_its_metrics(browser, app_as_shipped):
    url, store = app_as_shipped
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(15_000)
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Results", exact=True).click()
    results = page.get_by_role("tabpanel")
    expect(results.get_by_role("row").filter(has_text="base")).to_contain_text("not run yet: Organise → Evaluate")

    page.get_by_role("tab", name="Organise", exact=True).click()
    organise = page.get_by_role("tabpanel")
    organise.get_by_label("Held-out replies to score").fill("3")
    organise.get_by_label("BERTScore").uncheck()
    organise.get_by_role("button", name="Run evaluation").click()
    status = page.locator("#evaluate-status")
    expect(status).to_contain_text("running: base on 3 held-out turns")
    expect(status).to_contain_text("done: base on 3 held-out turns", timeout=240_000)  # polled while it runs
    expect(status).to_contain_text("the metrics are in the Results tab")

    page.get_by_role("tab", name="Results", exact=True).click()
    results = page.locator("#results-table")  # the leaderboard's tables are below it
    row = results.get_by_role("row").filter(has_text=re.compile(r"^\s*base\b"))
    expect(row).not_to_contain_text("not run yet")
    columns = [re.sub(r"[\s⋮]+$", "", text).strip() for text in results.get_by_role("columnheader").all_inner_texts()]
    cells = [text.strip() for text in row.get_by_role("gridcell").all_inner_texts()]
    shown = dict(zip(columns, cells, strict=True))
    shoot(page, "results-evaluated")
    page.close()
    [run] = store.eval_runs()
    assert run.model_version == "base" and run.summary["items"] == 3
    for column, key in (("BLEU", "bleu"), ("ROUGE-L", "rougeL"), ("perplexity", "perplexity")):
        assert float(shown[column].replace(",", "")) == pytest.approx(run.summary[key], abs=1e-3), column
