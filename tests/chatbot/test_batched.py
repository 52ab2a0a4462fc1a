"""The batched engine: overlapping chats decoded together, same greedy replies as alone."""

import threading
import time

import pytest

from chatbot.batched import BatchedEngine, _explain, sampling_kwargs
from chatbot.engine import GenerationSettings
from chatbot.errors import GenerationError
from chatbot.persona import render_system_prompt

# The app's repetition penalty (1.1): transformers' batch drops it, chatbot/batched.py applies it.
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


def held(engine, settings=GREEDY):
    """A chat streaming by the direct path and held open: chats started meanwhile are batched."""
    blocker = engine.stream(chat(99), settings.model_copy(update={"max_new_tokens": 64}))
    next(blocker)
    assert engine.in_flight == 1
    return blocker


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


def test_one_chat_alone_goes_by_the_direct_path(tiny_engine, tiny_model_dir):
    from chatbot.engine import load_engine
    from chatbot.loading import EngineConfig

    alone = load_engine(EngineConfig(model=str(tiny_model_dir), batching="auto"))
    assert isinstance(alone, BatchedEngine)
    reply = "".join(alone.stream(chat(0), GREEDY)).strip()
    assert alone.manager is None and alone.in_flight == 0  # no batch manager was started
    assert reply == tiny_engine.generate([chat(0)], GREEDY)[0]


def test_concurrent_greedy_replies_equal_the_engine_alone(engine, tiny_engine):
    conversations = [chat(i) for i in range(6)]
    expected = tiny_engine.generate(conversations, GREEDY)
    blocker = held(engine)
    try:
        replies = stream_in_threads(engine, conversations, GREEDY)
    finally:
        blocker.close()
    assert engine.manager is not None and engine.manager.is_running()  # they were batched
    assert replies == expected
    assert engine.in_flight == 0
    # The penalty changed some of these replies: the batch applied it, it did not merely agree by chance.
    assert expected != tiny_engine.generate(conversations, GREEDY.model_copy(update={"repetition_penalty": 1.0}))


def test_each_request_keeps_its_own_max_new_tokens(engine, tiny_engine):
    short, long = GREEDY.model_copy(update={"max_new_tokens": 3}), GREEDY.model_copy(update={"max_new_tokens": 20})
    blocker = held(engine)
    replies = [None, None]

    def run(i, settings):
        replies[i] = "".join(engine.stream(chat(i), settings)).strip()

    threads = [threading.Thread(target=run, args=(0, short)), threading.Thread(target=run, args=(1, long))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        blocker.close()
    assert replies[0] == tiny_engine.generate([chat(0)], short)[0]
    assert replies[1] == tiny_engine.generate([chat(1)], long)[0]
    assert (
        len(tiny_engine.tokenizer(replies[0], add_special_tokens=False)["input_ids"])
        <= 3
        < len(tiny_engine.tokenizer(replies[1], add_special_tokens=False)["input_ids"])
    )


def test_a_stream_closed_early_cancels_its_request(engine):
    blocker = held(engine)
    cancelled = []
    manager = engine._manager()
    real_cancel = manager.cancel_request
    manager.cancel_request = lambda rid: (cancelled.append(rid), real_cancel(rid))
    try:
        stream = engine.stream(chat(1), GREEDY.model_copy(update={"max_new_tokens": 400}))
        assert next(stream)  # batched (the blocker is in flight), and streaming
        stream.close()  # the Stop button: the consumer stops reading
    finally:
        blocker.close()
        del manager.cancel_request
    assert len(cancelled) == 1 and cancelled[0].startswith("chat-")
    scheduler = manager.batch_processor.scheduler
    deadline = time.monotonic() + 10
    while scheduler.has_pending_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not scheduler.has_pending_requests()  # nothing left in flight in the manager
    assert engine.in_flight == 0 and not engine._queues


def test_sampled_chats_are_batched_too(engine):
    sampled = GenerationSettings(temperature=0.8, top_p=0.9, top_k=0, max_new_tokens=8, repetition_penalty=1.0)
    blocker = held(engine, sampled)
    try:
        replies = stream_in_threads(engine, [chat(i) for i in range(3)], sampled)
    finally:
        blocker.close()
    assert all(isinstance(r, str) for r in replies)


def test_sampling_kwargs_make_greedy_exact_and_keep_top_k_off():
    assert sampling_kwargs(GREEDY, 100) == {"repetition_penalty": 1.1, "temperature": 1.0, "top_k": 1, "top_p": 1.0}
    sampled = GenerationSettings(temperature=0.5, top_p=0.8, top_k=0, repetition_penalty=1.0)
    assert sampling_kwargs(sampled, 100) == {"repetition_penalty": 1.0, "temperature": 0.5, "top_k": 100, "top_p": 0.8}


def test_a_failed_request_is_a_clear_generation_error():
    err = _explain("CPU out of memory: tried to allocate 2 GiB")
    assert isinstance(err, GenerationError) and "ran out of memory" in str(err) and "max_new_tokens" in err.fix
    assert "batched generation failed: boom" in str(_explain("boom\ntraceback"))


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
        blocker = held(batched, settings)
        try:
            replies = stream_in_threads(batched, conversations, settings)
        finally:
            blocker.close()
    finally:
        batched.close()
    assert replies == expected
