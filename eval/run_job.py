"""A version's evaluation in the background of the app: `python -m eval.run` in a child process,
with progress and cancel (the Organise tab, so the Results table fills without a terminal).

    jobs = EvalJobs(ctx.pool, ctx.store)
    jobs.start(EvalRequest(version="base", n_turns=20))
    jobs.status()   # EvalStatus: state, stage ("generating 2/3 batches"), elapsed; jobs.cancel() stops it

The child runs eval.run's own code (`main`: turn sample, greedy replies, BLEU, ROUGE, BERTScore,
reference perplexity, persona grounding; Hits@1 left to the command) on a small sample by default, so it ends in a
few minutes on CPU; the number of turns can be raised. Why a child process: the model and the
metrics' Python then never hold the app's interpreter lock (chats and raters go on), perplexity
needs the model's weights in the scoring process (the app's model may live in another one), and
a cancel ends it at once. The child writes the run's files only; the app registers them in its
store (`eval.run.register_outputs`) once the run has finished, so a cancelled or failed run
leaves nothing half-registered. One evaluation at a time.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import PersonaStudioError
from core.versions import BASE, results_dir
from corpus.hub import DEFAULT_DATASET
from engines.pool import EnginePool
from engines.priority import JOB_NICE
from store import Store

log = logging.getLogger("eval.run_job")

State = Literal["idle", "running", "done", "cancelled", "failed"]
# A tqdm bar on the child's stderr ("generating:  40%|####  | 2/5 [00:03<...]") -> "generating 2/5".
BAR = re.compile(r"^(?P<what>[^:|]+):\s*\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)")


class EvalRequest(BaseModel):
    """What to evaluate: a version on `n_turns` held-out turns (eval.run's test split)."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(BASE, description="Model version to evaluate (`base` or a trained one).")
    n_turns: int = Field(20, ge=1, le=10_000, description="Held-out turns scored (a seeded sample); more: tighter.")
    bertscore: bool = Field(True, description="Compute BERTScore (all-MiniLM-L6-v2).")


@dataclass(frozen=True)
class EvalStatus:
    state: State = "idle"
    version: str = ""
    n_turns: int = 0
    stage: str = ""  # what the child does now, from its log
    elapsed_s: float = 0.0
    message: str = ""  # why it failed, or where the results went

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.state == "idle":
            return "No evaluation has run since the app started."
        head = f"{self.state}: {self.version} on {self.n_turns} held-out turns · {self.elapsed_s:.0f} s"
        if self.state == "running" and self.stage:
            head += f" · {self.stage}"
        return head + (f" · {self.message}" if self.message else "")


class EvalJobError(PersonaStudioError):
    """An evaluation that cannot start now (one is running)."""


def eval_args(pool: EnginePool, req: EvalRequest, out: Path, dataset: str | Path = DEFAULT_DATASET) -> list[str]:
    """The `python -m eval.run` flags of the request, with the app's model settings. A small
    evaluation: the swap probe on at most 8 turns (eval.run's quick.yaml), no Hits@1 (20
    likelihood scorings per turn: the slowest metric on CPU; `python -m eval.run` has it)."""
    cfg = pool.cfg
    model = cfg.model if req.version == BASE else req.version
    probe = str(min(8, req.n_turns))
    args = ["--model", model, "--data.path", str(dataset), "--runs_dir", cfg.runs_dir, "--dtype", cfg.dtype,
            "--device", cfg.device, "--limit", str(req.n_turns), "--swap_probe_items", probe, "--hits_items", "0",
            "--bertscore", str(req.bertscore).lower(), "--register_labels", "false", "--out", str(out)]  # fmt: skip
    if req.version == BASE and cfg.adapter:
        args += ["--adapter", cfg.adapter]
    return args


class EvalJobs:
    """The app's one background evaluation, its status and its cancel switch."""

    def __init__(self, pool: EnginePool, store: Store, dataset: str | Path = DEFAULT_DATASET):
        self.pool, self.store, self.dataset = pool, store, dataset
        self._lock = threading.Lock()
        self._status = EvalStatus()
        self._process: subprocess.Popen | None = None
        self._started = 0.0
        self._cancelled = False

    def status(self) -> EvalStatus:
        s = self._status
        return replace(s, elapsed_s=time.monotonic() - self._started) if s.state == "running" else s

    def start(self, req: EvalRequest) -> EvalStatus:
        with self._lock:
            if self._status.state == "running":
                s = self.status()
                raise EvalJobError(
                    f"an evaluation is already running ({s.version}, {s.elapsed_s:.0f} s so far)",
                    "wait for it to finish or cancel it, then start again",
                )
            if req.version != BASE and req.version not in self.pool.versions():
                self.pool.get(req.version)  # ModelLoadError naming the versions there are
            out = results_dir(self.pool.cfg.runs_dir, req.version, "eval")
            command = [sys.executable, "-m", "eval.run", *eval_args(self.pool, req, out, self.dataset)]
            # In the app's process group: Ctrl-C on the app (or a kill of its group) ends it too.
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT)  # fmt: skip
            if hasattr(os, "setpriority"):  # the evaluation yields the CPU to chats and raters
                os.setpriority(os.PRIO_PROCESS, self._process.pid, JOB_NICE)
            self._started, self._cancelled = time.monotonic(), False
            self._status = EvalStatus("running", req.version, req.n_turns, stage="loading the model")
        threading.Thread(target=self._watch, args=(self._process, req, out), daemon=True, name="eval-job").start()
        return self.status()

    def cancel(self) -> EvalStatus:
        """Stop the evaluation now; nothing of it is registered."""
        with self._lock:
            if self._status.state == "running" and self._process is not None:
                self._cancelled = True
                self._process.terminate()
        return self.status()

    def _set(self, **changes) -> None:
        self._status = replace(self._status, **changes)

    def _watch(self, process: subprocess.Popen, req: EvalRequest, out: Path) -> None:
        tail: deque[str] = deque(maxlen=20)  # the child's last lines, for a failure's message
        for line in _lines(process.stdout):
            tail.append(line)
            if stage := _stage(line):
                self._set(stage=stage)
        code = process.wait()
        elapsed = time.monotonic() - self._started
        if self._cancelled:
            self._set(state="cancelled", elapsed_s=elapsed, stage="", message="cancelled; nothing was registered")
            return
        if code != 0:
            error = next((t for t in reversed(tail) if t.startswith("error: ")), None)
            why = error[len("error: ") :] if error else f"eval.run exited with {code}: {' / '.join(list(tail)[-3:])}"
            self._set(state="failed", elapsed_s=elapsed, stage="", message=why)
            return
        try:
            from eval.run import register_outputs

            register_outputs(self.store, out, req.version)
        except PersonaStudioError as err:
            self._set(state="failed", elapsed_s=elapsed, message=f"{err.problem}. {err.fix}")
            return
        except Exception as err:  # a thread's exception would vanish: show it, log the trace
            log.exception("registering the evaluation failed")
            self._set(state="failed", elapsed_s=elapsed, message=f"{type(err).__name__}: {err}. See the app's log")
            return
        self._set(state="done", elapsed_s=elapsed, stage="",
                  message=f"the metrics are in the Results tab; files in {out}")  # fmt: skip


def _lines(stream):
    """The child's output line by line; tqdm redraws a line with carriage returns."""
    buffer = ""
    while chunk := stream.read1(4096):  # what is there, not a full 4 KiB: progress shows as it comes
        buffer += chunk.decode("utf-8", "replace")
        *done, buffer = re.split(r"[\r\n]", buffer)
        yield from (line.strip() for line in done if line.strip())
    if buffer.strip():
        yield buffer.strip()


def _stage(line: str) -> str | None:
    """A progress line worth showing: a tqdm bar's count, or one of eval.run's log lines."""
    if bar := BAR.match(line):
        return f"{bar['what'].strip()} {bar['done']}/{bar['total']}"
    if line.startswith(("generating ", "reference perplexity", "Hits@1", "skipped ")):
        return line[:120]
    return None
