"""Reference perplexity: reply tokens only, batched == unbatched == a hand computation."""

import math
import random

import pytest
import torch

from chatbot.engine import TransformersEngine
from chatbot.session import build_messages
from eval.perplexity import perplexity, reference_nll

PERSONA = "You are Ada, a retired physics teacher who builds clocks and keeps bees."


def chat(*turns: str) -> list[dict]:
    roles = ["user", "assistant"] * len(turns)
    return [{"role": "system", "content": PERSONA}] + [
        {"role": role, "content": text} for role, text in zip(roles, turns, strict=False)
    ]


CONVERSATIONS = [
    chat("Hello!"),
    chat("What do you do all day?", "I build clocks in my shed.", "Any bees?"),
    chat("Tell me about your clocks, please, in as much detail as you like."),
]
REFERENCES = [
    "Hello, love!",
    "Three hives, and every queen is named after a scientist.",
    "Tick tock, goes the clock in the shed.",
]


def manual_nll(engine, messages, reference, prompt_ids=None) -> tuple[float, int]:
    """Sum of -log p(reply token | everything before it), one unpadded sequence, by hand."""
    tokenizer = engine.tokenizer
    if prompt_ids is None:
        prompt_ids = tokenizer(engine.render(messages), add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(ids).logits[0].double(), dim=-1)  # (T, V)
    start = len(prompt_ids)
    total = -sum(logprobs[pos - 1, ids[0, pos]].item() for pos in range(start, ids.shape[1]))
    return total, len(reply_ids)


def test_matches_manual_computation(tiny_engine):
    [(nll, count)] = reference_nll(tiny_engine, CONVERSATIONS[1:2], REFERENCES[1:2], batch_size=1)
    expected, expected_count = manual_nll(tiny_engine, CONVERSATIONS[1], REFERENCES[1])
    assert count == expected_count > 5
    assert nll == pytest.approx(expected, abs=1e-4)


def test_batched_equals_unbatched(tiny_engine):
    single = reference_nll(tiny_engine, CONVERSATIONS, REFERENCES, batch_size=1)
    batched = reference_nll(tiny_engine, CONVERSATIONS, REFERENCES, batch_size=3)
    assert [n for _, n in batched] == [n for _, n in single]
    assert [nll for nll, _ in batched] == pytest.approx([nll for nll, _ in single], abs=1e-4)
    assert len({n for _, n in single}) == 3  # replies (and prompts) of different lengths: the batch pads


def test_only_reply_tokens_are_scored(tiny_engine):
    reference = REFERENCES[0]
    other_prompt = chat("Tell me something about bees, please.")
    [(nll_a, count_a), (nll_b, count_b)] = reference_nll(tiny_engine, [CONVERSATIONS[0], other_prompt], [reference] * 2)
    reply_tokens = len(tiny_engine.tokenizer(reference, add_special_tokens=False)["input_ids"])
    assert count_a == count_b == reply_tokens  # no prompt, padding or end-of-turn token counted
    assert nll_a != pytest.approx(nll_b)  # but the prompt conditions them


def test_long_prompt_is_trimmed_from_the_left(tiny_engine):
    small = TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=48)
    messages = chat("Tell me everything about clocks. " * 20)
    reference = REFERENCES[1]
    [(nll, count)] = reference_nll(small, [messages], [reference])
    reply_ids = small.tokenizer(reference, add_special_tokens=False)["input_ids"]
    prompt_ids = small.tokenizer(small.render(messages), add_special_tokens=False)["input_ids"]
    assert len(prompt_ids) + len(reply_ids) > 48 and count == len(reply_ids)
    expected, _ = manual_nll(small, messages, reference, prompt_ids=prompt_ids[-(48 - len(reply_ids)) :])
    assert nll == pytest.approx(expected, abs=1e-4)


def test_empty_inputs(tiny_engine):
    assert reference_nll(tiny_engine, [], []) == []
    assert reference_nll(tiny_engine, CONVERSATIONS[:1], [""]) == [(0.0, 0)]
    with pytest.raises(ValueError, match="2 conversations but 1 references"):
        reference_nll(tiny_engine, CONVERSATIONS[:2], REFERENCES[:1])


def test_perplexity_by_hand():
    result = perplexity([(2.0, 1), (4.0, 4), (0.0, 0)])
    assert result["perplexity"] == pytest.approx(math.exp(6 / 5))  # corpus: total NLL / total tokens
    assert result["perplexity_item_mean"] == pytest.approx((math.exp(2) + math.exp(1)) / 2)
    assert result["per_item"][:2] == pytest.approx([math.exp(2), math.exp(1)]) and math.isnan(result["per_item"][2])
    assert perplexity([]) == {"per_item": []}


@pytest.mark.slow
def test_default_model_prefers_the_real_reply_to_shuffled_words(default_engine, ada):
    messages = build_messages(ada, [], "What are you working on at the moment?")
    # In persona but not copied from the prompt (Ada's knowledge holds a different wording).
    reference = "I am fitting a new pendulum to my wall clock, but it still gains a few seconds every day."
    words = reference.split()
    random.Random(0).shuffle(words)
    shuffled = " ".join(words)
    (nll, count), (nll_shuffled, count_shuffled) = reference_nll(default_engine, [messages] * 2, [reference, shuffled])
    assert math.exp(nll / count) < math.exp(nll_shuffled / count_shuffled)
    assert math.exp(nll / count) < 100  # measured ~14 vs ~1,800 shuffled
