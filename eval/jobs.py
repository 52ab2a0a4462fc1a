"""Queue a model version's replies for raters in the background: the app's Organise tab.

    jobs = QueueJobs(ctx.pool, ctx.store, ctx.personas_dir)
    jobs.start(QueueRequest(version="base", dataset="spc", n_turns=50))
    jobs.status()   # JobStatus: done/total, replies per second, ETA; jobs.cancel() stops it

The replies are those of `python -m eval.run` (the same turn sample, prompts and greedy
decoding: `select_turns`, `generate`, `label_items`) or, for the regression suite, of
`python -m eval.regress` (its scripted chats, checks and queue priority), without the
metrics. They are queued batch by batch, so raters can start before the job ends; a
cancelled or failed job keeps what it queued. One job at a time: a second is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import DatasetError, PersonaStudioError
from corpus.examples import DataConfig
from corpus.hub import DEFAULT_DATASET
from engines.config import GreedySettings
from engines.pool import EnginePool
from engines.priority import JOB_NICE, lower_priority
from eval.config import EvalConfig
from eval.label_next import refresh_queue
from store import Store

log = logging.getLogger("eval.jobs")

REGRESSION_DIR = Path(__file__).resolve().parent / "regression"
Dataset = Literal["spc", "upload", "regression"]
Split = Literal["test", "validation", "train", "all"]
State = Literal["idle", "running", "done", "cancelled", "failed"]


class QueueRequest(BaseModel):
    """What to generate: a version's replies to `n_turns` turns of a dataset."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field("base", description="Model version that answers (`base` or a trained one).")
    dataset: Dataset = Field("spc", description="spc (the app's --dataset), upload (`path`) or regression (the suite).")
    path: Path | None = Field(None, description="The uploaded CSV/JSONL (dataset=upload).")
    n_turns: int = Field(20, ge=1, le=10_000, description="Replies to generate (a seeded sample of turns).")
    split: Split = Field("test", description="Conversations of this split (as eval.run), or all of the file.")
    seed: int = Field(0, description="Seed of the turn sample.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch; progress and cancel go by batch.")
    generation: GreedySettings = Field(default_factory=GreedySettings, description="Decoding (eval.run's).")


@dataclass(frozen=True)
class JobStatus:
    state: State = "idle"
    version: str = ""
    dataset: str = ""
    done: int = 0  # replies generated
    total: int = 0
    rate: float | None = None  # replies per second since generation began
    eta_s: float | None = None  # seconds left at that rate, counted down between batches
    queued: int = 0  # answers this job put in the label queue that were not there before
    already: int = 0  # answers generated again that were in the queue already (they keep their item)
    skipped: tuple[str, ...] = ()  # files left out, with the reason (regression: a broken persona)
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self) | {"skipped": list(self.skipped)}

    def line(self) -> str:
        """One line for people: what runs, how far, how fast, what it added to the queue."""
        if self.state == "idle":
            return "No job has run since the app started."
        head = f"{self.state}: {self.version} on {self.dataset}, {self.done}/{self.total} replies"
        if self.rate:
            head += f" · {self.rate:.2f} replies/s"
        if self.state == "running" and self.eta_s is not None:
            head += f" · about {self.eta_s:.0f} s left"
        head += f" · {self.queued} queued"
        if self.already:
            head += f" ({self.already} already in the queue, not added again)"
        if self.message:
            head += f" · {self.message}"
        if self.skipped:
            head += f" · skipped {len(self.skipped)}: " + "; ".join(self.skipped)
        return head


class JobError(PersonaStudioError):
    """A job that cannot start now (one is running)."""


class Cancelled(Exception):
    pass


def eval_config(req: QueueRequest, runs_dir: str, dataset: str | Path = DEFAULT_DATASET) -> EvalConfig:
    """The `eval.run` config of the request: its data (`dataset` unless a file was uploaded), split,
    sample and decoding."""
    path = req.path if req.dataset == "upload" else Path(dataset)
    if req.dataset == "upload" and path is None:
        raise DatasetError("dataset 'upload' was chosen but no file was uploaded", "upload a .csv or .jsonl file")
    # `all`: every conversation lands in the test split (the overlap check with the version's
    # training data still applies).
    fractions = (0.0, 0.0, 1.0) if req.split == "all" else DataConfig().split_fractions
    data = DataConfig(path=path, split_fractions=fractions)
    split = "test" if req.split == "all" else req.split
    return EvalConfig(model=req.version, runs_dir=runs_dir, data=data, split=split, limit=req.n_turns,
                      seed=req.seed, batch_size=req.batch_size, generation=req.generation)  # fmt: skip


def as_uploaded(err: PersonaStudioError, path: Path | None) -> PersonaStudioError:
    """`err` naming the uploaded file by its name: the path is the server's temp copy
    (`/tmp/gradio/<hash>/<name>`), which the person who uploaded it never saw."""
    if path is None or str(path) not in f"{err.problem}{err.fix}":
        return err
    shown = f"“{path.name}”"
    return type(err)(err.problem.replace(str(path), shown), err.fix.replace(str(path), shown))


def select_turns(cfg: EvalConfig, split: str):
    """`eval.run.select_turns`, its CLI advice replaced by the app's."""
    from eval.run import select_turns as eval_turns

    try:
        return eval_turns(cfg)
    except DatasetError as err:
        if "has no turns" in err.problem and split != "all":
            raise DatasetError(err.problem, "choose the split 'all' (every conversation of the file)") from None
        if "training data" in err.problem:
            raise DatasetError(err.problem, "choose the test split (held out from training) or another file") from None
        raise


def regression_files(personas_dir: str, n_turns: int) -> tuple[list, list[str]]:
    """The suite's scripts, cut so that together they have `n_turns` user turns, and what was
    skipped with its reason: a broken persona file, or a script that cannot be read (or names
    such a persona). One bad file must not stop the rest of the suite."""
    from core.persona import scan_personas
    from eval.regress_checks import load_script, script_paths

    personas, broken = scan_personas(personas_dir)
    skipped = [f"persona {key}: {err.problem}" for key, err in broken.items()]
    files, left = [], n_turns
    for path in script_paths([str(REGRESSION_DIR)]):
        if left <= 0:
            break
        try:
            file = load_script(path, personas)
        except PersonaStudioError as err:
            skipped.append(f"script {path.name}: {err.problem}")
            continue
        kept, users = [], 0
        for turn in file.script.turns:  # switch_persona turns are kept in place, not counted
            if turn.user is not None:
                if users == left:
                    break
                users += 1
            kept.append(turn)
        script = file.script.model_copy(update={"turns": kept})
        files.append(replace(file, script=script, turn_lines=file.turn_lines[: len(kept)]))
        left -= users
    if not files:
        raise DatasetError(
            "no regression script could be read: " + "; ".join(skipped), "fix the files named and queue again"
        )
    return files, skipped


class QueueJobs:
    """The one background job of the app, its status, and its cancel switch."""

    def __init__(self, pool: EnginePool, store: Store, personas_dir: str = "personas",
                 dataset: str | Path = DEFAULT_DATASET):  # fmt: skip
        self.pool, self.store, self.personas_dir, self.dataset = pool, store, personas_dir, dataset
        self._lock = threading.Lock()  # one start at a time
        self._status_lock = threading.Lock()
        self._status = JobStatus()
        self._cancel = threading.Event()
        self._batch_at = 0.0  # time.monotonic() of the last finished batch

    def status(self) -> JobStatus:
        s = self._status
        if s.state == "running" and s.rate:  # count down between batches, not stuck at the last one's
            left = (s.total - s.done) / s.rate - (time.monotonic() - self._batch_at)
            s = replace(s, eta_s=max(left, 0.0))
        return s

    def start(self, req: QueueRequest) -> JobStatus:
        """Check the request (dataset, version) here, so a mistake is answered at once, then
        generate in a daemon thread. Raises `JobError` while another job runs."""
        with self._lock:
            if self._status.state == "running":
                s = self._status
                raise JobError(
                    f"a job is already running ({s.version} on {s.dataset}, {s.done}/{s.total} replies)",
                    "wait for it to finish or cancel it, then queue again",
                )
            self._check_version(req.version)
            skipped = []
            if req.dataset == "regression":
                work, skipped = regression_files(self.personas_dir, req.n_turns)
                total = sum(1 for f in work for t in f.script.turns if t.user is not None)
            else:
                try:
                    cfg = eval_config(req, self.pool.cfg.runs_dir, self.dataset)
                    work = (cfg, *select_turns(cfg, req.split))
                except PersonaStudioError as err:
                    raise as_uploaded(err, req.path if req.dataset == "upload" else None) from None
                total = len(work[1])
            self._cancel.clear()
            self._status = JobStatus("running", req.version, req.dataset, total=total, skipped=tuple(skipped),
                                     message="loading the version")  # fmt: skip
        threading.Thread(target=self._run, args=(req, work), daemon=True, name="queue-job").start()
        return self._status

    def cancel(self) -> JobStatus:
        """Stop after the current batch (regression: script); what was queued stays queued."""
        if self._status.state == "running":
            self._cancel.set()
            self._update(message="cancelling after the current batch")
        return self._status

    def _check_version(self, version: str) -> None:
        # A trained version that exists loads in the job (seconds); a missing one fails now.
        if version not in self.pool.versions():
            self.pool.get(version)  # an engine put in the pool (tests), else ModelLoadError naming the choices

    def _update(self, **changes) -> None:
        with self._status_lock:  # the job thread and a cancel both write it
            self._status = replace(self._status, **changes)

    def _queue(self, version: str, items: list) -> None:
        """Put a batch's answers in the label queue, counting those that were not there yet (an
        answer generated before keeps its item: re-queuing the same job adds nothing)."""
        before = self._items_of(version)
        self.store.add_label_items(items)
        new = self._items_of(version) - before
        s = self._status
        self._update(queued=s.queued + new, already=s.already + len(items) - new)

    def _items_of(self, version: str) -> int:
        return sum(row["items"] for row in self.store.item_counts() if row["source"] == "eval" and
                   row["model_version"] == version)  # fmt: skip

    def _progress(self, done: int, started: float) -> None:
        """Record a finished batch; stop here if a cancel came in (and work is left)."""
        self._batch_at = time.monotonic()
        elapsed = self._batch_at - started
        rate = done / elapsed if elapsed > 0 and done else None
        eta = (self._status.total - done) / rate if rate else None
        self._update(done=done, rate=rate, eta_s=eta)
        if self._cancel.is_set() and done < self._status.total:
            raise Cancelled

    def _run(self, req: QueueRequest, work) -> None:
        lower_priority(JOB_NICE)  # the job's thread yields the CPU to chats and raters
        try:
            engine = self.pool.get(req.version)
            if not self._cancel.is_set():  # a cancel while loading keeps its message
                self._update(message="")
            if req.dataset == "regression":
                self._regression(engine, req, work)
            else:
                self._turns(engine, req.version, *work)
            refresh_queue(self.store, self.pool.cfg.runs_dir)  # the refilled queue: open versions first
            self._update(state="done", eta_s=0.0, message="")  # a cancel during the last batch came too late
        except Cancelled:
            self._update(state="cancelled", eta_s=None, message="cancelled; the replies queued so far stay queued")
        except PersonaStudioError as err:
            self._update(state="failed", eta_s=None, message=f"{err.problem}. {err.fix}")
        except Exception as err:  # a thread's exception would vanish: show it, log the trace
            log.exception("queue job failed")
            self._update(state="failed", eta_s=None, message=f"{type(err).__name__}: {err}. See the app's log")

    def _turns(self, engine, version: str, cfg: EvalConfig, examples, conversations) -> None:
        from eval.evaluate import generate, persona_facts
        from eval.run import label_items

        facts = persona_facts(examples, conversations)
        started, done = time.monotonic(), 0
        for start in range(0, len(examples), cfg.batch_size):
            chunk = slice(start, start + cfg.batch_size)
            replies = generate(engine, examples[chunk], cfg)
            self._queue(version, label_items(version, examples[chunk], facts[chunk], replies))
            done += len(replies)
            self._progress(done, started)

    def _regression(self, engine, req: QueueRequest, files) -> None:
        from core.persona import scan_personas
        from eval.regress import LocalChat, RegressConfig, label_items, make_scorer, run_script

        personas = scan_personas(self.personas_dir)[0]  # broken ones were skipped with their scripts
        chat, scorer = LocalChat(engine, req.generation), make_scorer(personas)
        threshold = RegressConfig.model_fields["consistency_threshold"].default
        started, done = time.monotonic(), 0
        for file in files:
            records = run_script(chat, file, personas, scorer, threshold)
            self._queue(req.version, label_items(records, personas, req.version))
            done += len(records)
            self._progress(done, started)
