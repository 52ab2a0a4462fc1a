"""Training data of a run: one source (`data.path`) or a weighted mix of sources (`data.mix`).

    data:
      mix:
        - {path: personas/nova.yaml, weight: 0.3}
        - {path: "hub:google/Synthetic-Persona-Chat", weight: 0.7}

Each source is split on its own (`corpus.examples.load_examples`: its conversations' hash split,
or a persona file's held-out wordings), so a source's splits do not depend on what it is mixed
with. The train examples are then drawn by `datasets.interleave_datasets` with the normalised
weights as probabilities (seeded by `data.split_seed`): `all_exhausted` (default) repeats the
smaller sources until every one has been seen whole, so a 300-wording persona keeps its share
beside 13k dialogue turns; `first_exhausted` stops when one runs out. Validation takes the
sources' validation examples, capped per source by weight (no repeats). The counts drawn land
in the run's data.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from core.errors import DatasetError
from corpus.examples import DataConfig, Example, LoadReport, fingerprint, load_examples
from corpus.hub import is_hub


def source_info(cfg: DataConfig, report: LoadReport, train: list[Example], validation: list[Example]) -> dict:
    """What one source gave: its fingerprint, rows, split settings and example counts."""
    info = {
        "path": str(cfg.path) if is_hub(cfg.path) else str(Path(cfg.path).resolve()),
        "format": report.format,
        "sha256": fingerprint(cfg.path),
        "rows": report.rows,
        "conversations": report.conversations,
        "skipped_rows": report.skipped,
        "split_seed": cfg.split_seed,
        "split_fractions": list(cfg.split_fractions),
        "train_examples": len(train),
        "validation_examples": len(validation),
    }
    if report.format == "persona":
        # eval.identity asks exactly these wordings of the version (never trained on).
        test, _ = load_examples(cfg.model_copy(update={"limit": None}), "test")
        info["persona_heldout_share"] = cfg.persona_heldout_share
        info["persona_variations"] = cfg.persona_variations
        info["heldout_phrasings"] = [ex.messages[-1]["content"] for ex in test]
    return info


def _single(cfg: DataConfig, max_validation: int) -> tuple[list[Example], list[Example], dict]:
    # Whole-conversation training (data.unit) rebuilds each (conversation, speaker) from its last
    # reply's example, so the train examples keep their whole history, and only that example is
    # kept: a mix then draws sequences, so its weights are shares of sequences. Drawn per turn, a
    # source of one-exchange chats beside dialogues of ~14 turns had ~6x its weight in sequences.
    full = cfg.model_copy(update={"max_history_turns": None}) if cfg.unit == "conversation" else cfg
    train, report = load_examples(full, "train")
    if cfg.unit == "conversation":
        train = last_replies(train)
    validation, _ = load_examples(cfg.model_copy(update={"limit": None}), "validation")
    validation = validation[:max_validation]
    return train, validation, source_info(cfg, report, train, validation)


def last_replies(examples: list[Example]) -> list[Example]:
    """The last example of each (conversation, speaker), in first-seen order: with its whole history
    it holds every reply of that speaker."""
    last: dict[tuple[str, str], Example] = {}
    for example in examples:
        key = (example.conversation_id, example.speaker)
        if key not in last or example.turn_index > last[key].turn_index:
            last[key] = example
    return list(last.values())


def interleave(sizes: list[int], weights: list[float], seed: int, stopping_strategy: str) -> list[tuple[int, int]]:
    """(source, index) pairs drawn by `datasets.interleave_datasets` with probabilities `weights`."""
    from datasets import Dataset, interleave_datasets

    parts = [Dataset.from_dict({"source": [s] * n, "index": list(range(n))}) for s, n in enumerate(sizes)]
    mixed = interleave_datasets(parts, probabilities=weights, seed=seed, stopping_strategy=stopping_strategy)
    return list(zip(mixed["source"], mixed["index"], strict=True))


def load_training_data(cfg: DataConfig, max_validation: int) -> tuple[list[Example], list[Example], dict]:
    """(train examples, validation examples, the data record for data.json)."""
    if not cfg.mix:
        return _single(cfg, max_validation)
    total = sum(source.weight for source in cfg.mix)
    weights = [source.weight / total for source in cfg.mix]
    loaded, sources = [], []
    for source, weight in zip(cfg.mix, weights, strict=True):
        one = cfg.model_copy(update={"path": source.path, "format": source.format, "mix": None})
        cap = math.ceil(max_validation * weight)
        train, validation, info = _single(one, cap)
        if not train:
            raise DatasetError(
                f"the train split of mix source {source.path} has no usable examples",
                "check the file and data.speakers, or remove it from data.mix",
            )
        loaded.append((train, validation))
        sources.append(info | {"weight": source.weight, "probability": weight})
    picks = interleave([len(t) for t, _ in loaded], weights, cfg.split_seed, cfg.stopping_strategy)
    train = [loaded[s][0][i] for s, i in picks]
    for s, info in enumerate(sources):
        info["mixed_train_examples"] = sum(1 for source, _ in picks if source == s)
    validation = [ex for _, v in loaded for ex in v][:max_validation]
    record = {
        "mix": sources,
        "stopping_strategy": cfg.stopping_strategy,
        # One fingerprint for the whole mix: the sources' hashes and weights, in order.
        "sha256": hashlib.sha256(json.dumps([[i["sha256"], i["weight"]] for i in sources]).encode()).hexdigest(),
        "train_examples": len(train),
        "validation_examples": len(validation),
    }
    return train, validation, record
