"""Personas: who the model speaks as, validated, and rendered into one system prompt.

A persona lives in a YAML file under `personas/` (see `personas/ada.yaml`), or is built from
a Synthetic-Persona-Chat row (`persona_from_facts`). `render_system_prompt` is the only
place that turns a persona into prompt text, so training, chat and eval see the same prompt.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from core.errors import PersonaError

# Field name -> the fix we suggest when it is missing or malformed.
_FIELD_FIXES = {
    "name": "add a line like `name: Ada` (a non-empty string)",
    "facts": "add `facts:` followed by one `- sentence` per line (at least one)",
    "style": "make `style:` one string, e.g. `style: warm, short sentences`",
    "greeting": "make `greeting:` one string, e.g. `greeting: Hello there!`",
    "description": "make `description:` one string",
    "knowledge": "make `knowledge:` a list of `- question: ...` / `answer: ...` pairs",
    "anonymous": "use `anonymous: true` or `anonymous: false`",
    "scope": "give `scope:` a `topic`, a `deflection` and example questions it answers: `in_scope: [...]` "
    "or `knowledge:` Q&A (see personas/lovelace_guide.yaml)",
}
_NESTED = {"knowledge": "QAPair", "scope": "Scope"}  # fields whose values are models of their own


class QAPair(BaseModel):
    """An identity or knowledge fact the persona must answer consistently."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    # Other wordings of `question`, for identity training (corpus/persona_data.py): a seeded
    # share of them is held out of training and used only by `eval.identity`.
    paraphrases: list[str] = Field(default_factory=list, description="Other wordings of the question.")
    # A small model paraphrases exact answers wrong (it invented opening hours and gave a gas
    # leak the billing list): the scope guard learns this entry's wordings as a class of its own
    # and answers them with `answer` itself, the model not asked. Needs the persona's `scope:`.
    route: bool = Field(False, description="The scope guard answers its wordings with `answer`, verbatim.")

    @field_validator("paraphrases")
    @classmethod
    def _paraphrases(cls, paraphrases: list[str]) -> list[str]:
        cleaned = [p.strip() for p in paraphrases]
        if any(not p for p in cleaned):
            raise ValueError("every paraphrase must be a non-empty question")
        return cleaned

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        # Unrouted entries dump as before `route` existed: stored personas compare equal.
        data = handler(self)
        if not data.get("route", True):
            del data["route"]
        return data


class Scope(BaseModel):
    """What the persona talks about. `chatbot.scope` trains a question classifier from the
    persona's questions (in scope) and a shipped pool of generic ones (out of scope); a
    question outside gets `deflection` as the reply, without calling the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: str = Field(min_length=1, description="What the persona covers, e.g. `Ada Lovelace and her work`.")
    deflection: str = Field(min_length=1, description="The reply to an off-topic question, in persona.")
    in_scope: list[str] = Field(default_factory=list, description="Questions it answers, beside `knowledge`.")
    out_of_scope: list[str] = Field(default_factory=list, description="Questions it deflects, beside the pool.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Deflect when P(out of scope) is at least this.")


class Persona(BaseModel):
    """A persona: the facts the model speaks from, plus optional style and knowledge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Who the model is; shown in pickers.")
    facts: list[str] = Field(min_length=1, description="Persona sentences, first person.")
    description: str | None = Field(None, description="One line: role and setting.")
    style: str | None = Field(None, description="How the persona speaks.")
    greeting: str | None = Field(None, description="First message shown in a new chat.")
    knowledge: list[QAPair] = Field(default_factory=list, description="Q&A it must know.")
    # Dataset personas (Synthetic-Persona-Chat) have no names: the prompt then does not
    # introduce the model by name, so it does not learn to call every speaker "User 1".
    anonymous: bool = Field(False, description="Do not introduce the persona by name.")
    scope: Scope | None = Field(None, description="Topic guard: off-topic questions get `deflection`.")

    @field_validator("name", "style", "greeting", "description")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty or whitespace")
        return value

    @field_validator("facts")
    @classmethod
    def _facts(cls, facts: list[str]) -> list[str]:
        cleaned = [f.strip() for f in facts]
        if any(not f for f in cleaned):
            raise ValueError("every fact must be a non-empty sentence")
        return cleaned

    @field_validator("scope")
    @classmethod
    def _scope_has_questions(cls, scope: Scope | None, info: ValidationInfo) -> Scope | None:
        # The classifier learns "in scope" from these; without any it cannot learn it at all.
        if scope is not None and not scope.in_scope and not info.data.get("knowledge"):
            raise ValueError("a scope needs example questions the persona answers, and there are none")
        return scope

    @model_validator(mode="after")
    def _routes_need_a_scope(self) -> Persona:
        # The guard that answers a routed question is the scope's classifier.
        if self.scope is None and any(qa.route for qa in self.knowledge):
            raise ValueError("`route: true` needs a `scope:` (the scope guard answers routed questions)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        # Without a scope the dump is what it was before scopes existed: stored personas, and
        # the keys hashed from them (store.prompt_key), stay the same.
        data = handler(self)
        if data.get("scope", 0) is None:
            del data["scope"]
        return data


def render_system_prompt(persona: Persona) -> str:
    """The system message for `persona`. Every prompt in the product goes through here."""
    lines = []
    if persona.anonymous:
        lines.append("You are the person described below. Stay in character.")
    else:
        intro = f"You are {persona.name}"
        description = (persona.description or "").rstrip(".")
        lines.append(f"{intro}, {description}." if description else f"{intro}.")
        lines.append(f"Always stay in character as {persona.name}.")
    lines.append("Your persona:")
    lines += [f"- {fact}" for fact in persona.facts]
    if persona.knowledge:
        lines.append("What you know and must answer consistently:")
        lines += [f"Q: {qa.question}\nA: {qa.answer}" for qa in persona.knowledge]
    if persona.style:
        lines.append(f"Style: {persona.style}")
    lines.append("Reply in a few natural sentences, in character.")
    return "\n".join(lines)


def persona_from_facts(facts: list[str], name: str = "Persona-chat speaker") -> Persona:
    """An anonymous persona from dataset persona sentences (e.g. one Synthetic-Persona-Chat
    speaker's `user N personas` cell, already split into lines)."""
    kept = [f for f in facts if f.strip()]
    if not kept:
        raise PersonaError("a dataset persona has no facts", "give at least one persona sentence")
    return Persona(name=name, facts=kept, anonymous=True)


def _describe(error: ValidationError, path: Path) -> PersonaError:
    # An unknown key first: a typo (`fact:`) also makes the real field "missing", and the
    # typo is the thing to fix.
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    top = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        model = (
            {"QAPair": QAPair, "Scope": Scope}[_NESTED[top]] if top in _NESTED and len(first["loc"]) > 1 else Persona
        )
        allowed = ", ".join(model.model_fields)
        fix = f"remove or rename `{field}`; allowed fields: {allowed}"
    elif "paraphrases" in first["loc"]:
        fix = "make `paraphrases:` a list of questions, one `- Who are you?` per line, under its `question:`"
    else:
        fix = _FIELD_FIXES.get(top, "see personas/ada.yaml for a valid example")
        if first["type"] == "string_type" and isinstance(first.get("input"), bool | int | float):
            fix += f" (YAML read {first['input']!r} as a {type(first['input']).__name__}: put it in quotes)"
    return PersonaError(f"persona file {path}: field `{field}`: {first['msg']}", fix)


# libyaml's parser where PyYAML was built with it (the wheels are): ~10x the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Path -> (the file's stat key, its persona or error). The app re-scans the folder on every chat
# so that an edited or added file shows up; parsing every file each time held the interpreter
# lock ~17 ms per chat (7 files), and 16 chats starting together stalled every other request
# of the app (label saves 0.2-0.4 s, benchmarks/label_load). A file is parsed again when its
# modification time, size or inode changes.
_PARSED: dict[Path, tuple[tuple[int, int, int], Persona | PersonaError]] = {}


def load_persona(path: str | Path) -> Persona:
    """Read and validate one persona YAML file; errors name the file, the field and the fix."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _load_persona(path)  # the errors below say what is wrong
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = _PARSED.get(path)
    if cached is None or cached[0] != key:
        try:
            cached = key, _load_persona(path)
        except PersonaError as err:
            cached = key, err
        _PARSED[path] = cached
    if isinstance(cached[1], PersonaError):
        raise cached[1].with_traceback(None)  # the stored error again, not its earlier raises' frames
    return cached[1]


def _load_persona(path: Path) -> Persona:
    if path.is_dir():
        raise PersonaError(f"{path} is a folder, not a persona file", "pass one file, e.g. personas/ada.yaml")
    if not path.is_file():
        raise PersonaError(
            f"persona file {path} does not exist",
            "pass a YAML file from personas/ (e.g. personas/ada.yaml) or write one like it",
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PersonaError(
            f"persona file {path} is not valid YAML: {err}",
            "check indentation and quoting; see personas/ada.yaml for the layout",
        ) from None
    if data is None:
        raise PersonaError(f"persona file {path} is empty", "write `name: ...` and `facts:` into it")
    if not isinstance(data, dict):
        raise PersonaError(
            f"persona file {path} must hold a mapping with `name` and `facts`, not {type(data).__name__}",
            "start the file with `name: ...` then `facts:` and a list of sentences",
        )
    try:
        return Persona.model_validate(data)
    except ValidationError as err:
        raise _describe(err, path) from None


def scan_personas(directory: str | Path = "personas") -> tuple[dict[str, Persona], dict[str, PersonaError]]:
    """(valid personas, broken files with their errors), keyed by file stem, sorted. A UI lists
    the broken ones with the reason and keeps running; `load_personas` is the strict form."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PersonaError(f"persona folder {directory} does not exist", "pass a folder of *.yaml")
    personas: dict[str, Persona] = {}
    broken: dict[str, PersonaError] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        if path.stem in personas or path.stem in broken:
            broken[path.name] = PersonaError(
                f"two persona files are named {path.stem} in {directory}", f"rename or remove {path}"
            )
            continue
        try:
            personas[path.stem] = load_persona(path)
        except PersonaError as err:
            broken[path.stem] = err
    return personas, broken


def load_personas(directory: str | Path = "personas") -> dict[str, Persona]:
    """Every `*.yaml` persona in `directory`, keyed by file stem; the first bad file raises."""
    personas, broken = scan_personas(directory)
    if broken:
        raise next(iter(broken.values()))
    return personas
