"""Generate and score: the replies of a model version to held-out turns, with every metric.

`eval.run` (the entry point) picks the turns, registers the replies for labelling and writes
the files (`eval/outputs.py`).
"""

from __future__ import annotations

import json
import logging
import random
import statistics

import pandas as pd

from core.conversation import build_messages, notice, under
from core.persona import persona_from_facts
from corpus.examples import Example
from engines.engine import TransformersEngine
from eval.config import EvalConfig

log = logging.getLogger("eval")


def generate(engine, examples: list[Example], cfg: EvalConfig) -> list[str]:
    log.info("generating %d replies with %s", len(examples), engine.name)
    return engine.generate([ex.messages for ex in examples], cfg.generation, batch_size=cfg.batch_size, progress=True)


def automatic_metrics(cfg: EvalConfig, engine, examples, replies) -> tuple[dict, dict, dict]:
    """(summary, per-item scores, info) of the text metrics and the reference perplexity."""
    from eval.metrics import all_metrics

    references = [ex.target for ex in examples]
    result = all_metrics(replies, references, bertscore=cfg.bertscore)
    summary, per_item, info = dict(result.summary), dict(result.per_item), dict(result.info)
    if cfg.perplexity and isinstance(engine, TransformersEngine):
        from eval.perplexity import perplexity, reference_nll

        nll = reference_nll(engine, [ex.messages for ex in examples], references, cfg.batch_size, progress=True)
        ppl = perplexity(nll)
        per_item["perplexity"] = ppl.pop("per_item")
        summary |= ppl
        info["perplexity"] = "exp(mean NLL) of the reference reply tokens only, teacher-forced after the prompt"
    elif cfg.perplexity:  # a model server (--engine_url): no number rather than a wrong one
        info["perplexity"] = not_on_a_server(engine, "reference perplexity")
    return summary, per_item, info


def not_on_a_server(engine, metric: str) -> str:
    """Why `metric` is left out for a model server (`engines.remote`): it scores given text
    token by token, and chat completions only generate."""
    return (
        f"not computed: {engine.name} is a model server; {metric} scores given replies by the model's "
        "log-probs, which chat completions do not give (run without --engine_url for it)"
    )


def ranking_scores(cfg: EvalConfig, engine, examples, conversations) -> tuple[dict, dict, dict]:
    """(summary, per-item, info) of Hits@1/20 on the first `cfg.hits_items` turns (NaN for the
    rest), distractors drawn from the replies of the split's other conversations (seeded)."""
    from eval.ranking import CANDIDATES, draw_distractors, hits_at_1, hits_summary

    n = min(cfg.hits_items, len(examples))
    if not n:
        return {}, {}, {}
    if not isinstance(engine, TransformersEngine):
        return {}, {}, {"hits_at_1": not_on_a_server(engine, f"Hits@1/{CANDIDATES}")}
    pool = {cid: [turn.text for turn in c.turns] for cid, c in conversations.items()}
    ranked = examples[:n]
    distractors = draw_distractors([ex.conversation_id for ex in ranked], pool, cfg.seed)
    log.info("Hits@1/%d: ranking %d candidates for each of %d turns", CANDIDATES, CANDIDATES, n)
    hits = hits_at_1(engine, [ex.messages for ex in ranked], [ex.target for ex in ranked], distractors, cfg.batch_size)
    info = (
        f"Hits@1/{CANDIDATES} (own candidates): the reference vs {CANDIDATES - 1} replies of other conversations "
        "of the split (seeded), ranked by mean NLL per token under the version; see eval/ranking.py"
    )
    per_item = {"hits_at_1": hits + [float("nan")] * (len(examples) - n)}
    return hits_summary(hits), per_item, {"hits_at_1": info}


def switched_to(persona, dialogue: list[dict]) -> list[dict]:
    """The prompt of `dialogue`'s last user turn after a switch to `persona` just before it (a
    speaker's opening line has no user turn: the new persona's system prompt alone)."""
    if not dialogue or dialogue[-1]["role"] != "user":
        return build_messages(persona, [*dialogue, notice(persona)])
    *before, last = dialogue
    return build_messages(persona, [*before, notice(persona)], last["content"])


def persona_scores(cfg: EvalConfig, engine, examples, replies, own, other) -> tuple[dict, dict]:
    """Grounding of each reply in its persona vs another persona, and the swap probe."""
    from eval.consistency import ENCODER_NAME, grounding, swap_retention

    per_item = grounding(replies, own, other)
    summary = {
        "persona_consistency": sum(m > 0 for m in per_item["persona_margin"]) / max(len(replies), 1),
        "persona_margin_mean": statistics.fmean(per_item["persona_margin"]) if replies else 0.0,
    }
    n = min(cfg.swap_probe_items, len(examples))
    if n:
        # The same conversation, switched to the other persona before its last user turn, as the
        # Chat tab switches (core.conversation: the new persona starts afresh after the notice):
        # does the reply follow the new persona?
        swapped = [switched_to(persona_from_facts(other[i]), ex.messages[1:]) for i, ex in enumerate(examples[:n])]
        # ... steered away from the old persona as the Chat tab steers (`generation.guidance_scale`).
        negatives = [under(persona_from_facts(own[i]), prompt) for i, prompt in enumerate(swapped)]
        replies_b = engine.generate(swapped, cfg.generation, negatives, batch_size=cfg.batch_size)
        summary["swap_retention"] = swap_retention(replies_b, own[:n], other[:n])
        summary["swap_probe_items"] = n
    summary["encoder"] = ENCODER_NAME
    return summary, per_item


def persona_facts(examples: list[Example], conversations: dict) -> list[list[str]]:
    facts = []
    for ex in examples:
        persona = conversations[ex.conversation_id].personas.get(ex.speaker)
        facts.append(list(persona.facts) if persona else [])
    return facts


def other_facts(facts: list[list[str]], seed: int) -> list[list[str]]:
    """For each turn, the facts of a randomly drawn turn with a different persona (seeded)."""
    rng = random.Random(seed + 1)
    others = []
    for own in facts:
        pick = own
        for _ in range(20):  # almost always the first draw; a one-persona dataset keeps its own
            pick = facts[rng.randrange(len(facts))]
            if pick != own:
                break
        others.append(pick)
    return others


def evaluate(cfg: EvalConfig, name: str, engine, examples, conversations) -> tuple[pd.DataFrame, dict]:
    """(one row per turn: persona, context, reference, reply and every per-item score; the
    summary) of `engine`'s replies to `examples`, scored as `cfg` says."""
    replies = generate(engine, examples, cfg)
    summary, per_item, info = automatic_metrics(cfg, engine, examples, replies)
    hits_summary, hits_items, hits_info = ranking_scores(cfg, engine, examples, conversations)
    summary, per_item, info = summary | hits_summary, per_item | hits_items, info | hits_info
    own = persona_facts(examples, conversations)
    if cfg.consistency:
        persona_summary, persona_items = persona_scores(cfg, engine, examples, replies, own, other_facts(own, cfg.seed))
        summary |= persona_summary
        per_item |= persona_items
    summary |= {"items": len(examples), "model_version": name, "model": engine.name, "split": cfg.split,
                "decoding": cfg.generation.model_dump(), "info": info}  # fmt: skip
    rows = pd.DataFrame({
        "conversation_id": [ex.conversation_id for ex in examples],
        "speaker": [ex.speaker for ex in examples],
        "persona": ["\n".join(f) for f in own],
        "context": [json.dumps(ex.messages[1:], ensure_ascii=False) for ex in examples],
        "reference": [ex.target for ex in examples],
        "reply": replies,
        **per_item,
    })  # fmt: skip
    return rows, summary
