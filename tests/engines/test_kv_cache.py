"""Prefix KV cache: the store itself, and the engine reusing it across chat turns."""

import pytest
import torch

from engines.config import GenerationSettings
from engines.engine import TransformersEngine
from engines.kv_cache import PrefixCache, common_prefix

GREEDY = GenerationSettings(temperature=0, max_new_tokens=10, repetition_penalty=1.0)


def forward_cache(model, ids: torch.Tensor):
    with torch.inference_mode():
        return model(input_ids=ids[None], use_cache=True).past_key_values


@pytest.fixture
def engine(tiny_engine):
    """A fresh engine (own, empty prefix cache) on the shared tiny model."""
    return TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", prefix_cache_tokens=4096)


def test_common_prefix():
    a = torch.tensor([1, 2, 3, 4])
    assert common_prefix(a, torch.tensor([1, 2, 9])) == 2
    assert common_prefix(a, torch.tensor([1, 2])) == 2
    assert common_prefix(a, torch.tensor([7])) == 0
    assert common_prefix(a, a) == 4


def test_take_gives_a_cropped_private_copy_and_leaves_one_token(tiny_engine):
    ids = torch.arange(100, 140)
    store = PrefixCache(max_tokens=1000)
    store.put(ids, forward_cache(tiny_engine.model, ids))
    longer = torch.cat([ids[:30], torch.tensor([5, 6, 7])])
    cache, n = store.take(longer)
    assert n == 30 and cache.get_seq_length() == 30
    cache.crop(-10)  # the caller's copy: the stored one keeps its 40 tokens
    again, n = store.take(ids)
    assert n == 39 and again.get_seq_length() == 39  # the whole prompt matches: one token is left to read
    assert store.take(torch.arange(0, 40)) == (None, 0)


def test_put_drops_prefixes_it_extends_and_evicts_least_recent(tiny_engine):
    model = tiny_engine.model
    store = PrefixCache(max_tokens=100)
    a, b = torch.arange(100, 130), torch.arange(200, 240)
    store.put(a, forward_cache(model, a))
    store.put(torch.cat([a, b[:10]]), forward_cache(model, torch.cat([a, b[:10]])))
    assert len(store) == 1 and store.tokens == 40  # the 30-token entry is covered by the 40-token one
    store.put(b, forward_cache(model, b))
    store.take(b)  # b is now the most recently used
    c = torch.arange(300, 340)
    store.put(c, forward_cache(model, c))
    assert store.tokens <= 100
    assert store.take(b)[1] == 39 and store.take(c)[1] == 39
    assert store.take(torch.cat([a, b[:10]]))[0] is None  # the least recently used went first


def test_reuse_matches_a_full_prefill(tiny_engine):
    """The cached logits are those of one full forward: the first new token's logits agree."""
    model, ids = tiny_engine.model, torch.arange(100, 160)
    with torch.inference_mode():
        full = model(input_ids=ids[None]).logits[0, -1]
        cache = forward_cache(model, ids[:45])
        rest = model(input_ids=ids[None, 45:], past_key_values=cache).logits[0, -1]
    assert torch.allclose(full, rest, atol=1e-4)


def test_second_turn_reuses_the_first_and_replies_the_same(engine, tiny_engine):
    first = [{"role": "system", "content": "You are Ada, a clockmaker."}, {"role": "user", "content": "Hello!"}]
    reply = "".join(engine.stream(first, GREEDY))
    second = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Why clocks?"}]
    prompt = engine._encode([engine.render(second)])["input_ids"][0]
    _, reused = engine.prefix_cache.take(prompt)
    first_prompt_tokens = engine.count_tokens(first)
    assert reused > first_prompt_tokens  # the persona, the first message and (part of) the reply
    cold = TransformersEngine(tiny_engine.model, tiny_engine.tokenizer, "cold", prefix_cache_tokens=0)
    assert "".join(engine.stream(second, GREEDY)) == "".join(cold.stream(second, GREEDY))
    assert len(cold.prefix_cache) == 0


def test_warm_caches_the_persona_prefix(engine):
    system = [{"role": "system", "content": "You are Sam, a marine biologist who loves octopuses."}]
    engine.warm(system)
    prompt = engine._encode([engine.render(system + [{"role": "user", "content": "Hi"}])])["input_ids"][0]
    system_tokens = len(engine.tokenizer(engine.tokenizer.apply_chat_template(system, tokenize=False))["input_ids"])
    assert engine.prefix_cache.take(prompt)[1] == system_tokens


def test_a_stopped_stream_still_leaves_a_usable_cache(engine):
    messages = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Tell me a long story."}]
    stream = engine.stream(messages, GREEDY.model_copy(update={"max_new_tokens": 40}))
    next(stream)
    stream.close()  # the user pressed stop
    assert len(engine.prefix_cache) == 1
    prompt = engine._encode([engine.render(messages)])["input_ids"][0]
    assert engine.prefix_cache.take(prompt)[1] == len(prompt) - 1


def test_a_reader_gets_the_stored_cache_itself_uncopied(engine):
    """`copy_cache=False` (the batched engine's prefill, which only reads it): the entry itself, not
    cropped to the reusable length; a later copying take still gets the whole prefix."""
    system = [{"role": "system", "content": "You are Sam, a marine biologist who loves octopuses and bees."}]
    engine.warm(system)
    prompt = engine._encode([engine.render(system + [{"role": "user", "content": "Hi"}])])["input_ids"][0]
    stored, length = engine.prefix_cache.take(prompt, copy_cache=False)
    assert stored is not None and length > 0
    assert stored is engine.prefix_cache.take(prompt, copy_cache=False)[0]  # no copy
    copied, again = engine.prefix_cache.take(prompt)
    assert again == length and copied is not stored and copied.get_seq_length() == length
    assert stored.get_seq_length() >= length  # untouched by the copy's crop
