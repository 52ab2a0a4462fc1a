"""Reference perplexity: reply tokens only, batched == unbatched == a hand computation, and turns
that share a prefix scored from one forward == each scored alone."""

import math
import random
from contextlib import contextmanager

import pytest
import torch

from core.conversation import build_messages
from corpus.examples import read_conversations, turn_examples
from engines.config import GenerationSettings
from engines.engine import TransformersEngine
from eval.perplexity import perplexity, prefix_groups, reference_nll

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


def test_long_prompt_loses_whole_oldest_turns_as_in_chat(tiny_engine):
    small = TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=96)
    messages = chat(
        "Tell me everything about clocks, please, from the very first ones you built.",
        "The first was a water clock, then a pendulum clock from a kit my uncle gave me.",
        "And the bees? Tell me about every hive you have kept over the years, one by one.",
        "Three hives now; there were five before the hard winter.",
        "Any bees?",
    )
    reference = REFERENCES[1]
    reply = len(small.tokenizer(reference, add_special_tokens=False)["input_ids"])
    assert small.count_tokens(messages) + reply > 96
    [(nll, count)] = reference_nll(small, [messages], [reference])
    # The same messages chat would send with the reply's tokens held back for the answer.
    kept = small.fit_messages(messages, GenerationSettings(max_new_tokens=reply))
    assert kept[0] == messages[0] and kept[1]["role"] == "user" and 2 < len(kept) < len(messages)
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]  # whole turns, the newest kept
    expected, expected_count = manual_nll(small, kept, reference)
    assert count == expected_count == reply
    assert nll == pytest.approx(expected, abs=1e-4)


def test_item_that_cannot_fit_is_left_out(tiny_engine, caplog):
    small = TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=48)
    too_long = chat("Tell me everything about clocks. " * 20)  # one message: no turn to drop
    with caplog.at_level("WARNING", logger="eval.perplexity"):
        results = reference_nll(small, [too_long, CONVERSATIONS[0]], [REFERENCES[1], REFERENCES[0]])
    assert results[0] == (0.0, 0) and results[1][1] > 0
    assert "1 of 2 items do not fit the 48-token window" in caplog.text


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


# --- turns of one conversation share one forward ------------------------------------------------


def spc_turns(spc_csv, conversations: int, speakers: str = "both") -> tuple[list, list[str]]:
    """Eval-style items (messages, reference) of the first real SPC conversations, in turn order."""
    examples = turn_examples(read_conversations(spc_csv)[0][:conversations], speakers)
    return [ex.messages for ex in examples], [ex.target for ex in examples]


def each_alone(engine, conversations, references) -> list[tuple[float, int]]:
    return [reference_nll(engine, [c], [r])[0] for c, r in zip(conversations, references, strict=True)]


def assert_same(results, expected):
    assert [n for _, n in results] == [n for _, n in expected]
    assert [nll for nll, _ in results] == pytest.approx([nll for nll, _ in expected], rel=1e-4, abs=1e-4)


@contextmanager
def counted_forwards(model):
    """The number of forward passes of `model` inside the block, in `calls[0]`."""
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        hook.remove()


def test_prefix_groups_by_hand():
    items = [([1, 2, 3], 1), ([1, 2, 3, 4, 5], 2), ([1, 2], 1), ([1, 9], 1), ([1, 2, 4], 1), ([1, 2, 3], 0)]
    groups = prefix_groups(items)
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [3], [4]]  # the empty reply (5) is in none
    assert all(items[g[0]][0][: len(items[i][0])] == items[i][0] for g in groups for i in g)  # head extends all
    assert len(prefix_groups(items, max_positions=2)) == 4  # a full group starts another


def test_turns_of_one_speaker_share_one_forward(tiny_engine, spc_csv):
    conversations, references = spc_turns(spc_csv, 1, "User 1")
    conversations, references = conversations[:5], references[:5]  # all within the 512-token window
    with counted_forwards(tiny_engine.model) as calls:
        together = reference_nll(tiny_engine, conversations, references, batch_size=8)
    assert calls[0] == 1  # with the real chat template each turn is a token prefix of the next
    assert_same(together, each_alone(tiny_engine, conversations, references))


def test_a_conversation_scores_as_its_turns_alone(tiny_engine, spc_csv):
    # Both speakers, 25 turns, a 256-token window: the later turns lose their oldest tokens, are
    # no longer a prefix of anything and are scored alone; the earlier ones share a forward per speaker.
    small = TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=256)
    conversations, references = spc_turns(spc_csv, 1)
    with counted_forwards(small.model) as calls:
        together = reference_nll(small, conversations, references, batch_size=4)
    assert 2 < calls[0] < len(conversations) / 2
    assert_same(together, each_alone(small, conversations, references))


def test_mixed_items_keep_their_order_and_values(tiny_engine, spc_csv):
    conversations, references = spc_turns(spc_csv, 2)
    conversations += [CONVERSATIONS[1], CONVERSATIONS[0]]  # unrelated to the SPC rows
    references += [REFERENCES[1], ""]
    order = list(range(len(conversations)))
    random.Random(0).shuffle(order)
    conversations, references = [conversations[i] for i in order], [references[i] for i in order]
    together = reference_nll(tiny_engine, conversations, references, batch_size=3)
    assert_same(together, each_alone(tiny_engine, conversations, references))
    assert together[order.index(len(order) - 1)] == (0.0, 0)


def test_shared_forward_through_an_unmerged_lora_adapter(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(tiny_model_dir)  # a fresh copy: PEFT edits the model it wraps
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    engine = TransformersEngine(get_peft_model(base, config), AutoTokenizer.from_pretrained(tiny_model_dir), "lora")
    conversations = [chat("Hello!"), chat("Hello!", "Hi, I am Ada.", "Any bees?")]
    references = ["Hi, I am Ada.", "Three hives."]
    with counted_forwards(engine.model) as calls:
        together = reference_nll(engine, conversations, references)
    assert calls[0] == 1  # PeftModel passes `logits_to_keep` (a tensor of positions) on to the base model
    assert_same(together, each_alone(engine, conversations, references))


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
