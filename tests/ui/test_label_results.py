"""Label and Results tabs through the app's API (gradio_client), on a SQLite store; no model loads."""

import csv
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from engines.engine import ChatEngine
from eval.human import wilson_interval
from eval.table import NO_LABELS, NOT_RUN, VersionResult, collect, results_table
from store import NewItem, StoreError, assign
from tests.conftest import serving, studio_context
from ui.common import for_chatbot
from ui.label import EMPTY_QUEUE, persona_text, save_label, show_next
from ui.results import results_figure, write_csv

PERSONA = {"name": "Ada <b>Lovelace</b>", "facts": ["I build clocks.", "I keep bees."], "style": "short and warm"}
SCRIPT = "<script>alert(1)</script>"


def new_item(i: int, version: str, answer: str | None = None) -> NewItem:
    context = [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": f"question {i}"},
    ]
    return NewItem("eval", "Ada", PERSONA, context, answer or f"answer {i}", version)


@pytest.fixture
def ctx(store, tmp_path):
    return studio_context(tmp_path, store, {})


@pytest.fixture
def client(ctx):
    with serving(ctx) as url:
        yield Client(url, verbose=False)


def by_version(rows: list[dict]) -> dict[str, dict]:
    return {row["model version"]: row for row in rows}


def test_a_rater_labels_skips_and_undoes_and_results_follow(client, ctx):
    store = ctx.store
    ids = store.add_label_items([new_item(0, "base"), new_item(1, "tuned"), new_item(2, "base", SCRIPT)])

    item_id, persona, context, answer, progress = client.predict("rita", api_name="/next_item")
    assert item_id == ids[0] and answer == "answer 0" and progress == "0 of 3 labelled"
    assert "Ada <b>Lovelace</b>" in persona and "- I keep bees." in persona and "short and warm" in persona
    assert context == [{"role": "user", "content": "question 0"}]  # the system message is the persona box

    second = client.predict(item_id, "good", " clear ", "rita", api_name="/label")
    assert second[0] == ids[1] and second[4] == "1 of 3 labelled"
    assert "tuned" not in repr(second) and "base" not in repr(second)  # blind: no model version
    third = client.predict(ids[1], "bad", "", "rita", api_name="/label")
    assert third[0] == ids[2] and third[3] == SCRIPT  # HTML comes back as text, untouched
    done = client.predict(ids[2], "rita", api_name="/skip")
    assert done[0] is None and done[4] == f"{EMPTY_QUEUE} (2 of 2 labelled)"
    assert [(r.item_id, r.verdict, r.comment) for r in store.label_rows()] == [
        (ids[0], "good", "clear"),
        (ids[1], "bad", ""),
    ]

    back = client.predict("rita", api_name="/undo_label")
    assert back[0] == ids[1] and back[4] == "1 of 2 labelled"  # the undone item comes back first
    assert [r.item_id for r in store.label_rows()] == [ids[0]]
    client.predict(ids[1], "bad", "", "rita", api_name="/label")

    rows = by_version(client.predict(api_name="/results"))
    assert list(rows) == ["base", "tuned"]
    low, high = wilson_interval(1, 1)
    assert rows["base"]["human accuracy (%)"] == 100.0
    assert rows["base"]["95 % interval (%)"] == f"{low * 100:.1f}–{high * 100:.1f}"
    assert rows["tuned"]["human accuracy (%)"] == 0.0 and rows["tuned"]["labels"] == 1
    assert all(row["automatic metrics"] == NOT_RUN for row in rows.values())

    store.add_eval_run("base", "results/base", {}, {"bleu": 12.3456, "rougeL": 0.25, "perplexity": 21.5})
    rows = by_version(client.predict(api_name="/results"))
    assert rows["base"]["BLEU"] == 12.346 and rows["base"]["ROUGE-L"] == 0.25 and rows["base"]["perplexity"] == 21.5
    assert rows["tuned"]["BLEU"] == NOT_RUN and "ROUGE-2" not in rows["base"]


class HeldEngine(ChatEngine):
    """Streams a first word, then holds the generation until released: a busy model."""

    name = "held"
    context_window = 4096

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def count_tokens(self, messages) -> int:
        return sum(len(m["content"]) for m in messages) // 4 + 1

    def stream(self, messages, settings, negative=None):
        self.started.set()
        yield "Hello"
        self.release.wait(60)
        yield " there."

    def generate(self, conversations, settings, **kw) -> list[str]:
        return ["Hello there."] * len(conversations)


def test_a_label_never_waits_behind_a_generation(store, tmp_path):
    engine = HeldEngine()
    ids = store.add_label_items([new_item(i, "base") for i in range(3)])
    with serving(studio_context(tmp_path, store, {"base": engine})) as url:  # one generation at a time
        chat = Client(url, verbose=False)
        running = chat.submit("Hi", "ada", api_name="/chat")
        waiting = chat.submit("Hi again", "ada", api_name="/chat")  # queued behind it: the group is full
        try:
            assert engine.started.wait(30)
            rater = Client(url, verbose=False)
            start = time.perf_counter()
            item_id = rater.predict("rita", api_name="/next_item")[0]
            after = rater.predict(item_id, "good", "", "rita", api_name="/label")
            took = time.perf_counter() - start
            assert item_id == ids[0] and after[4] == "1 of 3 labelled"
            assert not running.done() and not waiting.done()  # answered while the model was held
            assert took < 5, took
        finally:
            engine.release.set()
        assert running.result()[1] == waiting.result()[1] == "Hello there."


def test_raters_calls_run_side_by_side(store, tmp_path, monkeypatch):
    """The label group has no limit: two raters' calls are served at once, not one after the other."""
    ids = store.add_label_items([new_item(i, "base") for i in range(2)])
    together = threading.Barrier(2, timeout=20)  # breaks unless both calls are inside at the same time
    next_item = store.next_item

    def meet_then_next(rater, overlap=1, source=None, *, mix=None):
        together.wait()
        return next_item(rater, overlap, source, mix=mix)

    monkeypatch.setattr(store, "next_item", meet_then_next)
    with serving(studio_context(tmp_path, store, {})) as url:
        clients = {name: Client(url, verbose=False) for name in ("ana", "ben")}
        with ThreadPoolExecutor(2) as pool:
            shown = list(pool.map(lambda name: clients[name].predict(name, api_name="/next_item"), clients))
    assert sorted(item[0] for item in shown) == ids


def test_scripts_label_past_the_queue_even_where_its_rest_routes_are_closed(ctx):
    """`POST /gradio_api/run/<name>` answers a label call in the response; with `api_open=False`
    (as on Spaces) generations still have to queue."""
    from app import build_demo

    ids = ctx.store.add_label_items([new_item(0, "base")])
    demo = build_demo(ctx).queue(api_open=False)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:

        def post(name: str, *data) -> httpx.Response:
            return httpx.post(f"{demo.local_url}gradio_api/run/{name}", json={"data": list(data)}, timeout=30)

        assert post("next_item", "rita").json()["data"][0] == ids[0]
        assert post("label", ids[0], "good", "", "rita").json()["data"][4] == f"{EMPTY_QUEUE} (1 of 1 labelled)"
        assert post("chat", "Hi", "ada").status_code == 404
    finally:
        demo.close()
    assert [(r.item_id, r.rater, r.verdict) for r in ctx.store.label_rows()] == [(ids[0], "rita", "good")]


def test_empty_rater_is_refused_and_an_empty_queue_says_where_items_come_from(client):
    with pytest.raises(Exception, match="Rater"):
        client.predict("  ", api_name="/next_item")
    item_id, persona, context, answer, progress = client.predict("sam", api_name="/next_item")
    assert (item_id, persona, context, answer) == (None, "", [], "")
    assert progress == f"{EMPTY_QUEUE} (0 of 0 labelled)"


def test_a_database_failure_says_the_label_was_not_saved(client, ctx, monkeypatch):
    [item_id] = ctx.store.add_label_items([new_item(0, "base")])

    def down(*args, **kwargs):
        raise StoreError("the label for item 1 by rita was NOT saved: database is locked", "try again")

    monkeypatch.setattr(ctx.store, "label", down)
    with pytest.raises(Exception, match="Your label was NOT saved"):
        client.predict(item_id, "good", "", "rita", api_name="/label")
    assert ctx.store.label_rows() == []


def test_a_saved_label_is_not_reported_lost_when_the_next_item_fails(ctx, monkeypatch):
    [item_id] = ctx.store.add_label_items([new_item(0, "base")])

    def busy(*args, **kwargs):  # the label's write and the tab's second try both meet a busy queue
        raise StoreError("the label queue is too busy right now", "ask for the next item again")

    monkeypatch.setattr(assign, "claim", busy)
    with pytest.raises(gr.Error, match="Your label was saved, but could not load the next item"):
        save_label(ctx, item_id, "good", "", "rita")
    assert [r.verdict for r in ctx.store.label_rows()] == ["good"]


def test_a_busy_queue_after_a_label_asks_for_the_next_item_again(ctx, monkeypatch):
    # label(and_next=True) commits the label when no next item could be assigned (assign.claim's
    # "too busy" on PostgreSQL); the tab then asks for the next item on its own.
    first, second = ctx.store.add_label_items([new_item(0, "base"), new_item(1, "base")])
    real_claim = assign.claim
    calls = []

    def busy_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise StoreError("the label queue is too busy right now", "ask for the next item again")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(assign, "claim", busy_once)
    shown = save_label(ctx, first, "good", "", "rita")
    assert [r.verdict for r in ctx.store.label_rows()] == ["good"]
    assert shown[0] == second and shown[4] == "1 of 2 labelled"
    assert len(calls) == 2


def test_the_logged_in_user_is_the_rater(ctx):
    [item_id] = ctx.store.add_label_items([new_item(0, "base")])
    with serving(ctx, auth=[("ana", "pw")]) as url:
        client = Client(url, auth=("ana", "pw"), verbose=False)
        client.predict(item_id, "good", "", "someone else", api_name="/label")
    assert [r.rater for r in ctx.store.label_rows()] == ["ana"]


def test_persona_and_messages_show_html_as_text():
    assert persona_text(PERSONA).splitlines()[0] == "Ada <b>Lovelace</b>"
    shown = for_chatbot([{"role": "user", "content": f"hi {SCRIPT} & bye"}, {"role": "notice", "content": "<i>x</i>"}])
    assert shown[0] == {
        "role": "user",
        "content": "hi &lt;script&gt;alert(1)&lt;/script&gt; &amp; bye",
        "metadata": None,
    }
    assert shown[1]["content"] == "&lt;i&gt;x&lt;/i&gt;" and shown[1]["metadata"]["title"] == "Persona switched"


def test_results_table_lists_every_version_base_first(ctx):
    store = ctx.store
    assert results_table(store, ["base"]).to_dict("records") == [
        {
            "model version": "base",
            "human accuracy (%)": NO_LABELS,
            "95 % interval (%)": "",
            "labels": 0,
            "items": 0,
            "raters": 0,
            "automatic metrics": NOT_RUN,
        }
    ]
    ids = store.add_label_items([new_item(0, "old"), new_item(1, "old"), new_item(2, "base")])
    for rater, item_id, verdict in [("kim", ids[0], "good"), ("kim", ids[1], "bad"), ("lee", ids[0], "good")]:
        store.label(item_id, rater, verdict)
    store.add_eval_run("v2", "results/v2-first", {}, {"bleu": 1.0})
    store.add_eval_run("v2", "results/v2", {}, {"bleu": 2.0, "bertscore_f1": 0.9})
    table = results_table(store, ["base", "v3", "v2"])
    assert list(table["model version"]) == ["base", "v3", "v2", "old"]  # pool order, then the rest
    old = table.set_index("model version").loc["old"]
    low, high = wilson_interval(2, 3)
    assert old["human accuracy (%)"] == 66.7 and old["95 % interval (%)"] == f"{low * 100:.1f}–{high * 100:.1f}"
    assert (old["labels"], old["items"], old["raters"]) == (3, 2, 2)
    assert list(table.columns[-2:]) == ["BLEU", "BERTScore F1"]
    assert list(table["BLEU"]) == [NOT_RUN, NOT_RUN, 2.0, NOT_RUN]  # the latest run counts
    assert table.set_index("model version").loc["v3", "human accuracy (%)"] == NO_LABELS


def test_results_figure_draws_empty_and_full_data(ctx):
    assert len(results_figure([]).axes) == 1
    store = ctx.store
    [item_id] = store.add_label_items([new_item(0, "base")])
    store.label(item_id, "kim", "good")
    store.add_eval_run("v$2", "results/v2", {}, {"rouge1": 0.4, "perplexity": 20.0})
    fig = results_figure(collect(store, ["base", "v$2"]))
    assert [ax.get_title() for ax in fig.axes][1:] == ["ROUGE-1", "perplexity (lower is better)"]
    fig.canvas.draw()  # renders: a "$" in a version name is not mathtext
    no_labels = [VersionResult("base", None, None)]
    results_figure(no_labels).canvas.draw()


def test_csv_download_holds_the_table(ctx):
    table = results_table(ctx.store, ["base"])
    with open(write_csv(table), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["model version"] == "base" and rows[0]["automatic metrics"] == NOT_RUN


def test_an_answer_naming_its_version_or_model_is_masked_for_the_rater(ctx):
    answer = "I'm v3-lora, a SmolLM2 model."
    [item_id] = ctx.store.add_label_items([new_item(0, "v3-lora", answer)])
    shown_id, _, _, shown, _ = show_next(ctx, "rita")
    assert shown_id == item_id and "v3-lora" not in shown and "SmolLM" not in shown and "[model]" in shown
    assert ctx.store.item(item_id).answer == answer  # the store keeps what the model wrote
