"""Regression scripts for `python -m eval.regress`: the YAML format, checks, and reports.

A script is one conversation under a persona (the suite is in `eval/regression/`):

    name: nova_then_ada
    persona: nova                 # a file stem in personas/
    turns:
      - user: Are you ChatGPT?
        checks: {identity: true, not_contains: ["I am ChatGPT"]}
      - switch_persona: ada       # Ada speaks from the next turn on
      - user: Who are you?
        checks: {identity: true}

Phrases (`contains`, `any_of`, `not_contains`, and the name for `identity`) match
case-insensitively on word boundaries, so `Ada` does not match "Canada". `regex` is
`re.search` as written (add `(?i)` for case-insensitive). `in_persona` passes when the
reply's similarity to the current persona's facts (`eval.consistency.similarity`) is at
least the threshold AND higher than to every other persona in the personas folder: a
reply that fits any persona equally well ("Hello! How can I help?") is not in persona.
(At 0.35, 28 of the 32 reference answers in the personas' `knowledge` pass; generic
small talk like "The weather is nice today." does not.)

`deflects: true` passes when the reply is the persona's scope deflection (`chatbot.scope`: the
guard answered, not the model), `deflects: false` when it is not; the persona must have a
`scope:` (see eval/regression/lovelace_guide_scope.yaml). A script's `scope_guard: false` (or
`--scope_guard false` for the whole run) lets its questions reach the model.

A run's records (one dict per user turn: script, turn, persona, user, reply, checks) are
reported here too: the pass/fail table, JUnit XML, and the diff against an earlier run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chatbot.scope import is_deflection
from core.errors import ConfigError, PersonaError
from core.persona import Persona


class Checks(BaseModel):
    """What one reply must satisfy; every check given must pass."""

    model_config = ConfigDict(extra="forbid")
    contains: list[str] = Field(default_factory=list, description="Every phrase appears.")
    any_of: list[str] = Field(default_factory=list, description="At least one phrase appears.")
    not_contains: list[str] = Field(default_factory=list, description="No phrase appears.")
    regex: str | None = Field(None, description="`re.search` finds the pattern.")
    max_chars: int | None = Field(None, ge=1, description="The reply has at most this many characters.")
    min_chars: int | None = Field(None, ge=0, description="The reply has at least this many characters.")
    in_persona: bool = Field(False, description="Closest to the current persona, and at least the threshold.")
    identity: bool = Field(False, description="The reply names the current persona.")
    deflects: bool | None = Field(None, description="The reply is (true) or is not (false) the scope deflection.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
        return pattern

    def given(self) -> list[str]:
        """Names of the checks this turn asks for, in declaration order."""
        # `in_persona: false` asks for nothing; `min_chars: 0` is a check (that always passes);
        # `deflects: false` is a check too (the guard must let the question through).
        asked = [n for n in type(self).model_fields if n in self.model_fields_set]
        return [n for n in asked if getattr(self, n) is not None and (getattr(self, n) is not False or n == "deflects")]


class Turn(BaseModel):
    """`user: ...` (with optional `checks:`), or `switch_persona: KEY`."""

    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, min_length=1)
    switch_persona: str | None = Field(None, min_length=1)
    checks: Checks = Field(default_factory=Checks)

    @model_validator(mode="after")
    def _one_kind(self) -> Turn:
        if (self.user is None) == (self.switch_persona is None):
            raise ValueError("a turn is either `user: ...` (with optional `checks:`) or `switch_persona: KEY`")
        if self.switch_persona is not None and self.checks.given():
            raise ValueError("a `switch_persona` turn has no reply to check; put the checks on the next user turn")
        return self


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Unique across the suite; results are keyed by it.")
    persona: str = Field(min_length=1, description="Persona key (file stem in personas/) the chat starts with.")
    description: str | None = Field(None, description="What the script guards against.")
    scope_guard: bool = Field(True, description="false: off-topic questions reach the model (no deflection).")
    turns: list[Turn] = Field(min_length=1)


@dataclass(frozen=True)
class ScriptFile:
    path: Path
    script: Script
    turn_lines: list[int]  # 1-based line of each turn in `path`


def script_paths(specs: list[str]) -> list[Path]:
    """The YAML files named by `specs` (files, or folders read for `*.yaml`), sorted per folder."""
    paths = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise ConfigError(f"the script folder {path} has no *.yaml files", "add scripts or pass other paths")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise ConfigError(f"regression script {path} does not exist", "pass a YAML file or a folder of them")
    return paths


def load_scripts(specs: list[str], personas: dict[str, Persona]) -> list[ScriptFile]:
    files = [load_script(path, personas) for path in script_paths(specs)]
    seen: dict[str, Path] = {}
    for f in files:
        if f.script.name in seen:
            raise ConfigError(
                f"two scripts are named {f.script.name!r}: {seen[f.script.name]} and {f.path}",
                "give each script a unique `name` (results and diffs are keyed by it)",
            )
        seen[f.script.name] = f.path
    return files


def load_script(path: Path, personas: dict[str, Persona]) -> ScriptFile:
    """Parse and validate one script; every error names the file and the line."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}", "check indentation and quoting") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a script is a mapping with `name`, `persona` and `turns`", "see eval/regression/")
    try:
        script = Script.model_validate(data)
    except ValidationError as err:
        raise _describe(err, path, root) from None
    turn_nodes = _child(root, "turns").value
    lines = [node.start_mark.line + 1 for node in turn_nodes]
    for key, line in [(script.persona, _child(root, "persona").start_mark.line + 1)] + [
        (t.switch_persona, line) for t, line in zip(script.turns, lines, strict=True) if t.switch_persona
    ]:
        if key not in personas:
            raise PersonaError(f"{path}:{line}: there is no persona {key!r}", f"use one of: {', '.join(personas)}")
    key = script.persona
    for number, turn in enumerate(script.turns):
        key = turn.switch_persona or key
        if turn.checks.deflects is not None and personas[key].scope is None:
            line = _line_of(root, ("turns", number, "checks", "deflects"))
            raise ConfigError(
                f"{path}:{line}: a `deflects` check, but persona {key!r} has no `scope:` to deflect with",
                "add a scope to the persona file (see personas/lovelace_guide.yaml) or drop the check",
            )
    return ScriptFile(path, script, lines)


def _child(node: yaml.Node, key: str) -> yaml.Node:
    return next(value for k, value in node.value if k.value == key)


def _line_of(root: yaml.Node, loc: tuple) -> int:
    """1-based line of the deepest YAML key (or list item) on pydantic's error path `loc`."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            line, node = match[0][0].start_mark.line, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _describe(err: ValidationError, path: Path, root: yaml.Node) -> ConfigError:
    # An unknown key first: it is the typo to fix, the rest usually follows from it.
    first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = first["loc"]
    where = f"{path}:{_line_of(root, loc)}"
    turn = f" in turn {loc[1] + 1}" if len(loc) > 1 and loc[0] == "turns" and isinstance(loc[1], int) else ""
    if first["type"] == "extra_forbidden" and len(loc) >= 2 and loc[-2] == "checks":
        known = ", ".join(Checks.model_fields)
        return ConfigError(f"{where}: unknown check `{loc[-1]}`{turn}", f"use one of: {known}")
    if first["type"] == "extra_forbidden":
        model = {0: Script, 2: Turn}.get(len(loc) - 1, Script)
        allowed = ", ".join(model.model_fields)
        return ConfigError(f"{where}: unknown key `{loc[-1]}`{turn}", f"remove or rename it; allowed: {allowed}")
    field = ".".join(str(p) for p in loc) or "(top level)"
    return ConfigError(f"{where}: `{field}`{turn}: {first['msg']}", "see eval/regression/ for valid scripts")


# -- checks --------------------------------------------------------------------------------

Scorer = Callable[[str], dict[str, float]]  # reply -> similarity to each persona, by key


def mentions(reply: str, phrase: str) -> bool:
    """`phrase` in `reply`, case-insensitive, not inside a longer word."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", reply, re.IGNORECASE) is not None


def run_checks(
    checks: Checks, reply: str, persona_key: str, persona: Persona, scorer: Scorer, threshold: float
) -> list[dict]:
    """One `{"check", "passed", "detail"}` per check given, in declaration order."""
    results = []
    for name in checks.given():
        passed, detail = _CHECKS[name](getattr(checks, name), reply, persona_key, persona, scorer, threshold)
        results.append({"check": name, "passed": passed, "detail": detail})
    return results


def _contains(phrases, reply, *_) -> tuple[bool, str]:
    missing = [p for p in phrases if not mentions(reply, p)]
    return not missing, f"missing {missing}" if missing else f"has all of {phrases}"


def _any_of(phrases, reply, *_) -> tuple[bool, str]:
    found = [p for p in phrases if mentions(reply, p)]
    return bool(found), f"has {found[0]!r}" if found else f"none of {phrases}"


def _not_contains(phrases, reply, *_) -> tuple[bool, str]:
    found = [p for p in phrases if mentions(reply, p)]
    return not found, f"has {found}" if found else f"none of {phrases}"


def _regex(pattern, reply, *_) -> tuple[bool, str]:
    match = re.search(pattern, reply)
    return match is not None, f"matched {match.group(0)!r}" if match else f"no match for /{pattern}/"


def _max_chars(limit, reply, *_) -> tuple[bool, str]:
    return len(reply) <= limit, f"{len(reply)} chars (max {limit})"


def _min_chars(limit, reply, *_) -> tuple[bool, str]:
    return len(reply) >= limit, f"{len(reply)} chars (min {limit})"


def _identity(_, reply, persona_key, persona, *__) -> tuple[bool, str]:
    named = mentions(reply, persona.name)
    return named, f"names {persona.name}" if named else f"does not name {persona.name}"


def _in_persona(_, reply, persona_key, persona, scorer, threshold) -> tuple[bool, str]:
    scores = scorer(reply)
    own = scores[persona_key]
    closest = max(scores, key=scores.get)
    passed = own >= threshold and closest == persona_key
    detail = f"similarity {own:.2f} to {persona_key} (threshold {threshold})"
    return passed, detail if closest == persona_key else f"{detail}; closer to {closest} ({scores[closest]:.2f})"


def _deflects(expected, reply, persona_key, persona, *_) -> tuple[bool, str]:
    deflected = is_deflection(persona, reply)
    return deflected == expected, "the persona's deflection" if deflected else "a reply, not the deflection"


_CHECKS = {
    "contains": _contains,
    "any_of": _any_of,
    "not_contains": _not_contains,
    "regex": _regex,
    "max_chars": _max_chars,
    "min_chars": _min_chars,
    "in_persona": _in_persona,
    "identity": _identity,
    "deflects": _deflects,
}


# -- reports over the records of a run ---------------------------------------------------------


def diff(records: list[dict], previous: dict) -> dict:
    """Mark each record `same`, `changed` or `new` against `previous`; list flipped checks."""
    before = {(r["script"], r["turn"]): r for r in previous.get("turns", [])}
    summary = {"changed": 0, "same": 0, "new": 0, "changed_turns": [], "pass_to_fail": [], "fail_to_pass": []}
    for r in records:
        old = before.get((r["script"], r["turn"]))
        if old is None or (old["user"], old["persona"]) != (r["user"], r["persona"]):
            r["diff"] = {"status": "new"}
            summary["new"] += 1
            continue
        was = {c["check"]: c["passed"] for c in old["checks"]}
        broke = [c["check"] for c in r["checks"] if was.get(c["check"]) is True and not c["passed"]]
        fixed = [c["check"] for c in r["checks"] if was.get(c["check"]) is False and c["passed"]]
        status = "changed" if old["reply"] != r["reply"] else "same"
        r["diff"] = {"status": status, "previous_reply": old["reply"], "pass_to_fail": broke, "fail_to_pass": fixed}
        summary[status] += 1
        summary["changed_turns"] += [f"{r['script']} turn {r['turn']}"] if status == "changed" else []
        summary["pass_to_fail"] += [f"{r['script']} turn {r['turn']} {c}" for c in broke]
        summary["fail_to_pass"] += [f"{r['script']} turn {r['turn']} {c}" for c in fixed]
    return summary


def junit_xml(records: list[dict], name: str) -> ET.ElementTree:
    """One testsuite; a testcase per user turn, a <failure> naming each failed check."""
    failures = sum(not r["passed"] for r in records)
    suite = ET.Element(
        "testsuite", name=f"regress[{name}]", tests=str(len(records)), failures=str(failures), errors="0"
    )
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=r["script"], name=f"turn {r['turn']}: {r['user'][:60]}")
        case.set("file", r["file"])
        case.set("line", str(r["line"]))
        failed = [c for c in r["checks"] if not c["passed"]]
        if failed:
            message = "; ".join(f"{c['check']}: {c['detail']}" for c in failed)
            ET.SubElement(case, "failure", message=message).text = f"{message}\nreply: {r['reply']}"
        ET.SubElement(case, "system-out").text = r["reply"]
    return ET.ElementTree(suite)


def table(records: list[dict]) -> str:
    rows = [("script", "turn", "check", "result", "detail", "reply")]
    for r in records:
        excerpt = " ".join(r["reply"].split())[:50]
        for c in r["checks"]:
            mark = "pass" if c["passed"] else "FAIL"
            rows.append((r["script"], str(r["turn"]), c["check"], mark, c["detail"][:48], excerpt))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join([*(v.ljust(w) for v, w in zip(row, widths, strict=False)), row[5]]) for row in rows)


def diff_summary(summary: dict, path: str, version: str | None) -> str:
    total = summary["changed"] + summary["same"]
    text = f"diff vs {version} ({path}): {summary['changed']} of {total} replies changed"
    text += f", {summary['new']} new turns" if summary["new"] else ""
    changed = summary["changed_turns"]
    if changed:  # the flips below matter more than a full list of rewordings
        text += "\n  changed: " + ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    for kind, label in [("pass_to_fail", "pass -> fail"), ("fail_to_pass", "fail -> pass")]:
        if summary[kind]:
            text += f"\n  {label}: " + ", ".join(summary[kind])
    return text
