"""Organise tab through the app's API: answers queued in the background land in the label
queue, raters label them, the session progress follows; bad requests get a message."""

import csv
import os
import sys
import threading
import time

import pytest
from gradio_client import Client, handle_file

from core.errors import GenerationError
from engines.engine import ChatEngine
from eval.evaluate import generate
from eval.jobs import JOB_NICE, QueueRequest, eval_config, select_turns
from tests.conftest import REPO, serving, studio_context

FACTS = ["I build clocks.", "I keep bees."], ["I sail cargo ships.", "I drink green tea."]
DIALOGUES = [
    "User 1: Hi! What do you do?\nUser 2: I build clocks. You?\nUser 1: I sail ships.\nUser 2: Any tea on board?",
    "User 1: Good morning.\nUser 2: Morning! Bees are busy today.\nUser 1: Do they sting?\nUser 2: Rarely.",
    "User 1: Where are you sailing?\nUser 2: To Lisbon.\nUser 1: Bring me honey.\nUser 2: Only if you fix my clock.",
]


def write_spc(path, dialogues=DIALOGUES):
    """A Synthetic-Persona-Chat CSV: 4 turns per dialogue, 2 speakers -> 8 turns each."""
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        for i, dialogue in enumerate(dialogues):  # each row its own personas, as in the real file
            out.writerow(
                ["\n".join([*FACTS[0], f"I am {30 + i}."]), "\n".join([*FACTS[1], f"I have {i} cats."]), dialogue]
            )
    return path


def wait_for(client: Client, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (status := client.predict(api_name="/queue_status"))["state"] != state:
        assert status["state"] in ("running", state), status
        assert time.monotonic() < deadline, f"still {status} after {timeout} s"
        time.sleep(0.1)
    return status


class GatedEngine(ChatEngine):
    """The tiny model, but each `generate` (one job batch) waits until released: a slow model."""

    def __init__(self, engine):
        self.engine, self.name, self.context_window = engine, "gated", engine.context_window
        self.started, self.release = threading.Event(), threading.Event()

    def count_tokens(self, messages) -> int:
        return self.engine.count_tokens(messages)

    def stream(self, messages, settings, negative=None):
        return self.engine.stream(messages, settings, negative)

    def generate(self, conversations, settings, **kw) -> list[str]:
        self.started.set()
        assert self.release.wait(60), "never released"
        return self.engine.generate(conversations, settings, **kw)


class FailingEngine(GatedEngine):
    """The tiny model, whose batch generation fails (as one out of memory does)."""

    def generate(self, conversations, settings, **kw) -> list[str]:
        raise GenerationError("out of memory in a batch of 8", "lower the batch size")


def test_queued_answers_are_labelled_and_counted(tiny_engine, store, tmp_path):
    data = write_spc(tmp_path / "chats.csv")
    ctx = studio_context(tmp_path, store, {"base": tiny_engine})
    with serving(ctx) as url:
        client = Client(url, verbose=False)
        upload = handle_file(str(data))
        started = client.predict("base", "upload", 3, upload, "all", max_new_tokens=8, api_name="/queue_answers")
        assert started["total"] == 3 and started["state"] in ("running", "done")
        status = wait_for(client, "done")
        assert (status["done"], status["total"], status["queued"]) == (3, 3, 3) and status["rate"] > 0

        # The replies are eval.run's: its turn sample, prompts and greedy decoding, on the same model.
        request = QueueRequest(dataset="upload", path=data, n_turns=3, split="all", generation={"max_new_tokens": 8})
        cfg = eval_config(request, ctx.pool.cfg.runs_dir)
        examples, _ = select_turns(cfg, "all")
        expected = generate(tiny_engine, examples, cfg)
        items = [store.item(i) for i in range(1, 4)]
        assert sorted(item.answer for item in items) == sorted(expected)
        assert {(item.source, item.model_version) for item in items} == {("eval", "base")}
        assert all(item.persona["facts"][:2] in (FACTS[0], FACTS[1]) for item in items)
        assert store.item(3).context == examples[2].messages[1:]  # the dialogue so far; the persona apart

        verdicts = []
        item_id = client.predict("rita", api_name="/next_item")[0]
        for verdict in ("good", "bad"):
            verdicts.append(item_id)
            item_id = client.predict(item_id, verdict, "", "rita", api_name="/label")[0]
        assert item_id is not None and item_id not in verdicts  # one left for rita

        progress = client.predict(api_name="/session_progress")
    assert progress["items"] == [
        {"source": "eval", "model_version": "base", "items": 3, "labels": 2, "complete": 2, "left": 1}
    ]
    assert progress["raters"] == [{"rater": "rita", "labels": 2, "good": 1, "left": 1}]
    assert progress["agreement"]["overlap_items"] == 0 and progress["agreement"]["percent_agreement"] is None


def test_the_app_stays_usable_while_a_job_runs_and_a_job_can_be_cancelled(tiny_engine, store, tmp_path):
    gated = GatedEngine(tiny_engine)
    data = write_spc(tmp_path / "chats.csv")  # 12 turns: batches of 8 and 4
    with serving(studio_context(tmp_path, store, {"base": tiny_engine, "slow": gated})) as url:
        client = Client(url, verbose=False)
        client.predict("slow", "upload", 20, handle_file(str(data)), "all", max_new_tokens=8, api_name="/queue_answers")
        assert gated.started.wait(30)
        if sys.platform == "linux":  # the job yields the CPU to chats
            [job] = [t for t in threading.enumerate() if t.name == "queue-job"]
            assert os.getpriority(os.PRIO_PROCESS, job.native_id) == JOB_NICE
        with pytest.raises(Exception, match="a job is already running .* cancel it"):
            client.predict("base", "spc", 3, api_name="/queue_answers")
        # Chat and labelling answer while the job's model is busy.
        reply = client.predict("Hello!", "ada", "base", api_name="/chat")
        assert reply[2] is not None
        assert client.predict("rita", api_name="/next_item")[0] is None  # nothing queued yet
        assert client.predict(api_name="/cancel_queue")["state"] == "running"
        gated.release.set()
        status = wait_for(client, "cancelled")
    assert (status["done"], status["total"], status["queued"]) == (8, 12, 8)  # the batch under way finished
    assert "stay queued" in status["message"] and store.item(8).model_version == "slow"


def test_bad_requests_name_the_problem_and_the_fix(tiny_engine, store, tmp_path):
    bad = tmp_path / "notes.csv"
    bad.write_text("title,body\nhello,world\n")
    engines = {"base": tiny_engine, "failing": FailingEngine(tiny_engine)}
    with serving(studio_context(tmp_path, store, engines)) as url:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="has columns 'title', 'body'.*expected .*'question', 'answer'"):
            client.predict("base", "upload", 3, handle_file(str(bad)), "all", api_name="/queue_answers")
        with pytest.raises(Exception, match="no file was uploaded.*upload a .csv or .jsonl"):
            client.predict("base", "upload", 3, api_name="/queue_answers")
        with pytest.raises(Exception, match="model version 'nope' is not in .*pick one of: base"):
            client.predict("nope", "spc", 3, api_name="/queue_answers")
        few = write_spc(tmp_path / "few.csv", DIALOGUES[:1])
        with pytest.raises(Exception, match="test split .* has no turns.*choose the split 'all'"):
            client.predict("base", "upload", 3, handle_file(str(few)), "test", api_name="/queue_answers")
        with pytest.raises(Exception, match="n_turns.*greater than or equal to 1"):
            client.predict("base", "spc", 0, api_name="/queue_answers")
        assert client.predict(api_name="/queue_status")["state"] == "idle"  # nothing started

        # A failure inside the job shows on its status; the next job may start.
        client.predict("failing", "upload", 3, handle_file(str(few)), "all", api_name="/queue_answers")
        status = wait_for(client, "failed")
        assert status["message"] == "out of memory in a batch of 8. lower the batch size" and status["queued"] == 0
        assert client.predict("base", "upload", 1, handle_file(str(few)), "all", max_new_tokens=4,
                              api_name="/queue_answers")["state"] in ("running", "done")  # fmt: skip
        wait_for(client, "done")


def test_the_regression_suite_is_cut_at_n_user_turns():
    from eval.jobs import regression_files

    files, skipped = regression_files(str(REPO / "personas"), 3)
    assert skipped == []
    assert [f.script.name for f in files] == ["ada_identity", "ada_knowledge"]  # 2 + 1 of 2 user turns
    assert [[t.user for t in f.script.turns] for f in files] == [
        ["Who are you?", "Sorry, what was your name again?"],
        ["How many beehives do you keep?"],
    ]
    assert files[1].turn_lines == [5]  # the kept turn keeps its line in the file


@pytest.mark.slow  # loads the sentence encoder of the regression checks
def test_regression_replies_are_queued_with_the_question_and_failed_ones_first(tiny_engine, store, tmp_path):
    with serving(studio_context(tmp_path, store, {"base": tiny_engine})) as url:
        client = Client(url, verbose=False)
        client.predict("base", "regression", 3, max_new_tokens=8, api_name="/queue_answers")
        status = wait_for(client, "done", timeout=120)
    assert (status["done"], status["queued"]) == (3, 3)
    items = [store.item(i) for i in (1, 2, 3)]
    assert [item.context[-1] for item in items] == [
        {"role": "user", "content": "Who are you?"},
        {"role": "user", "content": "Sorry, what was your name again?"},
        {"role": "user", "content": "How many beehives do you keep?"},
    ]
    first_exchange = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": items[0].answer}]
    assert items[1].context[-3:-1] == first_exchange and items[0].persona_name == "Ada"
    # The tiny model's noise never names Ada: every identity check fails, so all come first.
    assert [item.priority for item in items] == [1, 1, 1]


BROKEN_YAML = "name: Nova\nfacts:\n  - I answer the phone.\n oops: [\n"  # "while parsing a block collection"


def test_a_broken_persona_file_skips_its_scripts_with_the_reason_shown_as_text(tmp_path):
    import shutil

    from eval.jobs import JobStatus, regression_files
    from ui.organise import status_text

    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    (personas / "nova.yaml").write_text(BROKEN_YAML)
    files, skipped = regression_files(str(personas), 100)
    names = [f.script.name for f in files]
    assert "ada_identity" in names and not any("nova" in name for name in names)
    assert skipped[0].startswith("persona nova: persona file") and '"<unicode string>"' in skipped[0]
    assert any(s.startswith("script nova_identity.yaml: ") and "no persona 'nova'" in s for s in skipped)

    line = status_text(JobStatus("running", "base", "regression", total=3, skipped=tuple(skipped)))
    assert f"skipped {len(skipped)}: persona nova" in line
    assert "&lt;unicode string&gt;" in line and "<unicode" not in line  # shown as text, not swallowed as a tag


def test_requeuing_the_same_turns_adds_nothing_and_says_so(tiny_engine, store, tmp_path):
    data = write_spc(tmp_path / "chats.csv")
    with serving(studio_context(tmp_path, store, {"base": tiny_engine})) as url:
        client = Client(url, verbose=False)
        for _ in range(2):
            client.predict("base", "upload", 3, handle_file(str(data)), "all", max_new_tokens=4,
                           api_name="/queue_answers")  # fmt: skip
            status = wait_for(client, "done")
            if not status["already"]:
                assert (status["queued"], status["already"]) == (3, 0)
    assert (status["done"], status["queued"], status["already"]) == (3, 0, 3)
    assert len(store.label_rows()) == 0 and store.next_item("rita").progress.total == 3  # the same three items


def test_the_eta_counts_down_between_batches_and_a_refusal_stands_apart(tiny_engine, store, tmp_path):
    from eval.jobs import JobError, JobStatus, QueueJobs
    from ui.organise import refused_text

    jobs = QueueJobs(studio_context(tmp_path, store, {"base": tiny_engine}).pool, store)
    jobs._status = JobStatus("running", "base", "spc", done=8, total=16, rate=1.0, eta_s=8.0)
    jobs._batch_at = time.monotonic() - 3  # the last batch ended 3 s ago
    assert jobs.status().eta_s == pytest.approx(5.0, abs=0.5)
    jobs._batch_at = time.monotonic() - 60  # a slow batch: "0 s left", never negative
    assert jobs.status().eta_s == 0.0

    last = JobStatus("done", "base", "spc", done=8, total=8, queued=8)
    text = refused_text(JobError("a job is already running", "wait for it"), last)
    refusal, previous = text.split("\n\n")
    assert refusal == "**Not queued:** a job is already running. wait for it"
    assert previous == "Last job: done: base on spc, 8/8 replies · 8 queued"


def wait_for_evaluation(client: Client, state: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (status := client.predict(api_name="/evaluation_status"))["state"] != state:
        assert status["state"] in ("running", state), status
        assert time.monotonic() < deadline, f"still {status} after {timeout} s"
        time.sleep(0.5)
    return status


@pytest.mark.slow  # two `python -m eval.run` children (imports, the sentence encoder): ~90 s on 2 cores
def test_an_evaluation_runs_in_the_background_fills_the_results_and_can_be_cancelled(
    tiny_model_dir, tiny_engine, store, tmp_path
):
    from eval.table import NOT_RUN, collect
    from ui.results import HOW_TO_RUN, shown_table

    ctx = studio_context(tmp_path, store, {"base": tiny_engine})
    ctx.pool.cfg.model = str(tiny_model_dir)  # the app's --model: what `base` is in the child
    with serving(ctx) as url:
        client = Client(url, verbose=False)
        [before] = client.predict(api_name="/results")
        assert before["automatic metrics"] == NOT_RUN
        assert shown_table(collect(store, ["base"]))["automatic metrics"].tolist() == [HOW_TO_RUN]  # says how

        client.predict("base", 4, False, api_name="/run_evaluation")
        with pytest.raises(Exception, match="an evaluation is already running .* cancel it"):
            client.predict("base", 4, False, api_name="/run_evaluation")
        assert client.predict(api_name="/cancel_evaluation")["state"] in ("running", "cancelled")
        assert wait_for_evaluation(client, "cancelled")["message"] == "cancelled; nothing was registered"
        assert store.eval_runs() == []

        started = client.predict("base", 4, False, api_name="/run_evaluation")
        assert started["state"] == "running" and started["n_turns"] == 4
        status = wait_for_evaluation(client, "done")
        [row] = client.predict(api_name="/results")
    assert "Results tab" in status["message"]
    [run] = store.eval_runs()
    assert run.model_version == "base" and run.summary["items"] == 4 and "bertscore_f1" not in run.summary
    assert isinstance(row["BLEU"], float) and isinstance(row["perplexity"], float) and row["perplexity"] > 1
    assert row["ROUGE-L"] == pytest.approx(run.summary["rougeL"], abs=1e-3)
    items = [store.item(i) for i in range(1, 5)]  # the replies are in the label queue, as eval.run puts them
    assert {(item.source, item.model_version, item.eval_run_id) for item in items} == {("eval", "base", run.id)}
