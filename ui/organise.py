"""Organise tab: queue a version's answers for raters (in the background), and the session's progress.

The replies are generated in a thread of the app (`eval.jobs`, the same turns and decoding as
`python -m eval.run`, or the regression suite's chats), so chatting and labelling go on while
a job runs; one job at a time. A page polls the job (a timer) only while it runs, from when the
tab is opened or the job queued. Typed API endpoints for scripts (`gradio_client`, by name):

    /queue_answers(version="base", dataset="spc", n_turns=20, upload=None, split="test", seed=0, max_new_tokens=64)
        -> the job's status   dataset: spc (the shared file) | upload (a CSV/JSONL) | regression
    /queue_status()       -> {"state", "version", "dataset", "done", "total", "rate", "eta_s", "queued", "message"}
    /cancel_queue()       -> the job's status (it stops after the current batch)
    /session_progress()   -> {"overlap", "items": [...], "raters": [...], "agreement": {...}}
    /run_evaluation(version="base", n_turns=20, bertscore=True) -> the evaluation's status
    /evaluation_status()  -> {"state", "version", "n_turns", "stage", "elapsed_s", "message"}
    /cancel_evaluation()  -> the evaluation's status (it stops at once; nothing is registered)

An evaluation runs `python -m eval.run` in a child process (`eval.run_job`) and fills the Results
table's automatic metrics (BLEU, ROUGE, BERTScore, perplexity, ...) for that version.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

import html
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio import FileData
from pydantic import ValidationError

from core.errors import ConfigError, PersonaStudioError
from engines.config import GreedySettings
from eval.jobs import Dataset, JobStatus, QueueJobs, QueueRequest, Split
from eval.progress import session_progress
from eval.run_job import EvalJobs, EvalRequest, EvalStatus
from ui.common import shows_errors
from ui.context import AppContext
from ui.quality import build_quality_section

DATASET_CHOICES = [
    ("Synthetic-Persona-Chat (the app's --dataset)", "spc"),
    ("Upload a CSV / JSONL", "upload"),
    ("Regression suite (eval/regression)", "regression"),
]
MAX_NEW_TOKENS = GreedySettings().max_new_tokens  # eval.run's
POLL_S = 1.0  # status refresh while a job runs; off otherwise (every open page would tick)
# Status reads are short; outside the "generation" group so a busy model never delays them.
QUICK = dict(concurrency_id="organise", concurrency_limit=None)


def request(version, dataset, n_turns, path, split, max_new_tokens, seed=0) -> QueueRequest:
    fields = dict(version=version or "base", dataset=dataset, n_turns=n_turns, path=path, split=split, seed=seed,
                  generation={"max_new_tokens": max_new_tokens})  # fmt: skip
    try:
        return QueueRequest(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"`{where}` {first['msg'].lower()}", "fix it and queue again") from None


def as_text(markdown: str) -> str:
    """A message for a Markdown box or a toast, its `<...>` shown as written: a YAML error quotes
    `in "<unicode string>"`, which HTML would swallow (and cut the message there)."""
    return html.escape(markdown, quote=False)


def status_text(s: JobStatus) -> str:
    return as_text(s.line())


def refused_text(err: PersonaStudioError, last: JobStatus) -> str:
    """A request that started nothing: its reason, apart from the last job's status (which it
    must not read as part of)."""
    text = f"**Not queued:** {err.problem}. {err.fix}" if err.fix else f"**Not queued:** {err.problem}"
    if last.state != "idle":
        text += f"\n\nLast job: {last.line()}"
    return as_text(text)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def agreement_text(progress: dict) -> str:
    a = progress["agreement"]
    if not a["overlap_items"]:
        more = (
            " (the app gives each item to one rater: start it with --label_overlap 2)"
            if progress["overlap"] < 2
            else ""
        )
        return f"**Agreement:** no item has two raters yet{more}."
    return (
        f"**Agreement** over {a['overlap_items']} items labelled by 2+ raters: {percent(a['percent_agreement'])} "
        f"of rater pairs agree · Cohen's κ {number(a['cohen_kappa'])} · Fleiss' κ {number(a['fleiss_kappa'])} "
        f"(on {a['fleiss_items']} items) · κ near 0 is chance level, 1 full agreement"
    )


def progress_view(progress: dict) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    items = pd.DataFrame(progress["items"], columns=["source", "model_version", "items", "labels", "complete", "left"])
    raters = pd.DataFrame(progress["raters"], columns=["rater", "labels", "good", "left"])
    return items, raters, agreement_text(progress)


def build_organise_tab(ctx: AppContext) -> dict:
    """The tab's widgets and events; returns the event to run when the tab is opened."""
    jobs = QueueJobs(ctx.pool, ctx.store, ctx.personas_dir, ctx.dataset)
    gr.Markdown(
        "Generate a model version's answers and put them in the **Label** queue. The job runs in the "
        "background (chat and labelling go on); one job at a time. The answers are those of "
        "`python -m eval.run` (same turns, prompts and greedy decoding), or of the regression suite's chats."
    )
    with gr.Row():
        version = gr.Dropdown(ctx.pool.versions(), value="base", label="Model version", allow_custom_value=True)
        dataset = gr.Radio(DATASET_CHOICES, value="spc", label="Dataset", scale=2)
        n_turns = gr.Number(20, label="Turns", precision=0, minimum=1, elem_id="organise-turns")
        split = gr.Dropdown(["test", "validation", "train", "all"], value="test", label="Split of the file")
        max_new_tokens = gr.Number(MAX_NEW_TOKENS, label="Max new tokens (greedy)", precision=0, minimum=1)
    upload = gr.File(label="Dataset file (.csv or .jsonl)", file_types=[".csv", ".jsonl"], type="filepath",
                     visible=False, elem_id="organise-upload")  # fmt: skip
    with gr.Row():
        start = gr.Button("Queue answers", variant="primary", elem_id="organise-start")
        stop = gr.Button("Cancel job", elem_id="organise-cancel")
    status = gr.Markdown(status_text(jobs.status()), elem_id="organise-status")
    timer = gr.Timer(POLL_S, active=False)
    with gr.Row(equal_height=True):
        gr.Markdown("### Session progress")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120)
    items = gr.Dataframe(label="Items per source and version (left: waiting for a label)", interactive=False)
    raters = gr.Dataframe(label="Labels per rater (left: items still open to them)", interactive=False)
    agreed = gr.Markdown()
    on_quality = build_quality_section(ctx, refresh)
    evaluations = EvalJobs(ctx.pool, ctx.store, ctx.dataset)
    _evaluation_section(ctx, evaluations, version)

    def shown_progress():
        return progress_view(session_progress(ctx.store, ctx.label_overlap))

    def polling(s: JobStatus) -> gr.Timer:
        return gr.Timer(active=s.state == "running")

    def queue(version, dataset, n_turns, split, max_new_tokens, upload):
        try:
            s = jobs.start(request(version, dataset, n_turns, upload, split, max_new_tokens))
        except PersonaStudioError as err:  # in the status line, where the job's state is read
            gr.Warning(as_text(f"Not queued: {err.problem}"))
            return refused_text(err, jobs.status()), polling(jobs.status())
        return status_text(s), polling(s)

    seen = gr.State(-1)  # replies done at this page's last look: tables are re-read when it moves

    def tick(last: int):
        s = jobs.status()
        tables = shown_progress() if s.done != last or s.state != "running" else (gr.skip(),) * 3
        return status_text(s), polling(s), *tables, s.done

    def opened():
        s = jobs.status()
        return status_text(s), polling(s), *shown_progress(), s.done

    def pick(dataset: str):
        return gr.File(visible=dataset == "upload"), gr.Dropdown(visible=dataset != "regression")

    dataset.change(pick, dataset, [upload, split], api_name=False)
    version.focus(lambda: gr.Dropdown(choices=ctx.pool.versions()), None, version, api_name=False)
    picks = [version, dataset, n_turns, split, max_new_tokens, upload]
    start.click(queue, picks, [status, timer], api_name=False, **QUICK)
    stop.click(lambda: status_text(jobs.cancel()), None, status, api_name=False, **QUICK)
    shown = [status, timer, items, raters, agreed, seen]
    timer.tick(tick, seen, shown, api_name=False, show_progress="hidden", **QUICK)
    refresh.click(shown_progress, None, [items, raters, agreed], api_name=False, **QUICK)
    _add_api(ctx, jobs)
    _add_evaluation_api(evaluations)

    def opened_with_raters():
        return *opened(), *on_quality["fn"]()

    return dict(fn=opened_with_raters, inputs=None, outputs=[*shown, *on_quality["outputs"]], **QUICK)


def _add_api(ctx: AppContext, jobs: QueueJobs) -> None:
    def queue_answers(
        version: str = "base",
        dataset: Dataset = "spc",
        n_turns: int = 20,
        upload: FileData | None = None,
        split: Split = "test",
        seed: int = 0,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> dict:
        """Start generating `n_turns` replies of `version` in the background; they are queued for
        raters batch by batch. dataset: spc (the app's --dataset, Synthetic-Persona-Chat by default), upload (a
        CSV/JSONL in `upload`), regression (the regression suite's chats). Returns the job's
        status; a job already running is refused. Decoding is eval.run's (greedy)."""
        path = Path(upload["path"]) if upload else None
        return jobs.start(request(version, dataset, n_turns, path, split, max_new_tokens, seed)).as_dict()

    def queue_status() -> dict:
        """The job's state (idle, running, done, cancelled, failed), done/total, replies per
        second, seconds left, items queued, and a message (why it failed)."""
        return jobs.status().as_dict()

    def cancel_queue() -> dict:
        """Stop the running job after its current batch; what it queued stays queued."""
        return jobs.cancel().as_dict()

    def progress() -> dict:
        """Items per source/version (labels, complete, left), labels per rater, agreement so far."""
        return session_progress(ctx.store, ctx.label_overlap)

    gr.api(shows_errors(queue_answers), api_name="queue_answers", **QUICK)
    gr.api(shows_errors(queue_status), api_name="queue_status", **QUICK)
    gr.api(shows_errors(cancel_queue), api_name="cancel_queue", **QUICK)
    gr.api(shows_errors(progress), api_name="session_progress", **QUICK)


def _evaluation_section(ctx: AppContext, evaluations: EvalJobs, version: gr.Dropdown) -> None:
    """Run the version picked above through eval.run in the background: the Results table's
    automatic metrics, without a terminal."""
    gr.Markdown(
        "### Evaluate a version (automatic metrics for Results)\n"
        "Scores the **Model version** picked above on held-out turns of the app's dataset (`--dataset`; "
        "Synthetic-Persona-Chat by default) (`python -m eval.run`, in the background): BLEU, ROUGE, BERTScore, "
        "perplexity of the reference, persona grounding. 20 turns take a few minutes on CPU; more turns give "
        "tighter numbers."
    )
    with gr.Row():
        n_turns = gr.Number(EvalRequest().n_turns, label="Held-out replies to score", precision=0, minimum=1,
                            maximum=10_000, elem_id="evaluate-turns")  # fmt: skip
        bertscore = gr.Checkbox(True, label="BERTScore")
        run = gr.Button("Run evaluation", variant="primary", elem_id="evaluate-start")
        stop = gr.Button("Cancel evaluation", elem_id="evaluate-cancel")
    status = gr.Markdown(as_text(evaluations.status().line()), elem_id="evaluate-status")
    timer = gr.Timer(POLL_S, active=False)

    def shown(s: EvalStatus) -> tuple[str, gr.Timer]:
        return as_text(s.line()), gr.Timer(active=s.state == "running")

    def start(picked: str, turns: float, with_bertscore: bool):
        try:
            req = EvalRequest(version=picked or "base", n_turns=int(turns or 0), bertscore=with_bertscore)
            return shown(evaluations.start(req))
        except ValidationError as err:
            problem = err.errors()[0]["msg"].lower()
            return as_text(f"**Not started:** held-out turns: {problem}."), gr.skip()
        except PersonaStudioError as err:
            return as_text(
                f"**Not started:** {err.problem}. {err.fix}\n\nLast: {evaluations.status().line()}"
            ), gr.skip()

    run.click(start, [version, n_turns, bertscore], [status, timer], api_name=False, **QUICK)
    stop.click(lambda: shown(evaluations.cancel()), None, [status, timer], api_name=False, **QUICK)
    timer.tick(lambda: shown(evaluations.status()), None, [status, timer], api_name=False, show_progress="hidden",
               **QUICK)  # fmt: skip


def _add_evaluation_api(evaluations: EvalJobs) -> None:
    def run_evaluation(version: str = "base", n_turns: int = 20, bertscore: bool = True) -> dict:
        """Start `python -m eval.run` on `version` with `n_turns` held-out turns in the background;
        when it ends its metrics are in /results. Returns its status; one at a time."""
        return evaluations.start(EvalRequest(version=version, n_turns=n_turns, bertscore=bertscore)).as_dict()

    def evaluation_status() -> dict:
        """The evaluation's state (idle, running, done, cancelled, failed), stage, seconds, message."""
        return evaluations.status().as_dict()

    def cancel_evaluation() -> dict:
        """Stop the running evaluation at once; nothing of it is registered."""
        return evaluations.cancel().as_dict()

    gr.api(shows_errors(run_evaluation), api_name="run_evaluation", **QUICK)
    gr.api(shows_errors(evaluation_status), api_name="evaluation_status", **QUICK)
    gr.api(shows_errors(cancel_evaluation), api_name="cancel_evaluation", **QUICK)
