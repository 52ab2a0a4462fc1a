"""The batched engine: overlapping chats decoded together, same greedy replies as alone."""

import threading
import time

import pytest

from core.errors import GenerationError
from core.persona import render_system_prompt
from engines.batched import BatchedEngine, _explain
from engines.config import GenerationSettings

# The app's repetition penalty (1.1), applied per request over prompt and reply.
GREEDY = GenerationSettings(temperature=0, max_new_tokens=24)


def chat(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You are Ada, a retired ship's engineer."},
        {"role": "user", "content": f"Hello, I am visitor number {i}. What did you build?"},
    ]


@pytest.fixture(scope="module")
def engine(tiny_engine):
    """A batched engine on the tiny model's weights (shared with `tiny_engine`, as in the app)."""
    batched = BatchedEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=512)
    yield batched
    batched.close()


def stream_in_threads(engine, conversations, settings) -> list[str]:
    replies = [None] * len(conversations)

    def run(i):
        replies[i] = "".join(engine.stream(conversations[i], settings)).strip()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conversations))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return replies


def test_a_guided_reply_after_a_switch_streams_beside_the_batch(engine, tiny_engine):
    """A reply with a negative prompt (after a persona switch) takes generate's own guidance:
    the direct path's reply, while another chat decodes in the batch."""
    negative = [{"role": "system", "content": "You are Sam, a farmer."}, *chat(5)[1:]]
    expected = tiny_engine.generate([chat(5)], GREEDY, [negative])[0]
    assert expected != tiny_engine.generate([chat(5)], GREEDY)[0]
    other = threading.Thread(target=lambda: "".join(engine.stream(chat(6), GREEDY)))
    other.start()
    assert "".join(engine.stream(chat(5), GREEDY, negative)).strip() == expected
    other.join(timeout=60)
    assert wait_idle(engine) == 0


def wait_idle(engine, seconds=10):
    deadline = time.monotonic() + seconds
    while engine.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    return engine.in_flight


def test_load_engine_builds_it_and_one_chat_equals_the_direct_path(tiny_engine, tiny_model_dir):
    from engines.config import EngineConfig
    from engines.factory import load_engine

    alone = load_engine(EngineConfig(model=str(tiny_model_dir), batching="auto"))
    assert isinstance(alone, BatchedEngine)
    try:
        reply = "".join(alone.stream(chat(0), GREEDY)).strip()
        assert reply == tiny_engine.generate([chat(0)], GREEDY)[0]
        assert wait_idle(alone) == 0
    finally:
        alone.close()


def test_concurrent_greedy_replies_equal_the_engine_alone(engine, tiny_engine):
    conversations = [chat(i) for i in range(6)]
    expected = tiny_engine.generate(conversations, GREEDY)
    rows = []
    real_decode = engine._decode
    engine._decode = lambda: (rows.append(len(engine.batch.rows)), real_decode())[1]
    try:
        replies = stream_in_threads(engine, conversations, GREEDY)
    finally:
        del engine._decode
    assert max(rows) > 1  # they were decoded together
    assert replies == expected
    assert wait_idle(engine) == 0
    # The penalty changed some of these replies: the batch applied it, it did not merely agree by chance.
    assert expected != tiny_engine.generate(conversations, GREEDY.model_copy(update={"repetition_penalty": 1.0}))


def test_next_turns_start_from_the_prefix_cache_beside_a_new_chat(engine, tiny_engine):
    """Second turns (prefilled from their cached first turn) and a new chat, in one batch."""
    first = [chat(i) for i in range(3)]
    replies = stream_in_threads(engine, first, GREEDY)
    second = [c + [{"role": "assistant", "content": r}, {"role": "user", "content": "And then?"}]
              for c, r in zip(first, replies, strict=True)] + [chat(7)]  # fmt: skip
    reused = []
    real_take = engine.prefix_cache.take
    engine.prefix_cache.take = lambda ids, **kw: (lambda out: (reused.append(out[1]), out)[1])(real_take(ids, **kw))
    try:
        again = stream_in_threads(engine, second, GREEDY)
    finally:
        del engine.prefix_cache.take
    assert sorted(reused)[-3:] and min(sorted(reused)[-3:]) > 16  # three chats reused their first turn
    assert again == tiny_engine.generate(second, GREEDY, batch_size=1)


def test_each_request_keeps_its_own_max_new_tokens(engine, tiny_engine):
    short, long = GREEDY.model_copy(update={"max_new_tokens": 3}), GREEDY.model_copy(update={"max_new_tokens": 20})
    replies = [None, None]

    def run(i, settings):
        replies[i] = "".join(engine.stream(chat(i), settings)).strip()

    threads = [threading.Thread(target=run, args=(0, short)), threading.Thread(target=run, args=(1, long))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert replies[0] == tiny_engine.generate([chat(0)], short)[0]
    assert replies[1] == tiny_engine.generate([chat(1)], long)[0]
    assert (
        len(tiny_engine.tokenizer(replies[0], add_special_tokens=False)["input_ids"])
        <= 3
        < len(tiny_engine.tokenizer(replies[1], add_special_tokens=False)["input_ids"])
    )


def test_a_stream_closed_early_leaves_the_batch(engine):
    endless = GREEDY.model_copy(update={"max_new_tokens": 400, "repetition_penalty": 1.0})
    other = engine.stream(chat(2), endless)
    stream = engine.stream(chat(1), endless)
    assert next(stream) and next(other)  # both streaming
    stream.close()  # the Stop button: the consumer stops reading
    other.close()
    assert wait_idle(engine) == 0  # both rows left the batch long before 400 tokens
    assert not engine.batch.rows and engine.batch.cache is None


def test_sampled_chats_are_batched_and_a_seed_repeats_the_reply(engine):
    sampled = GenerationSettings(temperature=0.8, top_p=0.9, top_k=0, max_new_tokens=8, repetition_penalty=1.0)
    replies = stream_in_threads(engine, [chat(i) for i in range(3)], sampled)
    assert all(isinstance(r, str) for r in replies)
    seeded = sampled.model_copy(update={"seed": 7, "max_new_tokens": 16})
    twice = stream_in_threads(engine, [chat(4), chat(4)], seeded)
    assert twice[0] == twice[1]


def test_a_failed_request_is_a_clear_generation_error():
    err = _explain(RuntimeError("CPU out of memory: tried to allocate 2 GiB"))
    assert isinstance(err, GenerationError) and "ran out of memory" in str(err) and "max_new_tokens" in err.fix
    assert "batched generation failed: boom" in str(_explain(RuntimeError("boom\ntraceback")))


def test_a_failing_forward_fails_its_chats_and_the_next_chat_works(engine, tiny_engine):
    real = engine._decode
    engine._decode = lambda: (_ for _ in ()).throw(RuntimeError("simulated failure"))
    try:
        with pytest.raises(GenerationError, match="simulated failure"):
            "".join(engine.stream(chat(3), GREEDY))
    finally:
        del engine._decode
    assert real  # the scheduler survived: a new chat streams
    assert "".join(engine.stream(chat(3), GREEDY)).strip() == tiny_engine.generate([chat(3)], GREEDY)[0]


@pytest.mark.slow
def test_default_model_batched_greedy_replies_equal_the_engine_alone(default_engine, ada):
    """The real model, persona and settings of the app (repetition penalty 1.1): 4 chats at once."""
    batched = BatchedEngine(default_engine.model, default_engine.tokenizer, "default")
    settings = GenerationSettings(temperature=0, max_new_tokens=32)
    conversations = [
        [{"role": "system", "content": render_system_prompt(ada)}, {"role": "user", "content": question}]
        for question in ("What do you do all day?", "Tell me about your garden.", "Any advice for me?", "Hi!")
    ]
    expected = default_engine.generate(conversations, settings, batch_size=1)
    try:
        replies = stream_in_threads(batched, conversations, settings)
    finally:
        batched.close()
    assert replies == expected


def test_the_batch_cache_grows_past_its_spare_room(engine, tiny_engine):
    """A prefill longer than the spare room of the batch's cache (a long new message beside a chat
    already decoding) is written after the cache grows."""
    from engines.batched import SPARE_TOKENS

    "".join(engine.stream(chat(6), GREEDY))  # the prefix cache now holds the persona: the prefill extends it
    endless = GREEDY.model_copy(update={"max_new_tokens": 200, "repetition_penalty": 1.0})
    running = engine.stream(chat(5), endless)
    next(running)
    long_chat = [chat(6)[0], {"role": "user", "content": "Tell me everything. " * SPARE_TOKENS}]
    try:
        reply = "".join(engine.stream(long_chat, GREEDY)).strip()
    finally:
        running.close()
    assert reply == tiny_engine.generate([long_chat], GREEDY)[0]


def test_auto_batches_full_attention_models_only(tiny_model_dir):
    from transformers import MistralConfig, MistralForCausalLM

    from engines.batched import batchable
    from engines.config import EngineConfig
    from engines.engine import TransformersEngine
    from engines.factory import load_engine

    assert EngineConfig().batching == "auto"
    off = load_engine(EngineConfig(model=str(tiny_model_dir), batching="off"))
    assert type(off) is TransformersEngine
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, sliding_window=16)  # fmt: skip
    sliding = MistralForCausalLM(config)
    assert batchable(off.model) and not batchable(sliding)


def test_batching_off_from_the_command_line_is_off():
    from core.cli import parse_config
    from engines.config import EngineConfig

    assert parse_config(EngineConfig, ["--batching", "off"]).batching == "off"


def test_a_chat_that_would_overfill_the_batch_waits_for_room(engine, tiny_engine, monkeypatch):
    import engines.batched as batched

    settings = GREEDY.model_copy(update={"max_new_tokens": 30, "repetition_penalty": 1.0})
    room = max(tiny_engine.count_tokens(chat(i)) for i in (0, 1)) + 30
    monkeypatch.setattr(batched, "BATCH_TOKENS", room)  # one row's worth: the second must wait
    rows = []
    real_decode = engine._decode
    engine._decode = lambda: (rows.append(len(engine.batch.rows)), real_decode())[1]
    try:
        replies = stream_in_threads(engine, [chat(0), chat(1)], settings)
    finally:
        del engine._decode
    assert max(rows) == 1  # never two rows at once
    assert replies == tiny_engine.generate([chat(0), chat(1)], settings)


def test_chats_with_different_settings_in_one_batch_keep_their_own(engine, tiny_engine):
    penalised, plain = GREEDY, GREEDY.model_copy(update={"repetition_penalty": 1.0})
    conversations, settings = [chat(0), chat(1), chat(2)], [penalised, plain, penalised]
    replies = [None] * 3

    def run(i):
        replies[i] = "".join(engine.stream(conversations[i], settings[i])).strip()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert replies == [tiny_engine.generate([c], s)[0] for c, s in zip(conversations, settings, strict=True)]
    swapped = [tiny_engine.generate([c], s)[0] for c, s in zip(conversations, [plain, penalised, plain], strict=True)]
    assert replies != swapped  # the settings made a difference: each row had its own


def test_an_idle_engine_ends_its_thread_and_a_dropped_one_is_freed(tiny_engine, monkeypatch):
    import gc
    import weakref

    import engines.batched as batched

    monkeypatch.setattr(batched, "IDLE_S", 0.05)
    engine = BatchedEngine(tiny_engine.model, tiny_engine.tokenizer, "tiny", max_context_tokens=512)
    first = "".join(engine.stream(chat(0), GREEDY))
    deadline = time.monotonic() + 10
    while engine._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._thread is None  # idle: the thread ended
    assert "".join(engine.stream(chat(0), GREEDY)) == first  # and the next chat started a new one
    while engine._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    ref = weakref.ref(engine)
    del engine  # what EnginePool does with a version it drops
    gc.collect()
    assert ref() is None  # no thread or exit hook kept it (and its model) alive
