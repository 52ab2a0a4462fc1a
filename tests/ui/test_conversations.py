"""`conversations.Started`: a reply asked for when the message is accepted, read by the event
that streams it; given up (nothing saved) when no reader comes."""

import threading
import time

import pytest

from engines.config import GenerationSettings
from tests.conftest import studio_context
from ui import conversations

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


def counted(steps, pulled: list):
    for step in steps:
        pulled.append(step)
        yield step


def test_the_first_step_is_fetched_before_anyone_reads_and_the_rest_as_read(tmp_path, store, tiny_engine, ada):
    ctx = studio_context(tmp_path, store, {"base": tiny_engine})
    pulled = []
    started = conversations.Started(counted(conversations.exchange(ctx, "Hi Ada", "ada", ada, "base", GREEDY), pulled))
    deadline = time.monotonic() + 30
    while not pulled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pulled) == 1 and pulled[0].turn_id is None  # the model's first piece, nothing saved yet
    steps = list(started.steps())
    assert steps[0] is pulled[0] and steps[-1].turn_id is not None
    assert store.conversation(steps[-1].conversation_id)[-1].content == steps[-1].reply
    assert started.steps() is None  # read once


def test_no_reader_in_time_closes_the_exchange_and_saves_nothing(tmp_path, store, tiny_engine, ada):
    ctx = studio_context(tmp_path, store, {"base": tiny_engine})
    started = conversations.Started(conversations.exchange(ctx, "Hi Ada", "ada", ada, "base", GREEDY), wait_s=0.2)
    time.sleep(1.0)
    assert started.steps() is None  # the reader then asks again itself
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM conversations").scalar_one() == 0


def test_an_error_in_the_first_step_reaches_the_reader():
    def failing():
        raise RuntimeError("the model process ended")
        yield

    with pytest.raises(RuntimeError, match="model process ended"):
        list(conversations.Started(failing()).steps())


def test_a_reader_that_stops_early_ends_the_exchange():
    ended = threading.Event()

    def steps():
        try:
            yield from range(100)
        finally:
            ended.set()

    reading = conversations.Started(steps()).steps()
    assert next(reading) == 0
    reading.close()
    assert ended.is_set()
