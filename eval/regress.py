"""Scripted regression chats: run every script in `eval/regression/`, check each reply, diff.

    python -m eval.regress --model base
    python -m eval.regress --model smollm2-persona-cpu --scripts eval/regression/nova_identity.yaml
    python -m eval.regress --app_url http://127.0.0.1:7860 --model base   # through a running app's /chat

Each script is one conversation (a `ChatSession`, or the app's `/chat` API with the
conversation id passed back), decoded greedily so a run is reproducible. Writes
`results.json` (every reply and check), `junit.xml` and `config.yaml` to
`runs/<version>/regress/<timestamp>/`, prints a pass/fail table and a diff against the newest
run of another model version, and queues failed or changed replies for labelling.
Exit status: 0 all checks passed, 1 a check failed, 2 a usage error (script, persona, model).
The script format is in `eval/regress_checks.py`.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import Field, field_validator

from chatbot.session import ChatSession
from core.cli import entry_point
from core.conversation import dialogue
from core.default_model import DEFAULT_MODEL
from core.errors import ConfigError, GenerationError
from core.persona import Persona, load_personas
from core.versions import BASE, results_dir, results_files
from engines.config import EngineConfig, GenerationSettings, GreedySettings
from engines.factory import load_engine
from eval.drift import drift, drift_lines, drift_plot
from eval.regress_checks import ScriptFile, diff, diff_summary, junit_xml, load_scripts, run_checks, table
from store import NewItem, Store

log = logging.getLogger("eval.regress")


class RegressConfig(EngineConfig):
    scripts: list[str] = Field(
        ["eval/regression"], description="Script files or folders of *.yaml: one path, or `[a.yaml,b.yaml]`."
    )
    personas_dir: str = Field("personas", description="Persona files the scripts' keys refer to.")
    app_url: str | None = Field(None, description="Chat through this app's /chat API (URL or Space id).")
    generation: GreedySettings = Field(default_factory=GreedySettings)
    consistency_threshold: float = Field(0.35, ge=-1, le=1, description="Least similarity for `in_persona`.")
    scope_guard: bool = Field(
        True, description="Off-topic questions get the persona's deflection (false: all reach the model)."
    )
    compare_to: str | None = Field(
        None, description="results.json (or its folder) to diff against; default: newest run of another version."
    )
    labels: Literal["flagged", "all", "none"] = Field(
        "flagged", description="Queue failed or changed replies (flagged), those then the rest (all), or none."
    )
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    out: str | None = Field(None, description="Output folder (default: runs/<version>/regress/<timestamp>/).")

    @field_validator("scripts", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


def version_name(cfg: RegressConfig) -> str:
    """The version the results are filed under (an app serves versions by these names)."""
    if cfg.model in (BASE, DEFAULT_MODEL):
        return BASE
    if cfg.app_url:
        return cfg.model
    from eval.run import version_name as local_name

    return local_name(cfg)


# -- chatting ------------------------------------------------------------------------------


class Sent(NamedTuple):
    """A reply, the dialogue it answered (before its user message), whether it was the persona's
    scope deflection (the model not asked)."""

    reply: str
    context: list[dict]
    deflected: bool


class LocalChat:
    """A `ChatSession` on a local engine: the conversation service over a history in memory."""

    def __init__(self, engine, settings: GenerationSettings):
        self.engine, self.settings = engine, settings

    def start(self, key: str, persona: Persona, scope_guard: bool = True) -> None:
        self.session = ChatSession(self.engine, persona, self.settings, scope_guard)

    def switch(self, key: str, persona: Persona) -> None:
        self.session.switch_persona(persona)

    def send(self, text: str) -> Sent:
        reply = self.session.reply(text)
        return Sent(reply, dialogue(self.session.history)[:-2], self.session.deflected)


class AppChat:
    """The same conversation through a running app's typed `/chat` API (raw text in and out).

    The app keeps the conversation in its store (source "chat", like any other) and decodes
    with temperature, top_p, top_k and max_new_tokens from here and its own repetition_penalty
    and seed. Only the conversation id it returns is held here; the context and the deflection
    flag of a reply are read back from its `/history`."""

    def __init__(self, url: str, version: str, settings: GenerationSettings):
        from gradio_client import Client

        try:
            self.client = Client(url, verbose=False)
        except Exception as err:  # connection refused, no such Space, not a Gradio app
            raise ConfigError(
                f"cannot reach the app at {url}: {err}", "start it (python app.py) or fix --app_url"
            ) from None
        self.version, self.settings = version, settings

    def start(self, key: str, persona: Persona, scope_guard: bool = True) -> None:
        self.key, self.conversation_id, self.scope_guard = key, None, scope_guard

    def switch(self, key: str, persona: Persona) -> None:
        self.key = key  # the app marks the switch on the next message (a new chat simply greets as it)

    def send(self, text: str) -> Sent:
        s = self.settings
        # Sent only to turn the guard off: an app from before the guard knows no such parameter.
        guard = {} if self.scope_guard else {"scope_guard": False}
        try:
            self.conversation_id, reply, _ = self.client.predict(
                message=text, persona=self.key, version=self.version, conversation_id=self.conversation_id,
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
                api_name="/chat", **guard,
            )  # fmt: skip
            shown = self.client.predict(conversation_id=self.conversation_id, api_name="/history")
        except Exception as err:  # the app's gr.Error arrives as gradio_client's AppError
            raise GenerationError(f"the app's /chat failed: {err}", "check the app's log and --model") from None
        return Sent(reply, dialogue(shown)[:-2], bool(shown[-1].get("deflected")))


def run_script(
    chat, file: ScriptFile, personas: dict[str, Persona], scorer, threshold: float, scope_guard: bool = True
) -> list[dict]:
    """Play one script as one conversation; one record per user turn. The scope guard is on
    when the run and the script both leave it on."""
    script, key = file.script, file.script.persona
    chat.start(key, personas[key], scope_guard and script.scope_guard)
    records = []
    for number, (turn, line) in enumerate(zip(script.turns, file.turn_lines, strict=True), start=1):
        if turn.switch_persona:
            key = turn.switch_persona
            chat.switch(key, personas[key])
            continue
        reply, context, deflected = chat.send(turn.user)
        checks = run_checks(turn.checks, reply, key, personas[key], scorer, threshold)
        scores = scorer(reply)
        records.append({
            "script": script.name, "file": str(file.path), "turn": number, "line": line, "persona": key,
            "persona_name": personas[key].name, "user": turn.user, "reply": reply, "context": context,
            "checks": checks, "passed": all(c["passed"] for c in checks),
            "deflected": deflected,
            "persona_similarity": scores[key], "closest_persona": max(scores, key=scores.get) == key,
        })  # fmt: skip
    return records


def make_scorer(personas: dict[str, Persona]):
    """reply -> {persona key: similarity to its facts}; the encoder loads on the first call.
    Cached: the `in_persona` check and the drift score of a reply share one encoding."""
    from eval.consistency import similarity

    keys = list(personas)

    @functools.lru_cache(maxsize=256)
    def scores(reply: str) -> dict[str, float]:
        return dict(zip(keys, similarity([reply] * len(keys), [personas[k].facts for k in keys]), strict=True))

    return scores


# -- files and the store ------------------------------------------------------------------


def previous_results(cfg: RegressConfig, name: str, out: Path) -> Path | None:
    """`compare_to`, else the newest results.json under runs/*/regress/ of another version."""
    if cfg.compare_to:
        path = Path(cfg.compare_to)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"--compare_to {cfg.compare_to}: no results.json there", "pass a regress run folder")
        return path
    runs = []
    for path in results_files(cfg.runs_dir, "regress", "results.json"):
        if path.parent.resolve() == out.resolve():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("skipping unreadable %s", path)
            continue
        if data.get("model_version") != name:
            runs.append((data.get("created", ""), path))
    return max(runs)[1] if runs else None


def flagged(record: dict) -> bool:
    return not record["passed"] or record.get("diff", {}).get("status") == "changed"


def label_items(records: list[dict], personas: dict[str, Persona], version: str) -> list[NewItem]:
    """The replies of `records` as label items: failed/changed ones with priority 1, so the queue
    hands them out first; scope deflections left out. `eval.regress` and the app's Organise tab
    (`eval.jobs`) both queue through here."""
    return [
        NewItem(
            source="eval",
            persona_name=r["persona_name"],
            persona=personas[r["persona"]].model_dump(),
            # The rater sees what was asked: the messages so far, then the question answered.
            context=[*r["context"], {"role": "user", "content": r["user"]}],
            answer=r["reply"],
            model_version=version,
            priority=1 if flagged(r) else 0,
        )
        for r in records
        # A deflection is the persona file's text, not the version's answer: never rated as one.
        if not r.get("deflected")
    ]


def queue_labels(cfg: RegressConfig, name: str, records: list[dict], personas: dict[str, Persona]) -> int:
    """Register failed/changed replies with priority 1, so the queue hands them out before
    anything already waiting there, then (labels=all) the rest with the normal priority 0;
    scope deflections are left out."""
    answered = [r for r in records if not r.get("deflected")]
    chosen = [r for r in answered if flagged(r)]
    chosen += [r for r in answered if not flagged(r)] if cfg.labels == "all" else []
    if cfg.labels == "none" or not chosen:
        return 0
    items = label_items(chosen, personas, name)
    with Store(cfg.database_url) as store:
        for r, item_id in zip(chosen, store.add_label_items(items), strict=True):
            r["label_item"] = item_id
    return len(items)


def write_outputs(out: Path, cfg: RegressConfig, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    junit_xml(results["turns"], results["model_version"]).write(out / "junit.xml", encoding="utf-8")


# -- entry point ---------------------------------------------------------------------------


def run(cfg: RegressConfig) -> tuple[dict, Path]:
    """Play every script, check, diff, write the outputs and queue labels; (results, out)."""
    personas = load_personas(cfg.personas_dir)
    files = load_scripts(cfg.scripts, personas)  # a bad script fails before the model loads
    name = version_name(cfg)
    out = Path(cfg.out) if cfg.out else results_dir(cfg.runs_dir, name, "regress")
    chat = AppChat(cfg.app_url, name, cfg.generation) if cfg.app_url else LocalChat(load_engine(cfg), cfg.generation)
    scorer = make_scorer(personas)
    created = datetime.now().isoformat(timespec="seconds")
    records = [
        r for f in files for r in run_script(chat, f, personas, scorer, cfg.consistency_threshold, cfg.scope_guard)
    ]
    previous_path = previous_results(cfg, name, out)
    previous = json.loads(previous_path.read_text()) if previous_path else {}
    results = {
        "model_version": name, "model": cfg.model, "app_url": cfg.app_url, "created": created,
        "summary": {"scripts": len(files), "turns": len(records), "failed_turns": sum(not r["passed"] for r in records),
                    "checks": sum(len(r["checks"]) for r in records),
                    "failed_checks": sum(not c["passed"] for r in records for c in r["checks"])},
        "compare_to": str(previous_path) if previous_path else None,
        "compared_version": previous.get("model_version"),
        "diff": diff(records, previous) if previous_path else None,
        "drift": drift(records),
        "turns": records,
    }  # fmt: skip
    write_outputs(out, cfg, results)  # before the store: a database problem loses no replies
    drift_plot(results["drift"], out / "drift.png")
    results["summary"]["queued_labels"] = queue_labels(cfg, name, records, personas)
    write_outputs(out, cfg, results)  # again, with the label item ids
    return results, out


def report(results: dict, out: Path) -> str:
    s = results["summary"]
    lines = [table(results["turns"]), "",
             f"{results['model_version']}: {s['checks'] - s['failed_checks']} of {s['checks']} checks passed, "
             f"{s['turns'] - s['failed_turns']} of {s['turns']} turns in {s['scripts']} scripts"]  # fmt: skip
    if results["diff"]:
        lines.append(diff_summary(results["diff"], results["compare_to"], results["compared_version"]))
    else:
        lines.append("diff: no earlier run of another model version (pass --compare_to PATH)")
    lines += drift_lines(results["drift"])
    lines.append(f"{s['queued_labels']} replies queued for labelling; written to {out}")
    return "\n".join(lines)


@entry_point(RegressConfig, __doc__)
def main(cfg: RegressConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results, out = run(cfg)
    print(report(results, out))
    return 1 if results["summary"]["failed_turns"] else 0


if __name__ == "__main__":
    sys.exit(main())
