"""A researcher's journey in real Chromium against `python app.py` as it starts by default (store
and model in their child processes; the tiny model answers): train a 2-step version while the
app runs -> Compare lists it and takes a blind vote -> Organise queues both versions' answers ->
Label -> Results shows human accuracy and the scorecard with its plot. What the screen shows is
checked against what the store holds. Also: an uploaded dataset that cannot be read is named by
the file's own name, not the server's temp copy.

Screenshots land in /tmp/persona-shots/ for a look.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from store import Store
from tests.conftest import REPO
from tests.ui.conftest import CHROMIUM, launched

pytestmark = pytest.mark.slow  # a training run, a real browser and the app's three processes: ~2 min

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make browser)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -r requirements-dev.txt")
from playwright.sync_api import Locator, Page, expect  # noqa: E402

SHOTS = Path("/tmp/persona-shots")
JOB_MS = 120_000  # a queue job on the tiny model: loading the version, then 3 short replies


@pytest.fixture
def researcher_app(tmp_path, tiny_model_dir):
    args = ["--model", str(tiny_model_dir), "--generation.temperature", "0", "--generation.max_new_tokens", "16"]
    with launched(tmp_path, *args) as app, Store(app.database_url) as store:
        yield app, store, tmp_path / "runs"


@pytest.fixture
def page(browser, researcher_app):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(researcher_app[0].url, wait_until="domcontentloaded")  # "networkidle" never settles on Gradio
    expect(page.locator("#chat-box")).to_be_visible()
    yield page
    page.close()


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def open_tab(page: Page, name: str) -> Locator:
    page.get_by_role("tab", name=name, exact=True).click()
    return page.get_by_role("tabpanel")


def pick(page: Page, panel: Locator, combobox: str, option: str) -> None:
    """Open a dropdown (its focus re-reads the versions on disk) and pick `option`."""
    panel.get_by_role("combobox", name=combobox).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def train_version(tiny_model_dir: Path, runs: Path, version: str) -> None:
    """`python -m training.train` as a researcher runs it beside the app: 2 steps on the tiny model."""
    command = [sys.executable, "-m", "training.train", "--config", "training/recipes/tiny-test.yaml",
               "--model.name", str(tiny_model_dir), "--output.dir", str(runs), "--output.version", version,
               "--max_steps", "2"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (runs / version / "version.json").is_file()


def queue_answers(page: Page, panel: Locator, version: str) -> Locator:
    pick(page, panel, "Model version", version)
    panel.locator("#organise-turns input").fill("3")
    panel.get_by_label("Max new tokens (greedy)").fill("8")
    page.locator("#organise-start").click()
    status = page.locator("#organise-status")
    expect(status).to_contain_text(f"done: {version} on spc, 3/3 replies", timeout=JOB_MS)
    return status


def test_a_researcher_trains_compares_queues_labels_and_reads_the_results(page, researcher_app, tiny_model_dir):
    app, store, runs = researcher_app
    compare = open_tab(page, "Compare")
    expect(page.locator("#compare-only-base")).to_contain_text("Only base exists so far")

    train_version(tiny_model_dir, runs, "v1")  # while the app and this page are open

    pick(page, compare, "Version 2", "v1")  # the picker re-read the runs folder on focus
    expect(page.locator("#compare-only-base")).to_be_hidden()
    page.locator("#rater-name").get_by_role("textbox").fill("rhea")
    box = page.locator("#compare-input").get_by_role("textbox")
    box.fill("What do you do on Sundays?")
    box.press("Enter")
    status = page.locator("#compare-status")
    expect(status).to_contain_text("Which reply is better?", timeout=JOB_MS)
    page.locator("#compare-vote-b").click()
    expect(status).to_contain_text("Saved: B is better.")
    named = re.search(r"A was (\S+), B was (\S+)\.", status.inner_text())
    assert named and {named[1], named[2]} == {"base", "v1"}
    expect(page.locator("#compare-b")).to_contain_text(f"B — {named[2]}")  # the names, only after the vote
    [vote] = store.preferences()
    assert (vote.rater, vote.vote, vote.version_a, vote.version_b) == ("rhea", "b", named[1], named[2])
    assert vote.context[-1] == {"role": "user", "content": "What do you do on Sundays?"}
    shoot(page, "journey-compare")

    organise = open_tab(page, "Organise")
    for version in ("v1", "base"):  # the same 3 held-out turns for both: the scorecard pairs them
        expect(queue_answers(page, organise, version)).to_contain_text("3 queued")
    counts = {row["model_version"]: row["items"] for row in store.item_counts() if row["source"] == "eval"}
    assert counts == {"v1": 3, "base": 3}
    shoot(page, "journey-organise")

    open_tab(page, "Label")
    progress = page.locator("#label-progress")
    expect(progress).to_have_text("0 of 6 labelled")  # the name typed in Compare is the rater
    keys = "gbggbb"
    for done, key in enumerate(keys, start=1):
        page.keyboard.press(key)
        expect(progress).to_contain_text(f"{done} of 6 labelled")
    expect(progress).to_contain_text("Nothing left to label")
    rows = store.label_rows()
    assert [r.verdict for r in rows] == ["good" if k == "g" else "bad" for k in keys]
    assert {r.rater for r in rows} == {"rhea"}
    good = {}
    for version in ("v1", "base"):
        verdicts = [r.verdict for r in store.label_rows(version)]
        assert len(verdicts) == 3
        good[version] = verdicts.count("good")

    results = open_tab(page, "Results")
    table = results.get_by_role("grid", name="Results")
    for version, n in good.items():
        cells = table.get_by_role("row", name=re.compile(rf"^{version} ")).get_by_role("gridcell")
        expect(cells.nth(1)).to_have_text(f"{100 * n / 3:.1f}")  # human accuracy (%) from the labels just given
        expect(cells.nth(3)).to_have_text("3")  # labels
        expect(cells.last).to_have_text("not run yet: Organise → Evaluate a version")
    expect(table.get_by_role("columnheader", name="A/B votes")).to_be_visible()  # the Compare vote counts
    expect(results.get_by_role("combobox", name="Version", exact=True)).to_have_value("v1")  # the newest
    results.get_by_role("button", name="Compare", exact=True).click()
    expect(results).to_contain_text("Scorecard: v1 vs base")
    delta = (good["v1"] - good["base"]) / 3  # both versions answered the same 3 turns
    card = results.get_by_role("table").filter(has_text="human accuracy, same prompts")
    expect(card.get_by_role("row").filter(has_text="human accuracy, same prompts")).to_contain_text(f"{delta:+.3f}")
    plot = results.locator(".block").filter(has_text="Scorecard: deltas with 95 % intervals").locator("img")
    expect(plot).to_be_visible()
    assert plot.bounding_box()["height"] > 100  # a drawn figure, not an empty frame
    shoot(page, "journey-results")


def test_an_unreadable_upload_is_named_by_its_own_file_name(page, tmp_path):
    bad = tmp_path / "my-chats.csv"
    bad.write_text("foo,bar\n1,2\n", encoding="utf-8")
    organise = open_tab(page, "Organise")
    organise.get_by_role("radio", name="Upload a CSV / JSONL").check()
    page.locator("#organise-upload input[type=file]").set_input_files(str(bad))
    expect(organise.get_by_text("my-chats.csv").first).to_be_visible(timeout=30_000)  # uploaded
    page.locator("#organise-start").click()
    status = page.locator("#organise-status")
    expect(status).to_contain_text("Not queued: dataset file “my-chats.csv” has columns 'foo', 'bar'")
    expect(status).not_to_contain_text("/tmp")
    expect(page.locator(".toast-body").filter(has_text="my-chats.csv").first).to_be_visible()
    expect(page.locator(".toast-body").filter(has_text="gradio/")).to_have_count(0)
    shoot(page, "journey-upload-error")


def test_the_label_load_browser_client_sends_what_chromium_sends(page, researcher_app):
    """benchmarks.label_browser stands for a rater's tab in `label_load --routes browser`: its
    requests must be the page's own (same event, trigger and inputs), and its verdicts stored."""
    from benchmarks.label_browser import LabelTab, label_events
    from store import NewItem

    app, store, _ = researcher_app
    persona = {"name": "Ada", "facts": ["I build clocks."]}
    context = [{"role": "user", "content": "Hi?"}]
    store.add_label_items([NewItem("eval", "Ada", persona, context, f"Answer {i}.", "base") for i in range(4)])
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/run/predict") else None)
    open_tab(page, "Label")
    name = page.locator("#rater-name").get_by_role("textbox")
    name.fill("tess")
    name.press("Enter")
    expect(page.locator("#label-progress")).to_have_text("0 of 4 labelled")
    page.locator("#label-good").click()
    expect(page.locator("#label-progress")).to_have_text("1 of 4 labelled")

    events = label_events(app.url)
    clicked = next(body for body in sent if body["fn_index"] == events["good"][0])
    assert clicked["trigger_id"] == events["good"][1]
    assert clicked["data"] == [None, "", None, "tess", None]  # State inputs travel as null
    tab = LabelTab(app.url, events)
    try:
        tab.open("bench")
        first = tab.answer
        assert first.startswith("Answer ")
        tab.verdict("bad", "bench")
        assert tab.answer != first  # the verdict's reply holds the next item
    finally:
        tab.close()
    assert [(r.rater, r.verdict, store.item(r.item_id).answer) for r in store.label_rows() if r.rater == "bench"] == [
        ("bench", "bad", first)
    ]
