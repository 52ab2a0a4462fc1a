"""The model in a child process (`engines.child`): the same replies as in the app's process, errors
that keep their fix, a killed child replaced, and the child gone when the engine is."""

import gc
import os
import sys
import time

import pytest

from core.errors import GenerationError, MessageError, ModelLoadError
from engines.child import MODEL_NICE, ProcessEngine, spare_threads
from engines.config import EngineConfig, GreedySettings

GREEDY = GreedySettings(max_new_tokens=12)


def chat(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You are Ada. You build clocks."},
        {"role": "user", "content": f"Hello number {i}, what do you do?"},
    ]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = ProcessEngine(EngineConfig(model=str(tiny_model_dir)))
    yield engine
    engine.close()


def nice_of(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])


def test_replies_equal_the_engine_in_this_process(engine, tiny_engine):
    streamed = "".join(engine.stream(chat(0), GREEDY)).strip()
    assert streamed == tiny_engine.generate([chat(0)], GREEDY)[0]
    assert engine.generate([chat(1), chat(2)], GREEDY) == tiny_engine.generate([chat(1), chat(2)], GREEDY)
    assert engine.warm(chat(3)[:1]) is None
    negative = [{"role": "system", "content": "You are Sam."}, *chat(4)[1:]]  # after a switch: guided there too
    assert (
        "".join(engine.stream(chat(4), GREEDY, negative)).strip()
        == tiny_engine.generate([chat(4)], GREEDY, [negative])[0]
    )
    # Counting (history trimming) runs here, on the child's tokenizer.
    assert engine.count_tokens(chat(4)) == tiny_engine.count_tokens(chat(4))
    assert engine.batches and engine.context_window == tiny_engine.context_window


@pytest.mark.skipif(sys.platform != "linux", reason="thread nice values are Linux's")
def test_the_child_runs_at_a_lower_priority(engine):
    assert nice_of(engine._child.process.pid) >= MODEL_NICE


def test_the_child_leaves_one_core_to_the_app(engine):
    assert engine.threads == spare_threads() == max(1, len(os.sched_getaffinity(0)) - 1)  # as the child reports


def test_a_stopped_reply_leaves_the_next_one_whole(engine, tiny_engine):
    long = GreedySettings(max_new_tokens=200)
    pieces = engine.stream(chat(5), long)
    next(pieces)
    pieces.close()  # the Stop button: the child drops the row
    assert "".join(engine.stream(chat(6), GREEDY)).strip() == tiny_engine.generate([chat(6)], GREEDY)[0]


def test_pieces_that_arrive_while_the_app_is_busy_come_as_one(engine, tiny_engine):
    settings = GreedySettings(max_new_tokens=30)
    pieces = engine.stream(chat(9), settings)
    first = next(pieces)
    time.sleep(1.0)  # the app busy elsewhere: the rest of the reply is generated meanwhile
    rest = list(pieces)
    assert len(rest) <= 2  # not one update per token
    assert (first + "".join(rest)).strip() == tiny_engine.generate([chat(9)], settings)[0]


def test_errors_keep_their_kind_and_fix(engine):
    with pytest.raises(MessageError) as err:
        list(engine.stream([{"role": "user", "content": "tick " * 5000}], GREEDY))
    assert "too long" in err.value.problem and err.value.fix


def test_a_killed_child_fails_the_reply_in_flight_and_the_next_one_starts_it_again(engine, tiny_engine):
    pieces = engine.stream(chat(7), GreedySettings(max_new_tokens=400))
    next(pieces)
    old = engine._child.process
    old.kill()
    with pytest.raises(GenerationError, match="model process ended"):
        list(pieces)
    assert "".join(engine.stream(chat(8), GREEDY)).strip() == tiny_engine.generate([chat(8)], GREEDY)[0]
    assert engine._child.process.pid != old.pid and old.poll() is not None


def test_a_model_that_does_not_load_says_so_here():
    with pytest.raises(ModelLoadError) as err:
        ProcessEngine(EngineConfig(model="/no/such/model-folder"))
    assert "/no/such/model-folder" in str(err.value) and err.value.fix


def test_the_child_ends_with_its_engine(tiny_model_dir):
    engine = ProcessEngine(EngineConfig(model=str(tiny_model_dir)), threads=2)
    assert engine.threads == 2  # as asked, as the child reports (one start: each takes seconds)
    process = engine._child.process
    del engine  # a version the app's pool drops
    gc.collect()
    assert process.wait(timeout=5) == 0  # it saw its connection close and left (not killed after a wait)
