"""Store methods: conversations and turns, label items, the queue with overlap, labels, eval
runs, failures. Opening, creating and upgrading a database: test_schema.py."""

import random
import re
import select
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from store import BlindItem, Labelled, NewItem, NewPreference, Next, Progress, Store, StoreError, database_url, sql
from store.schema import assignments, label_items
from tests.conftest import REPO
from tests.store.conftest import add_items, new_item

# -- conversations ----------------------------------------------------------------------


def test_conversation_round_trip(store, ada):
    conversation = store.start_conversation("chat", "ada", ada, "base")
    store.add_turn(conversation, "user", "Hi Ada")
    reply = store.add_turn(conversation, "assistant", "Hello!", model_version="base", persona_name="Ada", persona=ada)
    store.add_turn(conversation, "notice", "switched to v1", persona={"name": "Nova"})
    turns = store.conversation(conversation)
    assert [(t.index, t.role, t.content, t.withdrawn) for t in turns] == [
        (0, "user", "Hi Ada", None),
        (1, "assistant", "Hello!", None),
        (2, "notice", "switched to v1", None),
    ]
    assert (turns[1].model_version, turns[1].persona_name, turns[1].persona) == ("base", "Ada", ada.model_dump())
    assert (turns[0].persona, turns[2].persona) == (None, {"name": "Nova"})
    assert turns[0].created_at.tzinfo is not None
    assert store.turn(reply) == turns[1]
    with pytest.raises(StoreError, match="turn role"):
        store.add_turn(conversation, "robot", "beep")
    with pytest.raises(StoreError, match="no conversation 999"):
        store.add_turn(999, "user", "anyone?")
    with pytest.raises(StoreError, match="conversation source"):
        store.start_conversation("web", "ada", ada.model_dump(), "base")
    with pytest.raises(StoreError, match="no turn 999"):
        store.turn(999)


def test_a_turn_without_a_persona_stores_sql_null(store, ada):
    conversation = store.start_conversation("chat", "ada", ada, "base")
    store.add_turns(conversation, [dict(role="user", content="Hi", persona=None), dict(role="assistant", content="Yo")])
    with store.engine.connect() as conn:
        # JSON null ('null') would make `persona IS NULL` false and read back the same in Python.
        assert conn.execute(sa.text("SELECT COUNT(*) FROM turns WHERE persona IS NULL")).scalar() == 2


def test_add_turns_saves_a_message_and_its_reply_together_or_not_at_all(store, ada):
    conversation = store.start_conversation("compare", "ada", ada, "base")
    greeting = store.add_turn(conversation, "assistant", "Hello, I am Ada.", "base", "Ada", ada.model_dump())
    exchange = [
        dict(role="user", content="What do you build?"),
        dict(role="assistant", content="Engines.", model_version="base", persona_name="Ada", persona={"name": "Ada"}),
    ]
    ids = store.add_turns(conversation, exchange)
    turns = store.conversation(conversation)
    assert [t.id for t in turns] == [greeting, *ids]
    assert [(t.index, t.role, t.content, t.persona) for t in turns[1:]] == [
        (1, "user", "What do you build?", None),
        (2, "assistant", "Engines.", {"name": "Ada"}),
    ]
    # The reply fails in the database (content is NOT NULL) after the message was inserted.
    with pytest.raises(StoreError, match=f"the user and assistant turns were NOT saved in conversation {conversation}"):
        store.add_turns(conversation, [dict(role="user", content="And?"), dict(role="assistant", content=None)])
    assert [t.id for t in store.conversation(conversation)] == [greeting, *ids]
    assert store.add_turns(conversation, []) == []


def test_add_turns_checks_each_turn_before_writing(store, ada):
    conversation = store.start_conversation("chat", "ada", ada, "base")
    bad_turns = [
        ([dict(role="user", content="Hi", mood="happy")], "unknown fields mood"),
        ([dict(role="user")], "needs a role and content"),
        ([dict(role="user", content="Hi"), dict(role="robot", content="beep")], "turn role 'robot'"),
        ([dict(role="user", content="Hi", persona={"name": "Ada"})], "a user turn has no persona"),
    ]
    for turns, message in bad_turns:
        with pytest.raises(StoreError, match=message):
            store.add_turns(conversation, turns)
    with pytest.raises(StoreError, match="no conversation 999"):
        store.add_turns(999, [dict(role="user", content="Hi")])
    assert store.conversation(conversation) == []


def test_withdrawn_turns_stay_marked_and_new_turns_follow_them(store, ada):
    conversation = store.start_conversation("chat", "ada", ada, "base")
    other = store.start_conversation("chat", "ada", ada, "base")
    greeting = store.add_turn(conversation, "assistant", "Hello!", persona=ada)
    first = store.add_turns(conversation, [dict(role="user", content="Hi"), dict(role="assistant", content="Hey")])
    assert store.withdraw_turns(conversation, first, "retry") == 2
    again = store.add_turns(conversation, [dict(role="user", content="Hi"), dict(role="assistant", content="Hello")])
    assert store.withdraw_turns(conversation, [*first, again[1]], "undo") == 1  # first was withdrawn already
    turns = store.conversation(conversation)
    assert [(t.index, t.content, t.withdrawn) for t in turns] == [
        (0, "Hello!", None),
        (1, "Hi", "retry"),
        (2, "Hey", "retry"),
        (3, "Hi", None),
        (4, "Hello", "undo"),
    ]
    assert store.turn(first[0]).withdrawn == "retry"

    (foreign,) = store.add_turns(other, [dict(role="user", content="Elsewhere")])
    with pytest.raises(StoreError, match=rf"turns \[{foreign}\] are not turns of conversation {conversation}"):
        store.withdraw_turns(conversation, [again[0], foreign], "undo")
    with pytest.raises(StoreError, match=r"turns \[9999\] are not"):
        store.withdraw_turns(conversation, [9999], "undo")
    with pytest.raises(StoreError, match="withdraw reason 'delete'"):
        store.withdraw_turns(conversation, [greeting], "delete")
    with pytest.raises(StoreError, match="no conversation 999"):
        store.withdraw_turns(999, [], "undo")
    assert [t.withdrawn for t in store.conversation(conversation)] == [None, "retry", "retry", None, "undo"]
    assert store.turn(foreign).withdrawn is None


def test_add_exchange_starts_appends_and_withdraws_in_one_transaction(store, ada):
    start = dict(source="chat", persona_key="ada", persona=ada, model_version="base")
    greeting = dict(role="assistant", content="Hello!", persona_name="Ada", persona=ada)
    first = [dict(role="user", content="Hi"), dict(role="assistant", content="Hey", model_version="base")]
    conversation, ids = store.add_exchange(None, [greeting, *first], start=start)
    assert [t.id for t in store.conversation(conversation)] == ids
    # A retry's new exchange with the old one withdrawn; a bad turn saves neither.
    again = [dict(role="user", content="Hi"), dict(role="assistant", content="Hello", model_version="base")]
    with pytest.raises(StoreError, match="unknown fields"):
        store.add_exchange(conversation, [*again, dict(role="user", content="x", colour="red")], replacing=ids[1:])
    with pytest.raises(StoreError, match=r"turns \[9999\] are not turns"):
        store.add_exchange(conversation, again, replacing=[9999])
    assert [t.withdrawn for t in store.conversation(conversation)] == [None, None, None]
    same, new_ids = store.add_exchange(conversation, again, replacing=ids[1:])
    assert same == conversation
    assert [(t.content, t.withdrawn) for t in store.conversation(conversation)] == [
        ("Hello!", None), ("Hi", "retry"), ("Hey", "retry"), ("Hi", None), ("Hello", None),
    ]  # fmt: skip
    assert new_ids == [t.id for t in store.conversation(conversation)][3:]
    with pytest.raises(StoreError, match="needs `start`"):
        store.add_exchange(None, first)
    with pytest.raises(StoreError, match="conversation source 'web'"):
        store.add_exchange(None, first, start=start | {"source": "web"})


def test_thumb_registers_the_reply_and_labels_or_unlabels_it_in_one_call(store, ada):
    conversation, (greeting, user, reply) = store.add_exchange(
        None,
        [dict(role="assistant", content="Hello!", persona_name="Ada", persona=ada), dict(role="user", content="Hi"),
         dict(role="assistant", content="Hey", model_version="v1", persona_name="Ada", persona=ada)],
        start=dict(source="chat", persona_key="ada", persona=ada, model_version="v1"),
    )  # fmt: skip
    row = store.thumb(reply, "kim", "good")
    assert (row.rater, row.verdict, row.model_version, row.source) == ("kim", "good", "v1", "chat")
    item = store.item(row.item_id)
    assert (item.answer, item.persona, item.conversation_id) == ("Hey", ada.model_dump(), conversation)
    assert item.context == [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi"}]
    assert store.thumb(reply, "kim", "bad", "too short").item_id == row.item_id  # the same item, relabelled
    assert [(r.verdict, r.comment) for r in store.label_rows()] == [("bad", "too short")]
    assert store.thumb(reply, "kim", None) is None
    assert store.label_rows() == []
    assert store.thumb(reply, "kim", None) is None  # nothing left: still fine
    for not_a_reply in (greeting, user):
        with pytest.raises(StoreError, match="only the model's replies can be labelled"):
            store.thumb(not_a_reply, "kim", "good")
    with pytest.raises(StoreError, match="verdict"):
        store.thumb(reply, "kim", "meh")
    with pytest.raises(StoreError, match="no turn 9999"):
        store.thumb(9999, "kim", "good")
    assert store.label_rows() == []


def test_a_reply_after_a_persona_switch_is_labelled_with_what_the_model_was_given(store, ada):
    nova = {"name": "Nova", "facts": ["I answer for Acme."]}
    conversation, _ = store.add_exchange(
        None, [dict(role="user", content="Hi"), dict(role="assistant", content="Hey", model_version="v1",
                                                      persona_name="Ada", persona=ada)],
        start=dict(source="chat", persona_key="ada", persona=ada, model_version="v1"),
    )  # fmt: skip
    _, (_, _, reply) = store.add_exchange(conversation, [
        dict(role="notice", content="From here on the model speaks as Nova, starting afresh.", persona=nova),
        dict(role="user", content="Who are you?"),
        dict(role="assistant", content="Nova.", model_version="v1", persona_name="Nova", persona=nova)])  # fmt: skip
    item = store.item(store.thumb(reply, "kim", "good").item_id)
    assert item.context == [{"role": "user", "content": "Who are you?"}]  # not Ada's turns before the switch


def test_records_are_plain_values_after_the_store_is_closed(db_url, ada):
    with Store(db_url) as store:
        conversation = store.start_conversation("chat", "ada", ada, "base")
        store.add_turn(conversation, "assistant", "Hello!", persona=ada)
        (item_id,) = add_items(store, 1)
        store.add_eval_run("base", "runs/base/eval/1", {"n": 1}, {"bleu": 2.0})
        turns, item, (run,) = store.conversation(conversation), store.item(item_id), store.eval_runs()
    seen = []  # read in another thread, with the engine disposed: nothing may load lazily
    reader = threading.Thread(target=lambda: seen.append((turns[0].persona["name"], item.blind(), run.summary)))
    reader.start()
    reader.join(timeout=30)
    assert seen == [("Ada", BlindItem(item_id, item.persona, item.context, "answer 0"), {"bleu": 2.0})]


# -- label items and the queue ----------------------------------------------------------


def test_label_items_are_registered_once(store):
    first = add_items(store, 2)
    again = store.add_label_items([new_item(0), new_item(1), new_item(2)])
    assert again[:2] == first and again[2] not in first
    item = store.item(first[1])
    assert (item.answer, item.model_version, item.context) == (
        "answer 1",
        "base",
        [{"role": "user", "content": "question 1"}],
    )
    assert (item.priority, item.dedupe_key) == (0, new_item(1).key)
    assert item.blind() == BlindItem(first[1], item.persona, item.context, "answer 1")  # no version, no source
    assert store.item(first[1]) == item
    with pytest.raises(StoreError, match="no label item 12345"):
        store.item(12345)


def test_new_item_key_is_the_question_to_raters():
    item = new_item(0)
    by_keyword = NewItem(
        source="eval",
        persona_name="Ada",
        persona=item.persona,
        context=item.context,
        answer="answer 0",
        model_version="base",
        conversation_id=7,
        eval_run_id=3,
        priority=1,
    )
    assert by_keyword.key == item.key  # where it came from and its priority do not change the question
    assert new_item(0, model_version="v1").key != item.key and new_item(1).key != item.key


def test_queue_gives_each_item_to_one_rater_with_overlap_1(store):
    a, b, c = add_items(store, 3)
    assert store.next_item("kim").item.id == a
    assert store.next_item("kim").item.id == a  # held until labelled or skipped
    assert store.next_item("lee").item.id == b
    store.label(a, "kim", "good")
    assert store.next_item("kim").item.id == c
    assert store.next_item("max").item is None  # a labelled by kim, b and c held


def test_overlap_2_lets_two_raters_label_an_item_and_not_a_third(store):
    (a,) = add_items(store, 1)
    assert store.next_item("kim", overlap=2).item.id == a
    assert store.next_item("lee", overlap=1).item is None
    assert store.next_item("lee", overlap=2).item.id == a
    assert store.next_item("max", overlap=2).item is None
    store.label(a, "kim", "good")
    store.label(a, "lee", "bad")
    assert {(r.rater, r.verdict) for r in store.label_rows()} == {("kim", "good"), ("lee", "bad")}


def test_priority_items_come_before_older_normal_ones(store):
    a, b = add_items(store, 2)
    c, d = store.add_label_items([new_item(2, priority=1), new_item(3, priority=2)])
    assert (store.item(c).priority, store.item(d).priority) == (1, 2)
    assert store.next_item("kim").item.id == d  # highest priority first
    assert store.next_item("lee").item.id == c
    (e,) = store.add_label_items([new_item(4, priority=5)])
    assert store.next_item("kim").item.id == d  # a rater's own pending item still comes first
    store.label(d, "kim", "good")
    assert store.next_item("kim").item.id == e
    store.label(e, "kim", "bad")
    assert store.next_item("kim").item.id == a  # then the normal ones, oldest first
    store.skip(a, "kim")
    assert store.next_item("kim").item.id == b
    with pytest.raises(StoreError, match="priority must be an integer"):
        store.add_label_items([new_item(5, priority="high")])


def test_registering_again_raises_the_priority_but_never_lowers_it(store):
    a, b = add_items(store, 2)
    store.label(a, "kim", "good")
    assert store.add_label_items([new_item(1, priority=1), new_item(0, priority=3)]) == [b, a]
    assert (store.item(a).priority, store.item(b).priority) == (3, 1)
    assert store.add_label_items([new_item(0), new_item(1, priority=0)]) == [a, b]  # not lowered
    assert (store.item(a).priority, store.item(b).priority) == (3, 1)
    assert [(r.item_id, r.verdict) for r in store.label_rows()] == [(a, "good")]  # labels kept
    (c,) = add_items(store, 3)[2:]
    assert store.next_item("lee").item.id == b  # raised above c, which came later with priority 0
    assert store.next_item("max").item.id == c


def test_queue_filters_by_source(store):
    (chat,) = store.add_label_items([new_item(0, source="chat")])
    (evaluated,) = store.add_label_items([new_item(1, source="eval")])
    assert store.next_item("kim", source="eval").item.id == evaluated
    assert store.next_item("kim", source="chat").item.id == chat


def test_concurrent_next_item_never_double_assigns(store):
    ids = add_items(store, 3)
    raters = [f"rater{i}" for i in range(6)]
    barrier = threading.Barrier(len(raters))
    got: dict[str, int | None] = {}

    def ask(rater: str) -> None:
        barrier.wait()
        item = store.next_item(rater, overlap=1).item
        got[rater] = item.id if item else None

    threads = [threading.Thread(target=ask, args=(r,)) for r in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == len(raters)
    taken = [item_id for item_id in got.values() if item_id is not None]
    assert sorted(taken) == sorted(ids)  # every item once, nobody got one twice


def shown(following: Next) -> tuple[int | None, Progress]:
    """The id of the rater's next item (None: nothing left) and their progress."""
    return (following.item.id if following.item else None), following.progress


def _holders_match_assignments(store) -> None:
    """Every item's `holders` column equals its rows in assignments (what the queue relies on)."""
    counted = sa.select(assignments.c.item_id, sa.func.count()).group_by(assignments.c.item_id)
    with store.engine.connect() as conn:
        counts = dict(conn.execute(counted).all())
        columns = dict(conn.execute(sa.select(label_items.c.id, label_items.c.holders)).all())
    assert columns == {item_id: counts.get(item_id, 0) for item_id in columns}


def test_holders_follow_every_assignment_change_under_concurrent_raters(store):
    add_items(store, 12)
    rng = random.Random(0)
    plans = {f"rater{i}": [rng.choice(["next", "label", "skip", "undo"]) for _ in range(25)] for i in range(4)}

    def work(rater: str, steps: list[str]) -> None:
        for step in steps:
            item = store.next_item(rater, overlap=2).item
            if item is None:
                return
            if step in ("label", "undo"):
                store.label(item.id, rater, "good")
                store.label(item.id, rater, "bad")  # a relabel: the rater holds it already, no new holder
            if step == "undo":
                store.undo_last_label(rater)  # held again, first in the rater's queue
            elif step == "skip":
                store.skip(item.id, rater)

    threads = [threading.Thread(target=work, args=plan) for plan in plans.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    _holders_match_assignments(store)
    per_item = Counter(row.item_id for row in store.label_rows())
    assert per_item and max(per_item.values()) <= 2  # overlap 2


# -- labels -----------------------------------------------------------------------------


def test_label_relabel_skip_undo_and_progress(store, monkeypatch):
    a, b, c = add_items(store, 3)
    assert shown(store.next_item("kim")) == (a, (0, 3))
    t1, t2 = datetime(2024, 5, 1, 12, tzinfo=UTC), datetime(2024, 5, 1, 13, tzinfo=UTC)
    monkeypatch.setattr("store.store.now", lambda: t1)
    store.label(a, "kim", "good")
    assert store.rater_progress()["kim"] == (1, 3)
    monkeypatch.setattr("store.store.now", lambda: t2)
    relabel = store.label(a, "kim", "bad", "off persona").label
    assert (relabel.verdict, relabel.comment, relabel.created_at, relabel.updated_at) == ("bad", "off persona", t1, t2)
    assert len(store.label_rows()) == 1

    assert store.next_item("kim").item.id == b
    store.skip(b, "kim")
    assert shown(store.next_item("kim")) == (c, (1, 2))  # a labelled, c held; b skipped
    assert shown(store.next_item("lee")) == (b, (0, 1))  # b was given back by the skip

    assert store.undo_last_label("kim") == a
    assert store.label_rows() == []
    assert shown(store.next_item("kim")) == (a, (0, 2))  # before c, which kim also holds
    assert store.undo_last_label("kim") is None
    assert store.undo_last_label("nobody") is None


def test_unlabel_takes_back_one_raters_verdict_only(store):
    a, b = add_items(store, 2)
    store.label(a, "kim", "good")
    store.label(a, "lee", "bad")
    store.label(b, "kim", "bad")
    assert store.unlabel(a, "kim") is True
    assert sorted((r.item_id, r.rater, r.verdict) for r in store.label_rows()) == [(a, "lee", "bad"), (b, "kim", "bad")]
    assert store.unlabel(a, "kim") is False  # nothing left to take back
    assert store.unlabel(a, "nobody") is False
    assert store.rater_progress()["kim"].done == 1  # a is neither labelled nor held by kim any more


def test_label_and_next_saves_the_label_and_gives_the_next_item_in_one_write(store):
    a, b, c = add_items(store, 3)
    assert store.next_item("kim").item.id == a
    assert store.next_item("lee").item.id == b
    done = store.label(a, "kim", "good", "fine", and_next=True)
    assert (done.label.item_id, done.label.rater, done.label.verdict, done.label.comment) == (a, "kim", "good", "fine")
    assert done.label == store.label_rows()[0]  # what is stored, model version and times included
    assert (shown(done.next), done.next_error) == ((c, (1, 2)), None)  # b is lee's
    assert store.label(c, "kim", "bad", and_next=True).next == (None, (2, 2))  # nothing left for kim
    assert store.undo_last_label("kim") == c
    assert store.label(a, "kim", "bad", and_next=True).next.item.id == c  # the undone item comes back first
    assert store.rater_progress()["kim"] == (1, 2)
    _holders_match_assignments(store)
    with pytest.raises(StoreError, match="'good' or 'bad'"):
        store.label(c, "kim", "great", and_next=True)
    with pytest.raises(StoreError, match="no label item 999"):
        store.label(999, "kim", "good", and_next=True)


def test_label_without_and_next_hands_out_nothing(store):
    a, b = add_items(store, 2)
    assert store.label(a, "kim", "good") == Labelled(store.label_rows()[0])  # no next item, no progress
    assert store.next_item("lee").item.id == b  # kim was not handed b


def test_next_item_gives_the_item_with_the_raters_progress(store):
    a, b = add_items(store, 2)
    assert shown(store.next_item("kim")) == (a, Progress(0, 2))  # claims a
    assert store.next_item("kim").item.id == a  # held: one read
    store.label(a, "kim", "good")
    assert shown(store.next_item("kim")) == (b, (1, 2))
    store.label(b, "kim", "good")
    assert store.next_item("kim") == (None, (2, 2))
    assert store.next_item("nobody") == (None, (0, 0))


def test_concurrent_label_and_next_labels_every_item_once(store):
    add_items(store, 40)

    def work(rater: str) -> list[int]:
        item, labelled = store.next_item(rater).item, []
        while item is not None:
            labelled.append(item.id)
            item = store.label(item.id, rater, "good", and_next=True).next.item
        return labelled

    with ThreadPoolExecutor(4) as pool:
        by_rater = list(pool.map(work, [f"rater{i}" for i in range(4)]))
    stored = Counter(row.item_id for row in store.label_rows())
    assert sorted(stored) == sorted(i for labelled in by_rater for i in labelled) and set(stored.values()) == {1}
    assert len(stored) == 40
    _holders_match_assignments(store)


def test_progress_counts_an_item_labelled_and_skipped_once(store):
    a, b = add_items(store, 2)
    store.label(a, "kim", "good")
    store.skip(a, "kim")  # both a label and a skip of a: finished once
    assert store.rater_progress(overlap=2) == {"kim": (1, 2)}
    assert store.next_item("lee", overlap=2).progress == (0, 2)
    assert store.rater_progress(overlap=2, source="chat") == {"kim": (0, 0), "lee": (0, 0)}


def test_a_rater_id_is_remembered_only_once_committed(store):
    known: dict[str, int] = {}
    with store.engine.connect() as conn:
        with conn.begin() as tx:
            assert sql.rater_id(conn, "zed", create=True, known=known) is not None
            tx.rollback()
        assert known == {}  # that id is gone with the rollback and may be given to another name
        assert sql.rater_id(conn, "zed", create=False, known=known) is None
    (a,) = add_items(store, 1)
    store.label(a, "zed", "good")
    with store.engine.connect() as conn:
        zed = sql.rater_id(conn, "zed", create=False, known=known)
    assert known == {"zed": zed} and [r.rater for r in store.label_rows()] == ["zed"]


def test_label_checks_verdict_item_and_rater(store):
    (a,) = add_items(store, 1)
    with pytest.raises(StoreError, match="'good' or 'bad'"):
        store.label(a, "kim", "great")
    with pytest.raises(StoreError, match="no label item 999"):
        store.label(999, "kim", "good")
    with pytest.raises(StoreError, match="rater name is empty"):
        store.label(a, "  ", "good")
    assert store.label_rows() == []


def test_label_rows_by_model_version(store):
    base = add_items(store, 2, model_version="base")
    v1 = add_items(store, 1, model_version="v1")
    add_items(store, 1, model_version="v2")  # never labelled
    store.label(base[0], "kim", "good")
    store.label(base[1], "kim", "bad", "rude")
    store.label(v1[0], "lee", "good")
    assert [(r.item_id, r.verdict, r.comment) for r in store.label_rows("base")] == [
        (base[0], "good", ""),
        (base[1], "bad", "rude"),
    ]
    assert [(r.rater, r.model_version, r.source) for r in store.label_rows("v1")] == [("lee", "v1", "eval")]
    assert len(store.label_rows()) == 3
    assert store.model_versions_with_labels() == ["base", "v1"]


def test_eval_runs(store):
    assert store.latest_eval_run("base") is None
    store.add_eval_run("base", "results/base-1.json", {"n": 10}, {"bleu": 1.5})
    second = store.add_eval_run("base", "results/base-2.json", {"n": 20}, {"bleu": 2.5, "rouge": {"l": 0.3}})
    store.add_eval_run("v1", "results/v1.json", {}, {})
    latest = store.latest_eval_run("base")
    assert (latest.id, latest.path, latest.config, latest.summary) == (
        second,
        "results/base-2.json",
        {"n": 20},
        {"bleu": 2.5, "rouge": {"l": 0.3}},
    )
    assert [r.model_version for r in store.eval_runs()] == ["base", "base", "v1"]
    assert len(store.eval_runs("v1")) == 1


# -- A/B preferences ------------------------------------------------------------------------


def vote(vote: str = "a", versions=("v1", "base"), rater: str = "kim", **kwargs) -> NewPreference:
    context = [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What do you build?"}]
    fields = dict(persona_name="Ada", persona={"name": "Ada", "facts": ["I build engines."]}, context=context)
    fields |= dict(reply_a="Engines.", reply_b="Bridges.", version_a=versions[0], version_b=versions[1])
    return NewPreference(**fields | dict(vote=vote, rater=rater) | kwargs)


def test_preferences_round_trip_and_filter_by_a_pair_in_either_order(store, ada):
    conversations = [store.start_conversation("compare", "ada", ada, v) for v in ("v1", "base")]
    first = store.add_preference(vote("a", conversation_a=conversations[0], conversation_b=conversations[1]))
    store.add_preference(vote("tie", ("base", "v1"), rater="lee", persona=ada))  # a chatbot Persona is dumped
    store.add_preference(vote("both_bad", ("v2", "v1")))
    rows = store.preferences()
    assert [(r.id, r.rater, r.version_a, r.version_b, r.vote) for r in rows] == [
        (first, "kim", "v1", "base", "a"),
        (first + 1, "lee", "base", "v1", "tie"),
        (first + 2, "kim", "v2", "v1", "both_bad"),
    ]
    assert (rows[0].reply_a, rows[0].reply_b, rows[0].persona_name) == ("Engines.", "Bridges.", "Ada")
    assert rows[0].context[-1] == {"role": "user", "content": "What do you build?"}
    assert rows[1].persona == ada.model_dump() and rows[0].created_at.tzinfo is not None
    assert [r.vote for r in store.preferences(("base", "v1"))] == ["a", "tie"]
    assert [r.vote for r in store.preferences(("v1", "base"))] == ["a", "tie"]
    assert [r.vote for r in store.preferences(("v1", "v2"))] == ["both_bad"]
    assert store.preferences(("base", "v2")) == []


def test_a_vote_outlives_its_conversations(store, ada):
    conversation = store.start_conversation("compare", "ada", ada, "v1")
    store.add_preference(vote(conversation_a=conversation))
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM conversations WHERE id = :id"), {"id": conversation})
        assert conn.execute(sa.text("SELECT conversation_a_id FROM preferences")).scalar() is None
    assert [r.reply_a for r in store.preferences()] == ["Engines."]


@pytest.mark.parametrize(
    ("bad", "problem", "fix"),
    [
        (dict(vote="left"), "a vote must be one of a, b, tie, both_bad, not 'left'", "vote 'a' (A is better)"),
        (dict(rater=" "), "the rater name is empty", "type your name"),
        (dict(context=[]), "must end with the user message", "the user message last"),
        (dict(context=[{"role": "user"}]), "context must be a list of messages", '"content"'),
        (dict(version_b=""), "version_b is empty", "name the model version"),
        (dict(reply_a=None), "reply_a must be text", "pass reply_a as a str"),
        (dict(conversation_b=999), "there is no conversation 999", "an existing conversation"),
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # checked before the database is asked
def test_a_bad_vote_is_refused_with_the_fix_and_nothing_is_saved(store, bad, problem, fix):
    with pytest.raises(StoreError, match=re.escape(problem)) as refused:
        store.add_preference(vote(**bad))
    assert fix in refused.value.fix
    assert store.preferences() == []


def test_the_vote_check_is_in_the_database_too(store):
    store.add_preference(vote())
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE preferences SET vote = 'left'"))
    assert [r.vote for r in store.preferences()] == ["a"]


def test_votes_survive_reopening(db_url):
    with Store(db_url) as store:
        store.add_preference(vote("b"))
    with Store(db_url) as store:
        assert [(r.rater, r.vote, r.reply_b) for r in store.preferences()] == [("kim", "b", "Bridges.")]


# -- opening and failures ---------------------------------------------------------------


def test_unreachable_database_names_the_url_without_the_password():
    with pytest.raises(StoreError) as caught:
        Store("postgresql://nobody:pw@127.0.0.1:1/none")
    message = str(caught.value)
    assert "nobody:***@127.0.0.1:1/none" in message and ":pw@" not in message
    assert "DATABASE_URL" in caught.value.fix


def test_urls_and_the_default_sqlite_file(tmp_path, monkeypatch):
    assert database_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert database_url("postgres://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert database_url("postgresql+psycopg://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with Store.from_env() as store:
        assert store.url == f"sqlite:///{tmp_path / 'data' / 'persona_studio.db'}"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}")
    with Store.from_env() as store:
        store.add_eval_run("base", "r.json", {}, {})
    assert (tmp_path / "elsewhere" / "x.db").is_file()
    with pytest.raises(StoreError, match="in-memory"):
        Store("sqlite://")


def test_sqlite_settings(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ["journal_mode", "synchronous"]}
        assert pragma == {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def _break_label_writes(store: Store, times: int) -> None:
    """Make the next `times` label INSERTs fail the way a dropped connection or a broken
    database does (a real driver OperationalError)."""
    broken = (
        "SELECT * FROM no_such_table"  # sqlite3.OperationalError
        if store.engine.dialect.name == "sqlite"
        else "SELECT pg_terminate_backend(pg_backend_pid())"  # the server drops the connection
    )
    left = [times]

    @sa.event.listens_for(store.engine, "before_cursor_execute", retval=True)
    def fail(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO labels") and left[0] > 0:
            left[0] -= 1
            return broken, ()
        return statement, parameters


def test_label_write_is_retried_once_then_reported_not_saved(store):
    a, b = add_items(store, 2)
    _break_label_writes(store, times=1)
    assert store.label(a, "kim", "good").label.verdict == "good"
    _break_label_writes(store, times=2)
    with pytest.raises(StoreError, match=f"label for item {b} by kim was NOT saved"):
        store.label(b, "kim", "bad")
    assert [r.item_id for r in store.label_rows()] == [a]
    store.label(b, "kim", "bad")  # the store still works afterwards
    assert len(store.label_rows()) == 2


KILLED_WRITER = """
import sys, time
from store import NewItem, NewPreference, Store

store = Store(sys.argv[1])
context = [{"role": "user", "content": "hi"}]
items = [NewItem("eval", "Ada", {"name": "Ada"}, context, f"answer {i}", "v1") for i in range(int(sys.argv[2]))]
for item_id in store.add_label_items(items):
    store.label(item_id, "kim", "good")
store.add_preference(NewPreference("Ada", {"name": "Ada"}, context, "A", "B", "v1", "base", "b", "kim"))
print("done", flush=True)
time.sleep(600)
"""


def test_labels_and_votes_survive_kill_9(tmp_path):
    url, n = f"sqlite:///{tmp_path / 'kill.db'}", 20
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url, str(n)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "done"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "kill.db-wal").exists()  # no clean shutdown: the commits sit in the WAL
    with Store(url) as store:
        rows, votes = store.label_rows(), store.preferences()
    assert [(v.rater, v.vote, v.version_a) for v in votes] == [("kim", "b", "v1")]
    assert len(rows) == n and {(r.rater, r.verdict, r.model_version) for r in rows} == {("kim", "good", "v1")}


def test_items_reads_many_by_id_in_one_call(store):
    ids = add_items(store, 3)
    found = store.items([ids[2], ids[0], ids[0], 999])  # repeats and unknown ids are fine
    assert sorted(found) == [ids[0], ids[2]]
    assert found[ids[2]] == store.item(ids[2]) and found[ids[2]].answer == "answer 2"
    assert store.items([]) == {}
